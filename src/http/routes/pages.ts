// The pages of desktops: the form and its POST, a desktop's page and viewer through its
// links (/s/<token>), the forms that stop, extend and re-link it, and the visitor's list.
// Routes only translate HTTP to manager calls and back; the manager owns session state.
import { Router, type Request, type Response } from 'express';
import QRCode from 'qrcode';
import { QwdError } from '../../errors.js';
import type { LinkKind, SessionRow } from '../../store/session-rows.js';
import { issueViewerTicket } from '../../bridge/viewer-ticket.js';
import { requireLogin } from '../security.js';
import { answerErrorsWith } from '../error-handler.js';
import type { AppDeps, RouteKit } from '../deps.js';
import type { AccessNeed } from '../session-access.js';
import { endReason } from '../../store/end-reason.js';
import { webActor } from '../../audit/actor.js';
import {
  errorPage, formPage, managePage, sessionPage, viewOnlyPage, viewerPage, type FormValues, type ViewerDisplay,
} from '../views.js';

/** Stopping, extending or re-linking a desktop through its page. */
const CHANGE: AccessNeed = { kind: 'change', what: 'stop, extend or re-link it' };

export function pageRoutes(deps: AppDeps, kit: RouteKit): Router {
  const { config, manager, catalog } = deps;
  const router = Router();
  const mustLogIn = requireLogin(deps.auth.open);

  // Browsers ask for /favicon.ico whatever the page says.
  router.get('/favicon.ico', (_req, res) => res.redirect(301, '/static/favicon.svg'));

  router.get('/', mustLogIn, (req, res) => {
    res.type('html').send(form(req, res, { user: req.session.userName }));
  });

  router.post('/sessions', mustLogIn, async (req, res) => {
    // A refusal shows the form again, as filled in, with the reason.
    answerErrorsWith(res, (e) => ({ html: form(req, res, formValues(req.body), e.userMessage) }));
    const row = await kit.create(req, formToRequest(req.body));
    res.redirect(303, `/s/${row.token}`);
  });

  router.get('/s/:token', async (req, res) => {
    const { row, access, manage } = kit.access(req, { kind: 'see' });
    const l = kit.links(req, row);
    res.set('Cache-Control', 'no-store');
    if (access === 'view') return void res.type('html').send(viewOnlyPage(row, l, config, deps.now()));
    const [qr, viewQr, balloon, queue] = await Promise.all([
      qrSvg(l.page), qrSvg(l.viewPage),
      // The page still renders if the guest's QMP is busy or the balloon has no driver.
      manage && row.state === 'running' ? manager.balloonInfo(row.id).catch(() => null) : null,
      manager.queueInfo(row.id),
    ]);
    const viewers = { ...deps.viewerCounts(row.id), names: deps.viewerNames(row.id) };
    const qrs = { control: qr, view: viewQr };
    const ctx = kit.page(req, res);
    res.type('html').send(sessionPage(ctx, row, l, qrs, viewers, config, deps.now(), balloon, manage, queue));
  });

  router.get('/s/:token/view', (req, res) => {
    const { row, access } = kit.access(req, { kind: 'see' });
    const token = req.params.token;
    res.set('Cache-Control', 'no-store');
    // Still waiting for a node: the session page says so and moves on when it runs.
    if (row.state !== 'running') return void res.redirect(303, `/s/${token}`);
    const ticket = req.identity ? issueViewerTicket(deps.sessionSecret, token, req.identity.user) : null;
    // The clipboard policy (the bridge's decision from the site's and the machine's policy and this link)
    // and the resize mode (from the machine's display): see viewerDisplay.
    const display = viewerDisplay(row.machine, access);
    const warnBeforeS = config.sessions.warnBeforeS;
    res.type('html').send(viewerPage(token, row.expiresAt, access, warnBeforeS, ticket, deps.now(), display));
  });

  router.post('/s/:token/stop', async (req, res) => {
    const { row, access } = kit.access(req, CHANGE);
    const who = req.identity;
    const reason = who && who.user !== row.owner ? `stopped by ${who.user} (administrator)` : 'stopped by its user';
    await manager.stop(row.id, endReason('stopped', reason, webActor(who, access)));
    res.redirect(303, (req.body as Record<string, unknown>).back === 'manage' ? '/manage' : `/s/${row.token}`);
  });

  router.post('/s/:token/extend', async (req, res) => {
    const { row, access } = kit.access(req, CHANGE);
    answerErrorsWith(res, (e) => ({ html: errorPage('Cannot extend', e.userMessage, `/s/${row.token}`) }));
    await manager.extend(row.id, config.sessions.extendStepS, webActor(req.identity, access));
    res.redirect(303, `/s/${row.token}`);
  });

  router.post('/s/:token/revoke/:link', (req, res) => {
    const { row, access } = kit.access(req, CHANGE);
    const kind = req.params.link === 'view' ? 'view' : req.params.link === 'control' ? 'control' : null;
    if (!kind) throw new QwdError('QWD_BAD_REQUEST', 'link must be control or view', { userMessage: 'Unknown link.' });
    const updated = manager.revokeLink(row.id, kind, webActor(req.identity, access));
    res.redirect(303, `/s/${updated.token}`);
  });

  router.get('/manage', mustLogIn, (req, res) => {
    res.set('Cache-Control', 'no-store');
    const rows = kit.listed(req);
    const linkOf = (r: { token: string }) => `/s/${r.token}`;
    // An administrator also sees the host's load and what the desktops hold of it.
    const admin = req.identity?.admin ? { host: deps.hostLoad(), reserved: reservedBy(rows) } : undefined;
    res.type('html').send(managePage(kit.page(req, res), rows, linkOf, deps.now(), admin));
  });

  /** The form, as filled in (or empty), with an error or none. */
  function form(req: Request, res: Response, values: FormValues, error?: string): string {
    return formPage(kit.page(req, res), catalog.list(), config, values, error, manager.availability());
  }

  /**
   * What a viewer page offers: the clipboard directions the bridge lets this viewer use, and
   * resizing the desktop to the window where the machine's display follows it (virtio-vga;
   * QEMU answers "invalid screen layout" for std and qxl) and the viewer may change it.
   */
  function viewerDisplay(machine: string, access: LinkKind): ViewerDisplay {
    const remote = catalog.get(machine)?.display === 'virtio' && access === 'control';
    return { clipboard: deps.clipboardMode(machine, access), resize: remote ? 'remote' : 'scale' };
  }

  return router;
}

/** The CPUs and memory these desktops hold. */
function reservedBy(rows: SessionRow[]): { cpus: number; memoryMiB: number } {
  return { cpus: rows.reduce((n, r) => n + r.cpus, 0), memoryMiB: rows.reduce((n, r) => n + r.memoryMiB, 0) };
}

function qrSvg(text: string): Promise<string> {
  return QRCode.toString(text, { type: 'svg', margin: 1, errorCorrectionLevel: 'M' });
}

/** The form sends strings; only the known fields go on, validation happens in the manager. */
function formToRequest(body: unknown): Record<string, unknown> {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of ['machine', 'cpus', 'memoryMiB', 'lifetimeS', 'user', 'email', 'script', 'gpus']) {
    if (b[key] !== undefined) out[key] = b[key];
  }
  // An unchecked checkbox sends nothing: the form always says what it wants.
  out.oneShot = b.oneShot === 'on';
  return out;
}

function formValues(body: unknown): FormValues {
  const b = (body ?? {}) as Record<string, unknown>;
  const pick = (k: string) => (typeof b[k] === 'string' ? (b[k] as string).slice(0, 64) : undefined);
  return {
    machine: pick('machine'), cpus: pick('cpus'), memoryMiB: pick('memoryMiB'), lifetimeS: pick('lifetimeS'),
    user: pick('user'), email: pick('email'), oneShot: b.oneShot === 'on', gpus: b.gpus === '1',
  };
}
