// Why a session ended, as a typed code plus the words its tombstone shows. The
// code is what code decides on (a revoked link is not an ended desktop; an
// expired one is "its life-time ran out"); the detail is what people read
// (who stopped it, what the launcher said about an exit). Stored together in
// the tombstone (store/session-rows.ts), sent with the manager's 'ending' and
// 'ended' events, never matched as text.

export const END_CODES = [
  /** Stopped on request: by its owner, an administrator, the API or qwdctl (the detail says who). */
  'stopped',
  /** Its life-time ran out (the purge job stopped it). */
  'expired',
  /** A one-shot desktop whose last viewer left and did not come back within the grace period. */
  'one-shot',
  /** The VM ended by itself: a power-off inside, a crash, a scheduler's time limit (the detail says which). */
  'vm-exited',
  /** The VM never became ready (the detail carries the launcher's message for users). */
  'launch-failed',
  /** A start that its writer abandoned (a broker or qwdctl that died while starting it). */
  'start-abandoned',
  /** A stop that its writer abandoned (the purge job finished it). */
  'stop-abandoned',
  /** The VM had ended while no broker ran (found at the next start). */
  'ended-while-down',
  /** A VM still running after a restart that could not be adopted (it is stopped). */
  'reconciled',
  /** Not an end of the desktop: this one link was replaced by a new one. */
  'revoked',
  /** Not ended yet: being stopped (its links already answer as ended). */
  'stopping',
] as const;

export type EndCode = typeof END_CODES[number];

export interface EndReason {
  readonly code: EndCode;
  /** In words, for tombstones, logs and the operator's side of messages. */
  readonly detail: string;
  /** Who ended it, for the audit trail (audit/actor.ts); absent: the code's own actor (endActor). */
  readonly actor?: string;
}

/** What each code says when nothing more precise is known (also what older tombstones stored as their only text). */
const DEFAULT_DETAIL: Record<EndCode, string> = {
  stopped: 'stopped',
  expired: 'expired',
  'one-shot': 'one-shot desktop: its last viewer left',
  'vm-exited': 'the virtual machine stopped',
  'launch-failed': 'failed to start',
  'start-abandoned': 'start-abandoned',
  'stop-abandoned': 'stop-abandoned',
  'ended-while-down': 'the virtual machine ended while the service was down',
  reconciled: 'reconciled after restart',
  revoked: 'revoked',
  stopping: 'stopping',
};

export function endReason(code: EndCode, detail?: string, actor?: string): EndReason {
  const end = { code, detail: detail ?? DEFAULT_DETAIL[code] };
  return actor === undefined ? end : { ...end, actor };
}

/** An end reason in words for the user ("This desktop has ended (its life-time ran out)"). */
export function describeEnd(end: EndReason): string {
  switch (end.code) {
    case 'expired':
      return 'its life-time ran out';
    case 'stopping':
      return 'it is being stopped';
    default:
      return end.detail;
  }
}

/**
 * A tombstone as stored. Migration 9 gave older tombstones their code; a code this version does not know (a newer
 * broker's, after a downgrade) reads as a stop on request, its words kept and shown as they were.
 */
export function storedEnd(code: string | null, detail: string): EndReason {
  return { code: code && (END_CODES as readonly string[]).includes(code) ? code as EndCode : 'stopped', detail };
}
