// Resume against boot, side by side on one machine (npm run bench:resume):
// prepares the machine once (timed; state and disk sizes), then creates
// sessions one at a time through a real broker's API, first of the prepared
// size (resumed), then of the same machine without a prepared state (booted),
// and times for each: POST → ready (the 201), POST → the first full frame with
// something drawn, and POST → the guest answering: for the demo, a command
// typed through the bridge echoed on its serial port; for debian-desktop, its
// guest agent answering and xfdesktop running (the desktop drawn). Prints a
// Markdown table for BENCHMARKS.md with the machine, date and load.
//   node --import tsx bench/resume.ts [--machine demo|debian-desktop] [--sessions N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/schema.js';
import { startBroker } from '../src/main.js';
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
  options: { machine: { type: 'string', default: 'demo' }, sessions: { type: 'string', default: '5' } },
});
const machineName = values.machine!;
const sessions = Number(values.sessions);
if (!['demo', DESKTOP_MACHINE].includes(machineName) || !Number.isInteger(sessions) || sessions < 1) {
  process.stderr.write('usage: bench/resume.ts [--machine demo|debian-desktop] [--sessions N ≥ 1]\n');
  process.exit(2);
}
const say = (line: string) => process.stdout.write(`${line}\n`);
const desktop = machineName === DESKTOP_MACHINE;
const size = desktop ? { cpus: 2, memoryMiB: 2048 } : { cpus: 1, memoryMiB: 256 };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-bench-resume-'));
const machinesDir = path.join(dir, 'machines');
fs.mkdirSync(machinesDir);
// The same master for both machines; the cold one has no resume: profile.
const images = desktop ? path.join(ROOT, 'machines', 'images') : path.dirname(DEMO_IMAGE);
fs.symlinkSync(images, path.join(machinesDir, 'images'));
const base = desktop ? desktopDescriptor() : {
  name: 'demo', description: 'Demo guest', image: 'images/demo.qcow2', format: 'qcow2',
  cpus: { default: 1, max: 2 }, memoryMiB: { default: 256, max: 1024 },
  resume: { sizes: [size], ready: { serial: 'QWD: boot ok' } },
};
fs.writeFileSync(path.join(machinesDir, `${machineName}.yml`), stringify(base));
fs.writeFileSync(path.join(machinesDir, 'cold.yml'), stringify({ ...base, name: 'cold', resume: null }));
const { config, problems } = parseConfig({
  stateDir: path.join(dir, 'var'), machinesDir, listen: { host: '127.0.0.1', port: 0 },
  qemu: { network: 'none' }, log: { level: 'silent' },
  limits: { maxSessionsPerUser: 100, hostReserveMemoryMiB: 256, maxLoadPerCpu: 1000 },
}, path.join(dir, 'config.yml'), dir);
if (!config) throw new Error(problems.join('\n'));

interface Sample { readyMs: number; frameMs: number; answerMs: number }

try {
  const machine = (await loadCatalog(machinesDir, config.qemu.img)).get(machineName)!;
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel());
  say(`preparing ${machineName} (${size.cpus} CPU(s), ${size.memoryMiB} MiB)…`);
  const prepared = await prepareMachine({ config, accel, log: createLogger('silent') }, machine, size);
  const broker = await startBroker(config, createLogger('silent'));
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
    const resumed: Sample[] = [];
    const cold: Sample[] = [];
    for (let i = 0; i < sessions; i++) {
      resumed.push(await run(machineName));
      say(`resumed ${i + 1}/${sessions}: ${JSON.stringify(resumed.at(-1))}`);
    }
    for (let i = 0; i < sessions; i++) {
      cold.push(await run('cold'));
      say(`booted ${i + 1}/${sessions}: ${JSON.stringify(cold.at(-1))}`);
    }
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
    say('');
    say(`prepare: ${Math.round(prepared.prepareMs / 1000)} s (boot until ready, then save); state ` +
      `${(prepared.stateBytes / 2 ** 20).toFixed(0)} MiB (zstd -1), frozen disk ${(prepared.diskBytes / 2 ** 20).toFixed(0)} MiB;` +
      ` checked by resuming in ${prepared.resumeMs} ms`);
  } finally {
    for (const row of broker.services.rows.all()) await broker.services.manager.stop(row.id).catch(() => {});
    await broker.close();
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
