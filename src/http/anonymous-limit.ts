// A brake on page loads by visitors who are not logged in and hold no browser
// session: at most maxPerMinute per client address (req.ip, which honours
// trustProxy), counted in fixed one-minute windows. In memory and bounded: a
// spray of addresses cannot grow it past MAX_CLIENTS (the oldest windows go first).
// limitAnonymousPages is the middleware that applies it.
import type { NextFunction, Request, Response } from 'express';
import { clientKey } from '../auth/rate-limit.js';
import { QwdError } from '../errors.js';

const WINDOW_MS = 60_000;
const MAX_CLIENTS = 10_000;

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
    if (w.count >= this.maxPerMinute) {
      return { allowed: false, retryAfterS: Math.max(1, Math.ceil((w.startedAt + WINDOW_MS - now) / 1000)) };
    }
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

/**
 * Page loads by visitors with no login and no browser session cost nothing to
 * store, but still cost CPU: at most auth.rateLimit.anonymousPagesPerMinute
 * per client address. Static files, the API and /healthz are not pages.
 */
export function limitAnonymousPages(limiter: AnonymousPageLimiter) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const notPage = /^\/(?:static|novnc|api|healthz|metrics|favicon\.ico)(?:\/|$)/.test(req.path);
    if (req.identity || req.session?.sessionIds || notPage) return next();
    const admission = limiter.hit(req.ip ?? 'unknown');
    if (admission.allowed) return next();
    res.set('Retry-After', String(admission.retryAfterS));
    const userMessage = `Too many page loads from your address. Try again in ${admission.retryAfterS} s.`;
    const message = `anonymous page loads from ${req.ip ?? 'unknown'} over the limit`;
    next(new QwdError('QWD_RATE_LIMITED', message, { userMessage }));
  };
}
