// Login rate limiting, keyed so that a stranger cannot lock a user out.
// Failures are counted under three keys (loginKeys), each with its own limit
// within windowS:
//   - the pair (name, client address): the tight one (maxFailures);
//   - the client address: maxFailuresPerClient (one address guessing many names);
//   - the name from any address: maxFailuresPerName, much higher — a slower
//     global back-off against guessing one name from many addresses.
// So an attacker who fails five times with a victim's name from their own
// address is stopped, while the victim, from theirs, still logs in; only an
// attacker with many addresses reaches the per-name limit. In memory (a
// restart forgets, on purpose: a brake on guessing, not an account lock).
//
// A password check counts as a failure from the moment it starts (admit),
// and is forgiven if it succeeds or could not be made: checking the limit,
// awaiting the backends and only then recording the failure would let N
// concurrent guesses all pass the check (check-then-record race).

export interface LoginLimits {
  /** Failures per (name, client address). */
  maxFailures: number;
  maxFailuresPerClient: number;
  maxFailuresPerName: number;
  windowS: number;
}

/** A counter and the number of failures it allows within the window. */
export interface LimitKey {
  readonly key: string;
  readonly max: number;
}

/**
 * The keys one attempt is counted under (names compared case-insensitively).
 * A browser known to have logged in as this name before (auth/known-device.ts)
 * is not held back by the per-name key, so strangers reaching it from many
 * addresses never lock the user's own browser out.
 */
export function loginKeys(
  limits: LoginLimits, name: string, client: string, opts: { knownDevice?: boolean } = {},
): LimitKey[] {
  const n = name.trim().toLowerCase();
  const c = clientKey(client);
  const keys = [
    { key: `pair:${n}\u0000${c}`, max: limits.maxFailures },
    { key: `client:${c}`, max: limits.maxFailuresPerClient },
  ];
  return opts.knownDevice ? keys : [...keys, { key: `name:${n}`, max: limits.maxFailuresPerName }];
}

/**
 * One client for the limits: an IPv4 address, or an IPv6 address's /64 (one
 * host usually gets a whole /64, so counting single IPv6 addresses would give
 * an attacker unlimited tries). IPv4-mapped IPv6 counts as its IPv4 address.
 */
export function clientKey(address: string): string {
  const a = address.trim().toLowerCase();
  if (a.startsWith('::ffff:') && a.includes('.')) return a.slice(7);
  if (!a.includes(':')) return a;
  const [head = '', tail] = a.split('::');
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail ? tail.split(':') : [];
  const words = tail === undefined ? left : [
    ...left, ...new Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right
  ];
  return `${words.slice(0, 4).map((w) => (parseInt(w, 16) || 0).toString(16)).join(':')}::/64`;
}

/** An admitted attempt: already counted, under these keys, at this time. */
export interface Attempt {
  readonly keys: readonly LimitKey[];
  readonly at: number;
}

export type Admission = { admitted: true; attempt: Attempt } | { admitted: false; retryAfterS: number };

export class LoginRateLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly windowS: number, private readonly now: () => number = Date.now) {}

  /** Seconds to wait before trying again, or 0 when allowed. */
  retryAfterS(keys: readonly LimitKey[]): number {
    const now = this.now();
    let wait = 0;
    for (const { key, max } of keys) {
      const recent = this.recent(key, now);
      // The wait lasts until enough failures have left the window to be under the limit.
      if (recent.length >= max) {
        wait = Math.max(wait, Math.ceil((recent[recent.length - max]! + this.windowS * 1000 - now) / 1000));
      }
    }
    return wait;
  }

  /**
   * Checks and counts in one step (no await in between): refused with the
   * wait, or admitted with the attempt already counted as a failure.
   */
  admit(keys: readonly LimitKey[]): Admission {
    const wait = this.retryAfterS(keys);
    if (wait > 0) return { admitted: false, retryAfterS: wait };
    const at = this.now();
    this.fail(keys, at);
    return { admitted: true, attempt: { keys, at } };
  }

  /** Takes back an admitted attempt (it succeeded, or no backend could check it). */
  forgive(attempt: Attempt): void {
    for (const { key } of attempt.keys) {
      const list = this.failures.get(key);
      const i = list ? list.indexOf(attempt.at) : -1;
      if (i < 0) continue;
      list!.splice(i, 1);
      if (list!.length === 0) this.failures.delete(key);
    }
  }

  fail(keys: readonly LimitKey[], now = this.now()): void {
    for (const { key } of keys) this.failures.set(key, [...this.recent(key, now), now]);
    // Many distinct names or addresses (a spray): drop what has left the window.
    if (this.failures.size > 10000) for (const key of [...this.failures.keys()]) this.recent(key, now);
  }

  /** A successful login clears what was counted against the name (not against the address). */
  succeed(keys: readonly LimitKey[]): void {
    for (const { key } of keys) if (!key.startsWith('client:')) this.failures.delete(key);
  }

  private recent(key: string, now: number): number[] {
    const list = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowS * 1000);
    if (list.length) this.failures.set(key, list);
    else this.failures.delete(key);
    return list;
  }
}
