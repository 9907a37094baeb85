// HTTP latency as a browser would see it while something else loads the
// broker: GET requests sent on a fixed schedule (open loop: a slow answer does
// not delay the next request, so a stalled event loop shows in every request
// sent during the stall instead of hiding behind one — no "coordinated
// omission"), over keep-alive connections, each timed from the moment it is
// sent until the last byte of its body. Not a load generator: one request every
// few milliseconds, which costs the broker little.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { percentile } from './stats.js';

export interface ProbeSample {
  /** Index into the probed paths. */
  target: number;
  latencyMs: number;
  /** HTTP status, or 0 when the request failed or timed out. */
  status: number;
}

export interface ProbeSummary {
  path: string;
  n: number;
  p50: number;
  p99: number;
  max: number;
  /** Answers that were not 200, failures and timeouts (counted in the percentiles at their full wait). */
  errors: number;
}

/**
 * Sends GET baseUrl + paths[i] round-robin, one every intervalMs, for durationMs,
 * and waits for the last answers (each bounded by timeoutMs).
 */
export async function probeHttp(baseUrl: string, paths: string[], opts: { intervalMs: number; durationMs: number; timeoutMs?: number }): Promise<ProbeSample[]> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const samples: ProbeSample[] = [];
  const pending: Array<Promise<void>> = [];
  const one = (target: number) => new Promise<void>((resolve) => {
    const sentAt = performance.now();
    let done = false;
    const record = (status: number) => {
      if (done) return;
      done = true;
      samples.push({ target, latencyMs: performance.now() - sentAt, status });
      resolve();
    };
    const req = http.get(baseUrl + paths[target], { agent, headers: { accept: 'application/json' }, timeout: timeoutMs }, (res) => {
      res.on('data', () => {});
      res.on('end', () => record(res.statusCode ?? 0));
      res.on('error', () => record(0));
    });
    req.on('timeout', () => {
      req.destroy();
      record(0);
    });
    req.on('error', () => record(0));
  });
  const start = performance.now();
  for (let i = 0; ; i++) {
    const due = start + i * opts.intervalMs;
    if (due - start >= opts.durationMs) break;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(one(i % paths.length));
  }
  await Promise.all(pending);
  agent.destroy();
  return samples;
}

export function summarizeProbe(samples: ProbeSample[], paths: string[], label: (path: string) => string = (p) => p): ProbeSummary[] {
  return paths.map((p, i) => {
    const of = samples.filter((s) => s.target === i);
    const sorted = of.map((s) => s.latencyMs).sort((a, b) => a - b);
    if (!sorted.length) throw new Error(`no answer was timed for ${p}`);
    return {
      path: label(p), n: of.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1]!,
      errors: of.filter((s) => s.status !== 200).length,
    };
  });
}
