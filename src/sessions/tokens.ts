// Session tokens: 256 random bits (crypto.randomBytes), base64url. Looked up by
// their SHA-256 (so the database index never sees a secret-dependent prefix
// walk) and compared in constant time.
import crypto from 'node:crypto';

export const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function newToken(): string {
  return crypto.randomBytes(32).toString('base64url');
}

/** Session ids name run dirs and QEMU processes; they are not secrets. */
export function newSessionId(): string {
  return crypto.randomBytes(6).toString('hex');
}

export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('hex');
}

export function tokensEqual(a: string, b: string): boolean {
  const ba = Buffer.from(a);
  const bb = Buffer.from(b);
  return ba.length === bb.length && crypto.timingSafeEqual(ba, bb);
}

export function isWellFormedToken(value: unknown): value is string {
  return typeof value === 'string' && TOKEN_PATTERN.test(value);
}
