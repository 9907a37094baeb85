// Single sign-on over HTTP: the "Log in with <label>" form posts to
// /auth/oidc/<name>/login (rate-limited per client address), which keeps state,
// nonce and PKCE verifier in the browser session (by state: a few login tabs at
// once) and sends the browser to the provider; the provider sends it back to
// /auth/oidc/<name>/callback, which uses them once. Also the re-check
// of an SSO login on each web request (oidcRecheck) and the logout that goes
// on to the provider's end_session_endpoint. Decisions are in auth/oidc/.
import { Router, type NextFunction, type Request, type Response } from 'express';
import type { Identity } from '../../auth/types.js';
import type { Attempt } from '../../auth/rate-limit.js';
import type { PendingChecks } from '../../auth/oidc/provider-client.js';
import { OidcLogins, PENDING_TTL_MS, type OidcLoginState } from '../../auth/oidc/service.js';
import { safeRedirectPath, sameSecret } from '../security.js';
import { endWebLogin, startWebLogin } from '../web-login.js';
import type { RouteKit } from '../deps.js';
import type { AuthService } from '../../auth/service.js';
import { errorPage, loginPage } from '../views.js';

declare module 'express-session' {
  interface SessionData {
    /**
     * Single sign-on logins under way (one per login tab, oldest first, at most MAX_PENDING): each used once by
     * the callback that brings its state back.
     */
    oidcPending?: PendingStart[];
    /** A single sign-on login: its tokens and last check (never sent to the browser). */
    oidc?: OidcLoginState;
  }
}

interface PendingStart extends PendingChecks {
  backend: string;
  next: string;
  startedAt: number;
  /** The start as the rate limiter counted it: forgiven when it logs in. */
  counted: Attempt | null;
}

/** Login starts kept per browser session (several tabs); a new one beyond drops the oldest. */
export const MAX_PENDING = 5;

export function oidcRoutes(deps: { auth: AuthService; now: () => number }, logins: OidcLogins, kit: RouteKit): Router {
  const { auth, now } = deps;
  const router = Router();

  router.post('/auth/oidc/:name/login', async (req, res, next) => {
    const name = req.params.name!;
    if (!logins.has(name)) return res.status(404).type('html').send(errorPage('Not found', 'No such login.', '/login'));
    const target = safeRedirectPath((req.body as Record<string, unknown> | undefined)?.next);
    const again = (status: number, error: string) => res.status(status).type('html').send(loginPage(
      kit.page(req, res),
      { password: auth.hasPasswordLogin, email: auth.emailBackend !== null, sso: auth.singleSignOn, error,
        next: target },
    ));
    // Each start writes a browser-session row: a client that keeps pressing is held back before anything is stored.
    const admission = auth.admitSingleSignOnStart(req.ip ?? 'unknown');
    if (!admission.admitted) {
      logins.reportLogin({
        backend: name, outcome: 'failed', user: null, detail: 'login start rate limited', failure: 'rate-limited',
      });
      res.set('Retry-After', String(admission.retryAfterS));
      return again(429, `Too many logins started. Try again in ${admission.retryAfterS} s.`);
    }
    let start;
    try {
      start = await logins.begin(name);
    } catch {
      // Reported by begin(); the visitor sees the login page again, with the other ways to log in. Nobody was
      // sent to the provider: the start does not count against the client.
      auth.forgiveSingleSignOnStart(admission.attempt);
      return again(503, `Single sign-on with ${logins.label(name)} is unavailable right now. Please try again later` +
        (auth.hasPasswordLogin ? ', or log in with your user name and password.' : '.'));
    }
    const startedAt = now();
    const pending = pendingStarts(req).filter((p) => startedAt - p.startedAt <= PENDING_TTL_MS);
    pending.push({ backend: name, ...start.checks, next: target, startedAt, counted: admission.attempt });
    req.session.oidcPending = pending.slice(-MAX_PENDING);
    req.session.save((err) => (err ? next(err) : res.redirect(303, start.url)));
  });

  router.get('/auth/oidc/:name/callback', async (req, res, next) => {
    const name = req.params.name!;
    if (!logins.has(name)) return res.status(404).type('html').send(errorPage('Not found', 'No such login.', '/login'));
    const starts = pendingStarts(req);
    const state = typeof req.query.state === 'string' ? req.query.state : '';
    const pending = starts.find((p) => sameSecret(state, p.state));
    // Single use: whatever happens next, this login start is spent. A state that matches none of them (forged,
    // or from another browser) spends them all: a start whose callback may have been seen by someone else is
    // not kept for later.
    const left = pending ? starts.filter((p) => p !== pending) : [];
    if (left.length) req.session.oidcPending = left;
    else delete req.session.oidcPending;
    if (!pending && starts.length > 0) {
      logins.reportLogin({ backend: name, outcome: 'failed', user: null, detail: 'callback with a wrong state' });
      return notCompleted(res, 400, 'This login did not start in this browser, or has expired. Please log in again.');
    }
    if (!pending || pending.backend !== name || now() - pending.startedAt > PENDING_TTL_MS) {
      logins.reportLogin({ backend: name, outcome: 'failed', user: null,
        detail: pending ? 'callback after the login start expired' : 'callback without a login start (reused?)' });
      return notCompleted(res, 400, 'This login link was already used or has expired. Please log in again.');
    }
    const search = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?')) : '';
    const done = await logins.complete(name, search, pending);
    if (!done.ok) return notCompleted(res, done.status, done.message, done.title);
    try {
      // The tabs' other login starts are kept in the new session (its id changes, its content stays ours).
      await startWebLogin(req, done.identity, auth.loginStartedAt(), { oidc: done.state, oidcPending: left });
    } catch (err) {
      return next(err);
    }
    if (pending.counted) auth.forgiveSingleSignOnStart(pending.counted);
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
    endWebLogin(req, res, next, to ?? '/login');
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

/**
 * Reads the session again after another request's re-check. A concurrent request may have destroyed it meanwhile
 * (logout): express-session's reload then fails ("failed to load session"); this request goes on as logged out,
 * in a fresh empty session (the old object, still logged in, would be written back by express-session's touch at
 * the end of the request and undo the logout).
 */
async function reload(req: Request): Promise<void> {
  const found = await new Promise<boolean>((resolve) => req.session.reload((err) => resolve(!err)));
  if (!found) {
    await new Promise<void>((resolve, reject) => req.session.regenerate((err) => (err ? reject(err) : resolve())));
    req.identity = null;
    return;
  }
  const state = req.session.oidc;
  if (!req.session.identity || !state) req.identity = null;
  else req.identity = req.session.identity;
}

/** The login starts kept in this browser session (a single object, as kept before tabs were, counts as none). */
function pendingStarts(req: Request): PendingStart[] {
  const kept: unknown = req.session.oidcPending;
  return Array.isArray(kept) ? (kept as PendingStart[]) : [];
}

function notCompleted(res: Response, status: number, message: string, title = 'Login not completed'): void {
  res.status(status).type('html').send(errorPage(title, message, '/login'));
}
