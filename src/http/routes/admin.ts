// What only administrators do from the browser: stop every desktop at once. Their
// view of all desktops is /manage (pages.ts); the rest is qwdctl.
import { Router } from 'express';
import { QwdError } from '../../errors.js';
import type { AppDeps } from '../deps.js';
import { endReason } from '../../store/end-reason.js';

export function adminRoutes(deps: Pick<AppDeps, 'manager' | 'log'>): Router {
  const { manager, log } = deps;
  const router = Router();

  router.post('/admin/stop-all', async (req, res) => {
    const admin = req.identity?.admin ? req.identity.user : null;
    if (admin === null) {
      const userMessage = 'Only administrators can stop all desktops.';
      throw new QwdError('QWD_FORBIDDEN', 'stop-all by a non-admin', { userMessage });
    }
    if ((req.body as Record<string, unknown>).confirm !== 'yes') {
      const userMessage = 'Tick the confirmation box to stop all desktops.';
      throw new QwdError('QWD_BAD_REQUEST', 'stop-all without confirmation', { userMessage });
    }
    const rows = manager.list();
    await Promise.all(rows.map((r) => manager.stop(
      r.id, endReason('stopped', `stopped by ${admin} (administrator, stop all)`, admin),
    )));
    log.warn({ admin, count: rows.length }, 'all desktops stopped by an administrator');
    res.redirect(303, '/manage');
  });

  return router;
}
