// The soak run (documented in BENCHMARKS.md; not part of CI): a real broker in
// its own process (bin/qwdctl serve) driven for --minutes through cycles of
// create → connect a viewer through the bridge (a real ws client, one full
// framebuffer update read) → type a few keys → stop, at most --rate cycles a
// minute. With --faults, some cycles inject one fault: QEMU SIGKILLed under a
// running session, a viewer dropped in the middle of the RFB handshake, or a
// DELETE sent while the create is still in flight.
//
// Between cycles, every --sample-s seconds (default 60), it samples what could
// leak: the broker's RSS and open fds (/proc/PID), run dirs, overlay files,
// session rows (a read-only look at the state DB) and QEMU processes of ours
// (by their argv, which names the temp dir). At the end it prints the samples
// as a table and a leak verdict — the per-hour slopes of RSS and fds, and what
// is left after the last cycle — and exits 1 on a leak, 2 on unexpected errors.
//
//   node --import tsx bench/soak.ts --minutes 120 [--rate 6] [--faults] [--machine blank|demo]
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import WebSocket from 'ws';
import { connectRfb, nonBlackPixels } from '../test/helpers/rfb-client.js';
import { pidsMentioning } from '../test/helpers/env.js';
import { isOurProcess } from '../src/qemu/process.js';
import { netnsDir } from '../src/launcher/guest-netns.js';
import type { LocalHandle } from '../src/launcher/local.js';
import { Cleanup } from './cleanup.js';
import { makeBenchSetup, type BenchSetup } from './bench-setup.js';
import { startBrokerProcess, type BrokerProcess } from './broker-process.js';
import { createSession, deleteSession, type CreatedSession } from './api.js';
import { readVmRssKiB } from './processes.js';

const USAGE = 'bench/soak.ts --minutes N [--rate N/min] [--faults] [--machine blank|demo] [--sample-s S]';

interface Options {
  minutes: number;
  ratePerMin: number;
  faults: boolean;
  machine: 'blank' | 'demo';
  sampleS: number;
  /** Probability that a cycle injects a fault (with --faults). */
  faultShare: number;
}

type Fault = 'kill-qemu' | 'drop-viewer' | 'delete-during-create';
const FAULTS: readonly Fault[] = ['kill-qemu', 'drop-viewer', 'delete-during-create'];

interface Sample {
  minute: number;
  cycles: number;
  faults: number;
  errors: number;
  rssMiB: number;
  fds: number;
  runDirs: number;
  overlays: number;
  rows: number;
  qemus: number;
  /** Session network namespaces (launcher/guest-netns.ts) and their pasta processes on the host. */
  netns: number;
  pastas: number;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { minutes: 120, ratePerMin: 6, faults: false, machine: 'blank', sampleS: 60, faultShare: 0.3 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    const positive = (v: string) => {
      const n = Number(v.replace(/\/min$/, ''));
      if (!(n > 0)) throw new Error(`${arg} must be a positive number, got ${JSON.stringify(v)}`);
      return n;
    };
    if (arg === '--minutes') opts.minutes = positive(value());
    else if (arg === '--rate') opts.ratePerMin = positive(value());
    else if (arg === '--faults') opts.faults = true;
    else if (arg === '--sample-s') opts.sampleS = positive(value());
    else if (arg === '--machine') {
      const m = value();
      if (m !== 'blank' && m !== 'demo') throw new Error(`--machine must be blank or demo, got ${JSON.stringify(m)}`);
      opts.machine = m;
    } else throw new Error(`unknown argument ${JSON.stringify(arg)}; usage: ${USAGE}`);
  }
  return opts;
}

// ---- what is sampled ---------------------------------------------------------

function countFds(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1; // the broker is gone: reported as such in the table
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Rows of the state DB, read through a read-only connection of our own (the broker stays the only writer). */
interface StoredRow {
  id: string;
  state: string;
  token: string;
  handle: string | null;
}

function readRows(setup: BenchSetup): StoredRow[] {
  const file = path.join(setup.config.stateDir, 'qwd.sqlite');
  if (!fs.existsSync(file)) return [];
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT id, state, token, handle FROM sessions').all() as StoredRow[];
  } finally {
    db.close();
  }
}

type Counts = Pick<Sample, 'cycles' | 'faults' | 'errors'>;

function sample(setup: BenchSetup, broker: BrokerProcess, startedAt: number, counts: Counts): Sample {
  const runDirs = listDir(setup.config.runDir);
  return {
    minute: Math.round((Date.now() - startedAt) / 6000) / 10,
    ...counts,
    rssMiB: Math.round(((readVmRssKiB(broker.pid) ?? 0) / 1024) * 10) / 10,
    fds: countFds(broker.pid),
    runDirs: runDirs.length,
    overlays: runDirs.filter((d) => fs.existsSync(path.join(setup.config.runDir, d, 'disk.qcow2'))).length,
    rows: readRows(setup).length,
    // QEMU's argv names its run dir under the temp dir; the broker's names its config there too.
    qemus: pidsMentioning(setup.config.runDir).filter((pid) => pid !== broker.pid && pid !== process.pid).length,
    // The soak runs alone: every session namespace on the host is one of its sessions'.
    netns: listDir(netnsDir()).filter((n) => n.startsWith('qwdnet-')).length,
    pastas: pidsMentioning(`${netnsDir()}/qwdnet-`).length,
  };
}

// ---- one cycle -----------------------------------------------------------------

async function waitUntil<T>(what: string, probe: () => T | false | Promise<T | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A viewer: the RFB handshake through the bridge, one full framebuffer update, a few keys typed. */
async function view(session: CreatedSession): Promise<void> {
  const rfb = await connectRfb(session.wsUrl, { timeoutMs: 10000 });
  try {
    const fb = await rfb.update(false, 10000);
    if (fb.length !== rfb.width * rfb.height * 4) {
      throw new Error(`session ${session.id}: framebuffer of ${fb.length} bytes for ${rfb.width}×${rfb.height}`);
    }
    nonBlackPixels(fb); // reads the whole frame, as a viewer drawing it would
    for (const keysym of [0x61, 0x62, 0x63, 0xff0d]) { // a, b, c, Return (X11 keysyms, RFC 6143 §7.5.4)
      rfb.keyEvent(keysym, true);
      rfb.keyEvent(keysym, false);
    }
    await rfb.update(true, 10000);
  } finally {
    rfb.close();
  }
}

/** Opens the viewer's WebSocket and drops it as soon as the RFB banner arrives (mid-handshake). */
async function dropViewerMidHandshake(session: CreatedSession): Promise<void> {
  const ws = new WebSocket(session.wsUrl);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no RFB banner within 10 s')), 10000);
    ws.once('message', () => ws.terminate());
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function sessionStatus(broker: BrokerProcess, token: string): Promise<number> {
  const res = await fetch(`${broker.url}/api/v1/sessions/${token}`, {
    headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10000),
  });
  await res.arrayBuffer();
  return res.status;
}

const request = (opts: Options) => ({
  machine: opts.machine, cpus: 1, memoryMiB: opts.machine === 'demo' ? 256 : 128, lifetimeS: 3600, user: 'soak',
});

/** Waits until the session's link answers 410 (ended: its row is gone and its resources released). */
function waitEnded(broker: BrokerProcess, token: string, what: string): Promise<true> {
  return waitUntil(what, async () => (await sessionStatus(broker, token)) === 410, 30000);
}

async function cycle(broker: BrokerProcess, setup: BenchSetup, opts: Options, fault: Fault | null): Promise<void> {
  if (fault === 'delete-during-create') {
    const before = new Set(readRows(setup).map((r) => r.id));
    const post = createSession(broker.url, request(opts)).then(() => 'created' as const, (err: Error) => err);
    // The token of the row being started (the 201 that carries it comes only when the VM is ready).
    const newRow = () => readRows(setup).find((r) => !before.has(r.id)) ?? false;
    const row = await waitUntil('the new session row', newRow, 30000);
    await deleteSession(broker.url, row.token);
    const outcome = await post;
    // Either the DELETE won (the POST ends with 410) or the VM was ready first (201, then stopped).
    if (outcome !== 'created' && !/answered 410/.test(outcome.message)) throw outcome;
    await waitEnded(broker, row.token, 'the session to be gone after DELETE');
    return;
  }
  const session = await createSession(broker.url, request(opts));
  try {
    if (fault === 'drop-viewer') await dropViewerMidHandshake(session);
    await view(session);
    if (fault === 'kill-qemu') {
      const handle = JSON.parse(readRows(setup).find((r) => r.id === session.id)?.handle ?? 'null') as LocalHandle | null;
      if (handle?.kind !== 'local' || !isOurProcess(handle.pid, handle.startTime, handle.processName)) {
        throw new Error(`session ${session.id}: no running qemu of ours to kill`);
      }
      process.kill(handle.pid, 'SIGKILL');
      // The broker notices the exit, cleans up and leaves a tombstone: the link answers 410.
      await waitEnded(broker, session.token, `session ${session.id} to end after its QEMU was killed`);
    }
  } finally {
    await deleteSession(broker.url, session.token); // 410 is fine: it ended already
  }
}

// ---- verdict -------------------------------------------------------------------

/** Least-squares slope of y over x. */
function slope(points: ReadonlyArray<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / sxx;
}

/** Leak thresholds: generous enough for allocator noise, tight enough that a per-cycle leak shows. */
const RSS_LEAK_MIB_PER_H = 20;
const FD_LEAK_PER_H = 6;

function verdict(samples: Sample[]): { leaks: string[]; rssSlope: number; fdSlope: number } {
  // The first sample is the warm-up (JIT, first sessions); slopes are over the rest.
  const steady = samples.length > 2 ? samples.slice(1) : samples;
  const rssSlope = slope(steady.map((s) => [s.minute / 60, s.rssMiB]));
  const fdSlope = slope(steady.map((s) => [s.minute / 60, s.fds]));
  const first = steady[0]!;
  const last = samples[samples.length - 1]!;
  const leaks: string[] = [];
  if (rssSlope > RSS_LEAK_MIB_PER_H && last.rssMiB - first.rssMiB > RSS_LEAK_MIB_PER_H / 2) {
    leaks.push(`broker RSS grows ${rssSlope.toFixed(1)} MiB/h (${first.rssMiB} → ${last.rssMiB} MiB)`);
  }
  if (fdSlope > FD_LEAK_PER_H && last.fds - first.fds > 5) {
    leaks.push(`broker fds grow ${fdSlope.toFixed(1)}/h (${first.fds} → ${last.fds})`);
  }
  for (const key of ['runDirs', 'overlays', 'rows', 'qemus', 'netns', 'pastas'] as const) {
    if (last[key] > 0) leaks.push(`${last[key]} ${key} left after the last cycle`);
    const worst = Math.max(...samples.map((s) => s[key]));
    if (worst > 0 && last[key] === 0) leaks.push(`${worst} ${key} seen between cycles (cleaned up later: see the log)`);
  }
  return { leaks, rssSlope, fdSlope };
}

function table(samples: Sample[]): string {
  const head = ['minute', 'cycles', 'faults', 'errors', 'RSS MiB', 'fds', 'run dirs', 'overlays', 'rows', 'qemus', 'netns', 'pastas'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---:').join('|')}|`];
  for (const s of samples) {
    const cells = [s.minute, s.cycles, s.faults, s.errors, s.rssMiB, s.fds, s.runDirs, s.overlays, s.rows, s.qemus, s.netns, s.pastas];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

// ---- main ----------------------------------------------------------------------

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const cleanup = new Cleanup();
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      interrupted = true;
      console.error(`\n${sig}: finishing the current cycle, then cleaning up`);
    });
  }
  try {
    const setup = makeBenchSetup(cleanup, opts.machine);
    const broker = await startBrokerProcess(cleanup, setup);
    const faults = opts.faults ? `on (${opts.faultShare * 100} % of cycles)` : 'off';
    console.log(`soak: ${opts.minutes} min, at most ${opts.ratePerMin} cycles/min, faults ${faults}, machine ${opts.machine}`);
    console.log(`broker pid ${broker.pid} at ${broker.url} (${broker.runs})`);
    const startedAt = Date.now();
    const endAt = startedAt + opts.minutes * 60000;
    const intervalMs = 60000 / opts.ratePerMin;
    const counts = { cycles: 0, faults: 0, errors: 0 };
    const byFault = new Map<string, number>();
    const errors: string[] = [];
    const samples: Sample[] = [sample(setup, broker, startedAt, counts)];
    let nextSampleAt = startedAt + opts.sampleS * 1000;
    let nextCycleAt = startedAt;
    while (!interrupted && Date.now() < endAt) {
      const { child } = broker.tracked;
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`the broker exited: ${broker.tracked.stderr.slice(-5).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, Math.max(0, nextCycleAt - Date.now())));
      nextCycleAt = Math.max(nextCycleAt + intervalMs, Date.now());
      const pick = () => FAULTS[Math.floor(Math.random() * FAULTS.length)]!;
      const fault = opts.faults && Math.random() < opts.faultShare ? pick() : null;
      try {
        await Promise.race([
          cycle(broker, setup, opts, fault),
          new Promise((_, reject) => setTimeout(() => reject(new Error('cycle took over 120 s')), 120000).unref()),
        ]);
      } catch (err) {
        counts.errors++;
        errors.push(`cycle ${counts.cycles + 1}${fault ? ` (${fault})` : ''}: ${(err as Error).message}`);
        console.error(errors[errors.length - 1]);
      }
      counts.cycles++;
      if (fault) {
        counts.faults++;
        byFault.set(fault, (byFault.get(fault) ?? 0) + 1);
      }
      if (Date.now() >= nextSampleAt) {
        const s = sample(setup, broker, startedAt, counts);
        samples.push(s);
        console.log(`  ${JSON.stringify(s)}`);
        nextSampleAt += opts.sampleS * 1000;
      }
    }
    // One more look once the broker's own purge (every minute) has had its chance.
    const last = samples[samples.length - 1]!;
    if (last.cycles !== counts.cycles) samples.push(sample(setup, broker, startedAt, counts));
    const { leaks, rssSlope, fdSlope } = verdict(samples);
    console.log(`\n${table(samples)}\n`);
    const faultList = [...byFault].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
    console.log(`cycles ${counts.cycles}, faults ${counts.faults} (${faultList}), unexpected errors ${counts.errors}`);
    console.log(`broker RSS slope ${rssSlope.toFixed(1)} MiB/h (leak above ${RSS_LEAK_MIB_PER_H}), `
      + `fd slope ${fdSlope.toFixed(1)}/h (leak above ${FD_LEAK_PER_H})`);
    const byMsg = new Map<string, number>();
    for (const line of broker.warnings) {
      const msg = /"msg":"([^"]*)"/.exec(line)?.[1] ?? '(no message in the first 400 characters)';
      byMsg.set(msg, (byMsg.get(msg) ?? 0) + 1);
    }
    console.log(`broker warnings/errors logged: ${broker.warnings.length}`);
    for (const [msg, n] of byMsg) console.log(`  ${n} × ${msg}`);
    console.log(leaks.length ? `LEAK:\n  ${leaks.join('\n  ')}` : 'verdict: no leak');
    if (errors.length) console.log(`unexpected errors:\n  ${errors.slice(0, 20).join('\n  ')}`);
    return leaks.length ? 1 : errors.length ? 2 : 0;
  } finally {
    const failures = await cleanup.runAll();
    for (const f of failures) console.error(`cleanup: ${f}`);
    if (failures.length) process.exitCode = 1;
  }
}

main().then((code) => {
  process.exitCode = Math.max(Number(process.exitCode ?? 0), code);
}, (err: Error) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 2;
});
