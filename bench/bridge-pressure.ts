// Measurement 4: does the web server stay fast while the bridge inside the
// broker runs flat out? The real broker session of the throughput rig (its
// guest paused, its VNC socket pointed at the fake VNC source, see
// bridge-throughput.ts) is read by N viewers at once — byte counters in one
// reader process (throughput-reader.ts, readMany), each upgraded through the
// broker's /ws/<token> and streaming the unthrottled source — so the bridge
// moves as much as the host lets it. Over the same window, http-probe.ts sends
// GET /healthz and GET /api/v1/sessions/<token> (the session being streamed) on
// a fixed schedule and times every answer. The same probe runs first with no
// viewer, for the baseline. Every process is fresh and on 127.0.0.1.
import path from 'node:path';
import { ROOT } from '../test/helpers/env.js';
import type { Cleanup } from './cleanup.js';
import type { BrokerProcess } from './broker-process.js';
import type { ThroughputRig } from './bridge-throughput.js';
import { probeHttp, summarizeProbe, type ProbeSummary } from './http-probe.js';
import { readVmRssKiB, spawnTracked, waitForLine } from './processes.js';
import type { ManyResult, ReaderJob } from './throughput-reader.js';

export interface PressureResult {
  viewers: number;
  windowS: number;
  intervalMs: number;
  /** HTTP latency with the broker idle (no viewer), then while the viewers stream. */
  idle: ProbeSummary[];
  loaded: ProbeSummary[];
  /** What the viewers read together over the window, and the slowest and fastest viewer. */
  mbPerS: number;
  perViewerMbPerS: { min: number; max: number };
  brokerCpuPct: number;
  readerCpuPct: number;
  sourceCpuPct: number;
  /** Broker VmRSS in the middle of the window. */
  brokerRssKiB: number;
}

const TSX = ['--import', 'tsx'];

export async function measurePressure(
  cleanup: Cleanup, rig: ThroughputRig, broker: BrokerProcess,
  opts: { viewers: number; windowMs: number; intervalMs: number; warmUpMs?: number },
): Promise<PressureResult> {
  const paths = ['/healthz', `/api/v1/sessions/${rig.brokerSession.token}`];
  const label = (p: string) => (p === '/healthz' ? 'GET /healthz' : 'GET /api/v1/sessions/<token>');
  const idle = summarizeProbe(await probeHttp(broker.url, paths, { intervalMs: opts.intervalMs, durationMs: opts.windowMs }), paths, label);

  const job: ReaderJob = {
    kind: 'raw-ws', target: rig.relays.broker.wsUrl, connections: opts.viewers, windowMs: opts.windowMs, warmUpMs: opts.warmUpMs ?? 1000,
    sourcePid: rig.source.pid, relay: { pid: broker.pid, group: false },
  };
  const reader = spawnTracked(cleanup, `pressure reader (${opts.viewers} viewers)`, process.execPath, [...TSX, path.join(ROOT, 'bench', 'throughput-reader-main.ts'), JSON.stringify(job)], { cwd: ROOT });
  const ended = waitForLine(reader, /^\{"ok":.*\}$/, opts.windowMs + job.warmUpMs + 60000, 'the pressure reader');
  ended.catch(() => {}); // Awaited below; a rejection meanwhile must not count as unhandled.
  const windowStart = waitForLine(reader, /^\{"windowStart":true\}$/, job.warmUpMs + 30000, 'the pressure reader\'s window');
  windowStart.catch(() => {}); // When the reader ends first, `ended` says why.
  const endedFirst = await Promise.race([windowStart.then(() => null), ended]);
  if (endedFirst) throw new Error(`bridge under pressure: the reader ended before its window began: ${endedFirst[0]}`);
  // The probe ends a little before the readers' window does, so every request it times was sent under load.
  let rssKiB = 0;
  const rssTimer = setTimeout(() => {
    rssKiB = readVmRssKiB(broker.pid) ?? 0;
  }, opts.windowMs / 2);
  const loaded = summarizeProbe(await probeHttp(broker.url, paths, { intervalMs: opts.intervalMs, durationMs: opts.windowMs - 300 }), paths, label);
  clearTimeout(rssTimer);
  const line = await ended;
  await reader.exited;
  const answer = JSON.parse(line[0]) as { ok: true; result: ManyResult } | { ok: false; error: string };
  if (!answer.ok) throw new Error(`bridge under pressure: ${answer.error}`);
  const r = answer.result;
  const pct = (cpuMs: number) => cpuMs / 10 / r.seconds;
  const perViewer = r.perConnectionBytes.map((b) => b / 1e6 / r.seconds);
  return {
    viewers: opts.viewers, windowS: r.seconds, intervalMs: opts.intervalMs, idle, loaded,
    mbPerS: r.bytes / 1e6 / r.seconds, perViewerMbPerS: { min: Math.min(...perViewer), max: Math.max(...perViewer) },
    brokerCpuPct: pct(r.relayCpuMs ?? 0), readerCpuPct: pct(r.readerCpuMs), sourceCpuPct: pct(r.sourceCpuMs),
    brokerRssKiB: rssKiB || (readVmRssKiB(broker.pid) ?? 0),
  };
}
