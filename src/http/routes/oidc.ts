// Single sign-on over HTTP: the "Log in with <label>" form posts to
// /auth/oidc/<name>/login, which keeps state, nonce and PKCE verifier in the
// browser session and sends the browser to the provider; the provider sends it
// back to /auth/oidc/<name>/callback, which uses them once. Also the re-check
// of an SSO login on each web request (oidcRecheck) and the logout that goes
// on to the provider's end_session_endpoint. Decisions are in auth/oidc/.
import crypto from 'node:crypto';
import { Router, type NextFunction, type Request, type Response } from 'express';
import type { Identity } from '../../auth/types.js';
import type { PendingChecks } from '../../auth/oidc/provider-client.js';
import { OidcLogins, PENDING_TTL_MS, type OidcLoginState } from '../../auth/oidc/service.js';
import { SESSION_COOKIE, safeRedirectPath } from '../security.js';
import type { RouteKit } from '../deps.js';
import type { AuthService } from '../../auth/service.js';
import { errorPage, loginPage } from '../views.js';

declare module 'express-session' {
  interface SessionData {
    /** A single sign-on login under way: used once by its callback. */
    oidcPending?: PendingChecks & { backend: string; next: string; startedAt: number };
    /** A single sign-on login: its tokens and last check (never sent to the browser). */
    oidc?: OidcLoginState;
  }
}

export function oidcRoutes(deps: { auth: AuthService; now: () => number }, logins: OidcLogins, kit: RouteKit): Router {
  const { auth, now } = deps;
  const router = Router();

  router.post('/auth/oidc/:name/login', async (req, res, next) => {
    const name = req.params.name!;
    if (!logins.has(name)) return res.status(404).type('html').send(errorPage('Not found', 'No such login.', '/login'));
    const target = safeRedirectPath((req.body as Record<string, unknown> | undefined)?.next);
    let start;
    try {
      start = await logins.begin(name);
    } catch {
      // Reported by begin(); the visitor sees the login page again, with the other ways to log in.
      const error = `Single sign-on with ${logins.label(name)} is unavailable right now. Please try again later` +
        (auth.hasPasswordLogin ? ', or log in with your user name and password.' : '.');
      return res.status(503).type('html').send(loginPage(kit.page(req, res), {
        password: auth.hasPasswordLogin, email: auth.emailBackend !== null, sso: auth.singleSignOn, error,
        next: target,
      }));
    }
    req.session.oidcPending = { backend: name, ...start.checks, next: target, startedAt: now() };
    req.session.save((err) => (err ? next(err) : res.redirect(303, start.url)));
  });

  router.get('/auth/oidc/:name/callback', async (req, res, next) => {
    const name = req.params.name!;
    if (!logins.has(name)) return res.status(404).type('html').send(errorPage('Not found', 'No such login.', '/login'));
    const pending = req.session.oidcPending;
    // Single use: whatever happens next, this login start is spent.
    delete req.session.oidcPending;
    const state = typeof req.query.state === 'string' ? req.query.state : '';
    if (!pending || pending.backend !== name || now() - pending.startedAt > PENDING_TTL_MS) {
      logins.reportLogin({ backend: name, outcome: 'failed', user: null,
        detail: pending ? 'callback after the login start expired' : 'callback without a login start (reused?)' });
      return notCompleted(res, 400, 'This login link was already used or has expired. Please log in again.');
    }
    if (!sameText(state, pending.state)) {
      logins.reportLogin({ backend: name, outcome: 'failed', user: null, detail: 'callback with a wrong state' });
      return notCompleted(res, 400, 'This login did not start in this browser, or has expired. Please log in again.');
    }
    const search = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?')) : '';
    const done = await logins.complete(name, search, pending);
    if (!done.ok) return notCompleted(res, done.status, done.message, done.title);
    try {
      await startLogin(req, done.identity, done.state, auth.loginStartedAt());
    } catch (err) {
      return next(err);
    }
    res.redirect(303, pending.next);
  });

  // Before the password logout (routes/login.ts): an SSO login also ends at its provider when it offers that.
  router.post('/logout', async (req, res, next) => {
    const state = req.session.oidc;
    if (!state || !req.session.identity) return next();
    const user = req.session.identity.user;
    let to: string | null = null;
    try {
      to = await logins.logoutUrl(state, user);
    } catch {
      // No logout URL can be built (the provider is unreachable): the broker's own logout still happens.
      to = null;
    }
    req.session.destroy((err) => {
      if (err) return next(err);
      res.clearCookie(SESSION_COOKIE);
      res.redirect(303, to ?? '/login');
    });
  });

  return router;
}

/**
 * Re-checks an SSO login with its provider when its last check is older than the backend's recheckS
 * (after identify(), before the routes): a login the provider no longer vouches for ends here, so the
 * request goes on as not logged in (a page sends to /login, the API answers 401).
 */
export function oidcRecheck(logins: OidcLogins) {
  const running = new Map<string, Promise<void>>();
  return async (req: Request, _res: Response, next: NextFunction): Promise<void> => {
    const state = req.session?.oidc;
    if (req.viaBearer || !state) return next();
    // The login ended otherwise (auth.sessionTtlS, see identify()): its tokens go with it.
    if (!req.identity || req.identity.via !== state.backend) {
      delete req.session.oidc;
      return next();
    }
    // One re-check per browser session at a time: concurrent requests wait for it.
    const sid = req.sessionID;
    let check = running.get(sid);
    if (!check) {
      check = applyRecheck(logins, req, req.identity, state).finally(() => running.delete(sid));
      running.set(sid, check);
      await check;
    } else {
      await check;
      // The first request decided (and saved) for the session; this one follows the same outcome.
      await reload(req);
    }
    next();
  };
}

async function applyRecheck(logins: OidcLogins, req: Request, identity: Identity, state: OidcLoginState) {
  const decision = await logins.recheck(identity, state);
  if (decision.action === 'keep') return;
  if (decision.action === 'update') {
    req.session.identity = decision.identity;
    req.session.oidc = decision.state;
    req.identity = decision.identity;
  } else {
    // The browser session stays (its CSRF token, the desktops made in it); the login does not.
    delete req.session.identity;
    delete req.session.loggedInAt;
    delete req.session.oidc;
    req.identity = null;
  }
  await new Promise<void>((resolve, reject) => req.session.save((err) => (err ? reject(err) : resolve())));
}

async function reload(req: Request): Promise<void> {
  await new Promise<void>((resolve, reject) => req.session.reload((err) => (err ? reject(err) : resolve())));
  const state = req.session.oidc;
  if (!req.session.identity || !state) req.identity = null;
  else req.identity = req.session.identity;
}

/** A new browser session id at login (no fixation), then the identity and the SSO state. */
function startLogin(req: Request, identity: Identity, state: OidcLoginState, loggedInAt: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const kept = req.session.sessionIds;
    req.session.regenerate((err) => {
      if (err) return reject(err);
      req.session.identity = identity;
      req.session.loggedInAt = loggedInAt;
      req.session.oidc = state;
      req.session.sessionIds = kept;
      req.session.save((e) => (e ? reject(e) : resolve()));
    });
  });
}

function notCompleted(res: Response, status: number, message: string, title = 'Login not completed'): void {
  res.status(status).type('html').send(errorPage(title, message, '/login'));
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}
