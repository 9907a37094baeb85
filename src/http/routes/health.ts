// GET /healthz: is the broker up, and with what (version, accelerator, launcher,
// live sessions, machines and their problems). No login, never cached.
import { Router } from 'express';
import type { AppDeps } from '../deps.js';

type HealthDeps = Pick<AppDeps, 'config' | 'manager' | 'catalog' | 'accel' | 'version' | 'startedAt'>;

export function healthRoutes(deps: HealthDeps): Router {
  const { config, manager, catalog, accel } = deps;
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.set('Cache-Control', 'no-store').json({
      status: 'ok',
      version: deps.version,
      accelerator: { accel: accel.accel, requested: accel.requested, reason: accel.reason },
      launcher: config.launcher,
      sessions: manager.liveCount(),
      machines: catalog.list().length,
      machineProblems: catalog.problems,
      uptimeS: Math.round((Date.now() - deps.startedAt) / 1000),
    });
  });
  return router;
}
