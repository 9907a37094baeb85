// A brake on page loads by visitors who are not logged in and hold no browser
// session: at most maxPerMinute per client address (req.ip, which honours
// trustProxy), counted in fixed one-minute windows. In memory and bounded: a
// spray of addresses cannot grow it past MAX_CLIENTS (the oldest windows go first).

const WINDOW_MS = 60_000;
const MAX_CLIENTS = 10_000;

import { clientKey } from '../auth/rate-limit.js';
export type PageAdmission = { allowed: true } | { allowed: false; retryAfterS: number };

export class AnonymousPageLimiter {
  private readonly windows = new Map<string, { startedAt: number; count: number }>();

  /** maxPerMinute 0: no limit. */
  constructor(private readonly maxPerMinute: number, private readonly now: () => number = Date.now) {}

  /** Counts one page load by this client and says whether it may be served. */
  hit(address: string): PageAdmission {
    const client = clientKey(address); // an IPv6 /64 is one client
    if (this.maxPerMinute === 0) return { allowed: true };
    const now = this.now();
    let w = this.windows.get(client);
    if (!w || now - w.startedAt >= WINDOW_MS) {
      w = { startedAt: now, count: 0 };
      this.windows.delete(client);
      this.windows.set(client, w);
      this.evict(now);
    }
    if (w.count >= this.maxPerMinute) return { allowed: false, retryAfterS: Math.max(1, Math.ceil((w.startedAt + WINDOW_MS - now) / 1000)) };
    w.count++;
    return { allowed: true };
  }

  get size(): number {
    return this.windows.size;
  }

  private evict(now: number): void {
    if (this.windows.size <= MAX_CLIENTS) return;
    // Map order is insertion order: the first entries are the oldest windows.
    for (const [client, w] of this.windows) {
      if (this.windows.size <= MAX_CLIENTS && now - w.startedAt < WINDOW_MS) break;
      this.windows.delete(client);
    }
  }
}
