// Who did a thing, as the audit trail records it (events.actor). A user is
// their user name as the login backend vouched for it; everything else is a
// word with a colon, which no user name can contain (auth/types.ts USER_NAME),
// so `qwdctl audit --user purge` never mixes a person with the purge job.
// Also the one place text that came from outside is made fit for a row:
// bounded and with control characters escaped (no terminal escapes through
// `qwdctl audit`, no forged lines in a log collector).

import type { EndReason } from '../store/end-reason.js';
import { describeValue } from '../describe-value.js';

export const ACTORS = {
  /** The purge job (expiry, dead VMs, abandoned starts and stops, retention). */
  purge: 'system:purge',
  /** A one-shot desktop whose last viewer left. */
  oneShot: 'system:one-shot',
  /** The VM itself: a power-off inside the guest, a crash, a scheduler's time limit. */
  vm: 'system:vm',
  /** The broker on its own account (a failed start, the reconciliation after a restart). */
  broker: 'system:broker',
  /** The idle-balloon policy. */
  balloon: 'system:balloon',
  /** An administrator at qwdctl (through the admin socket, or on the store when no broker runs). */
  qwdctl: 'cli:qwdctl',
  /** A visitor who is not logged in (a site without login: the name they typed is the session's owner). */
  anonymous: 'web:anonymous',
  /** Whoever holds a desktop's control link, not logged in. */
  controlLink: 'link:control',
  /** Whoever holds a desktop's view-only link, not logged in. */
  viewLink: 'link:view',
} as const;

/** C0 and C1 controls, DEL, and the Unicode line and paragraph separators. */
const UNSAFE_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** Longest text kept from outside (a typed user name, a machine name as asked). */
export const MAX_TEXT = 64;

/**
 * Text from outside, fit for an audit row: at most `max` characters (then "…"), control characters and the
 * Unicode line/paragraph separators written as \uXXXX. Not a secret filter: callers never pass secrets.
 */
export function boundedText(value: unknown, max = MAX_TEXT): string {
  // Not String(value): an array nested 10,000 deep overflows the stack there (describe-value.ts).
  const text = typeof value === 'string' ? value : describeValue(value, max);
  const cut = text.length > max ? text.slice(0, max) + '…' : text;
  return cut.replace(UNSAFE_CHARS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Who acts through a web request: the logged-in user, else the link they hold, else an anonymous visitor. */
export function webActor(identity: { user: string } | null | undefined, link?: 'control' | 'view'): string {
  if (identity) return identity.user;
  if (link === 'control') return ACTORS.controlLink;
  if (link === 'view') return ACTORS.viewLink;
  return ACTORS.anonymous;
}

/** Who ended a session: the one who asked (EndReason.actor), else whoever each end code stands for. */
export function endActor(end: EndReason): string {
  if (end.actor) return end.actor;
  switch (end.code) {
    case 'expired':
    case 'start-abandoned':
    case 'stop-abandoned':
      return ACTORS.purge;
    case 'one-shot':
      return ACTORS.oneShot;
    case 'vm-exited':
      return ACTORS.vm;
    default:
      return ACTORS.broker;
  }
}
