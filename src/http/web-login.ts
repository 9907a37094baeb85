// Who is logged in, from a raw Cookie header: for requests that do not go
// through Express (the WebSocket upgrade of /ws/<token>), so that
// auth.linksRequireLogin holds there too. Reads the express-session cookie
// the way express-session signs it ("s:" + id + "." + HMAC-SHA256 in base64
// without padding, the cookie-signature format) and the stored session.
import crypto from 'node:crypto';
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
