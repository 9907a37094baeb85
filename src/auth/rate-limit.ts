// Login rate limiting: after maxFailures failed logins within windowS, from
// one IP or for one user name, further attempts are refused until the oldest
// failure leaves the window. In memory (a restart forgets, on purpose: it
// is a brake on guessing, not an account lock).
//
// A password check counts as a failure from the moment it starts (admit),
// and is forgiven if it succeeds or could not be made: checking the limit,
// awaiting the backends and only then recording the failure would let N
// concurrent guesses all pass the check (check-then-record race).

/** An admitted attempt: already counted, under these keys, at this time. */
export interface Attempt {
  readonly keys: readonly string[];
  readonly at: number;
}

export type Admission = { admitted: true; attempt: Attempt } | { admitted: false; retryAfterS: number };

export class LoginRateLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly maxFailures: number, private readonly windowS: number, private readonly now: () => number = Date.now) {}

  /** Seconds to wait before trying again, or 0 when allowed. */
  retryAfterS(keys: readonly string[]): number {
    const now = this.now();
    let wait = 0;
    for (const key of keys) {
      const recent = this.recent(key, now);
      if (recent.length >= this.maxFailures) wait = Math.max(wait, Math.ceil((recent[0]! + this.windowS * 1000 - now) / 1000));
    }
    return wait;
  }

  /**
   * Checks and counts in one step (no await in between): refused with the
   * wait, or admitted with the attempt already counted as a failure.
   */
  admit(keys: readonly string[]): Admission {
    const wait = this.retryAfterS(keys);
    if (wait > 0) return { admitted: false, retryAfterS: wait };
    const at = this.now();
    this.fail(keys, at);
    return { admitted: true, attempt: { keys, at } };
  }

  /** Takes back an admitted attempt (it succeeded, or no backend could check it). */
  forgive(attempt: Attempt): void {
    for (const key of attempt.keys) {
      const list = this.failures.get(key);
      const i = list ? list.indexOf(attempt.at) : -1;
      if (i < 0) continue;
      list!.splice(i, 1);
      if (list!.length === 0) this.failures.delete(key);
    }
  }

  fail(keys: readonly string[], now = this.now()): void {
    for (const key of keys) this.failures.set(key, [...this.recent(key, now), now]);
    // Many distinct names or addresses (a spray): drop what has left the window.
    if (this.failures.size > 10000) for (const key of [...this.failures.keys()]) this.recent(key, now);
  }

  succeed(keys: readonly string[]): void {
    for (const key of keys) if (key.startsWith('user:')) this.failures.delete(key);
  }

  private recent(key: string, now: number): number[] {
    const list = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowS * 1000);
    if (list.length) this.failures.set(key, list);
    else this.failures.delete(key);
    return list;
  }
}
