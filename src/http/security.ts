// Request security: who is asking (a login in the browser session, or an API
// token), CSRF protection for every state-changing request made with the
// browser's cookie, and sending to the login page. Who may change a desktop is
// the session-access policy (session-access.ts).
import crypto from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { QwdError } from '../errors.js';
import type { AuthService } from '../auth/service.js';
import type { Identity } from '../auth/types.js';

declare module 'express-session' {
  interface SessionData {
    /** Ids of the desktops created from this browser. */
    sessionIds?: string[];
    /** The name typed in the form (auth "none"), offered again next time. */
    userName?: string;
    /** Who logged in (password backends, e-mail link). */
    identity?: Identity;
    /** When they logged in (ms since the epoch): the login ends auth.sessionTtlS later. */
    loggedInAt?: number;
  }
}

declare module 'express-serve-static-core' {
  interface Request {
    identity?: Identity | null;
    /** Authenticated by an API token, not by a cookie (so no CSRF token needed). */
    viaBearer?: boolean;
  }
}

export function identify(auth: AuthService) {
  return (req: Request, _res: Response, next: NextFunction) => {
    const header = req.get('authorization');
    if (header?.startsWith('Bearer ')) {
      const identity = auth.identityForApiToken(header.slice(7).trim());
      if (!identity) {
        const userMessage = 'This API token is not valid (revoked or mistyped).';
        return next(new QwdError('QWD_UNAUTHORIZED', 'unknown API token', { userMessage }));
      }
      req.identity = identity;
      req.viaBearer = true;
    } else {
      req.identity = auth.currentIdentity(req.session.identity, req.session.loggedInAt);
      req.viaBearer = false;
      if (!req.identity && req.session.identity) {
        // Expired, or its account is gone: the browser session stays (its CSRF
        // token, the desktops made in it), the login does not.
        delete req.session.identity;
        delete req.session.loggedInAt;
      }
    }
    next();
  };
}

/** The cookie that carries an anonymous visitor's CSRF token (the double-submit half). */
export const CSRF_COOKIE = 'qwd.csrf';

/**
 * Stateless CSRF tokens (no server-side row for anyone; OWASP "signed
 * double-submit cookie"): `<nonce>.<mac>`, both 43 base64url characters, the
 * MAC an HMAC-SHA256 with the broker's secret (kept 0600 in the state dir).
 *
 * - Logged in: the MAC covers the browser session id, so a token is good for
 *   that login only, like the per-session token stored before; no cookie of its
 *   own is needed (the session cookie is httpOnly and unknown to other sites).
 * - Not logged in: the MAC covers the nonce only, and the same token must also
 *   come back in the qwd.csrf cookie (httpOnly, SameSite=Lax), which another
 *   site can neither read nor set: nothing is stored for the visitor.
 */
export class CsrfTokens {
  constructor(private readonly secret: string) {}

  issue(binding: string | null): string {
    const nonce = crypto.randomBytes(32).toString('base64url');
    return `${nonce}.${this.mac(binding, nonce)}`;
  }

  /** Is this a token this broker made for this binding (a session id, or null for anonymous)? */
  valid(token: unknown, binding: string | null): token is string {
    if (typeof token !== 'string' || token.length !== 87) return false;
    const [nonce, mac] = token.split('.');
    if (!nonce || !mac || !/^[A-Za-z0-9_-]{43}$/.test(nonce)) return false;
    return sameSecret(mac, this.mac(binding, nonce));
  }

  private mac(binding: string | null, nonce: string): string {
    const scope = binding === null ? 'anonymous' : `session:${binding}`;
    return crypto.createHmac('sha256', this.secret).update(`csrf\0${scope}\0${nonce}`).digest('base64url');
  }
}

/** The session id a logged-in request's CSRF token is bound to; null for anyone not logged in. */
function csrfBinding(req: Request): string | null {
  return req.session?.identity ? req.sessionID : null;
}

/** The value of one of our cookies in a Cookie header (RFC 6265 section 5.4), or null. */
export function cookieValue(cookieHeader: string | undefined, name: string): string | null {
  for (const part of (cookieHeader ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * The CSRF token for the page being rendered. Anonymous visitors keep the
 * token of their qwd.csrf cookie while it is valid, or get a new one with the
 * cookie; nothing touches req.session (so no row is written for them).
 */
export function csrfToken(req: Request, res: Response, tokens: CsrfTokens): string {
  const binding = csrfBinding(req);
  if (binding !== null) return tokens.issue(binding);
  const held = cookieValue(req.get('cookie'), CSRF_COOKIE);
  if (tokens.valid(held, null)) return held;
  const token = tokens.issue(null);
  res.cookie(CSRF_COOKIE, token, { httpOnly: true, sameSite: 'lax', secure: req.secure, path: '/' });
  return token;
}

/** Two secrets (tokens, MACs, OAuth state) compared in constant time; anything but a string is never equal. */
export function sameSecret(a: unknown, b: string | undefined): boolean {
  if (typeof a !== 'string' || !b) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The browser session cookie's name (the `name` given to express-session in app.ts). */
export const SESSION_COOKIE = 'qwd.sid';

/** Does the request carry the browser session cookie (whether or not anyone is logged in)? */
export function carriesSessionCookie(cookieHeader: string | undefined): boolean {
  return cookieValue(cookieHeader, SESSION_COOKIE) !== null;
}

/** Does the request carry any cookie of ours (it comes from a browser that visited us)? */
function carriesOurCookie(cookieHeader: string | undefined): boolean {
  return carriesSessionCookie(cookieHeader) || cookieValue(cookieHeader, CSRF_COOKIE) !== null;
}

/**
 * A submitted token is good for this request (see CsrfTokens): one bound to
 * this browser session (also after its login expired: it still proves the page
 * came from us to this browser); or, for anyone not logged in, an anonymous
 * token that matches their qwd.csrf cookie.
 */
function tokenAccepted(req: Request, submitted: unknown, tokens: CsrfTokens): boolean {
  if (req.sessionID && tokens.valid(submitted, req.sessionID)) return true;
  if (csrfBinding(req) !== null || !tokens.valid(submitted, null)) return false;
  return sameSecret(submitted, cookieValue(req.get('cookie'), CSRF_COOKIE) ?? undefined);
}

/**
 * Forms must carry a valid _csrf field. API calls that carry one of our
 * cookies must carry it in X-CSRF-Token — logged in or not: with auth "none"
 * the session cookie itself holds rights (the desktops made in this browser).
 * API tokens (Authorization header) and cookie-less scripts need none: a
 * cross-site request cannot add either, so nothing ambient is abused.
 */
export function csrfProtect(tokens: CsrfTokens) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    if (!UNSAFE.has(req.method) || req.viaBearer) return next();
    if (req.path.startsWith('/api/')) {
      if (!carriesOurCookie(req.get('cookie'))) return next();
      if (tokenAccepted(req, req.get('x-csrf-token'), tokens)) return next();
      const message = 'missing or wrong X-CSRF-Token on a cookie-authenticated API call';
      return next(new QwdError('QWD_CSRF', message, { userMessage: 'Missing or wrong X-CSRF-Token header.' }));
    }
    if (tokenAccepted(req, (req.body as Record<string, unknown> | undefined)?._csrf, tokens)) return next();
    const userMessage = 'This form has expired or did not come from this site. Go back, reload the page and try again.';
    next(new QwdError('QWD_CSRF', `form ${req.method} to ${req.path} without a valid CSRF token`, { userMessage }));
  };
}

/**
 * Where to send the browser after a login: `next` when it is a path on this
 * site, else "/". Browsers read `\` as `/` and drop tabs and newlines inside
 * URLs (WHATWG URL: "special" schemes), so `/\evil.com` and `/\t/evil.com`
 * are both `//evil.com` to them: a network-path reference to another host.
 * Accept only one leading `/`, no backslash, no control or space characters,
 * and a path that resolves against a dummy origin without leaving it.
 */
export function safeRedirectPath(next: unknown): string {
  if (typeof next !== 'string' || next.length === 0 || next.length > 2048) return '/';
  if (!next.startsWith('/') || next.startsWith('//')) return '/';
  // \s covers the Unicode spaces too; \p{Cc} every C0/C1 control character.
  if (/[\\\s\p{Cc}]/u.test(next)) return '/';
  try {
    if (new URL(next, 'http://x').origin !== 'http://x') return '/';
  } catch {
    // Not parseable as a URL reference at all: not a place to send anyone.
    return '/';
  }
  return next;
}

/** Sends the browser to log in, and back here afterwards. */
export function sendToLogin(req: Request, res: Response): void {
  res.redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}`);
}

/** Pages that need a login when authentication is configured (auth.open: nobody logs in). */
export function requireLogin(open: boolean) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (open || req.identity) next();
    else sendToLogin(req, res);
  };
}
