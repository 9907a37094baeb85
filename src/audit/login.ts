// Login attempts in the audit trail: the one function every login path calls
// (the password chain and e-mail links in auth/service.ts; single sign-on's
// events through fromOidcEvent, wired in http/app.ts). The user name is kept as typed, bounded and
// escaped (boundedText), but for a failed attempt only if it could be a user name (USER_NAME): a password typed into
// the name field is not kept (reason 'malformed-name'); a password, a code or a token is never an argument.
import type { SessionRows } from '../store/session-rows.js';
import { ACTORS, boundedText } from './actor.js';
import type { LoginEvent } from '../auth/oidc/service.js';
import { USER_NAME } from '../auth/types.js';

export type LoginResult =
  /** The backend vouched for the user. */
  | 'success'
  /** Wrong credentials, an unknown user, an unusable or used link, a provider's refusal. */
  | 'failure'
  /** Refused before any backend was asked: too many failures (auth.rateLimit). */
  | 'rate-limited'
  /** No backend could be asked (server down): nobody checked anything. */
  | 'unavailable'
  /** The user logged out (kind 'logout'). */
  | 'logout'
  /** The broker ended a login its provider no longer vouches for (kind 'login-ended'). */
  | 'ended';

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
  // What nobody vouched for may be anything typed into the name field, a password included: kept only if it has the
  // shape of a user name. A name a backend or a provider vouched for (success, logout, ended) is kept as it is.
  const vouched = attempt.result === 'success' || attempt.result === 'logout' || attempt.result === 'ended';
  const malformed = !vouched && attempt.user !== null && !USER_NAME.test(attempt.user);
  const user = attempt.user === null || malformed ? null : boundedText(attempt.user);
  const detail: Record<string, unknown> = { backend: boundedText(attempt.backend), result: attempt.result };
  if (attempt.ip) detail.ip = boundedText(attempt.ip, 64);
  if (malformed) detail.reason = 'malformed-name';
  else if (attempt.reason) detail.reason = boundedText(attempt.reason, 32);
  const kind = attempt.result === 'logout' ? 'logout' : attempt.result === 'ended' ? 'login-ended' : 'login';
  const actor = attempt.result === 'ended' ? ACTORS.broker
    : (attempt.result === 'success' || attempt.result === 'logout') && user ? user : ACTORS.anonymous;
  rows.audit(null, kind, detail, now, { actor, owner: user });
}

/**
 * A single sign-on event (auth/oidc/service.ts) as a login attempt: accepted, refused (allowedGroups, no usable
 * name), failed (provider down, wrong state, replayed code, expired ID token), a logout, a login a re-check ended.
 * A re-check that could not reach the provider ('kept-unreachable') changes nothing and is not recorded. The event's
 * detail is operator text (the provider's words): only its outcome is kept.
 */
export function fromOidcEvent(event: LoginEvent): LoginAttempt | null {
  const base = { backend: event.backend, user: event.user };
  switch (event.outcome) {
    case 'accepted': return { ...base, result: 'success' };
    case 'refused': return { ...base, result: 'failure', reason: 'refused' };
    case 'failed': return { ...base, result: 'failure', reason: 'provider' };
    case 'logout': return { ...base, result: 'logout' };
    case 'ended': return { ...base, result: 'ended' };
    default: return null;
  }
}
