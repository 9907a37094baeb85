// Viewer name tickets: the viewer page (served to a logged-in browser) gets a
// short-lived HMAC-signed ticket naming the user; the bridge verifies it on
// the WebSocket so the session page can say who is connected. A ticket only
// labels a viewer; it grants nothing (the link token does).
import crypto from 'node:crypto';

const TTL_MS = 10 * 60 * 1000;

export function issueViewerTicket(secret: string, token: string, user: string, now = Date.now()): string {
  const payload = Buffer.from(JSON.stringify({ u: user, e: now + TTL_MS })).toString('base64url');
  return `${payload}.${sign(secret, token, payload)}`;
}

/** The user named by a valid, unexpired ticket for this link token, else null. */
export function readViewerTicket(
  secret: string, token: string, ticket: string | null, now = Date.now(),
): string | null {
  if (!ticket || ticket.length > 512) return null;
  const [payload, mac] = ticket.split('.');
  if (!payload || !mac) return null;
  const expected = Buffer.from(sign(secret, token, payload));
  const given = Buffer.from(mac);
  if (expected.length !== given.length || !crypto.timingSafeEqual(expected, given)) return null;
  try {
    const { u, e } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { u: unknown; e: unknown };
    return typeof u === 'string' && typeof e === 'number' && e > now ? u : null;
  } catch {
    return null;
  }
}

function sign(secret: string, token: string, payload: string): string {
  return crypto.createHmac('sha256', secret).update(`viewer:${token}:${payload}`).digest('base64url');
}
