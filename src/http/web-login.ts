// Who is logged in, from a raw Cookie header: for requests that do not go
// through Express (the WebSocket upgrade of /ws/<token>), so that
// auth.linksRequireLogin holds there too. Reads the express-session cookie
// the way express-session signs it ("s:" + id + "." + HMAC-SHA256 in base64
// without padding, the cookie-signature format) and the stored session.
// Also starting and ending a login in the browser session, the same for every
// way of logging in (password form, e-mail link, single sign-on): a new
// session id at login (no session fixation), the desktops made in this
// browser carried over; a logout that destroys the session and its cookie.
import crypto from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { SessionData } from 'express-session';
import type { AuthService } from '../auth/service.js';
import type { Identity } from '../auth/types.js';
import { SESSION_COOKIE, cookieValue } from './security.js';
import type { SqliteWebSessionStore } from './web-session-store.js';

/** The session id in a signed session cookie value, or null when the signature does not hold. */
export function unsignSessionId(raw: string, secret: string): string | null {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    // Not percent-decodable: not a cookie we set.
    return null;
  }
  if (!value.startsWith('s:') || value.length > 512) return null;
  const dot = value.lastIndexOf('.');
  if (dot < 3) return null;
  const sid = value.slice(2, dot);
  const mac = Buffer.from(value.slice(dot + 1));
  const expected = Buffer.from(crypto.createHmac('sha256', secret).update(sid).digest('base64').replace(/=+$/, ''));
  return mac.length === expected.length && crypto.timingSafeEqual(mac, expected) ? sid : null;
}

export function webLoginFromCookie(
  cookieHeader: string | undefined, secret: string, store: SqliteWebSessionStore, auth: AuthService,
): Identity | null {
  const raw = cookieValue(cookieHeader, SESSION_COOKIE);
  const sid = raw === null ? null : unsignSessionId(raw, secret);
  if (sid === null) return null;
  const data = store.read(sid);
  return data ? auth.currentIdentity(data.identity, data.loggedInAt) : null;
}

/**
 * Regenerates the browser session (the old id is no longer logged in: its row is destroyed), then stores the
 * identity, the login's start (it lasts auth.sessionTtlS from there, see identify()) and what the backend
 * keeps besides (`more`: e.g. the SSO tokens).
 */
export function startWebLogin(
  req: Request, identity: Identity, loggedInAt: number, more: Pick<SessionData, 'oidc' | 'oidcPending'> = {},
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const kept = req.session.sessionIds;
    req.session.regenerate((err) => {
      if (err) return reject(err);
      req.session.identity = identity;
      req.session.loggedInAt = loggedInAt;
      if (more.oidc) req.session.oidc = more.oidc;
      if (more.oidcPending?.length) req.session.oidcPending = more.oidcPending;
      req.session.sessionIds = kept;
      req.session.save((e) => (e ? reject(e) : resolve()));
    });
  });
}

/** Destroys the browser session and its cookie, then sends the browser `to`. */
export function endWebLogin(req: Request, res: Response, next: NextFunction, to: string): void {
  req.session.destroy((err) => {
    if (err) return next(err);
    res.clearCookie(SESSION_COOKIE);
    res.redirect(303, to);
  });
}
