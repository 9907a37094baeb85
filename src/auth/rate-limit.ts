// Login rate limiting: after maxFailures failed logins within windowS, from
// one IP or for one user name, further attempts are refused until the oldest
// failure leaves the window. In memory (a restart forgets, on purpose: it
// is a brake on guessing, not an account lock).

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

  fail(keys: readonly string[]): void {
    const now = this.now();
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
