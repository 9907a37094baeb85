// `npm run bench`: the benchmark's composition root. Not a test (no timed
// assertions): it measures, prints a table and writes the generated parts of
// BENCHMARKS.md. Against a real broker run as its own process, these parts
// (all by default; `--only` picks some, and a recorded run then rewrites only
// their sections):
//   1. latency:    session start latency on the demo guest (sessions one at a time);
//   2. rss:        broker memory with N demo sessions and one viewer each;
//   3. throughput: the bridge's throughput ceiling against websockify (fake VNC source);
//   4. pressure:   HTTP latency while N viewers stream through the broker's bridge;
//   5. input:      key press → screen through the bridge and straight to QEMU;
//   6. scale:      100 sessions and 200 viewers on one broker of their own (bench/scale.ts).
// Everything it starts is registered in one cleanup stack and released — on
// success, on error and on Ctrl-C — before it exits; a leak is an error.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { DEMO_IMAGE, ROOT, requireDemoImage, requireProgram, requireQemu } from '../test/helpers/env.js';
import { Cleanup } from './cleanup.js';
import { makeBenchSetup } from './bench-setup.js';
import { startBrokerProcess } from './broker-process.js';
import { healthz } from './api.js';
import { capturePlaceholderFrame } from './qemu-placeholder.js';
import { measureGuestBoot, measureOneSession, type SessionSample } from './session-latency.js';
import { measureBrokerRss } from './broker-rss.js';
import { RELAY_PATHS, measurePath, startThroughputRig, type ThroughputRig, type ThroughputSample } from './bridge-throughput.js';
import { measurePressure } from './bridge-pressure.js';
import { measureInputLatency } from './input-latency.js';
import { summarize } from './stats.js';
import { readHostInfo, startPressureWatch, waitForQuietHost } from './host-info.js';
import { readVmRssKiB } from './processes.js';
import { measureQemuFloor } from './qemu-floor.js';
import { median } from './stats.js';
import { PARTS, endMarker, renderConsole, renderMarkdown, updateBenchmarksMd, updatePartBlocks, type BenchResults, type Part, type PartRun } from './report.js';
import { measureScale } from './scale.js';
import { SCALE_BEGIN, SCALE_END, renderScaleConsole, renderScaleMarkdown, type ScaleRun } from './scale-report.js';

const USAGE = `usage: npm run bench [-- options]
  --only PARTS        comma-separated parts to run, in this order whatever the order given (default: all):
                        latency     session start latency (sessions one at a time)
                        rss         broker memory with --rss-sessions sessions and a viewer each
                        throughput  the bridge's ceiling against websockify (fake VNC source)
                        pressure    HTTP latency while --pressure-viewers viewers stream through the broker
                        input       key press → screen, through the bridge and straight to QEMU (demo machine)
                        scale       --scale-sessions sessions and twice as many viewers on a broker of their own
                                    (blank machine: no demo image or websockify needed)
                      a recorded run rewrites the sections of the parts it ran and leaves the others
  --sessions N        sessions measured for start latency (default 20, at least 20 for a recorded run)
  --warmup N          warm-up sessions before them, not counted (default 1)
  --floor-runs N      times QEMU is started on its own for the start-up floor (default 10)
  --boot-runs N       sessions timed until the demo guest has booted (default 3)
  --rss-sessions N    sessions running at once for the memory reading (default 10)
  --boot-wait-s S     longest wait for those guests to boot (default 180)
  --memory-mib M      guest memory per session (default 256, the demo machine's default)
  --window-s S        throughput window per path and round (default 3)
  --rounds N          throughput rounds, paths interleaved (default 3)
  --pressure-viewers N  viewers streaming at once for the pressure part (default 10)
  --pressure-window-s S HTTP probe window, idle and while they stream (default 10)
  --probe-interval-ms M one GET every M ms during those windows (default 10)
  --keys N            key presses timed per path for input latency (default 100, even)
  --echoes N          protocol round trips timed per path for the bridge's share, paced and back to back (default 200)
  --quiet-wait-s S    before each part, wait at most this long for CPU pressure (PSI) to drop under 10 % (default 300)
  --machine NAME      demo (default) or blank (SeaBIOS only; for developing the benchmark, needs --no-write)
  --save-frames DIR   save each session's first guest-drawn frame as PNG
  --scale-sessions N  scale: sessions at once, two viewers each (default 100, at least 100 for a recorded run; 0 skips the part)
  --scale-window-s S  scale: measuring window at each of its points (default 30)
  --scale-full-frame-s S  scale: each viewer asks for a full screen this often besides its incremental updates (default 5)
  --no-write          print only; leave BENCHMARKS.md alone`;

function parseOptions() {
  const { values } = parseArgs({
    options: {
      sessions: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '1' },
      'rss-sessions': { type: 'string', default: '10' },
      'floor-runs': { type: 'string', default: '10' },
      'boot-runs': { type: 'string', default: '3' },
      'boot-wait-s': { type: 'string', default: '180' },
      'memory-mib': { type: 'string', default: '256' },
      'window-s': { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      only: { type: 'string' },
      'pressure-viewers': { type: 'string', default: '10' },
      'pressure-window-s': { type: 'string', default: '10' },
      'probe-interval-ms': { type: 'string', default: '10' },
      keys: { type: 'string', default: '100' },
      echoes: { type: 'string', default: '200' },
      machine: { type: 'string', default: 'demo' },
      'quiet-wait-s': { type: 'string', default: '300' },
      'save-frames': { type: 'string' },
      'scale-sessions': { type: 'string', default: '100' },
      'scale-window-s': { type: 'string', default: '30' },
      'scale-full-frame-s': { type: 'string', default: '5' },
      'no-write': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const int = (key: keyof typeof values, min: number): number => {
    const v = Number(values[key]);
    if (!Number.isInteger(v) || v < min) throw new UsageError(`--${key} must be an integer ≥ ${min}, got ${JSON.stringify(values[key])}`);
    return v;
  };
  const machine = values.machine;
  if (machine !== 'demo' && machine !== 'blank') throw new UsageError(`--machine must be "demo" or "blank", got ${JSON.stringify(machine)}`);
  const write = !values['no-write'];
  if (write && machine !== 'demo') throw new UsageError('--machine blank is for developing the benchmark: recorded numbers are on the demo machine (add --no-write)');
  const parts = parseParts(values.only);
  const sessions = int('sessions', 1);
  if (write && parts.has('latency') && sessions < 20) throw new UsageError(`a recorded run measures at least 20 sessions, got --sessions ${sessions} (add --no-write for a quick look)`);
  const scaleSessions = parts.has('scale') ? int('scale-sessions', 0) : 0;
  if (values.only !== undefined && parts.has('scale') && scaleSessions === 0) throw new UsageError('--only scale needs --scale-sessions of at least 1');
  if (write && scaleSessions > 0 && scaleSessions < 100) throw new UsageError(`a recorded run holds at least 100 sessions in the scale part, got --scale-sessions ${scaleSessions} (add --no-write for a quick look)`);
  // Admission counts virtual CPUs against the host's at limits.cpuOvercommit, at most 64 (src/config/schema.ts).
  if (scaleSessions + 1 > 64 * os.availableParallelism()) throw new UsageError(`--scale-sessions ${scaleSessions}: at most ${64 * os.availableParallelism() - 1} one-CPU sessions fit ${os.availableParallelism()} CPUs at the largest cpuOvercommit (64)`);
  if (parts.has('input') && machine !== 'demo') throw new UsageError('the input part types into the demo guest\'s shell: it needs --machine demo (or leave it out with --only)');
  const keys = int('keys', 2);
  if (keys % 2) throw new UsageError(`--keys must be even (a letter and a BackSpace each time), got ${keys}`);
  return {
    parts, pressureViewers: int('pressure-viewers', 1), pressureWindowMs: int('pressure-window-s', 2) * 1000, probeIntervalMs: int('probe-interval-ms', 1),
    keys, echoes: int('echoes', 1),
    sessions, warmup: int('warmup', 0), floorRuns: int('floor-runs', 1), bootRuns: int('boot-runs', 0), rssSessions: int('rss-sessions', 1), bootWaitMs: int('boot-wait-s', 0) * 1000,
    memoryMiB: int('memory-mib', 64), quietWaitMs: int('quiet-wait-s', 0) * 1000, windowMs: int('window-s', 1) * 1000, rounds: int('rounds', 1),
    machine: machine as 'demo' | 'blank', saveFrames: values['save-frames'] ?? null, write,
    scaleSessions, scaleWindowMs: int('scale-window-s', 5) * 1000, scaleFullFrameMs: int('scale-full-frame-s', 1) * 1000,
  };
}

class UsageError extends Error {}

/** The parts measured on the main broker, and 'scale' (on a broker of its own). */
const ALL_PARTS: Array<Part | 'scale'> = [...PARTS, 'scale'];

function parseParts(only: string | undefined): Set<Part | 'scale'> {
  if (only === undefined) return new Set(ALL_PARTS);
  const names = only.split(',').map((p) => p.trim()).filter(Boolean);
  const unknown = names.filter((p) => !(ALL_PARTS as string[]).includes(p));
  if (unknown.length || !names.length) throw new UsageError(`--only takes parts among ${ALL_PARTS.join(', ')}, comma-separated; got ${JSON.stringify(only)}`);
  return new Set(names as Array<Part | 'scale'>);
}

const say = (line: string) => process.stdout.write(line + '\n');

/** Live qemu-system processes on the host (read from /proc; for the report: were we alone?). */
function countQemus(): number {
  let n = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (path.basename(fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0]!).startsWith('qemu-system')) n++;
    } catch {
      // It ended while we looked.
    }
  }
  return n;
}

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseOptions>;
  try {
    opts = parseOptions();
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  // Preflight: what is missing is named with what to install or run.
  try {
    requireQemu();
    if (opts.parts.has('throughput') || opts.parts.has('pressure') || opts.parts.has('input')) requireProgram('websockify', 'websockify');
    if (opts.machine === 'demo' && [...opts.parts].some((p) => p !== 'scale')) requireDemoImage();
  } catch (err) {
    process.stderr.write(`bench: cannot run: ${(err as Error).message}\n`);
    if (!fs.existsSync(DEMO_IMAGE)) process.stderr.write(`bench: the recorded numbers are taken on the demo guest; build it with bin/build-demo-image, then run npm run bench again\n`);
    return 1;
  }

  const started = performance.now();
  const date = new Date();
  const cleanup = new Cleanup();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`bench: ${signal}: stopping sessions and processes, removing temp dirs…\n`);
    // runAll never rejects: it collects each step's failure.
    void cleanup.runAll().then((failures) => {
      for (const f of failures) process.stderr.write(`bench: cleanup: ${f}\n`);
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let results: BenchResults | null = null;
  let scaleRun: ScaleRun | null = null;
  let failure: Error | null = null;
  try {
    const otherQemusAtStart = countQemus();
    if ([...opts.parts].some((p) => p !== 'scale')) results = await runMainParts(cleanup, opts, otherQemusAtStart, started, date);
    if (opts.scaleSessions > 0) scaleRun = await runScalePart(cleanup, opts, otherQemusAtStart);
  } catch (err) {
    failure = err as Error;
  }

  const failures = await cleanup.runAll();
  if (interrupted) return 130;
  if (failure) {
    process.stderr.write(`bench: failed: ${failure.stack ?? failure.message}\n`);
    for (const f of failures) process.stderr.write(`bench: cleanup: ${f}\n`);
    return 1;
  }
  if (failures.length) {
    for (const f of failures) process.stderr.write(`bench: cleanup: ${f}\n`);
    process.stderr.write('bench: cleanup failed (above); results not written\n');
    return 1;
  }
  if (results) say(renderConsole(results));
  if (scaleRun) say(renderScaleConsole(scaleRun));
  if (opts.write) {
    const file = path.join(ROOT, 'BENCHMARKS.md');
    let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
    // Each part's section between its own markers: a run of some parts leaves the others' numbers as they are.
    if (results) text = updatePartBlocks(text, renderMarkdown(results), PREAMBLE);
    if (scaleRun) text = updateBenchmarksMd(text, renderScaleMarkdown(scaleRun), PREAMBLE, { begin: SCALE_BEGIN, end: SCALE_END }, endMarker('input'));
    fs.writeFileSync(file, text!);
    say(`bench: wrote ${file}`);
  }
  return 0;
}

type Options = ReturnType<typeof parseOptions>;

/** Parts 1–5 on one broker, in order; each begins once the host is quiet (bounded wait) and notes how busy it was. */
async function runMainParts(cleanup: Cleanup, opts: Options, otherQemusAtStart: number, started: number, date: Date): Promise<BenchResults> {
  const setup = makeBenchSetup(cleanup, opts.machine);
  const host = readHostInfo(setup.config.qemu.binaries.x86_64);
  say(`bench: ${host.cpuModel}, ${host.logicalCpus} CPUs, ${host.memTotalMiB} MiB, ${host.qemu}; ${otherQemusAtStart} other qemu process(es) running`);
  if (opts.saveFrames) fs.mkdirSync(opts.saveFrames, { recursive: true });

  const broker = await startBrokerProcess(cleanup, setup);
  const brokerFreshKiB = readVmRssKiB(broker.pid) ?? 0;
  const health = await healthz(broker.url);
  say(`bench: broker pid ${broker.pid} at ${broker.url} running ${broker.runs}; accelerator ${health.accelerator.accel}: ${health.accelerator.reason}`);

  // Before each part: let other work (and the previous part's own load) die down; then note how busy the host was.
  const runs: Partial<Record<Part, PartRun>> = {};
  const runPart = async <T>(part: Part, measure: () => Promise<T>): Promise<T | undefined> => {
    if (!opts.parts.has(part)) return undefined;
    const quiet = await waitForQuietHost(opts.quietWaitMs, 10, say);
    if (!quiet.quiet) say(`bench: still busy after ${Math.round(quiet.waitedS)} s (CPU pressure avg10 ${quiet.avg10} %): measuring anyway; the report says so`);
    const load1Start = os.loadavg()[0]!;
    const watch = startPressureWatch();
    const result = await measure();
    runs[part] = { quiet, pressure: watch(), load1Start };
    return result;
  };
  const loadStart = os.loadavg();
  const n = opts.parts.size;
  let step = 0;
  const heading = (text: string) => say(`bench: ${++step}/${n} ${text}`);

  const latency = await runPart('latency', async () => {
    heading(`session latency: ${opts.warmup} warm-up + ${opts.sessions} sessions on "${setup.machine.name}", one at a time`);
    const latencyOpts = { machine: setup.machine.name, memoryMiB: opts.memoryMiB, saveFramesDir: opts.saveFrames, frameDeadlineMs: 30000, placeholder: await capturePlaceholderFrame(cleanup, setup.config.qemu.binaries.x86_64) };
    const warmup: SessionSample[] = [];
    for (let i = 0; i < opts.warmup; i++) warmup.push(await measureOneSession(cleanup, broker, latencyOpts, `warmup-${i + 1}`));
    const samples: SessionSample[] = [];
    for (let i = 0; i < opts.sessions; i++) {
      const s = await measureOneSession(cleanup, broker, latencyOpts, `session-${String(i + 1).padStart(2, '0')}`);
      samples.push(s);
      say(`  ${String(i + 1).padStart(2)}: ready ${s.readyMs.toFixed(0)} ms, first non-blank ${s.frameMs.toFixed(0)} ms${s.firstWasPlaceholder ? ' (placeholder)' : ''}, guest frame ${s.guestFrameMs.toFixed(0)} ms, DELETE ${s.deleteMs.toFixed(0)} ms`);
    }

    if (!broker.lastQemu) throw new Error('the broker log had no "qemu spawned" line with argv: cannot time QEMU on its own');
    const floor = await measureQemuFloor(cleanup, setup.config, broker.lastQemu, setup.machine.image, opts.floorRuns);
    say(`  QEMU alone (same argv, polled every 1 ms), median of ${floor.length}: overlay ${median(floor.map((f) => f.overlayMs)).toFixed(0)} ms, spawn → QMP + VNC ready ${median(floor.map((f) => f.readyMs)).toFixed(0)} ms`);

    const bootMs: number[] = [];
    if (opts.machine === 'demo') {
      for (let i = 0; i < opts.bootRuns; i++) bootMs.push(await measureGuestBoot(cleanup, broker, setup.config.runDir, { machine: setup.machine.name, memoryMiB: opts.memoryMiB, timeoutMs: 120000 }));
      if (bootMs.length) say(`  POST → guest booted ("QWD: boot ok" on serial), ${bootMs.length} sessions alone: ${bootMs.map((v) => (v / 1000).toFixed(1) + ' s').join(', ')}`);
    }
    return { machine: setup.machine.name, memoryMiB: opts.memoryMiB, warmup, samples, floor, bootMs };
  });

  const rss = await runPart('rss', async () => {
    heading(`memory: ${opts.rssSessions} sessions with one viewer each`);
    return measureBrokerRss(cleanup, broker, setup.config, { machine: setup.machine.name, sessions: opts.rssSessions, memoryMiB: opts.memoryMiB, bootWaitMs: opts.bootWaitMs, log: say });
  });

  // The fake VNC source, the bridge harness, websockify and a broker session pointed at the source: parts 3 and 4.
  const chunkKiB = 256;
  let rig: ThroughputRig | null = null;
  const throughputRig = async () => (rig ??= await startThroughputRig(cleanup, { websockify: 'websockify', chunkKiB, broker, config: setup.config, machine: setup.machine.name }));
  const throughput = await runPart('throughput', async () => {
    heading(`bridge throughput: ${opts.rounds} rounds × ${opts.windowMs / 1000} s per path`);
    const r = await throughputRig();
    const samples: ThroughputSample[] = [];
    for (let round = 1; round <= opts.rounds; round++) {
      for (const p of RELAY_PATHS) {
        const s = await measurePath(cleanup, r, p, round, opts.windowMs);
        samples.push(s);
        say(`  round ${round} ${p.padEnd(14)} ${s.mbPerS.toFixed(0).padStart(6)} MB/s (reader ${s.readerCpuPct.toFixed(0)} %, relay ${s.relayCpuPct === null ? '—' : s.relayCpuPct.toFixed(0) + ' %'}, source ${s.sourceCpuPct.toFixed(0)} % CPU)`);
      }
    }
    return { windowS: opts.windowMs / 1000, rounds: opts.rounds, chunkKiB, samples };
  });

  const pressure = await runPart('pressure', async () => {
    heading(`bridge under pressure: HTTP for ${opts.pressureWindowMs / 1000} s idle, then while ${opts.pressureViewers} viewers stream`);
    const p = await measurePressure(cleanup, await throughputRig(), broker, { viewers: opts.pressureViewers, windowMs: opts.pressureWindowMs, intervalMs: opts.probeIntervalMs });
    for (const [i, l] of p.loaded.entries()) say(`  ${l.path}: idle p50 ${p.idle[i]!.p50.toFixed(1)} ms, p99 ${p.idle[i]!.p99.toFixed(1)} ms; streaming p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms, max ${l.max.toFixed(1)} ms (${l.n} requests, ${l.errors} errors)`);
    say(`  ${p.viewers} viewers: ${p.mbPerS.toFixed(0)} MB/s together, broker CPU ${p.brokerCpuPct.toFixed(0)} %`);
    return p;
  });

  const input = await runPart('input', async () => {
    heading(`input latency: ${opts.keys} keys and ${opts.echoes} echoes per path on the demo shell`);
    const i = await measureInputLatency(cleanup, broker, setup.config, { machine: setup.machine.name, memoryMiB: opts.memoryMiB, keysPerPath: opts.keys, echoesPerPath: opts.echoes, bootTimeoutMs: 120000, websockify: 'websockify', log: say });
    for (const p of ['bridge', 'websockify', 'direct'] as const) {
      const k = p === 'websockify' ? null : summarize(i.keyMs[p]);
      const e = summarize(i.echoMs[p]);
      const b = summarize(i.echoBackToBackMs[p]);
      say(`  ${p.padEnd(10)} ${k ? `key → screen p50 ${k.p50.toFixed(1)} ms, p95 ${k.p95.toFixed(1)} ms; ` : ''}echo p50 ${e.p50.toFixed(2)} ms, p95 ${e.p95.toFixed(2)} ms; back to back p50 ${b.p50.toFixed(2)} ms`);
    }
    return i;
  });

  const results: BenchResults = {
    date, durationS: (performance.now() - started) / 1000, host, accel: health.accelerator, brokerRuns: broker.runs, brokerFreshKiB,
    brokerWarnings: broker.warnings.length, parts: runs, loadAvg: { start: loadStart, end: os.loadavg() }, otherQemusAtStart,
    command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
    latency, rss, throughput, pressure, input,
  };
  if (broker.warnings.length) say(`bench: the broker logged ${broker.warnings.length} warning(s), e.g. ${broker.warnings[0]}`);
  return results;
}

/**
 * Part 6 with a broker of its own: the blank machine (its guests sleep in
 * SeaBIOS, so 100 fit this host), no guest network, and limits raised so that
 * admission admits sessions + 1 one-CPU sessions (one per user, so the
 * per-person limits stay as configured).
 */
async function runScalePart(cleanup: Cleanup, opts: Options, otherQemusAtStart: number): Promise<ScaleRun> {
  const started = performance.now();
  const date = new Date();
  const setup = makeBenchSetup(cleanup, 'blank', {
    qemu: { network: 'none' },
    limits: { maxSessions: opts.scaleSessions + 1, cpuOvercommit: 64 },
  });
  const host = readHostInfo(setup.config.qemu.binaries.x86_64);
  say(`bench: scale (part 6): ${opts.scaleSessions} sessions on "${setup.machine.name}" and ${2 * opts.scaleSessions} viewers; ${host.cpuModel}, ${host.logicalCpus} CPUs, ${host.memTotalMiB} MiB`);
  const broker = await startBrokerProcess(cleanup, setup);
  const brokerFreshKiB = readVmRssKiB(broker.pid) ?? 0;
  const health = await healthz(broker.url);
  say(`bench: scale broker pid ${broker.pid} at ${broker.url} running ${broker.runs}; accelerator ${health.accelerator.accel}`);
  const quiet = await waitForQuietHost(opts.quietWaitMs, 10, say);
  if (!quiet.quiet) say(`bench: still busy after ${Math.round(quiet.waitedS)} s (CPU pressure avg10 ${quiet.avg10} %): measuring anyway; the report says so`);
  const loadStart = os.loadavg();
  const watch = startPressureWatch();
  const scale = await measureScale(cleanup, broker, {
    machine: setup.machine.name, sessions: opts.scaleSessions, memoryMiB: 64, windowMs: opts.scaleWindowMs, settleMs: 5000,
    fullFrameEveryMs: opts.scaleFullFrameMs, createConcurrency: 4, probeIntervalMs: 100, runDir: setup.config.runDir, log: say,
  });
  const pressure = watch();
  if (broker.warnings.length) say(`bench: the scale broker logged ${broker.warnings.length} warning(s), e.g. ${broker.warnings[0]}`);
  return {
    date, durationS: (performance.now() - started) / 1000, host, accel: health.accelerator, brokerRuns: broker.runs, brokerFreshKiB,
    brokerWarnings: broker.warnings.length, quiet, pressure, loadAvg: { start: loadStart, end: os.loadavg() }, otherQemusAtStart,
    command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`, scale,
  };
}

const PREAMBLE = `# Benchmarks

What a user waits for, what the broker costs in memory, how fast the
WebSocket bridge can move bytes, whether the web server stays fast while it
does, what the bridge adds to a key press, and what 100 desktops with 200
viewers cost one broker. Produced by \`npm run bench\` (bench/run.ts); each
section between markers below is rewritten by the recorded runs that measure
its part, the rest of this file is kept.

Reproduce: \`bin/setup\` (installs QEMU, websockify, builds the demo guest),
then \`npm run bench\` (a few minutes; \`npm run bench -- --help\` for options,
\`--only throughput,pressure,input\` or \`--only scale\` for some parts,
\`--no-write\` to leave this file alone). It starts everything it needs on
127.0.0.1 and in temp dirs, and stops all of it at the end.
`;

process.exitCode = await main();
