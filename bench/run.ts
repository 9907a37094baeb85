// `npm run bench`: the benchmark's composition root. Not a test (no timed
// assertions): it measures, prints a table and writes the generated part of
// BENCHMARKS.md. Against a real broker run as its own process:
//   1. session start latency on the demo guest (sessions one at a time);
//   2. broker memory with N demo sessions and one viewer each;
//   3. the bridge's throughput ceiling against websockify (fake VNC source);
//   4. scale: 100 sessions and 200 viewers on one broker of their own
//      (bench/scale.ts; alone with --only scale).
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
import { RELAY_PATHS, measurePath, startThroughputRig, type ThroughputSample } from './bridge-throughput.js';
import { readHostInfo, startPressureWatch, waitForQuietHost } from './host-info.js';
import { readVmRssKiB } from './processes.js';
import { measureQemuFloor } from './qemu-floor.js';
import { median } from './stats.js';
import { END, renderConsole, renderMarkdown, updateBenchmarksMd, type BenchResults } from './report.js';
import { measureScale } from './scale.js';
import { SCALE_BEGIN, SCALE_END, renderScaleConsole, renderScaleMarkdown, type ScaleRun } from './scale-report.js';

const USAGE = `usage: npm run bench [-- options]
  --sessions N        sessions measured for start latency (default 20, at least 20 for a recorded run)
  --warmup N          warm-up sessions before them, not counted (default 1)
  --floor-runs N      times QEMU is started on its own for the start-up floor (default 10)
  --boot-runs N       sessions timed until the demo guest has booted (default 3)
  --rss-sessions N    sessions running at once for the memory reading (default 10)
  --boot-wait-s S     longest wait for those guests to boot (default 180)
  --memory-mib M      guest memory per session (default 256, the demo machine's default)
  --window-s S        throughput window per path and round (default 3)
  --rounds N          throughput rounds, paths interleaved (default 3)
  --quiet-wait-s S    before each part, wait at most this long for CPU pressure (PSI) to drop under 10 % (default 300)
  --machine NAME      demo (default) or blank (SeaBIOS only; for developing the benchmark, needs --no-write)
  --save-frames DIR   save each session's first guest-drawn frame as PNG
  --scale-sessions N  part 4: sessions at once, two viewers each (default 100, at least 100 for a recorded run; 0 skips the part)
  --scale-window-s S  part 4: measuring window at each of its points (default 30)
  --scale-full-frame-s S  part 4: each viewer asks for a full screen this often besides its incremental updates (default 5)
  --only scale        run part 4 alone (no demo image or websockify needed); writes only its section of BENCHMARKS.md
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
      machine: { type: 'string', default: 'demo' },
      'quiet-wait-s': { type: 'string', default: '300' },
      'save-frames': { type: 'string' },
      'scale-sessions': { type: 'string', default: '100' },
      'scale-window-s': { type: 'string', default: '30' },
      'scale-full-frame-s': { type: 'string', default: '5' },
      only: { type: 'string' },
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
  const only = values.only ?? null;
  if (only !== null && only !== 'scale') throw new UsageError(`--only must be "scale", got ${JSON.stringify(only)}`);
  const machine = values.machine;
  if (machine !== 'demo' && machine !== 'blank') throw new UsageError(`--machine must be "demo" or "blank", got ${JSON.stringify(machine)}`);
  const write = !values['no-write'];
  if (write && machine !== 'demo') throw new UsageError('--machine blank is for developing the benchmark: recorded numbers are on the demo machine (add --no-write)');
  const sessions = int('sessions', 1);
  const scaleSessions = int('scale-sessions', 0);
  if (only === 'scale' && scaleSessions === 0) throw new UsageError('--only scale needs --scale-sessions of at least 1');
  if (write && scaleSessions > 0 && scaleSessions < 100) throw new UsageError(`a recorded run holds at least 100 sessions in part 4, got --scale-sessions ${scaleSessions} (add --no-write for a quick look)`);
  // Admission counts virtual CPUs against the host's at limits.cpuOvercommit, at most 64 (src/config/schema.ts).
  if (scaleSessions + 1 > 64 * os.availableParallelism()) throw new UsageError(`--scale-sessions ${scaleSessions}: at most ${64 * os.availableParallelism() - 1} one-CPU sessions fit ${os.availableParallelism()} CPUs at the largest cpuOvercommit (64)`);
  if (only !== 'scale' && write && sessions < 20) throw new UsageError(`a recorded run measures at least 20 sessions, got --sessions ${sessions} (add --no-write for a quick look)`);
  return {
    sessions, warmup: int('warmup', 0), floorRuns: int('floor-runs', 1), bootRuns: int('boot-runs', 0), rssSessions: int('rss-sessions', 1), bootWaitMs: int('boot-wait-s', 0) * 1000,
    memoryMiB: int('memory-mib', 64), quietWaitMs: int('quiet-wait-s', 0) * 1000, windowMs: int('window-s', 1) * 1000, rounds: int('rounds', 1),
    machine: machine as 'demo' | 'blank', saveFrames: values['save-frames'] ?? null, write,
    only, scaleSessions, scaleWindowMs: int('scale-window-s', 5) * 1000, scaleFullFrameMs: int('scale-full-frame-s', 1) * 1000,
  };
}

class UsageError extends Error {}

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
    if (opts.only !== 'scale') requireProgram('websockify', 'websockify');
    if (opts.only !== 'scale' && opts.machine === 'demo') requireDemoImage();
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
    if (opts.only !== 'scale') {
      const setup = makeBenchSetup(cleanup, opts.machine);
      const host = readHostInfo(setup.config.qemu.binaries.x86_64);
      say(`bench: ${host.cpuModel}, ${host.logicalCpus} CPUs, ${host.memTotalMiB} MiB, ${host.qemu}; ${otherQemusAtStart} other qemu process(es) running`);
      if (opts.saveFrames) fs.mkdirSync(opts.saveFrames, { recursive: true });
      const placeholder = await capturePlaceholderFrame(cleanup, setup.config.qemu.binaries.x86_64);

      const broker = await startBrokerProcess(cleanup, setup);
      const brokerFreshKiB = readVmRssKiB(broker.pid) ?? 0;
      const health = await healthz(broker.url);
      say(`bench: broker pid ${broker.pid} at ${broker.url} running ${broker.runs}; accelerator ${health.accelerator.accel}: ${health.accelerator.reason}`);

      // Before each part: let other work (and the previous part's own load) die down.
      const settle = async () => {
        const q = await waitForQuietHost(opts.quietWaitMs, 10, say);
        if (!q.quiet) say(`bench: still busy after ${Math.round(q.waitedS)} s (CPU pressure avg10 ${q.avg10} %): measuring anyway; the report says so`);
        return q;
      };
      const quietLatency = await settle();
      const loadStart = os.loadavg();
      let watch = startPressureWatch();
      say(`bench: 1/3 session latency: ${opts.warmup} warm-up + ${opts.sessions} sessions on "${setup.machine.name}", one at a time`);
      const latencyOpts = { machine: setup.machine.name, memoryMiB: opts.memoryMiB, saveFramesDir: opts.saveFrames, frameDeadlineMs: 30000, placeholder };
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

      const pressureLatency = watch();
      const quietRss = await settle();
      watch = startPressureWatch();
      say(`bench: 2/3 memory: ${opts.rssSessions} sessions with one viewer each`);
      const rss = await measureBrokerRss(cleanup, broker, setup.config, { machine: setup.machine.name, sessions: opts.rssSessions, memoryMiB: opts.memoryMiB, bootWaitMs: opts.bootWaitMs, log: say });
      const pressureRss = watch();
      const quietThroughput = await settle();
      watch = startPressureWatch();
      say(`bench: 3/3 bridge throughput: ${opts.rounds} rounds × ${opts.windowMs / 1000} s per path`);
      const chunkKiB = 256;
      const rig = await startThroughputRig(cleanup, { websockify: 'websockify', chunkKiB, broker, config: setup.config, machine: setup.machine.name });
      const throughput: ThroughputSample[] = [];
      for (let round = 1; round <= opts.rounds; round++) {
        for (const p of RELAY_PATHS) {
          const s = await measurePath(cleanup, rig, p, round, opts.windowMs);
          throughput.push(s);
          say(`  round ${round} ${p.padEnd(14)} ${s.mbPerS.toFixed(0).padStart(6)} MB/s (reader ${s.readerCpuPct.toFixed(0)} %, relay ${s.relayCpuPct === null ? '—' : s.relayCpuPct.toFixed(0) + ' %'}, source ${s.sourceCpuPct.toFixed(0)} % CPU)`);
        }
      }

      const pressureThroughput = watch();
      results = {
        date, durationS: (performance.now() - started) / 1000, host, accel: health.accelerator, brokerRuns: broker.runs, brokerFreshKiB,
        brokerWarnings: broker.warnings.length, quiet: { latency: quietLatency, rss: quietRss, throughput: quietThroughput },
        pressure: { latency: pressureLatency, rss: pressureRss, throughput: pressureThroughput }, loadAvg: { start: loadStart, end: os.loadavg() }, otherQemusAtStart,
        command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
        latency: { machine: setup.machine.name, memoryMiB: opts.memoryMiB, warmup, samples, floor, bootMs },
        rss, throughput: { windowS: opts.windowMs / 1000, rounds: opts.rounds, chunkKiB, samples: throughput },
      };
      if (broker.warnings.length) say(`bench: the broker logged ${broker.warnings.length} warning(s), e.g. ${broker.warnings[0]}`);
    }
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
    if (results) text = updateBenchmarksMd(text, renderMarkdown(results), PREAMBLE);
    // Its own block, after the main one: a run of part 4 alone leaves the others' numbers as they are.
    if (scaleRun) text = updateBenchmarksMd(text, renderScaleMarkdown(scaleRun), PREAMBLE, { begin: SCALE_BEGIN, end: SCALE_END }, END);
    fs.writeFileSync(file, text!);
    say(`bench: wrote ${file}`);
  }
  return 0;
}

/**
 * Part 4 with a broker of its own: the blank machine (its guests sleep in
 * SeaBIOS, so 100 fit this host), no guest network, and limits raised so that
 * admission admits sessions + 1 one-CPU sessions (one per user, so the
 * per-person limits stay as configured).
 */
async function runScalePart(cleanup: Cleanup, opts: ReturnType<typeof parseOptions>, otherQemusAtStart: number): Promise<ScaleRun> {
  const started = performance.now();
  const date = new Date();
  const setup = makeBenchSetup(cleanup, 'blank', {
    qemu: { network: 'none' },
    limits: { maxSessions: opts.scaleSessions + 1, cpuOvercommit: 64 },
  });
  const host = readHostInfo(setup.config.qemu.binaries.x86_64);
  say(`bench: 4/4 scale: ${opts.scaleSessions} sessions on "${setup.machine.name}" and ${2 * opts.scaleSessions} viewers; ${host.cpuModel}, ${host.logicalCpus} CPUs, ${host.memTotalMiB} MiB`);
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
WebSocket bridge can move bytes, and what 100 desktops with 200 viewers cost
one broker. Produced by \`npm run bench\` (bench/run.ts); the sections between
markers below are rewritten by every recorded run (the scale section alone by
\`npm run bench -- --only scale\`), the rest of this file is kept.

Reproduce: \`bin/setup\` (installs QEMU, websockify, builds the demo guest),
then \`npm run bench\` (a few minutes; \`npm run bench -- --help\` for options,
\`--no-write\` to leave this file alone). It starts everything it needs on
127.0.0.1 and in temp dirs, and stops all of it at the end.
`;

process.exitCode = await main();
