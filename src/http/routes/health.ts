// GET /healthz: is the broker up, and with what (version, accelerator, launcher,
// live sessions, machines and their problems), and how late its event loop ran
// over the last window (event-loop-delay.ts). No login, never cached.
import { Router } from 'express';
import type { AppDeps } from '../deps.js';

type HealthDeps = Pick<
  AppDeps, 'config' | 'manager' | 'catalog' | 'accel' | 'version' | 'startedAt' | 'eventLoopDelay'
>;

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
      eventLoopDelay: deps.eventLoopDelay(),
    });
  });
  return router;
}
