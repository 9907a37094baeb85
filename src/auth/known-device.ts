// "Known device" marks for the login throttle (OWASP's device cookies): a browser
// that logged in as a name before carries a signed mark for that name, and its
// attempts for that name are not held back by the per-name limit that many
// addresses together can reach. So a stranger who fails a victim's name from many
// addresses slows down every other guesser, never the victim's own browser.
// Pure: an HMAC of the lowercased name under the broker's secret; the cookie
// holds at most MAX_NAMES marks (names are never stored in it).
import crypto from 'node:crypto';

export const KNOWN_DEVICE_COOKIE = 'qwd.known';
const MAX_NAMES = 5;
/** A mark stays valid this long after the last login with it. */
export const KNOWN_DEVICE_MAX_AGE_S = 180 * 86400;

export function deviceMark(secret: string, name: string): string {
  return crypto.createHmac('sha256', secret).update(`known-device\u0000${name.trim().toLowerCase()}`).digest('base64url').slice(0, 22);
}

/** The marks in a cookie value (malformed parts ignored). */
export function readMarks(value: string | null): string[] {
  return (value ?? '').split('.').filter((m) => /^[A-Za-z0-9_-]{22}$/.test(m)).slice(0, MAX_NAMES);
}

export function isKnownDevice(secret: string, cookie: string | null, name: string): boolean {
  const mark = Buffer.from(deviceMark(secret, name));
  return readMarks(cookie).some((m) => crypto.timingSafeEqual(Buffer.from(m), mark));
}

/** The cookie value after a login as `name`: its mark first, the oldest dropped beyond MAX_NAMES. */
export function addMark(secret: string, cookie: string | null, name: string): string {
  const mark = deviceMark(secret, name);
  return [mark, ...readMarks(cookie).filter((m) => m !== mark)].slice(0, MAX_NAMES).join('.');
}
