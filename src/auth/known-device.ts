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
/** A mark is honoured this long after the login that issued it (checked here, not only by the cookie's expiry). */
export const KNOWN_DEVICE_MAX_AGE_S = 180 * 86400;
const DAY_MS = 86_400_000;

/** The mark for a login as `name` on `day` (days since the epoch): "<day>-<HMAC>", no name in it. */
export function deviceMark(secret: string, name: string, day: number): string {
  const mac = crypto.createHmac('sha256', secret).update(`known-device\u0000${name.trim().toLowerCase()}\u0000${day}`)
    .digest('base64url').slice(0, 22);
  return `${day}-${mac}`;
}

/** The marks in a cookie value (malformed parts ignored). */
export function readMarks(value: string | null): string[] {
  return (value ?? '').split('.').filter((m) => /^\d{1,7}-[A-Za-z0-9_-]{22}$/.test(m)).slice(0, MAX_NAMES);
}

/** The mark in `cookie` that is this name's and still young enough, or null. */
function markFor(secret: string, cookie: string | null, name: string, now: number): string | null {
  const today = Math.floor(now / DAY_MS);
  for (const m of readMarks(cookie)) {
    const day = Number(m.slice(0, m.indexOf('-')));
    if (day > today || (today - day) * 86400 > KNOWN_DEVICE_MAX_AGE_S) continue;
    const expected = Buffer.from(deviceMark(secret, name, day));
    if (expected.length === m.length && crypto.timingSafeEqual(Buffer.from(m), expected)) return m;
  }
  return null;
}

export function isKnownDevice(secret: string, cookie: string | null, name: string, now = Date.now()): boolean {
  return markFor(secret, cookie, name, now) !== null;
}

/**
 * The cookie value after a login as `name`: a fresh mark first, this name's older one and the oldest beyond MAX_NAMES
 * dropped.
 */
export function addMark(secret: string, cookie: string | null, name: string, now = Date.now()): string {
  const old = markFor(secret, cookie, name, now);
  const fresh = deviceMark(secret, name, Math.floor(now / DAY_MS));
  return [fresh, ...readMarks(cookie).filter((m) => m !== old && m !== fresh)].slice(0, MAX_NAMES).join('.');
}
