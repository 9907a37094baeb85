// Request security: who is asking (a login in the browser session, or an API
// token), CSRF protection for every state-changing request made with the
// browser's cookie, and the ownership rule for changing a desktop.
import crypto from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { QwdError } from '../errors.js';
import type { AuthService } from '../auth/service.js';
import type { Identity } from '../auth/types.js';
import type { SessionRow } from '../store/session-rows.js';

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
    /** The CSRF token of this browser session. */
    csrf?: string;
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
      if (!identity) return next(new QwdError('QWD_UNAUTHORIZED', 'unknown API token', { userMessage: 'This API token is not valid (revoked or mistyped).' }));
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

export function csrfToken(req: Request): string {
  req.session.csrf ??= crypto.randomBytes(24).toString('base64url');
  return req.session.csrf;
}

function same(a: unknown, b: string | undefined): boolean {
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
  return (cookieHeader ?? '').split(';').some((part) => part.trim().startsWith(`${SESSION_COOKIE}=`));
}

/**
 * Forms must carry the session's _csrf field. API calls that carry the
 * browser's session cookie must carry it in X-CSRF-Token — logged in or not:
 * with auth "none" the cookie itself holds rights (the desktops made in this
 * browser). API tokens (Authorization header) and cookie-less scripts need
 * none: a cross-site request cannot add either, so nothing ambient is abused.
 */
export function csrfProtect(req: Request, _res: Response, next: NextFunction): void {
  if (!UNSAFE.has(req.method) || req.viaBearer) return next();
  if (req.path.startsWith('/api/')) {
    if (!carriesSessionCookie(req.get('cookie'))) return next();
    if (same(req.get('x-csrf-token'), req.session.csrf)) return next();
    return next(new QwdError('QWD_CSRF', 'missing or wrong X-CSRF-Token on a cookie-authenticated API call', { userMessage: 'Missing or wrong X-CSRF-Token header.' }));
  }
  if (same((req.body as Record<string, unknown> | undefined)?._csrf, req.session.csrf)) return next();
  next(new QwdError('QWD_CSRF', `form POST to ${req.path} without a valid CSRF token`, { userMessage: 'This form has expired or did not come from this site. Go back, reload the page and try again.' }));
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

/**
 * May this request stop, extend or re-link this desktop? With real
 * authentication: its owner or an admin. With auth "none" nothing proves a
 * name, so holding the control link (or having created it in this browser) is
 * what counts.
 */
export function canManage(req: Request, row: SessionRow, open: boolean, heldControlLink: boolean): boolean {
  const who = req.identity;
  if (who && (who.admin || who.user === row.owner)) return true;
  if (!open) return false;
  return heldControlLink || (req.session.sessionIds ?? []).includes(row.id);
}
