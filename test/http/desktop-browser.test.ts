// The debian-desktop machine used like a desktop, in a real Chromium (opt-in:
// `npm run test:desktop`, not part of `npm test`): a real broker, a real session
// through the API, the product's viewer page, real QEMU under TCG. The test
// watches the guest through qemu-guest-agent (the session's qga.sock, from the
// machine's guestAgent key): xclip reads and sets the X clipboard, xdotool
// finds the editor's window, keys typed in the browser reach the editor.
// Checked: text sent from the page (the toolbar's clipboard panel and the
// automatic Clipboard API) is pasted in mousepad and saved; text copied in the
// guest arrives in the page (panel and navigator.clipboard); the guest's X
// screen follows the browser window (remote resize); with clipboard off,
// nothing crosses either way. A passing run writes public/screenshot.png (the
// README's picture). Needs the machine built with xclip and xdotool:
// `qwdctl machines build debian-desktop` (INSTALL.md, "The desktop machine").
/// <reference lib="dom" />
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { Page } from 'playwright-core';
import { api, startTestBroker } from '../helpers/broker.js';
import { launchChromium, requireChromium } from '../helpers/chromium.js';
import { ROOT, makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { asDesktopUser, guestExec, guestSpawn, qga } from '../helpers/guest-agent.js';
import {
  assertNoPageProblems, recordSent, saveScreenshot, waitForStatus, type SentMessage,
} from '../helpers/viewer-page.js';
import { interposeRecorder, type RecordingProxy } from '../helpers/rfb-raw-viewer.js';
import { DESKTOP_MACHINE, DESKTOP_USER, desktopDescriptor, desktopPaths } from '../../src/catalog/desktop-build.js';
import type { ClipboardMode } from '../../src/config/schema.js';

const run = test.serial;

const MACHINES_DIR = path.join(ROOT, 'machines');
const DESKTOP_UID = 1000;
/** Under TCG (2 vCPUs) the desktop is drawn 60–90 s after QEMU starts; a busy host takes longer. */
const DESKTOP_TIMEOUT_MS = 6 * 60_000;
/** One step in the guest once the desktop is up (a loaded host, load ≈ 11, needed more than 30–60 s). */
const STEP_TIMEOUT_MS = 120_000;
const RUNUSER = '/usr/sbin/runuser';
const TO_GUEST = 'from the browser: café, Ελληνικά, 中文';
const TO_GUEST_AUTO = 'automatic: naïve Ωμέγα 日本語';
const FROM_GUEST = 'from the guest: façade, Αθήνα, 漢字';

{
  test.before(() => {
    requireQemu();
    requireChromium();
    const { image } = desktopPaths(MACHINES_DIR);
    if (!fs.existsSync(image)) {
      throw new Error(`${image} is missing: build it with "bin/qwdctl machines build debian-desktop" `
        + '(INSTALL.md, "The desktop machine")');
    }
  });
}

interface Desktop {
  page: Page;
  s: { id: string; viewerUrl: string; token: string };
  runDir: string;
  qgaSocket: string;
  postedAt: number;
  problems: Awaited<ReturnType<typeof launchChromium>>['problems'];
  recorder: RecordingProxy | null;
  /** The RFB client messages the page sent (read on its WebSocket, from the first). */
  sent: SentMessage[];
}

/** A broker whose catalog has the built debian-desktop machine (the image reached through a directory symlink). */
async function desktopSession(
  t: ExecutionContext, clipboard: ClipboardMode, viewport: { width: number; height: number },
  opts: { record?: boolean } = {},
): Promise<Desktop> {
  const setup = makeSetup(t, {}, {
    machines: (d) => {
      fs.symlinkSync(path.join(MACHINES_DIR, 'images'), path.join(d, 'images'));
      fs.writeFileSync(path.join(d, `${DESKTOP_MACHINE}.yml`), stringify({ ...desktopDescriptor(), clipboard }));
    },
  });
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t, { viewport });
  // The automatic clipboard needs these on a real site too (the browser asks the user); localhost is a secure origin.
  await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: broker.url });
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  const postedAt = Date.now();
  const { json: s, status } = await api(broker, 'POST', '/api/v1/sessions',
    { machine: DESKTOP_MACHINE, user: 'ada', lifetimeS: 3 * 3600 });
  t.is(status, 201, JSON.stringify(s));
  const found = broker.services.manager.lookupToken(s.token);
  if (found.kind !== 'live') throw new Error(`the new session's token looks up as ${found.kind}`);
  const runDir = found.row.runDir;
  // What the bridge sends QEMU for the page's viewer: a recording proxy on the session's VNC socket.
  let recorder: RecordingProxy | null = null;
  if (opts.record) {
    const proxy = await interposeRecorder(path.join(runDir, 'vnc.sock'));
    t.teardown(() => proxy.close());
    recorder = proxy;
  }
  const sent = recordSent(page);
  await page.goto(s.viewerUrl);
  await waitForStatus(page, 'Connected', 30_000);
  return { page, s, runDir, qgaSocket: path.join(runDir, 'qga.sock'), postedAt, problems: browser.problems, recorder, sent };
}

/** Distinct colours on noVNC's canvas (the desktop is "up" at ≥ 1000: a black or text screen has a few). */
async function canvasColours(page: Page): Promise<{ width: number; height: number; colours: number; sum: number }> {
  return page.evaluate(() => {
    const canvas = document.querySelector('#screen canvas');
    if (!(canvas instanceof HTMLCanvasElement) || canvas.width === 0) return { width: 0, height: 0, colours: 0, sum: 0 };
    const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    const seen = new Set<number>();
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) {
      const rgb = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
      seen.add(rgb);
      sum = (sum * 31 + rgb) % 2147483647;
    }
    return { width: canvas.width, height: canvas.height, colours: seen.size, sum };
  });
}

/** Waits until the XFCE desktop is drawn in the page, then until its session runs the clipboard and display agents. */
async function waitForDesktop(t: ExecutionContext, d: Desktop): Promise<number> {
  let last = { width: 0, height: 0, colours: 0, sum: 0 };
  await waitFor('the XFCE desktop to be drawn in the browser (≥ 1000 colours on noVNC\'s canvas)', async () => {
    last = await canvasColours(d.page);
    return last.colours >= 1000;
  }, DESKTOP_TIMEOUT_MS).catch((err: Error) => {
    const seen = `last canvas ${last.width}×${last.height} with ${last.colours} colours`;
    throw new Error(`${err.message}; ${seen}`, { cause: err });
  });
  const visibleS = (Date.now() - d.postedAt) / 1000;
  t.log(`POST → XFCE desktop visible in the browser: ${visibleS.toFixed(1)} s `
    + `(${last.width}×${last.height}, ${last.colours} colours)`);
  const pings = () => qga(d.qgaSocket, 'guest-ping', undefined, 3000).then(() => true, () => false);
  await waitFor('the guest agent to answer', pings, 240_000);
  await waitFor('the desktop session to run spice-vdagent and qwd-display-follow', async () => {
    const ps = await guestExec(d.qgaSocket, '/usr/bin/ps', ['-u', DESKTOP_USER, '-o', 'args=']);
    return /spice-vdagent/.test(ps.out) && /qwd-display-follow/.test(ps.out) && /xfdesktop/.test(ps.out);
  }, 240_000);
  const daemonRuns = async () => (await guestExec(d.qgaSocket, '/usr/bin/pgrep', ['-x', 'spice-vdagentd'])).exitcode === 0;
  await waitFor('spice-vdagentd to run', daemonRuns, STEP_TIMEOUT_MS).catch(async (err: Error) => {
    const units = ['--no-pager', '-l', 'status', 'spice-vdagentd.service', 'spice-vdagentd.socket'];
    const status = await guestExec(d.qgaSocket, '/usr/bin/systemctl', units).catch((e: Error) => ({ out: e.message }));
    throw new Error(`${err.message}:\n${status.out}`, { cause: err });
  });
  return visibleS;
}

/** Runs an X client as the desktop user; fails with its stderr (e.g. xclip not in the image: rebuild it). */
async function inSession(
  d: Desktop, program: string, args: string[], opts: { input?: string; capture?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  const res = await guestExec(d.qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, program, args), opts);
  if (res.exitcode !== 0) {
    const hint = /No such file/.test(res.err)
      ? ' (rebuild the machine: qwdctl machines build debian-desktop --force adds xclip and xdotool)' : '';
    throw new Error(`${program} ${args.join(' ')} in the guest exited with ${res.exitcode}: ${res.err.trim()}${hint}`);
  }
  return res.out;
}

/** The guest's CLIPBOARD selection as xclip reads it; '' while nobody owns it. */
async function guestClipboard(d: Desktop): Promise<string> {
  const argv = asDesktopUser(DESKTOP_USER, DESKTOP_UID, '/usr/bin/xclip', ['-o', '-selection', 'clipboard']);
  const res = await guestExec(d.qgaSocket, RUNUSER, argv);
  return res.exitcode === 0 ? res.out : '';
}

/** Sets the guest's CLIPBOARD selection (xclip stays in the background to serve it; spice-vdagent announces it). */
async function setGuestClipboard(d: Desktop, text: string): Promise<void> {
  await inSession(d, '/usr/bin/xclip', ['-i', '-selection', 'clipboard'], { input: text, capture: false });
}

/** The X screen's current size (xrandr --current). */
async function guestScreenSize(d: Desktop): Promise<string> {
  const out = await inSession(d, '/usr/bin/xrandr', ['--current']);
  return /current (\d+) x (\d+)/.exec(out)?.slice(1, 3).join('x') ?? `(no size in ${JSON.stringify(out.slice(0, 200))})`;
}

/** The size of noVNC's framebuffer (the remote screen) and of the page's screen area. */
async function pageSizes(page: Page): Promise<{ fb: string; area: string }> {
  return page.evaluate(() => {
    const canvas = document.querySelector('#screen canvas') as HTMLCanvasElement;
    const screen = document.getElementById('screen')!;
    return { fb: `${canvas.width}x${canvas.height}`, area: `${screen.clientWidth}x${screen.clientHeight}` };
  });
}

/** noVNC's own clipboard events, collected in the page from now on. */
async function collectPageClipboard(page: Page): Promise<() => Promise<string[]>> {
  await page.evaluate(() => {
    const w = window as unknown as { qwdRfb: EventTarget; qwdGot: string[] };
    w.qwdGot = [];
    w.qwdRfb.addEventListener('clipboard', (e) => w.qwdGot.push((e as CustomEvent<{ text: string }>).detail.text));
  });
  return () => page.evaluate(() => (window as unknown as { qwdGot: string[] }).qwdGot);
}

/** Runs `step`; if it fails, keeps a screenshot of the page and adds what `describe` finds to the error. */
async function explainFailure<T>(
  t: ExecutionContext, d: Desktop, step: () => Promise<T>, describe: () => Promise<string>,
): Promise<T> {
  try {
    return await step();
  } catch (err) {
    await saveScreenshot(d.page, 'debian-desktop-failure.png', t).catch(() => undefined); // the error below matters more
    const seen = await describe().catch((e: Error) => `(could not look: ${e.message})`);
    throw new Error(`${(err as Error).message}; ${seen}`, { cause: err });
  }
}

/** Two "WxH" sizes within 8 pixels of each other each way (a display may round to its alignment). */
function sizeNear(a: string, b: string): boolean {
  const [aw, ah] = a.split('x').map(Number);
  const [bw, bh] = b.split('x').map(Number);
  return Math.abs(aw! - bw!) <= 8 && Math.abs(ah! - bh!) <= 8;
}

/** noVNC sends the browser's text with a trailing NUL (its Provide); X programs may keep it. */
const withoutNul = (s: string) => s.replace(/\0+$/, '');

run('on the debian-desktop machine in Chromium: text sent from the page is pasted in the editor, text copied in the guest arrives in the page, and the desktop follows the window', async (t) => {
  t.timeout(DESKTOP_TIMEOUT_MS + 15 * 60_000);
  const testStarted = Date.now();
  const d = await desktopSession(t, 'both', { width: 1024, height: 700 });
  t.is(await d.page.locator('#status').getAttribute('data-resize'), 'remote');
  t.is(await d.page.locator('#status').getAttribute('data-clipboard'), 'both');
  await waitForDesktop(t, d);
  const gotInPage = await collectPageClipboard(d.page);

  // Remote resize: the X screen is the page's screen area, and follows a new window size.
  let seen = { guest: '', fb: '', area: '' };
  const fits = (x: typeof seen) => x.guest === x.fb && sizeNear(x.fb, x.area);
  const first = await waitFor('the X screen to take the viewer\'s size', async () => {
    seen = { ...await pageSizes(d.page), guest: await guestScreenSize(d) };
    return fits(seen) ? seen.guest : false;
  }, STEP_TIMEOUT_MS).catch((err: Error) => {
    throw new Error(`${err.message}; last seen ${JSON.stringify(seen)}`, { cause: err });
  });
  const resizeAsked = Date.now();
  await d.page.setViewportSize({ width: 1280, height: 800 });
  const second = await waitFor('the X screen to follow the window to its new size', async () => {
    seen = { ...await pageSizes(d.page), guest: await guestScreenSize(d) };
    return seen.guest !== first && fits(seen) ? seen.guest : false;
  }, STEP_TIMEOUT_MS).catch((err: Error) => {
    throw new Error(`${err.message}; last seen ${JSON.stringify(seen)}`, { cause: err });
  });
  t.log(`remote resize: X screen ${first} → ${second} (window 1024×700 → 1280×800, screen area ${seen.area}) `
    + `in ${((Date.now() - resizeAsked) / 1000).toFixed(1)} s`);
  t.true(sizeNear(second, '1280x' + second.split('x')[1]), `the X screen is as wide as the window (${second})`);

  // Browser → guest through the toolbar's clipboard panel.
  await d.page.click('#clipboard-button');
  await d.page.fill('#clipboard-text', TO_GUEST);
  await d.page.click('#clipboard-send');
  await waitFor('the panel\'s text in the guest\'s clipboard (xclip -o)',
    async () => withoutNul(await guestClipboard(d)) === TO_GUEST, STEP_TIMEOUT_MS);

  // … and pasted in the guest's text editor with Ctrl+V typed in the browser, saved with Ctrl+S.
  const saved = `/home/${DESKTOP_USER}/pasted.txt`;
  await inSession(d, '/usr/bin/touch', [saved]);
  await guestSpawn(d.qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, '/usr/bin/mousepad', [saved]));
  const found = await inSession(d, '/usr/bin/xdotool', ['search', '--sync', '--onlyvisible', '--class', 'mousepad'],
    { timeoutMs: 120_000 });
  const win = found.trim().split('\n')[0]!;
  await inSession(d, '/usr/bin/xdotool', ['windowactivate', '--sync', win]);
  await d.page.evaluate(() => (window as unknown as { qwdRfb: { focus(): void } }).qwdRfb.focus());
  const title = () => inSession(d, '/usr/bin/xdotool', ['getwindowname', win]);
  const pasted = await explainFailure(t, d, async () => {
    await d.page.keyboard.press('Control+v');
    // GTK fetches the clipboard from spice-vdagent (and it from the page) before it inserts:
    // the document shows as modified ("*" in the title) once the text is in.
    await waitFor('the editor\'s document to change (a "*" in its title)',
      async () => (await title()).startsWith('*'), STEP_TIMEOUT_MS);
    return waitFor('the editor to save the pasted text', async () => {
      await d.page.keyboard.press('Control+s');
      const res = await guestExec(d.qgaSocket, '/usr/bin/cat', [saved]);
      return res.out.includes(TO_GUEST) ? res.out : false;
    }, STEP_TIMEOUT_MS);
  }, async () => {
    const file = (await guestExec(d.qgaSocket, '/usr/bin/cat', [saved])).out;
    return `editor title ${JSON.stringify(await title())}, file ${JSON.stringify(file)}`;
  });
  t.is(withoutNul(pasted.trimEnd()), TO_GUEST, 'mousepad saved exactly the text sent from the page (UTF-8 intact)');

  // Browser → guest, automatically: the browser's clipboard is read when the page gets the focus.
  await d.page.bringToFront();
  await d.page.evaluate((text) => navigator.clipboard.writeText(text), TO_GUEST_AUTO);
  await d.page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await waitFor('the browser\'s clipboard in the guest\'s clipboard',
    async () => withoutNul(await guestClipboard(d)) === TO_GUEST_AUTO, STEP_TIMEOUT_MS);

  // Guest → browser: copied in the guest (xclip), it shows in the panel and lands in the browser's clipboard.
  await setGuestClipboard(d, FROM_GUEST);
  await waitFor('the guest\'s text in the clipboard panel',
    async () => withoutNul(await d.page.inputValue('#clipboard-text')) === FROM_GUEST, STEP_TIMEOUT_MS);
  t.true((await gotInPage()).some((s) => withoutNul(s) === FROM_GUEST), 'noVNC got the guest\'s text');
  await waitFor('the guest\'s text in the browser\'s clipboard (navigator.clipboard.readText)', async () => {
    return withoutNul(await d.page.evaluate(() => navigator.clipboard.readText())) === FROM_GUEST;
  }, STEP_TIMEOUT_MS);
  t.regex(await d.page.locator('#clipboard-note').textContent() ?? '', /also in your clipboard/);

  // The README's picture: the desktop with the editor holding the pasted text, under the toolbar.
  await d.page.click('#clipboard-button');
  await d.page.locator('#clipboard-panel').waitFor({ state: 'hidden' });
  const shot = await saveScreenshot(d.page, 'debian-desktop-viewer.png', t);
  assertNoPageProblems(t, 'desktop viewer', d.problems);
  t.log(`test duration: ${((Date.now() - testStarted) / 1000).toFixed(0)} s`);
  t.teardown(() => {
    if (t.passed) fs.copyFileSync(shot, path.join(ROOT, 'public', 'screenshot.png'));
  });
});

run('with clipboard off on the debian-desktop machine, text copied in the guest never reaches the page and text sent from the page never reaches the guest', async (t) => {
  t.timeout(DESKTOP_TIMEOUT_MS + 10 * 60_000);
  const testStarted = Date.now();
  const d = await desktopSession(t, 'off', { width: 1024, height: 700 }, { record: true });
  const recorder = d.recorder!;
  t.is(await d.page.locator('#status').getAttribute('data-clipboard'), 'off');
  t.is(await d.page.locator('#clipboard-button').count(), 0, 'the page offers no clipboard');
  await waitForDesktop(t, d);
  const gotInPage = await collectPageClipboard(d.page);
  t.is(recorder.received.length, 1, 'the page\'s one VNC connection went through the recorder');
  t.false(recorder.bytes(0).includes(Buffer.from([0xc0, 0xa1, 0xe5, 0xce])),
    'the Extended Clipboard pseudo-encoding was hidden from QEMU');

  // Guest → page: the guest's clipboard is set; then the guest's screen changes (a window opens) and the
  // page shows it — frames sent after the clipboard was announced have arrived, and no text with them.
  const marker = 'guest marker: only the guest has this';
  await setGuestClipboard(d, marker);
  await waitFor('the guest\'s clipboard to be set', async () => withoutNul(await guestClipboard(d)) === marker, STEP_TIMEOUT_MS);
  const before = await canvasColours(d.page);
  await guestSpawn(d.qgaSocket, RUNUSER, asDesktopUser(DESKTOP_USER, DESKTOP_UID, '/usr/bin/mousepad', []));
  await inSession(d, '/usr/bin/xdotool', ['search', '--sync', '--onlyvisible', '--class', 'mousepad'], { timeoutMs: 120_000 });
  await waitFor('the editor\'s window to show in the page', async () => (await canvasColours(d.page)).sum !== before.sum, STEP_TIMEOUT_MS);
  t.deepEqual(await gotInPage(), [], 'noVNC got no clipboard text');

  // Page → guest: noVNC's own paste (the page offers none; a changed page could call it) and then a key
  // as a barrier: once the key reached QEMU, the bridge had decided the paste before it.
  await d.page.evaluate(() => {
    type Rfb = { clipboardPasteFrom(s: string): void; sendKey(k: number, c: string, down?: boolean): void };
    const rfb = (window as unknown as { qwdRfb: Rfb }).qwdRfb;
    rfb.clipboardPasteFrom('secret from the browser: café 中文');
    rfb.sendKey(0xffe1, 'ShiftLeft', true);
    rfb.sendKey(0xffe1, 'ShiftLeft', false);
  });
  await waitFor('the page\'s key to reach QEMU', () => recorder.bytes(0).includes(Buffer.from([0, 0, 0xff, 0xe1])));
  t.true(d.sent.some((m) => m.type === 'cut-text'), 'the page did send its paste (the bridge is what stopped it)');
  t.false(recorder.bytes(0).includes(Buffer.from('secret from the browser')), 'the paste never reached QEMU');
  t.is(withoutNul(await guestClipboard(d)), marker, 'the guest\'s clipboard still holds its own text');
  assertNoPageProblems(t, 'desktop viewer (clipboard off)', d.problems);
  t.log(`test duration: ${((Date.now() - testStarted) / 1000).toFixed(0)} s`);
});
