// Login attempts in the audit trail: the one function every login path calls
// (the password chain and e-mail links in auth/service.ts; an OpenID Connect
// callback calls it the same way). The user name is kept as typed, bounded and
// escaped (boundedText); a password, a code or a token is never an argument.
import type { SessionRows } from '../store/session-rows.js';
import { ACTORS, boundedText } from './actor.js';

export type LoginResult =
  /** The backend vouched for the user. */
  | 'success'
  /** Wrong credentials, an unknown user, an unusable or used link, a provider's refusal. */
  | 'failure'
  /** Refused before any backend was asked: too many failures (auth.rateLimit). */
  | 'rate-limited'
  /** No backend could be asked (server down): nobody checked anything. */
  | 'unavailable';

export interface LoginAttempt {
  /** The backend's configured name (auth.backends[].name), or "password" when the whole chain refused. */
  backend: string;
  /** The user name as typed (or as the provider or link named it); null when none is known. */
  user: string | null;
  result: LoginResult;
  /** The client's address as the broker sees it (trustProxy applied). */
  ip?: string;
  /** A short reason code for a failure (e.g. "invalid", "groups", "state"), never the backend's message. */
  reason?: string;
}

/**
 * Records one login attempt: kind 'login'; the actor is the user on success (who logged in), else an anonymous
 * visitor; the owner is the account it was for, so `qwdctl audit --user alice` lists the failures against alice.
 */
export function recordLoginAttempt(rows: SessionRows, attempt: LoginAttempt, now: number): void {
  const user = attempt.user === null ? null : boundedText(attempt.user);
  const detail: Record<string, unknown> = { backend: boundedText(attempt.backend), result: attempt.result };
  if (attempt.ip) detail.ip = boundedText(attempt.ip, 64);
  if (attempt.reason) detail.reason = boundedText(attempt.reason, 32);
  rows.audit(null, 'login', detail, now, {
    actor: attempt.result === 'success' && user ? user : ACTORS.anonymous, owner: user,
  });
}
