// The Express application: pages, the JSON API and static assets. Routes only
// translate HTTP to manager calls and back; the manager owns session state.
import path from 'node:path';
import { createRequire } from 'node:module';
import express, { type Request, type Response } from 'express';
import session from 'express-session';
import QRCode from 'qrcode';
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Catalog } from '../catalog/catalog.js';
import type { AccelChoice } from '../qemu/accel.js';
import type { SessionManager } from '../sessions/manager.js';
import type { LinkKind, SessionRow } from '../store/session-rows.js';
import type { ClipboardMode } from '../config/schema.js';
import { INSTALL_DIR } from '../config/load.js';
import { errorHandler } from './error-handler.js';
import { SqliteWebSessionStore } from './web-session-store.js';
import { REVOKED_LINK_MESSAGE, endedPage, emailLinkPage, errorPage, formPage, loginPage, managePage, notFoundPage, revokedPage, sessionPage, viewOnlyPage, viewerPage, type ViewerDisplay, type FormValues, type SessionLinks } from './views.js';
import helmet from 'helmet';
import type { AuthService } from '../auth/service.js';
import { KNOWN_DEVICE_COOKIE, KNOWN_DEVICE_MAX_AGE_S, addMark, isKnownDevice } from '../auth/known-device.js';
import { CsrfTokens, SESSION_COOKIE, canManage, cookieValue, csrfProtect, csrfToken, identify, safeRedirectPath } from './security.js';
import { AnonymousPageLimiter } from './anonymous-limit.js';
import { issueViewerTicket } from '../bridge/viewer-ticket.js';
import type { PageContext } from './html.js';
import { sessionSizes } from '../sessions/request.js';
import { describeValue } from '../describe-value.js';

export interface AppDeps {
  config: Config;
  manager: SessionManager;
  catalog: Catalog;
  webSessions: SqliteWebSessionStore;
  sessionSecret: string;
  accel: AccelChoice;
  viewerCounts: (sessionId: string) => { control: number; view: number };
  viewerNames: (sessionId: string) => string[];
  hostLoad: () => { cpus: number; load1: number; availableMemoryMiB: number; totalMemoryMiB: number };
  auth: AuthService;
  log: Logger;
  version: string;
  startedAt: number;
  /** The clock expiries are decided on (the manager's): pages count down on it. */
  now: () => number;
  /** A viewer's clipboard policy, decided as the bridge enforces it (the page only shows it). */
  clipboardMode: (machine: string, access: LinkKind) => ClipboardMode;
}

const NOVNC_DIR = path.dirname(path.dirname(createRequire(import.meta.url).resolve('@novnc/novnc')));

export function createApp(deps: AppDeps): express.Express {
  const { config, manager, catalog, log, auth } = deps;
  const app = express();
  app.disable('x-powered-by');
  // A hop count or a list of proxy addresses, never `true` (see readTrustProxy): a copy,
  // as the config is frozen.
  app.set('trust proxy', Array.isArray(config.trustProxy) ? [...config.trustProxy] : config.trustProxy);
  app.use(helmet({
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'", 'ws:', 'wss:'],
        frameAncestors: ["'none'"],
        formAction: ["'self'"],
        upgradeInsecureRequests: null,
      },
    },
    // Share links must not leak through Referer headers.
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: false,
  }));

  // Each API answer says when the server read the request (its expiry clock, to the
  // millisecond): pages correct their countdowns with it (public/server-clock.js).
  app.use('/api', (_req, res, next) => {
    res.set('X-Server-Time', new Date(deps.now()).toISOString());
    next();
  });
  app.use('/static', express.static(path.join(INSTALL_DIR, 'public'), { index: false, maxAge: '1h' }));
  app.use('/novnc', express.static(NOVNC_DIR, { index: false, maxAge: '1d' }));
  app.use(express.urlencoded({ extended: false, limit: '96kb', parameterLimit: 20 }));
  app.use(express.json({ limit: '96kb' }));
  app.use(session({
    store: deps.webSessions,
    secret: deps.sessionSecret,
    name: SESSION_COOKIE,
    resave: false,
    saveUninitialized: false,
    // secure: 'auto' marks the cookie Secure whenever the request came over TLS
    // (directly, or through a proxy trusted with trustProxy).
    cookie: { httpOnly: true, sameSite: 'lax', secure: 'auto', maxAge: Math.max(config.auth.sessionTtlS, config.limits.maxLifetimeS) * 1000 + 86400000 },
  }));
  app.use(identify(auth));
  app.use(limitAnonymousPages(new AnonymousPageLimiter(config.auth.rateLimit.anonymousPagesPerMinute)));
  const csrfTokens = new CsrfTokens(deps.sessionSecret);
  app.use(csrfProtect(csrfTokens));

  const page = (req: Request, res: Response): PageContext => ({ csrf: csrfToken(req, res, csrfTokens), identity: req.identity ? { user: req.identity.user, admin: req.identity.admin } : null, open: auth.open });
  /** Share and view links need a login (auth.linksRequireLogin): true when this request was sent to log in. */
  const linkNeedsLogin = (req: Request, res: Response): boolean => {
    if (!config.auth.linksRequireLogin || req.identity) return false;
    res.set('Cache-Control', 'no-store').redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}`);
    return true;
  };
  /** Pages that need a login when authentication is configured. */
  const needLogin = (req: Request, res: Response): boolean => {
    if (auth.open || req.identity) return false;
    res.redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}`);
    return true;
  };
  const safeNext = safeRedirectPath;

  const base = (req: Request) => config.publicUrl ?? `${req.protocol}://${req.get('host')}`;
  const links = (req: Request, row: SessionRow): SessionLinks => {
    const origin = base(req);
    const ws = origin.replace(/^http/, 'ws');
    return {
      page: `${origin}/s/${row.token}`, viewer: `${origin}/s/${row.token}/view`, ws: `${ws}/ws/${row.token}`,
      viewPage: `${origin}/s/${row.viewToken}`, viewViewer: `${origin}/s/${row.viewToken}/view`, viewWs: `${ws}/ws/${row.viewToken}`,
    };
  };
  const remember = (req: Request, row: SessionRow) => {
    req.session.sessionIds = [...(req.session.sessionIds ?? []).filter((id) => manager.get(id)), row.id].slice(-50);
    req.session.userName = row.owner;
  };

  /** Resolves /s/:token to a live session, or answers 404/410 itself. */
  const liveSession = (req: Request, res: Response): { row: SessionRow; access: LinkKind } | null => {
    if (linkNeedsLogin(req, res)) return null;
    const found = manager.lookupToken(req.params.token);
    if (found.kind === 'live') return found;
    // A revoked link's desktop may still run: it is not said to have ended.
    if (found.kind === 'ended') res.status(410).type('html').send(found.ended.reason === 'revoked' ? revokedPage() : endedPage(describeReason(found.ended.reason), found.ended.endedAt));
    else res.status(404).type('html').send(notFoundPage());
    return null;
  };
  // Browsers ask for /favicon.ico whatever the page says.
  app.get('/favicon.ico', (_req, res) => res.redirect(301, '/static/favicon.svg'));

  app.get('/', (req, res) => {
    if (needLogin(req, res)) return;
    res.type('html').send(formPage(page(req, res), catalog.list(), config, { user: req.session.userName }, undefined, manager.availability()));
  });

  app.post('/sessions', async (req, res) => {
    if (needLogin(req, res)) return;
    try {
      const row = await manager.create(withIdentity(req, formToRequest(req.body)), identityGroups(req));
      remember(req, row);
      res.redirect(303, `/s/${row.token}`);
    } catch (err) {
      const e = err instanceof QwdError ? err : new QwdError('QWD_INTERNAL', String(err), { cause: err });
      if (e.httpStatus >= 500 && e.family !== 'refused') log.error({ err: e }, 'create from the form failed');
      res.status(e.httpStatus).type('html').send(formPage(page(req, res), catalog.list(), config, formValues(req.body), e.userMessage, manager.availability()));
    }
  });

  // Logging in and out.
  app.get('/login', (req, res) => {
    if (auth.open) return res.redirect(303, '/');
    res.type('html').send(loginPage(page(req, res), { password: auth.hasPasswordLogin, email: auth.emailBackend !== null, next: safeNext(req.query.next) }));
  });

  app.post('/login', async (req, res) => {
    if (auth.open || !auth.hasPasswordLogin) return res.redirect(303, '/');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = typeof body.user === 'string' ? body.user : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const next = safeNext(body.next);
    const marks = cookieValue(req.headers.cookie, KNOWN_DEVICE_COOKIE);
    const outcome = await auth.login(user, password, req.ip ?? 'unknown', isKnownDevice(deps.sessionSecret, marks, user));
    if (!outcome.ok) {
      if (outcome.retryAfterS) res.set('Retry-After', String(outcome.retryAfterS));
      res.status(outcome.status).type('html').send(loginPage(page(req, res), { password: true, email: auth.emailBackend !== null, error: outcome.message, next, user: user.slice(0, 64) }));
      return;
    }
    await startLogin(req, outcome.identity);
    res.cookie(KNOWN_DEVICE_COOKIE, addMark(deps.sessionSecret, marks, user), { httpOnly: true, sameSite: 'lax', secure: req.secure, path: '/login', maxAge: KNOWN_DEVICE_MAX_AGE_S * 1000 });
    res.redirect(303, next);
  });

  app.post('/login/email', async (req, res) => {
    const email = (req.body as Record<string, unknown> | undefined)?.email;
    try {
      // The link is built from config.publicUrl only (never from the Host header).
      await auth.sendEmailLink(typeof email === 'string' ? email : '', req.ip ?? 'unknown');
      res.type('html').send(loginPage(page(req, res), { password: auth.hasPasswordLogin, email: true, next: '/', notice: 'If this address may log in, a link is on its way. It works once, for a limited time.' }));
    } catch (err) {
      const e = err instanceof QwdError ? err : new QwdError('QWD_INTERNAL', String(err), { cause: err });
      if (e.httpStatus >= 500) log.error({ err: e }, 'login link not sent');
      res.status(e.httpStatus >= 500 ? 503 : e.httpStatus).type('html').send(loginPage(page(req, res), { password: auth.hasPasswordLogin, email: true, next: '/', error: e.httpStatus >= 500 ? 'The login link could not be sent. Please try again later.' : e.userMessage }));
    }
  });

  // Opening the mailed link only shows a button: mail scanners and link
  // previews fetch links with GET, and must not use up a single-use login.
  app.get('/login/email/:token', (req, res) => {
    const email = auth.peekEmailLink(String(req.params.token));
    if (!email) {
      res.status(410).type('html').send(errorPage('Link not valid', 'This login link has expired or was already used. Ask for a new one.', '/login'));
      return;
    }
    res.type('html').send(emailLinkPage(page(req, res), email, `/login/email/${String(req.params.token)}`));
  });

  app.post('/login/email/:token', async (req, res) => {
    const identity = auth.redeemEmailLink(String(req.params.token));
    if (!identity) {
      res.status(410).type('html').send(errorPage('Link not valid', 'This login link has expired or was already used. Ask for a new one.', '/login'));
      return;
    }
    await startLogin(req, identity);
    res.redirect(303, '/');
  });

  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => {
      if (err) return next(err);
      res.clearCookie(SESSION_COOKIE);
      res.redirect(303, auth.open ? '/' : '/login');
    });
  });

  /** A new browser session id at login (no fixation), then the identity. */
  const startLogin = (req: Request, identity: NonNullable<Request['identity']>) =>
    new Promise<void>((resolve, reject) => {
      const kept = req.session.sessionIds;
      req.session.regenerate((err) => {
        if (err) return reject(err);
        req.session.identity = identity;
        // The login lasts auth.sessionTtlS from here (checked on every request by identify()).
        req.session.loggedInAt = auth.loginStartedAt();
        req.session.sessionIds = kept;
        req.session.save((e) => (e ? reject(e) : resolve()));
      });
    });

  app.get('/s/:token', async (req, res) => {
    const found = liveSession(req, res);
    if (!found) return;
    const { row, access } = found;
    const l = links(req, row);
    res.set('Cache-Control', 'no-store');
    if (access === 'view') {
      res.type('html').send(viewOnlyPage(row, l, config, deps.now()));
      return;
    }
    const manageable = canManage(req, row, auth.open, true);
    const [qr, viewQr, balloon, queue] = await Promise.all([
      qrSvg(l.page), qrSvg(l.viewPage),
      // The page still renders if the guest's QMP is busy or the balloon has no driver.
      manageable && row.state === 'running' ? manager.balloonInfo(row.id).catch(() => null) : null,
      manager.queueInfo(row.id),
    ]);
    res.type('html').send(sessionPage(page(req, res), row, l, { control: qr, view: viewQr }, { ...deps.viewerCounts(row.id), names: deps.viewerNames(row.id) }, config, deps.now(), balloon, manageable, queue));
  });

  app.get('/s/:token/view', (req, res) => {
    const found = liveSession(req, res);
    if (!found) return;
    res.set('Cache-Control', 'no-store');
    // Still waiting for a node: the session page says so and moves on when it runs.
    if (found.row.state !== 'running') return void res.redirect(303, `/s/${req.params.token as string}`);
    const ticket = req.identity ? issueViewerTicket(deps.sessionSecret, req.params.token as string, req.identity.user) : null;
    // The clipboard policy and resize mode: the defaults until the machine descriptor and site policy say more.
    res.type('html').send(viewerPage(req.params.token as string, found.row.expiresAt, found.access, config.sessions.warnBeforeS, ticket, deps.now(), viewerDisplay(found.row.machine, found.access)));
  });

  app.post('/s/:token/stop', async (req, res) => {
    const row = controlledRow(req, res);
    if (!row) return;
    await manager.stop(row.id, req.identity && req.identity.user !== row.owner ? `stopped by ${req.identity.user} (administrator)` : 'stopped by its user');
    res.redirect(303, (req.body as Record<string, unknown>).back === 'manage' ? '/manage' : `/s/${row.token}`);
  });

  app.post('/s/:token/extend', async (req, res) => {
    const row = controlledRow(req, res);
    if (!row) return;
    try {
      await manager.extend(row.id, config.sessions.extendStepS);
      res.redirect(303, `/s/${row.token}`);
    } catch (err) {
      const e = err instanceof QwdError ? err : new QwdError('QWD_INTERNAL', String(err), { cause: err });
      res.status(e.httpStatus).type('html').send(errorPage('Cannot extend', e.userMessage, `/s/${row.token}`));
    }
  });

  app.post('/s/:token/revoke/:link', (req, res) => {
    const row = controlledRow(req, res);
    if (!row) return;
    const kind = req.params.link === 'view' ? 'view' : req.params.link === 'control' ? 'control' : null;
    if (!kind) throw new QwdError('QWD_BAD_REQUEST', 'link must be control or view', { userMessage: 'Unknown link.' });
    const updated = manager.revokeLink(row.id, kind);
    res.redirect(303, `/s/${updated.token}`);
  });

  app.get('/manage', (req, res) => {
    if (needLogin(req, res)) return;
    res.set('Cache-Control', 'no-store');
    const who = req.identity;
    if (who?.admin) {
      const rows = manager.list();
      const host = deps.hostLoad();
      const reserved = { cpus: rows.reduce((n, r) => n + r.cpus, 0), memoryMiB: rows.reduce((n, r) => n + r.memoryMiB, 0) };
      res.type('html').send(managePage(page(req, res), rows, (r) => `/s/${r.token}`, deps.now(), { host, reserved }));
      return;
    }
    const rows = who ? manager.list().filter((r) => r.owner === who.user) : (req.session.sessionIds ?? []).map((id) => manager.get(id)).filter((r): r is SessionRow => r !== undefined);
    res.type('html').send(managePage(page(req, res), rows, (r) => `/s/${r.token}`, deps.now()));
  });

  app.post('/admin/stop-all', async (req, res) => {
    if (!req.identity?.admin) throw new QwdError('QWD_FORBIDDEN', 'stop-all by a non-admin', { userMessage: 'Only administrators can stop all desktops.' });
    if ((req.body as Record<string, unknown>).confirm !== 'yes') throw new QwdError('QWD_BAD_REQUEST', 'stop-all without confirmation', { userMessage: 'Tick the confirmation box to stop all desktops.' });
    const rows = manager.list();
    await Promise.all(rows.map((r) => manager.stop(r.id, `stopped by ${req.identity!.user} (administrator, stop all)`)));
    log.warn({ admin: req.identity.user, count: rows.length }, 'all desktops stopped by an administrator');
    res.redirect(303, '/manage');
  });

  // JSON API (for scripts and qwdctl).
  app.get('/api/v1/machines', (_req, res) => {
    // The defaults are what a request without cpus/memoryMiB gets (validateCreateRequest uses the same sessionSizes).
    res.json(catalog.list().map((m) => ({
      name: m.name, description: m.description, arch: m.arch, format: m.format, firmware: m.firmware,
      ...sessionSizes(m, config.limits),
    })));
  });

  const apiLogin = (req: Request) => {
    if (!auth.open && !req.identity) throw new QwdError('QWD_UNAUTHORIZED', 'API call without login', { userMessage: 'Log in first, or send an API token (Authorization: Bearer …).' });
  };

  app.get('/api/v1/sessions', (req, res) => {
    apiLogin(req);
    const who = req.identity;
    const rows = who?.admin ? manager.list() : who ? manager.list().filter((r) => r.owner === who.user) : (req.session.sessionIds ?? []).map((id) => manager.get(id)).filter((r): r is SessionRow => r !== undefined);
    res.set('Cache-Control', 'no-store').json(rows.map((r) => sessionApiJson(r, links(req, r), 'control', deps.viewerCounts(r.id))));
  });

  app.post('/api/v1/sessions', async (req, res) => {
    apiLogin(req);
    if (!req.is('application/json')) throw new QwdError('QWD_BAD_REQUEST', 'expected a JSON body', { userMessage: 'Send the request as JSON (Content-Type: application/json).' });
    const row = await manager.create(withIdentity(req, req.body), identityGroups(req));
    remember(req, row);
    res.status(201).location(`/api/v1/sessions/${row.token}`).json(sessionApiJson(row, links(req, row), 'control', deps.viewerCounts(row.id)));
  });

  app.get('/api/v1/sessions/:token', async (req, res) => {
    if (config.auth.linksRequireLogin && !req.identity) throw new QwdError('QWD_UNAUTHORIZED', 'link API call without login', { userMessage: 'Log in first, or send an API token (Authorization: Bearer …).' });
    const { row, access } = apiSession(manager, req.params.token);
    const json = { ...sessionApiJson(row, links(req, row), access, deps.viewerCounts(row.id)), queue: await manager.queueInfo(row.id) };
    res.set('Cache-Control', 'no-store').json(access === 'control' ? { ...json, viewerNames: deps.viewerNames(row.id) } : json);
  });

  app.delete('/api/v1/sessions/:token', async (req, res) => {
    const row = apiControl(req, req.params.token);
    await manager.stop(row.id, 'stopped through the API');
    res.status(204).end();
  });

  app.post('/api/v1/sessions/:token/extend', async (req, res) => {
    const row = apiControl(req, req.params.token);
    const byS = (req.body as { byS?: unknown } | undefined)?.byS ?? config.sessions.extendStepS;
    const updated = await manager.extend(row.id, byS as number);
    res.json(sessionApiJson(updated, links(req, updated), 'control', deps.viewerCounts(row.id)));
  });

  app.post('/api/v1/sessions/:token/revoke', (req, res) => {
    const row = apiControl(req, req.params.token);
    const link = (req.body as { link?: unknown } | undefined)?.link;
    if (link !== 'control' && link !== 'view') throw new QwdError('QWD_BAD_REQUEST', `link must be "control" or "view", got ${describeValue(link)}`, { userMessage: 'link must be "control" or "view".' });
    const updated = manager.revokeLink(row.id, link);
    res.json(sessionApiJson(updated, links(req, updated), 'control', deps.viewerCounts(row.id)));
  });

  /**
   * What a viewer page offers: the clipboard directions the bridge lets this viewer use, and
   * resizing the desktop to the window where the machine's display follows it (virtio-vga;
   * QEMU answers "invalid screen layout" for std and qxl) and the viewer may change it.
   */
  function viewerDisplay(machine: string, access: LinkKind): ViewerDisplay {
    const remote = catalog.get(machine)?.display === 'virtio' && access === 'control';
    return { clipboard: deps.clipboardMode(machine, access), resize: remote ? 'remote' : 'scale' };
  }

  /** The control token of a desktop this request may change (owner, admin; link holder in open mode). */
  function apiControl(req: Request, token: string | string[] | undefined): SessionRow {
    const { row, access } = apiSession(manager, token);
    if (access !== 'control') throw new QwdError('QWD_FORBIDDEN', 'view-only token used for a change', { userMessage: 'A view-only link cannot change this desktop.' });
    if (!canManage(req, row, auth.open, true)) throw new QwdError('QWD_FORBIDDEN', `${req.identity?.user ?? 'anonymous'} may not change session ${row.id} of ${row.owner}`, { userMessage: 'Only the owner of this desktop (or an administrator) can change it.' });
    return row;
  }

  /** Like liveSession, but only those who may manage the desktop may change it. */
  function controlledRow(req: Request, res: Response): SessionRow | null {
    const found = liveSession(req, res);
    if (!found) return null;
    if (found.access !== 'control') {
      res.status(403).type('html').send(errorPage('Not allowed', 'A view-only link cannot change this desktop.'));
      return null;
    }
    if (!canManage(req, found.row, auth.open, true)) {
      res.status(403).type('html').send(errorPage('Not allowed', 'Only the owner of this desktop (or an administrator) can stop, extend or re-link it.', `/s/${found.row.token}`));
      return null;
    }
    return found.row;
  }

  /** Logged-in users create desktops in their own name (the typed name is ignored). */
  function withIdentity(req: Request, body: unknown): unknown {
    const who = req.identity;
    if (!who) return body;
    const b = { ...(body as Record<string, unknown>) };
    b.user = who.user;
    if (!b.email && who.email) b.email = who.email;
    return b;
  }

  /** The groups the auth backend vouched for (boot-script conditions); nothing from the request. */
  function identityGroups(req: Request): { groups: readonly string[] } {
    return { groups: req.identity?.groups ?? [] };
  }

  app.get('/healthz', (_req, res) => {
    res.set('Cache-Control', 'no-store').json({
      status: 'ok',
      version: deps.version,
      accelerator: { accel: deps.accel.accel, requested: deps.accel.requested, reason: deps.accel.reason },
      launcher: config.launcher,
      sessions: manager.liveCount(),
      machines: catalog.list().length,
      machineProblems: catalog.problems,
      uptimeS: Math.round((Date.now() - deps.startedAt) / 1000),
    });
  });

  app.use((req, res) => {
    if (req.path.startsWith('/api/')) res.status(404).json({ error: { code: 'QWD_NOT_FOUND', message: 'No such API endpoint.' } });
    else res.status(404).type('html').send(notFoundPage('There is no page here.'));
  });
  app.use(errorHandler(log));
  return app;
}

/**
 * Page loads by visitors with no login and no browser session cost nothing to
 * store, but still cost CPU: at most auth.rateLimit.anonymousPagesPerMinute
 * per client address. Static files, the API and /healthz are not pages.
 */
function limitAnonymousPages(limiter: AnonymousPageLimiter) {
  return (req: Request, res: Response, next: (err?: unknown) => void) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    if (req.identity || req.session?.sessionIds || /^\/(?:static|novnc|api|healthz|metrics|favicon\.ico)(?:\/|$)/.test(req.path)) return next();
    const admission = limiter.hit(req.ip ?? 'unknown');
    if (admission.allowed) return next();
    res.set('Retry-After', String(admission.retryAfterS));
    next(new QwdError('QWD_RATE_LIMITED', `anonymous page loads from ${req.ip ?? 'unknown'} over the limit`, { userMessage: `Too many page loads from your address. Try again in ${admission.retryAfterS} s.` }));
  };
}

function apiSession(manager: SessionManager, token: string | string[] | undefined): { row: SessionRow; access: LinkKind } {
  const found = manager.lookupToken(token);
  if (found.kind === 'live') return found;
  if (found.kind === 'ended' && found.ended.reason === 'revoked') throw new QwdError('QWD_SESSION_ENDED', `session ${found.ended.sessionId}: this link was revoked`, { userMessage: REVOKED_LINK_MESSAGE });
  if (found.kind === 'ended') throw new QwdError('QWD_SESSION_ENDED', `session ${found.ended.sessionId} ended: ${found.ended.reason}`, { userMessage: `This desktop has ended (${describeReason(found.ended.reason)}).` });
  throw new QwdError('QWD_SESSION_NOT_FOUND', 'unknown session token', { userMessage: 'No desktop has this token.' });
}

/** The API's session object; a view-only token sees only its own link. */
function sessionApiJson(row: SessionRow, l: SessionLinks, access: LinkKind, viewers: { control: number; view: number }) {
  const common = {
    id: row.id, access, state: row.state, machine: row.machine, cpus: row.cpus, memoryMiB: row.memoryMiB,
    createdAt: new Date(row.createdAt).toISOString(), expiresAt: new Date(row.expiresAt).toISOString(),
    viewers: viewers.control + viewers.view, viewOnlyViewers: viewers.view,
  };
  if (access === 'view') return { ...common, url: l.viewPage, viewerUrl: l.viewViewer, wsUrl: l.viewWs };
  return {
    ...common, token: row.token, owner: row.owner, oneShot: row.oneShot,
    url: l.page, viewerUrl: l.viewer, wsUrl: l.ws, viewUrl: l.viewPage, viewViewerUrl: l.viewViewer, viewWsUrl: l.viewWs,
  };
}

function qrSvg(text: string): Promise<string> {
  return QRCode.toString(text, { type: 'svg', margin: 1, errorCorrectionLevel: 'M' });
}

/** The form sends strings; only the known fields go on, validation happens in the manager. */
function formToRequest(body: unknown): Record<string, unknown> {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of ['machine', 'cpus', 'memoryMiB', 'lifetimeS', 'user', 'email', 'script', 'gpus']) if (b[key] !== undefined) out[key] = b[key];
  // An unchecked checkbox sends nothing: the form always says what it wants.
  out.oneShot = b.oneShot === 'on';
  return out;
}

function formValues(body: unknown): FormValues {
  const b = (body ?? {}) as Record<string, unknown>;
  const pick = (k: string) => (typeof b[k] === 'string' ? (b[k] as string).slice(0, 64) : undefined);
  return { machine: pick('machine'), cpus: pick('cpus'), memoryMiB: pick('memoryMiB'), lifetimeS: pick('lifetimeS'), user: pick('user'), email: pick('email'), oneShot: b.oneShot === 'on', gpus: b.gpus === '1' };
}

export function describeReason(reason: string): string {
  switch (reason) {
    case 'expired':
      return 'its life-time ran out';
    case 'stopping':
      return 'it is being stopped';
    default:
      return reason;
  }
}
