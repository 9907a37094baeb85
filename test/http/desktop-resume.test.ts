// The debian-desktop machine resumed instead of booted (opt-in: `npm run
// test:desktop`, with the machine built: qwdctl machines build debian-desktop).
// The desktop is prepared once for the file (boot until xfdesktop runs, save,
// check by resuming: a few minutes under TCG); then two sessions resume it at
// once and each gets its own clock and hostname through qemu-guest-agent, and
// its clipboard port back; and in a real Chromium the resumed desktop takes
// the mouse (a click focuses a terminal) and the keyboard (what is typed in
// the page reaches the program in that terminal).
/// <reference lib="dom" />
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { api, startTestBroker } from '../helpers/broker.js';
import { launchChromium, requireChromium } from '../helpers/chromium.js';
import { ROOT, makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { asDesktopUser, guestExec, guestSpawn, qga } from '../helpers/guest-agent.js';
import { waitForStatus } from '../helpers/viewer-page.js';
import { DESKTOP_MACHINE, DESKTOP_USER, desktopDescriptor, desktopPaths } from '../../src/catalog/desktop-build.js';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { parseConfig } from '../../src/config/schema.js';
import { chooseAccelerator, probeHostAccel } from '../../src/qemu/accel.js';
import { prepareMachine, type PrepareReport } from '../../src/resume/prepare.js';
import { sessionHostname } from '../../src/resume/after-resume.js';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { silentLogger } from '../../src/log.js';
import type { LocalHandle } from '../../src/launcher/local.js';

const run = test.serial;
const MACHINES_DIR = path.join(ROOT, 'machines');
const SIZE = { cpus: 2, memoryMiB: 2048 };
const DESKTOP_UID = 1000;
const RUNUSER = '/usr/sbin/runuser';

let shared: { dir: string; machinesDir: string; report: PrepareReport };

test.before(async (t) => {
  requireQemu();
  requireChromium();
  const { image } = desktopPaths(MACHINES_DIR);
  if (!fs.existsSync(image)) {
    throw new Error(`${image} is missing: build it with "bin/qwdctl machines build debian-desktop" (INSTALL.md)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-desktop-resume-'));
  const machinesDir = path.join(dir, 'machines');
  fs.mkdirSync(machinesDir);
  fs.symlinkSync(path.join(MACHINES_DIR, 'images'), path.join(machinesDir, 'images'));
  fs.writeFileSync(path.join(machinesDir, `${DESKTOP_MACHINE}.yml`), stringify(desktopDescriptor()));
  const { config, problems } = parseConfig(
    { stateDir: 'var', machinesDir, qemu: { network: 'none' }, log: { level: 'silent' } }, path.join(dir, 'c.yml'), dir,
  );
  if (!config) throw new Error(problems.join('\n'));
  const machine = (await loadCatalog(machinesDir, config.qemu.img)).get(DESKTOP_MACHINE)!;
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel());
  const report = await prepareMachine({ config, accel, log: silentLogger() }, machine, SIZE);
  shared = { dir, machinesDir, report };
  t.log(`debian-desktop prepared in ${(report.prepareMs / 1000).toFixed(0)} s; state ${(report.stateBytes / 2 ** 20).toFixed(0)} MiB, ` +
    `frozen disk ${(report.diskBytes / 2 ** 20).toFixed(0)} MiB; checked by resuming in ${report.resumeMs} ms`);
});

test.after.always(() => {
  if (shared) fs.rmSync(shared.dir, { recursive: true, force: true });
});

run('two sessions resume the desktop at once, each with its own clock, hostname and clipboard port', async (t) => {
  t.timeout(10 * 60_000);
  const setup = makeSetup(t, { qemu: { network: 'none' }, machinesDir: shared.machinesDir }, { machines: () => {} });
  const broker = await startTestBroker(t, setup.config);
  const posted = Date.now();
  const made = await Promise.all([0, 1].map(() => api(broker, 'POST', '/api/v1/sessions', { machine: DESKTOP_MACHINE, user: 'ada', lifetimeS: 3600, ...SIZE })));
  t.log(`two resumed desktops ready ${Date.now() - posted} ms after their POSTs`);
  const hostnames = new Set<string>();
  for (const { status, json } of made) {
    t.is(status, 201, JSON.stringify(json));
    const row = broker.services.manager.get(json.id)!;
    t.true((row.handle as LocalHandle).resumed, 'resumed, not booted');
    const qgaSocket = path.join(row.runDir, 'qga.sock');
    // The clock stopped at the save, minutes ago: it is right again.
    const guestNs = (await qga(qgaSocket, 'guest-get-time')) as number;
    t.true(Math.abs(guestNs / 1e6 - Date.now()) < 5000, `guest clock off by ${Math.round(guestNs / 1e6 - Date.now())} ms`);
    const hostname = (await guestExec(qgaSocket, '/usr/bin/hostname', [])).out.trim();
    t.is(hostname, sessionHostname(DESKTOP_MACHINE, json.id));
    hostnames.add(hostname);
    // The clipboard agent's port is back (it was unplugged for the save).
    const qmp = await QmpClient.connect(path.join(row.runDir, 'qmp.sock'));
    try {
      const chardevs = await qmp.execute<Array<{ label: string }>>('query-chardev');
      t.true(chardevs.some((c) => c.label === 'vdagent0'), 'the vdagent chardev is plugged in');
    } finally {
      qmp.close();
    }
    await waitFor('the guest\'s spice-vdagent to reconnect', async () => (await guestExec(qgaSocket, '/usr/bin/pgrep', ['-u', DESKTOP_USER, '-x', 'spice-vdagent'])).exitcode === 0, 60_000);
  }
  t.is(hostnames.size, 2, 'each session has its own hostname');
});

run('in Chromium, the resumed desktop takes the mouse and the keyboard', async (t) => {
  t.timeout(10 * 60_000);
  const setup = makeSetup(t, { qemu: { network: 'none' }, machinesDir: shared.machinesDir }, { machines: () => {} });
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t, { viewport: { width: 1280, height: 800 } });
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: DESKTOP_MACHINE, user: 'ada', lifetimeS: 3600, ...SIZE });
  const row = broker.services.manager.get(s.id)!;
  t.true((row.handle as LocalHandle).resumed);
  const qgaSocket = path.join(row.runDir, 'qga.sock');
  await page.goto(s.viewerUrl);
  await waitForStatus(page, 'Connected', 60_000);
  // A terminal whose program writes what it reads to a file the test reads back.
  const typed = '/tmp/qwd-typed';
  await guestSpawn(qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, '/usr/bin/xfce4-terminal',
    ['--title=qwd-typing', '--geometry=60x10+200+200', '-x', '/usr/bin/sh', '-c', `cat > ${typed}`]));
  const inSession = (program: string, args: string[]) => guestExec(qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, program, args));
  const geometry = await waitFor('the terminal window', async () => {
    const found = await inSession('/usr/bin/xdotool', ['search', '--name', 'qwd-typing', 'getwindowgeometry', '--shell']);
    const m = /X=(\d+)\s+Y=(\d+)\s+WIDTH=(\d+)\s+HEIGHT=(\d+)/.exec(found.out);
    return found.exitcode === 0 && m ? m.slice(1).map(Number) : false;
  }, 120_000);
  // The mouse: a click in the page at the middle of that window, mapped from the guest's screen to the canvas.
  const [x, y, w, h] = geometry as [number, number, number, number];
  const box = await page.evaluate(() => {
    const c = document.querySelector('#screen canvas') as HTMLCanvasElement;
    const r = c.getBoundingClientRect();
    return { left: r.left, top: r.top, scaleX: r.width / c.width, scaleY: r.height / c.height };
  });
  await page.mouse.click(box.left + (x + w / 2) * box.scaleX, box.top + (y + h / 2) * box.scaleY);
  await waitFor('the pointer to be where the page clicked', async () => {
    const loc = await inSession('/usr/bin/xdotool', ['getmouselocation', '--shell']);
    const m = /X=(\d+)\s+Y=(\d+)/.exec(loc.out);
    return !!m && Math.abs(Number(m[1]) - (x + w / 2)) <= 3 && Math.abs(Number(m[2]) - (y + h / 2)) <= 3;
  }, 60_000);
  // The keyboard: typed in the page, read by the program in the focused terminal.
  await page.keyboard.type('typed into a resumed desktop');
  await page.keyboard.press('Enter');
  await waitFor('the typed line to reach the guest', async () => (await guestExec(qgaSocket, '/usr/bin/cat', [typed])).out.includes('typed into a resumed desktop'), 60_000);
  t.pass();
});
