// The JSON API (/api/v1, for scripts and the pages' live updates): machines, and
// desktops listed, created, read, stopped, extended and re-linked. Refusals are thrown
// and answered as {"error": {code, message}} by the error handler.
import { Router, type NextFunction, type Request, type Response } from 'express';
import { QwdError } from '../../errors.js';
import type { LinkKind, SessionRow } from '../../store/session-rows.js';
import { sessionSizes } from '../../sessions/request.js';
import { describeValue } from '../../describe-value.js';
import type { AppDeps, RouteKit } from '../deps.js';
import { LOGIN_FIRST_MESSAGE, type AccessNeed } from '../session-access.js';
import type { SessionLinks } from '../views.js';
import type { QueueInfo } from '../../launcher/types.js';
import { endReason } from '../../store/end-reason.js';
import { webActor } from '../../audit/actor.js';

/** Stopping, extending or re-linking a desktop through the API. */
const CHANGE: AccessNeed = { kind: 'change', what: 'change it' };

/**
 * Each API answer says when the server read the request (its expiry clock, to the
 * millisecond): pages correct their countdowns with it (public/server-clock.js).
 */
export function stampServerTime(now: () => number) {
  return (_req: Request, res: Response, next: NextFunction): void => {
    res.set('X-Server-Time', new Date(now()).toISOString());
    next();
  };
}

export function apiRoutes(deps: AppDeps, kit: RouteKit): Router {
  const { config, manager, catalog, auth } = deps;
  const router = Router();
  /** The API's session object, as seen through a link of this kind. */
  const json = (req: Request, row: SessionRow, access: LinkKind = 'control') =>
    sessionApiJson(row, kit.links(req, row), access, deps.viewerCounts(row.id));
  const mustLogIn = (req: Request, _res: Response, next: NextFunction) => {
    if (auth.open || req.identity) return next();
    next(new QwdError('QWD_UNAUTHORIZED', 'API call without login', { userMessage: LOGIN_FIRST_MESSAGE }));
  };

  router.get('/api/v1/machines', (_req, res) => {
    // The defaults are what a request without cpus/memoryMiB gets (validateCreateRequest uses the same sessionSizes).
    res.json(catalog.list().map((m) => ({
      name: m.name, description: m.description, arch: m.arch, format: m.format, firmware: m.firmware,
      ...sessionSizes(m, config.limits),
    })));
  });

  router.get('/api/v1/sessions', mustLogIn, (req, res) => {
    res.set('Cache-Control', 'no-store').json(kit.listed(req).map((r) => json(req, r)));
  });

  router.post('/api/v1/sessions', mustLogIn, async (req, res) => {
    if (!req.is('application/json')) {
      const userMessage = 'Send the request as JSON (Content-Type: application/json).';
      throw new QwdError('QWD_BAD_REQUEST', 'expected a JSON body', { userMessage });
    }
    const row = await kit.create(req, req.body);
    res.status(201).location(`/api/v1/sessions/${row.token}`).json(json(req, row));
  });

  router.get('/api/v1/sessions/:token', async (req, res) => {
    const { row, access } = kit.access(req, { kind: 'see' });
    const seen = { ...json(req, row, access), queue: queueJson(await manager.queueInfo(row.id)) };
    const answer = access === 'control' ? { ...seen, viewerNames: deps.viewerNames(row.id) } : seen;
    res.set('Cache-Control', 'no-store').json(answer);
  });

  // Changes need the owner (or an admin) whether or not links need a login: refused 403, not 401.
  router.delete('/api/v1/sessions/:token', async (req, res) => {
    const { row, access } = kit.access(req, CHANGE, false);
    await manager.stop(row.id, endReason('stopped', 'stopped through the API', webActor(req.identity, access)));
    res.status(204).end();
  });

  router.post('/api/v1/sessions/:token/extend', async (req, res) => {
    const { row, access } = kit.access(req, CHANGE, false);
    const byS = (req.body as { byS?: unknown } | undefined)?.byS ?? config.sessions.extendStepS;
    res.json(json(req, await manager.extend(row.id, byS as number, webActor(req.identity, access))));
  });

  router.post('/api/v1/sessions/:token/revoke', (req, res) => {
    const { row, access } = kit.access(req, CHANGE, false);
    const link = (req.body as { link?: unknown } | undefined)?.link;
    if (link !== 'control' && link !== 'view') {
      const message = `link must be "control" or "view", got ${describeValue(link)}`;
      throw new QwdError('QWD_BAD_REQUEST', message, { userMessage: 'link must be "control" or "view".' });
    }
    res.json(json(req, manager.revokeLink(row.id, link, webActor(req.identity, access))));
  });

  return router;
}

/** The API's session object; a view-only token sees only its own link. */
function sessionApiJson(
  row: SessionRow, l: SessionLinks, access: LinkKind, viewers: { control: number; view: number },
) {
  const common = {
    id: row.id, access, state: row.state, machine: row.machine, cpus: row.cpus, memoryMiB: row.memoryMiB,
    createdAt: new Date(row.createdAt).toISOString(), expiresAt: new Date(row.expiresAt).toISOString(),
    viewers: viewers.control + viewers.view, viewOnlyViewers: viewers.view,
  };
  if (access === 'view') return { ...common, url: l.viewPage, viewerUrl: l.viewViewer, wsUrl: l.viewWs };
  return {
    ...common, token: row.token, owner: row.owner, oneShot: row.oneShot,
    url: l.page, viewerUrl: l.viewer, wsUrl: l.ws,
    viewUrl: l.viewPage, viewViewerUrl: l.viewViewer, viewWsUrl: l.viewWs,
  };
}

/**
 * The API's queue object: `state` is the scheduler's own word (Slurm: PENDING while the job waits), as the API has
 * always said it and public/session.js reads it.
 */
function queueJson(queue: QueueInfo | null) {
  if (!queue) return null;
  return { state: queue.native.state, reason: queue.reason, position: queue.position, node: queue.node };
}
