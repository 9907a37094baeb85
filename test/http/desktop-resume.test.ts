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
    // The hostname is set while the session is handed out (not awaited by the start).
    const hostname = await waitFor('the session\'s hostname', async () => {
      const name = (await guestExec(qgaSocket, '/usr/bin/hostname', [])).out.trim();
      return name === sessionHostname(DESKTOP_MACHINE, json.id) && name;
    }, 60_000);
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
  const inSession = (program: string, args: string[], timeoutMs = 30_000) => guestExec(
    qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, program, args), { timeoutMs },
  );
  // The text editor on a file the test reads back (as the desktop test does with a booted desktop).
  const file = `/home/${DESKTOP_USER}/typed.txt`;
  await inSession('/usr/bin/touch', [file]);
  await guestSpawn(qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, '/usr/bin/mousepad', [file]));
  // Searched again until found: xdotool fails (BadWindow) when a window it is looking at goes away meanwhile.
  const found = await waitFor('the editor\'s window', async () => {
    const r = await inSession('/usr/bin/xdotool', ['search', '--onlyvisible', '--class', 'mousepad']);
    if (r.exitcode === 127) {
      // An image built before xdotool was in its package list: qwdctl machines build debian-desktop --force adds it.
      throw new Error(`no xdotool in the guest: ${r.err.trim()} (rebuild the machine: qwdctl machines build ` +
        'debian-desktop --force)');
    }
    return r.exitcode === 0 && r.out.trim() !== '' && r;
  }, 120_000);
  const win = found.out.trim().split('\n')[0]!;
  let shape = { exitcode: -1, out: '', err: '' };
  const [x, y, w, h] = await waitFor('the editor window\'s geometry', async () => {
    shape = await inSession('/usr/bin/xdotool', ['getwindowgeometry', win]);
    // "Position: 200,150 (screen: 0)" and "Geometry: 600x400"
    const pos = /Position: (-?\d+),(-?\d+)/.exec(shape.out);
    const size = /Geometry: (\d+)x(\d+)/.exec(shape.out);
    return pos && size ? [pos[1], pos[2], size[1], size[2]].map(Number) : false;
  }, 60_000).catch((err: Error) => {
    throw new Error(`${err.message}: xdotool exited ${shape.exitcode}: ${shape.out} ${shape.err}`, { cause: err });
  });
  // The mouse: a click in the page at the middle of the editor, mapped from the guest's screen to the canvas.
  const box = await page.evaluate(() => {
    const c = document.querySelector('#screen canvas') as HTMLCanvasElement;
    const r = c.getBoundingClientRect();
    return { left: r.left, top: r.top, scaleX: r.width / c.width, scaleY: r.height / c.height };
  });
  const target = { x: x! + Math.round(w! / 2), y: y! + Math.round(h! / 2) };
  await page.mouse.click(box.left + target.x * box.scaleX, box.top + target.y * box.scaleY);
  await waitFor('the guest\'s pointer where the page clicked', async () => {
    const loc = await inSession('/usr/bin/xdotool', ['getmouselocation', '--shell']);
    const at = ['X', 'Y'].map((k) => Number(new RegExp(`${k}=(\\d+)`).exec(loc.out)?.[1]));
    return Math.abs(at[0]! - target.x) <= 3 && Math.abs(at[1]! - target.y) <= 3;
  }, 60_000);
  // The keyboard: typed in the page, saved by the editor (Ctrl+S), read back from the file.
  await page.keyboard.type('typed into a resumed desktop');
  await waitFor('the editor to save what was typed', async () => {
    await page.keyboard.press('Control+s');
    return (await guestExec(qgaSocket, '/usr/bin/cat', [file])).out.includes('typed into a resumed desktop');
  }, 120_000);
  t.pass();
});
