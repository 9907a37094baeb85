// Measurement 4: scale — N sessions and 2N viewers on one broker (issue 13).
// The broker runs as its own process (broker-process.ts) with the
// firmware-only `blank` machine (SeaBIOS finds no bootable disk and waits,
// showing text; no guest network, so no NIC ROM and no per-guest network
// namespace) at the smallest memory a request may ask (64 MiB), each guest
// paused (QMP `stop`) 2 s after its batch was created: 100 of them fit this
// host's memory (QEMU's RSS is what SeaBIOS touched, not 64 MiB) and, paused,
// leave its 2 CPUs to the broker — 100 running TCG guests would take most of
// a core between them, and the latencies would measure that. What is measured
// is the broker's cost, not the guests'. A paused guest's screen is still, so
// the viewers' incremental requests wait; the bytes they move are the full
// frames they ask for at a fixed rate.
//
// Two sweeps, each a least-squares line over four points, and then a stop:
//   1. sessions 0, N/4, N/2, N with no viewer: the broker's RSS, file
//      descriptors and CPU per session (sessions created `createConcurrency`
//      at a time, each by a different user, as a class would);
//   2. N sessions, viewers on 0, N/4, N/2, N of them — two each, one control
//      link and one view-only link — reading frames (scale-viewers.ts, in a
//      process of their own): RSS, descriptors and CPU per viewer;
//   3. under full load, session N+1 created (POST → 201 → first frame), then
//      deleted, then all N stopped at once (N DELETEs in parallel).
// At every point, after a settle time, over a fixed window: the broker's CPU
// (/proc/<pid>/stat, all its threads), VmRSS and open descriptors; every
// QEMU's CPU, RSS and descriptors; GET /healthz and GET /api/v1/sessions/<token>
// timed one after the other every probeIntervalMs from this process (which
// does little else); and the broker's own event-loop delay, which /healthz
// reports per 10 s window (src/http/event-loop-delay.ts) — the windows lying
// wholly inside the measuring window are kept.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ROOT, pidsMentioning } from '../test/helpers/env.js';
import { connectRfb } from '../test/helpers/rfb-client.js';
import { qemuProcessName } from '../src/qemu/argv.js';
import { QmpClient } from '../src/qemu/qmp-client.js';
import { vmPaths } from '../src/launcher/local.js';
import type { Cleanup } from './cleanup.js';
import type { BrokerProcess } from './broker-process.js';
import { createSession, deleteSession, type CreatedSession, type Healthz } from './api.js';
import { countFds, processCpuMs, readStatusKiB, readVmRssKiB, spawnTracked, type Tracked } from './processes.js';
import { startPressureWatch } from './host-info.js';
import { median, summarize, type Summary } from './stats.js';
import type { ViewerSpec, ViewerTotals } from './scale-viewers.js';

export interface ScaleOptions {
  machine: string;
  sessions: number;
  memoryMiB: number;
  windowMs: number;
  settleMs: number;
  fullFrameEveryMs: number;
  createConcurrency: number;
  probeIntervalMs: number;
  /** Where the broker keeps its sessions' run dirs (to tell its QEMUs from others on the host). */
  runDir: string;
  log: (line: string) => void;
}

export interface Spread {
  min: number;
  median: number;
  max: number;
}

export interface ScalePoint {
  sessions: number;
  viewers: number;
  windowS: number;
  brokerRssKiB: number;
  brokerFds: number;
  brokerCpuMs: number;
  /** The broker's CPU over the window, in % of one core. */
  brokerCpuPct: number;
  /** All the sessions' QEMUs together, % of one core. */
  qemuCpuPct: number;
  qemuRssKiB: Spread | null;
  qemuFds: Spread | null;
  viewersCpuPct: number | null;
  /** What the viewers received over the window: RFB bytes and completed FramebufferUpdates. */
  viewerBytes: number;
  viewerUpdates: number;
  healthz: Summary;
  sessionGet: Summary | null;
  /** The broker's event-loop delay over the /healthz windows wholly inside this window (worst of them). */
  loop: { windows: number; p50Ms: number; p99Ms: number; maxMs: number } | null;
  load1: number;
  cpuPressurePct: number | null;
}

export interface ScaleResult {
  machine: string;
  sessions: number;
  memoryMiB: number;
  windowS: number;
  settleS: number;
  fullFrameEveryS: number;
  createConcurrency: number;
  probeIntervalMs: number;
  /** POST → 201 of the N sessions, created createConcurrency at a time. */
  createMs: Summary;
  sessionPoints: ScalePoint[];
  viewerPoints: ScalePoint[];
  /** Viewer connect → end of its first full update. */
  viewerFirstFrameMs: Summary | null;
  viewerFailures: string[];
  viewersClosedUnexpectedly: number;
  viewerErrors: string[];
  /** Session N+1 under full load. */
  extra: { readyMs: number; firstFrameMs: number; deleteMs: number };
  stopAll: { wallMs: number; perDeleteMs: Summary };
  after: { brokerRssKiB: number; brokerFds: number; brokerPeakKiB: number; qemusLeft: number };
}

/** A well-formed session token (43 base64url characters) that no session has. */
const UNKNOWN_TOKEN = 'A'.repeat(43);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs fn over items, at most `concurrency` at a time; resolves with the results in order. */
async function inParallel<T, R>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}

function spread(values: number[]): Spread | null {
  return values.length ? { min: Math.min(...values), median: median(values), max: Math.max(...values) } : null;
}

/** The 4 points of a sweep: 0, n/4, n/2, n (fewer when n is small and they coincide). */
export function sweepPoints(n: number): number[] {
  return [...new Set([0, Math.round(n / 4), Math.round(n / 2), n])];
}

/** PIDs of the QEMUs of these sessions, found by their -name (qwd-<id>) in one pass over /proc. */
function findQemus(sessionIds: readonly string[]): Map<string, number> {
  const wanted = new Map(sessionIds.map((id) => [qemuProcessName(id), id]));
  const found = new Map<string, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // It ended while we looked.
    }
    if (!path.basename(argv[0] ?? '').startsWith('qemu-system')) continue;
    const i = argv.indexOf('-name');
    const id = i >= 0 ? wanted.get(argv[i + 1]!.split(',')[0]!) : undefined;
    if (id) found.set(id, Number(entry));
  }
  return found;
}

/** QMP `stop` on a session's QEMU (a second QMP client beside the broker's; the broker's state stays running). */
async function pauseGuest(runDir: string, sessionId: string): Promise<void> {
  const qmp = await QmpClient.connect(vmPaths(path.join(runDir, sessionId)).qmpSocket, { timeoutMs: 10000 });
  try {
    await qmp.execute('stop');
  } finally {
    qmp.close();
  }
}

/** The viewers' process and its JSON-lines protocol (scale-viewers-main.ts). */
interface ViewerProcess {
  tracked: Tracked;
  connect(viewers: ViewerSpec[], timeoutMs: number): Promise<{ firstFrameMs: number[]; failures: string[] }>;
  totals(): Promise<ViewerTotals>;
  expectClose(): Promise<void>;
  closeAll(): Promise<void>;
}

function startViewerProcess(cleanup: Cleanup, fullFrameEveryMs: number): ViewerProcess {
  const pending = new Map<number, { resolve: (body: Record<string, unknown>) => void; reject: (err: Error) => void }>();
  let nextId = 1;
  const tracked = spawnTracked(cleanup, 'scale viewers', process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'scale-viewers-main.ts'), String(fullFrameEveryMs)], {
    cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'],
    onLine: (stream, line) => {
      if (stream !== 'stdout') return;
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // Not an answer: kept in tracked.stdout for error messages.
      }
      const waiter = pending.get(body.id as number);
      if (!waiter) return;
      pending.delete(body.id as number);
      if (body.ok) waiter.resolve(body);
      else waiter.reject(new Error(`scale viewers: ${String(body.error)}`));
    },
  });
  // exited never rejects.
  void tracked.exited.then(({ code, signal }) => {
    for (const w of pending.values()) w.reject(new Error(`the scale viewers' process exited (${signal ?? `code ${code}`}): ${tracked.stderr.slice(-10).join('\n')}`));
    pending.clear();
  });
  const request = (cmd: Record<string, unknown>, timeoutMs: number) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const id = nextId++;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`scale viewers: no answer to ${String(cmd.op)} within ${timeoutMs} ms`));
    }, timeoutMs);
    pending.set(id, {
      resolve: (b) => { clearTimeout(timer); resolve(b); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    });
    tracked.child.stdin!.write(JSON.stringify({ id, ...cmd }) + '\n');
  });
  return {
    tracked,
    connect: async (viewers, timeoutMs) => {
      const body = await request({ op: 'connect', viewers, concurrency: 8, timeoutMs }, timeoutMs * viewers.length + 10000);
      return { firstFrameMs: body.firstFrameMs as number[], failures: body.failures as string[] };
    },
    totals: async () => (await request({ op: 'totals' }, 10000)).totals as ViewerTotals,
    expectClose: async () => void (await request({ op: 'expect-close' }, 10000)),
    closeAll: async () => void (await request({ op: 'close' }, 10000)),
  };
}

async function timed(url: string): Promise<{ ms: number; status: number; text: string }> {
  const t0 = performance.now();
  const res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(30000) });
  const text = await res.text();
  return { ms: performance.now() - t0, status: res.status, text };
}

export async function measureScale(cleanup: Cleanup, broker: BrokerProcess, opts: ScaleOptions): Promise<ScaleResult> {
  const log = opts.log;
  const live = new Map<string, CreatedSession>();
  // On failure or Ctrl-C: every session still running is DELETEd (then the broker is stopped, then the safety net).
  const unregisterDeletes = cleanup.add('DELETE the scale sessions', async () => {
    await inParallel([...live.values()], 10, (s) => deleteSession(broker.url, s.token));
  });
  const viewers = startViewerProcess(cleanup, opts.fullFrameEveryMs);
  let qemus = new Map<string, number>();

  const brokerRss = () => {
    const kib = readVmRssKiB(broker.pid);
    if (kib === null) throw new Error(`the broker (pid ${broker.pid}) is gone: ${broker.tracked.stderr.slice(-10).join('\n')}`);
    return kib;
  };

  /** Waits settleMs, then measures over windowMs with `sessions` running and `viewerCount` viewers reading. */
  const measurePoint = async (viewerCount: number): Promise<ScalePoint> => {
    await sleep(opts.settleMs);
    const tokens = [...live.values()].map((s) => s.token);
    const qemuPids = [...qemus.values()];
    const qemuCpu = () => qemuPids.reduce((sum, pid) => sum + processCpuMs(pid), 0);
    const watch = startPressureWatch();
    const totals0 = await viewers.totals();
    const start = { at: performance.now(), epoch: Date.now(), broker: processCpuMs(broker.pid), qemu: qemuCpu(), viewers: processCpuMs(viewers.tracked.pid) };
    const health: number[] = [];
    const sessionGet: number[] = [];
    // RSS moves with the garbage collector by several MiB: the median of a reading per probe, not one reading.
    const rss: number[] = [];
    const loopWindows = new Map<string, Healthz['eventLoopDelay']>();
    const end = start.at + opts.windowMs;
    for (let tick = 0; performance.now() < end; tick++) {
      const h = await timed(`${broker.url}/healthz`);
      if (h.status !== 200) throw new Error(`GET /healthz answered ${h.status}: ${h.text.slice(0, 300)}`);
      health.push(h.ms);
      const loop = (JSON.parse(h.text) as Healthz).eventLoopDelay;
      if (loop.endedAt) loopWindows.set(loop.endedAt, loop);
      // With no session, a token nobody holds (404): the broker answers as many requests at every point,
      // so the CPU slope per session is not the probes' cost. Only the 200s are reported.
      const token = tokens.length ? tokens[tick % tokens.length]! : UNKNOWN_TOKEN;
      const s = await timed(`${broker.url}/api/v1/sessions/${token}`);
      if (s.status !== (tokens.length ? 200 : 404)) throw new Error(`GET /api/v1/sessions/<token> answered ${s.status}: ${s.text.slice(0, 300)}`);
      if (tokens.length) sessionGet.push(s.ms);
      rss.push(brokerRss());
      const nextAt = start.at + (tick + 1) * opts.probeIntervalMs;
      const wait = nextAt - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const seconds = (performance.now() - start.at) / 1000;
    const endEpoch = Date.now();
    const brokerCpuMs = processCpuMs(broker.pid) - start.broker;
    const qemuCpuMs = qemuCpu() - start.qemu;
    const viewersCpuMs = processCpuMs(viewers.tracked.pid) - start.viewers;
    const totals1 = await viewers.totals();
    const pressure = watch();
    const inside = [...loopWindows.values()].filter((w) => {
      const endedAt = Date.parse(w.endedAt!);
      return endedAt - w.windowS * 1000 >= start.epoch - 100 && endedAt <= endEpoch;
    });
    return {
      sessions: live.size, viewers: viewerCount, windowS: seconds,
      brokerRssKiB: median(rss), brokerFds: countFds(broker.pid) ?? 0,
      brokerCpuMs, brokerCpuPct: (brokerCpuMs / 10) / seconds,
      qemuCpuPct: (qemuCpuMs / 10) / seconds,
      qemuRssKiB: spread(qemuPids.map((pid) => readVmRssKiB(pid) ?? 0)),
      qemuFds: spread(qemuPids.map((pid) => countFds(pid) ?? 0)),
      viewersCpuPct: viewerCount ? (viewersCpuMs / 10) / seconds : null,
      viewerBytes: totals1.bytes - totals0.bytes, viewerUpdates: totals1.updates - totals0.updates,
      healthz: summarize(health), sessionGet: sessionGet.length ? summarize(sessionGet) : null,
      loop: inside.length ? {
        windows: inside.length, p50Ms: Math.max(...inside.map((w) => w.p50Ms)),
        p99Ms: Math.max(...inside.map((w) => w.p99Ms)), maxMs: Math.max(...inside.map((w) => w.maxMs)),
      } : null,
      load1: os.loadavg()[0]!, cpuPressurePct: pressure.pct,
    };
  };
  const describe = (p: ScalePoint) => `broker RSS ${(p.brokerRssKiB / 1024).toFixed(1)} MiB, ${p.brokerFds} fds, CPU ${p.brokerCpuPct.toFixed(1)} %; ` +
    `QEMUs ${p.qemuCpuPct.toFixed(0)} %; /healthz p50 ${p.healthz.p50.toFixed(1)} / p99 ${p.healthz.p99.toFixed(1)} ms` +
    (p.sessionGet ? `, session GET p50 ${p.sessionGet.p50.toFixed(1)} / p99 ${p.sessionGet.p99.toFixed(1)} ms` : '') +
    (p.loop ? `; loop delay p99 ${p.loop.p99Ms} ms (max ${p.loop.maxMs} ms)` : '; no complete loop-delay window') +
    (p.viewers ? `; viewers got ${(p.viewerBytes / p.windowS / 1e6).toFixed(1)} MB/s, ${(p.viewerUpdates / p.windowS).toFixed(0)} updates/s` : '');

  // 1. Sessions, no viewers.
  const steps = sweepPoints(opts.sessions);
  const created: CreatedSession[] = [];
  const createMs: number[] = [];
  const sessionPoints: ScalePoint[] = [];
  for (const target of steps) {
    const batch = Array.from({ length: target - created.length }, (_, k) => created.length + k);
    await inParallel(batch, opts.createConcurrency, async (i) => {
      const t0 = performance.now();
      const s = await createSession(broker.url, { machine: opts.machine, cpus: 1, memoryMiB: opts.memoryMiB, lifetimeS: 3600, user: `scale-${String(i + 1).padStart(3, '0')}` });
      createMs.push(performance.now() - t0);
      live.set(s.id, s);
      created[i] = s;
    });
    // SeaBIOS has drawn its text by then (≈ 0.1 s under TCG on a quiet host); then the guests sleep for good.
    await sleep(2000);
    await inParallel(batch, 8, (i) => pauseGuest(opts.runDir, created[i]!.id));
    qemus = findQemus(created.map((s) => s.id));
    if (qemus.size !== created.length) throw new Error(`found ${qemus.size} QEMU processes for ${created.length} sessions`);
    log(`  ${target} sessions: measuring ${opts.windowMs / 1000} s…`);
    const p = await measurePoint(0);
    sessionPoints.push(p);
    log(`  ${target} sessions, no viewer: ${describe(p)}`);
  }

  // 2. All sessions, viewers on a growing share of them.
  const viewerPoints: ScalePoint[] = [sessionPoints[sessionPoints.length - 1]!];
  const firstFrameMs: number[] = [];
  const viewerFailures: string[] = [];
  let watched = 0;
  for (const target of steps.slice(1)) {
    const specs = created.slice(watched, target).flatMap((s) => [
      { name: `${s.id} control`, url: s.wsUrl },
      { name: `${s.id} view-only`, url: s.viewWsUrl },
    ]);
    const got = await viewers.connect(specs, 30000);
    firstFrameMs.push(...got.firstFrameMs);
    viewerFailures.push(...got.failures);
    watched = target;
    log(`  ${target * 2} viewers connected${got.failures.length ? ` (${got.failures.length} failed: ${got.failures[0]})` : ''}; measuring ${opts.windowMs / 1000} s…`);
    const p = await measurePoint(target * 2);
    viewerPoints.push(p);
    log(`  ${target} sessions, ${target * 2} viewers: ${describe(p)}`);
  }

  // 3. Session N+1 under full load, then every session stopped at once.
  const t0 = performance.now();
  const extraSession = await createSession(broker.url, { machine: opts.machine, cpus: 1, memoryMiB: opts.memoryMiB, lifetimeS: 3600, user: `scale-${opts.sessions + 1}` });
  const readyMs = performance.now() - t0;
  live.set(extraSession.id, extraSession);
  const rfb = await connectRfb(extraSession.wsUrl, { timeoutMs: 30000 });
  let firstFrameAt: number;
  try {
    await rfb.update(false, 30000);
    firstFrameAt = performance.now() - t0;
  } finally {
    rfb.close();
  }
  const d0 = performance.now();
  await deleteSession(broker.url, extraSession.token);
  const deleteMs = performance.now() - d0;
  live.delete(extraSession.id);
  log(`  session ${opts.sessions + 1} under full load: POST → 201 ${readyMs.toFixed(0)} ms, → first frame ${firstFrameAt.toFixed(0)} ms; DELETE ${deleteMs.toFixed(0)} ms`);

  const beforeStop = await viewers.totals();
  await viewers.expectClose();
  const s0 = performance.now();
  const perDeleteMs = await Promise.all(created.map(async (s) => {
    const t = performance.now();
    await deleteSession(broker.url, s.token);
    live.delete(s.id);
    return performance.now() - t;
  }));
  const wallMs = performance.now() - s0;
  unregisterDeletes();
  log(`  stopped all ${created.length} at once (parallel DELETEs): ${(wallMs / 1000).toFixed(1)} s`);
  await viewers.closeAll();
  await viewers.tracked.stop();
  // Past the broker's HTTP keep-alive (Node's 5 s): the parallel DELETEs' idle connections are closed by then,
  // so the descriptors left are the broker's own (read 2 s after, a 100-session run still counted 46 of those).
  await sleep(7000);
  const qemusLeft = pidsMentioning(opts.runDir).filter((pid) => {
    try {
      return path.basename(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!).startsWith('qemu-system');
    } catch {
      return false;
    }
  }).length;
  return {
    machine: opts.machine, sessions: opts.sessions, memoryMiB: opts.memoryMiB, windowS: opts.windowMs / 1000, settleS: opts.settleMs / 1000,
    fullFrameEveryS: opts.fullFrameEveryMs / 1000, createConcurrency: opts.createConcurrency, probeIntervalMs: opts.probeIntervalMs,
    createMs: summarize(createMs), sessionPoints, viewerPoints,
    viewerFirstFrameMs: firstFrameMs.length ? summarize(firstFrameMs) : null, viewerFailures,
    viewersClosedUnexpectedly: beforeStop.closedUnexpectedly, viewerErrors: beforeStop.errors,
    extra: { readyMs, firstFrameMs: firstFrameAt, deleteMs },
    stopAll: { wallMs, perDeleteMs: summarize(perDeleteMs) },
    after: { brokerRssKiB: brokerRss(), brokerFds: countFds(broker.pid) ?? 0, brokerPeakKiB: readStatusKiB(broker.pid, 'VmHWM') ?? 0, qemusLeft },
  };
}
