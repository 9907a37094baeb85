// Resume against boot, side by side on one machine (npm run bench:resume):
// prepares the machine once (timed; state and disk sizes), then creates
// sessions one at a time through a real broker's API, first of the prepared
// size (resumed), then of the same machine without a prepared state (booted),
// and times for each: POST → ready (the 201), POST → the first full frame with
// something drawn, and POST → the guest answering: for the demo, a command
// typed through the bridge echoed on its serial port; for debian-desktop, its
// guest agent answering and xfdesktop running (the desktop drawn). Prints a
// Markdown table for BENCHMARKS.md with the machine, date and load.
// With --at-once N, N more sessions of the prepared size are then created at
// the same moment, and each is timed and checked for its own clock and hostname
// through its guest agent (debian-desktop).
//   node --import tsx bench/resume.ts [--machine demo|debian-desktop] [--sessions N] [--at-once N] [--size CxMiB]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/schema.js';
import { startBroker, type Broker } from '../src/main.js';
import { createLogger } from '../src/log.js';
import { loadCatalog } from '../src/catalog/catalog.js';
import { chooseAccelerator, probeHostAccel } from '../src/qemu/accel.js';
import { prepareMachine } from '../src/resume/prepare.js';
import { guestRun } from '../src/resume/after-resume.js';
import { qgaCommand } from '../src/qemu/qga-client.js';
import { systemClock } from '../src/clock.js';
import { DESKTOP_MACHINE, desktopDescriptor } from '../src/catalog/desktop-build.js';
import { connectRfb, nonBlackPixels, typeText } from '../test/helpers/rfb-client.js';
import { DEMO_IMAGE, ROOT } from '../test/helpers/env.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    machine: { type: 'string', default: 'demo' }, sessions: { type: 'string', default: '5' },
    'at-once': { type: 'string', default: '0' }, size: { type: 'string' },
  },
});
const machineName = values.machine!;
const sessions = Number(values.sessions);
const atOnce = Number(values['at-once']);
const sizeArg = values.size === undefined ? null : /^(\d+)x(\d+)$/.exec(values.size);
if (!['demo', DESKTOP_MACHINE].includes(machineName) || !Number.isInteger(sessions) || sessions < 0 ||
  !Number.isInteger(atOnce) || atOnce < 0 || (values.size !== undefined && !sizeArg)) {
  process.stderr.write('usage: bench/resume.ts [--machine demo|debian-desktop] [--sessions N ≥ 0] [--at-once N ≥ 0] ' +
    '[--size CPUSxMiB]\n');
  process.exit(2);
}
const say = (line: string) => process.stdout.write(`${line}\n`);
const desktop = machineName === DESKTOP_MACHINE;
const size = sizeArg ? { cpus: Number(sizeArg[1]), memoryMiB: Number(sizeArg[2]) }
  : desktop ? { cpus: 2, memoryMiB: 2048 } : { cpus: 1, memoryMiB: 256 };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-bench-resume-'));
const machinesDir = path.join(dir, 'machines');
fs.mkdirSync(machinesDir);
// The same master for both machines; the cold one has no resume: profile.
const images = desktop ? path.join(ROOT, 'machines', 'images') : path.dirname(DEMO_IMAGE);
fs.symlinkSync(images, path.join(machinesDir, 'images'));
const base = desktop ? { ...desktopDescriptor(), resume: { ...desktopDescriptor().resume as object, sizes: [size] } } : {
  name: 'demo', description: 'Demo guest', image: 'images/demo.qcow2', format: 'qcow2',
  cpus: { default: 1, max: 2 }, memoryMiB: { default: 256, max: 1024 },
  resume: { sizes: [size], ready: { serial: 'QWD: boot ok' } },
};
fs.writeFileSync(path.join(machinesDir, `${machineName}.yml`), stringify(base));
fs.writeFileSync(path.join(machinesDir, 'cold.yml'), stringify({ ...base, name: 'cold', resume: null }));
const { config, problems } = parseConfig({
  stateDir: path.join(dir, 'var'), machinesDir, listen: { host: '127.0.0.1', port: 0 },
  qemu: { network: 'none' }, log: { level: 'silent' },
  limits: { maxSessionsPerUser: 100, hostReserveMemoryMiB: 256, maxLoadPerCpu: 1000, cpuOvercommit: 16 },
}, path.join(dir, 'config.yml'), dir);
if (!config) throw new Error(problems.join('\n'));

interface Sample { readyMs: number; frameMs: number; answerMs: number }

/** POST → the first frame with something drawn, read through the session's bridge. */
async function firstDrawnFrame(wsUrl: string, start: number): Promise<{ ms: number; close: () => void }> {
  const viewer = await connectRfb(wsUrl);
  // Patient: ten desktops resuming on two CPUs draw slowly.
  while (nonBlackPixels(await viewer.update(false, 120_000)) === 0);
  return { ms: performance.now() - start, close: () => viewer.close() };
}

/**
 * n sessions of the prepared size created at the same moment: each one's POST → 201 and → drawn frame, and (with
 * a guest agent) its clock against the host's and its hostname. Prints a table; every session must have resumed.
 */
async function sessionsAtOnce(broker: Broker, n: number): Promise<void> {
  say(`${n} sessions at once…`);
  const start = performance.now();
  const rows = await Promise.all(Array.from({ length: n }, async (_, i) => {
    // Ten people, not one person with ten desktops (per-person limits).
    const res = await fetch(`${broker.url}/api/v1/sessions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ machine: machineName, user: `bench-${i}`, lifetimeS: 3600, ...size }),
    });
    const json = await res.json() as { id: string; token: string; wsUrl: string };
    if (res.status !== 201) throw new Error(JSON.stringify(json));
    const readyMs = performance.now() - start;
    const frame = await firstDrawnFrame(json.wsUrl, start);
    frame.close();
    const row = broker.services.manager.get(json.id)!;
    const resumed = !!(row.handle as { resumed?: boolean }).resumed;
    if (!desktop) return { id: json.id, readyMs, frameMs: frame.ms, resumed, offsetMs: NaN, hostname: '' };
    const qga = path.join(row.runDir, 'qga.sock');
    try {
      const before = Date.now();
      // Patient: ten guests share two CPUs here.
      const guestNs = await qgaCommand<number>(qga, 'guest-get-time', undefined, 120_000);
      const offsetMs = guestNs / 1e6 - (before + Date.now()) / 2;
      // The hostname is set after the 201 (not awaited by the start): asked until it is the session's, for 60 s.
      const deadline = Date.now() + 60_000;
      let hostname = '';
      while (Date.now() < deadline && !hostname.endsWith(json.id)) {
        ({ 'host-name': hostname } = await qgaCommand<{ 'host-name': string }>(
          qga, 'guest-get-host-name', undefined, 120_000,
        ));
        if (!hostname.endsWith(json.id)) await systemClock.sleep(500);
      }
      return { id: json.id, readyMs, frameMs: frame.ms, resumed, offsetMs, hostname };
    } catch (err) {
      return { id: json.id, readyMs, frameMs: frame.ms, resumed, offsetMs: NaN, hostname: `(${(err as Error).message})` };
    }
  }));
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  say('');
  say(`${n} × ${machineName} at once (${size.cpus} CPU(s), ${size.memoryMiB} MiB); ${new Date().toISOString()}; ` +
    `${os.cpus().length} CPUs, load after ${load}`);
  say('');
  say('| session | resumed | POST → ready (201) | POST → drawn frame | guest clock − host | hostname |');
  say('|---|---|---|---|---|---|');
  for (const r of rows) {
    say(`| ${r.id} | ${r.resumed ? 'yes' : 'NO'} | ${Math.round(r.readyMs)} ms | ${Math.round(r.frameMs)} ms | ` +
      `${Number.isNaN(r.offsetMs) ? '–' : `${Math.round(r.offsetMs)} ms`} | ${r.hostname || '–'} |`);
  }
  const unique = new Set(rows.map((r) => r.hostname)).size;
  say('');
  say(`all resumed: ${rows.every((r) => r.resumed)}; distinct hostnames: ${desktop ? unique : '–'} of ${n}; ` +
    `slowest drawn frame ${Math.round(Math.max(...rows.map((r) => r.frameMs)))} ms`);
}

try {
  const machine = (await loadCatalog(machinesDir, config.qemu.img)).get(machineName)!;
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel());
  say(`preparing ${machineName} (${size.cpus} CPU(s), ${size.memoryMiB} MiB)…`);
  const prepared = await prepareMachine({ config, accel, log: createLogger('silent') }, machine, size);
  // QWD_BENCH_LOG=FILE keeps the broker's log (info and up): why a session booted instead of resuming, say.
  const logFile = process.env.QWD_BENCH_LOG;
  const broker = await startBroker(config, logFile ? createLogger('info', fs.createWriteStream(logFile)) : createLogger('silent'));
  const resumed: Sample[] = [];
  const cold: Sample[] = [];
  try {
    const run = async (name: string): Promise<Sample> => {
      const start = performance.now();
      const res = await fetch(`${broker.url}/api/v1/sessions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ machine: name, user: 'bench', lifetimeS: 3600, ...size }),
      });
      const json = await res.json() as { id: string; token: string; wsUrl: string };
      if (res.status !== 201) throw new Error(JSON.stringify(json));
      const readyMs = performance.now() - start;
      const row = broker.services.manager.get(json.id)!;
      const viewer = await connectRfb(json.wsUrl);
      let frameMs = -1;
      for (;;) {
        if (nonBlackPixels(await viewer.update(false)) > 0) {
          frameMs = performance.now() - start;
          break;
        }
      }
      if (desktop) {
        const qga = path.join(row.runDir, 'qga.sock');
        for (;;) {
          const up = await qgaCommand(qga, 'guest-ping', undefined, 5000).then(() => true, () => false)
            && await guestRun(qga, '/usr/bin/pgrep', ['-x', 'xfdesktop'], systemClock).then(() => true, () => false);
          if (up) break;
          await systemClock.sleep(200);
        }
      } else {
        const serial = path.join(row.runDir, 'serial.log');
        // A booting guest has no shell to type into until it prints its ready line; a resumed one has one at once.
        if (!(row.handle as { resumed?: boolean }).resumed) {
          while (!fs.readFileSync(serial, 'utf8').includes('QWD: boot ok')) await systemClock.sleep(50);
        }
        for (let i = 0; ; i++) {
          // Typed again until the shell echoes it (a key typed in the very first instant may be lost).
          await typeText(viewer, `echo bench-${i} > /dev/ttyS0\n`);
          await systemClock.sleep(250);
          if (fs.readFileSync(serial, 'utf8').includes('bench-')) break;
        }
      }
      const answerMs = performance.now() - start;
      viewer.close();
      await fetch(`${broker.url}/api/v1/sessions/${json.token}`, { method: 'DELETE' });
      return { readyMs, frameMs, answerMs };
    };
    for (let i = 0; i < sessions; i++) {
      resumed.push(await run(machineName));
      say(`resumed ${i + 1}/${sessions}: ${JSON.stringify(resumed.at(-1))}`);
    }
    for (let i = 0; i < sessions; i++) {
      cold.push(await run('cold'));
      say(`booted ${i + 1}/${sessions}: ${JSON.stringify(cold.at(-1))}`);
    }
    if (atOnce > 0) await sessionsAtOnce(broker, atOnce);
  } finally {
    for (const row of broker.services.rows.all()) await broker.services.manager.stop(row.id).catch(() => {});
    await broker.close();
  }
  if (sessions > 0) {
    const ms = (xs: number[]) => `${Math.round(median(xs))} ms`;
    const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
    say('');
    say(`${machineName}, ${size.cpus} CPU(s), ${size.memoryMiB} MiB, ${accel.accel}; ${new Date().toISOString()}; ` +
      `${os.cpus().length} CPUs, load after ${load}; medians of ${sessions} sessions each, one at a time`);
    say('');
    say('| | POST → ready (201) | POST → first frame | POST → guest answers |');
    say('|---|---|---|---|');
    for (const [label, xs] of [['resumed', resumed], ['booted', cold]] as const) {
      say(`| ${label} | ${ms(xs.map((s) => s.readyMs))} | ${ms(xs.map((s) => s.frameMs))} | ` +
        `${ms(xs.map((s) => s.answerMs))} |`);
    }
    say(`| booted / resumed | | | ${(median(cold.map((s) => s.answerMs)) / median(resumed.map((s) => s.answerMs)))
      .toFixed(1)}× |`);
  }
  say('');
  say(`prepare: ${Math.round(prepared.prepareMs / 1000)} s (boot until ready, then save); state ` +
    `${(prepared.stateBytes / 2 ** 20).toFixed(0)} MiB (zstd -1), frozen disk ${(prepared.diskBytes / 2 ** 20).toFixed(0)} MiB;` +
    ` checked by resuming in ${prepared.resumeMs} ms`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
