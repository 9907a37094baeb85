// The viewer's toolbar in a real Chromium against a real broker and real QEMU:
// its keys reach the demo guest's shell (Tab completes, sticky Ctrl + C
// interrupts, Ctrl+Alt+Del reboots it), full screen, the size modes, the
// quality settings kept per browser, keyboard access and labels, the phone
// layout (390×844, touch: the on-screen keyboard types into the guest, a tap
// is a click, a drag and a two-finger scroll reach the guest as pointer
// events), and what a view-only viewer sees and cannot do. What the browser
// sends is read off the WebSocket (RFC 6143 client messages) where the text
// console cannot show it.
/// <reference lib="dom" />
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { api, startTestBroker, type ApiJson } from '../helpers/broker.js';
import { launchChromium, requireChromium } from '../helpers/chromium.js';
import { viewerPage, type ResizeMode } from '../../src/http/views.js';
import type { ClipboardMode } from '../../src/config/schema.js';
import { makeSetup, requireDemoImage, requireQemu, waitFor, writeDemoMachine } from '../helpers/env.js';
import {
  CELL_PX, assertNoPageProblems, changedPixels, findEchoedCommands, readScreen, recordSent, saveScreenshot,
  waitForQuietScreen, waitForScreen, waitForSerialLine, waitForStatus, type Screen,
} from '../helpers/viewer-page.js';

test.before(() => {
  requireQemu();
  requireChromium();
  requireDemoImage();
});

/** What public/viewer.js leaves on window for tests: the noVNC RFB object and a state log a test installs. */
interface ViewerGlobals {
  qwdRfb: EventTarget & {
    qualityLevel: number; compressionLevel: number; scaleViewport: boolean; clippingViewport: boolean;
    resizeSession: boolean; disconnect(): void;
  };
  qwdStates: string[];
}

const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };

/** Waits until "QWD: boot ok" has shown `count` times on the guest's serial console (a reboot shows it again). */
async function waitForBoots(runDir: string, count: number, timeoutMs: number): Promise<void> {
  const file = path.join(runDir, 'serial.log');
  await waitFor(`"QWD: boot ok" ${count} times on the guest's serial console`, () => {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    return text.split(/\r?\n/).filter((l) => l.trim() === 'QWD: boot ok').length >= count;
  }, timeoutMs);
}

/** A broker with the demo machine and one running demo session. */
async function demoSession(t: ExecutionContext, user: string): Promise<{ broker: Awaited<ReturnType<typeof startTestBroker>>; s: ApiJson; runDir: string }> {
  const setup = makeSetup(t, {}, { machines: (d) => writeDemoMachine(d) });
  const broker = await startTestBroker(t, setup.config);
  const { json: s, status } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user, lifetimeS: 3 * 3600 });
  t.is(status, 201, JSON.stringify(s));
  const found = broker.services.manager.lookupToken(s.token);
  if (found.kind !== 'live') throw new Error(`the new session's token looks up as ${found.kind}`);
  return { broker, s, runDir: found.row.runDir };
}

/** Opens the viewer at `url` and waits until it says `status` and the booted guest's shell sits still at its prompt. */
async function openBootedViewer(page: Page, url: string, runDir: string, status = 'Connected'): Promise<Screen> {
  await page.goto(url);
  await waitForStatus(page, status, 15000);
  await waitForSerialLine(runDir, 'QWD: boot ok', 60000);
  return waitForQuietScreen(page, 2000, 30000);
}

async function echoCount(page: Page): Promise<number> {
  const screen = await readScreen(page);
  return screen ? findEchoedCommands(screen).length : 0;
}

async function waitForEchoes(page: Page, what: string, count: number): Promise<Screen> {
  return waitForScreen(page, `the shell to run ${what} ("echo qwd" then "qwd" shown ${count} time(s))`, (s) => findEchoedCommands(s).length >= count, 15000);
}

async function noHorizontalScroll(page: Page): Promise<{ scrollWidth: number; innerWidth: number }> {
  return page.evaluate(() => ({ scrollWidth: document.scrollingElement!.scrollWidth, innerWidth: window.innerWidth }));
}

/**
 * Visible controls without an accessible name (aria-label, aria-labelledby, a label, a button's text, a title):
 * the nearest a test gets to what a screen reader would announce as "button" and nothing more.
 */
async function unnamedVisibleControls(page: Page): Promise<string[]> {
  // No named functions inside: tsx would wrap them in a __name() helper the page does not have.
  return page.evaluate(() => [...document.querySelectorAll('button, input:not([type=hidden]), textarea, select')]
    .filter((el) => el.checkVisibility())
    .filter((el) => {
      const labelledBy = (el.getAttribute('aria-labelledby') ?? '').split(/\s+/).filter(Boolean)
        .map((id) => document.getElementById(id)?.textContent ?? '').join(' ');
      const labels = [...((el as HTMLInputElement).labels ?? [])].map((l) => l.textContent ?? '').join(' ');
      const text = el.tagName === 'BUTTON' ? el.textContent ?? '' : '';
      return !`${el.getAttribute('aria-label') ?? ''}${labelledBy}${labels}${text}${el.getAttribute('title') ?? ''}`.trim();
    })
    .map((el) => el.outerHTML));
}

/**
 * The unnamed controls of the toolbar (panels closed), then of each panel, opened in turn by its button and closed
 * again: keyed by 'toolbar' and the panels' ids, so a panel that is missing shows too.
 */
async function unnamedControlsByPanel(page: Page): Promise<Record<string, string[]>> {
  const found: Record<string, string[]> = { toolbar: await unnamedVisibleControls(page) };
  for (const button of await page.locator('button[aria-controls]').all()) {
    const panel = page.locator(`#${await button.getAttribute('aria-controls')}`);
    await button.click();
    await panel.waitFor({ state: 'visible', timeout: 5000 });
    found[(await panel.getAttribute('id'))!] = await unnamedVisibleControls(page);
    await button.click();
    await panel.waitFor({ state: 'hidden', timeout: 5000 });
  }
  return found;
}

/** The canvas's box on the page and the remote framebuffer's size. */
async function canvasGeometry(page: Page) {
  return page.evaluate(() => {
    const canvas = document.querySelector('#screen canvas') as HTMLCanvasElement;
    const box = canvas.getBoundingClientRect();
    const holder = canvas.parentElement!;
    return {
      x: box.x, y: box.y, width: box.width, height: box.height, fbWidth: canvas.width, fbHeight: canvas.height,
      holderScrollWidth: holder.scrollWidth, holderClientWidth: holder.clientWidth,
    };
  });
}

test('in Chromium, the toolbar is labelled and reachable with Tab, goes full screen, switches size modes and remembers quality and compression after a reload', async (t) => {
  t.timeout(90_000);
  // The blank machine (SeaBIOS only) draws its 720×400 text screen within a second: this test is about the page.
  const setup = makeSetup(t, { qemu: { network: 'none' } });
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'tara', lifetimeS: 3 * 3600 });
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  await page.goto(s.viewerUrl);
  t.regex(await waitForStatus(page, 'Connected', 15000), /^Connected · 2 h 59 min left$/);
  await waitForScreen(page, 'the blank machine\'s screen', (sc) => sc.lit > 100, 15000);
  // The connection indicator: connected, with the round trip of an API request.
  await waitFor('the round-trip time to show', async () => /^\d+ ms$/.test(await page.locator('#connection .rtt').textContent() ?? ''), 10000);
  t.is(await page.locator('#connection').getAttribute('data-state'), 'connected');
  t.regex(await page.locator('#connection').getAttribute('aria-label') ?? '', /^Connected, round trip to the server \d+ ms$/);
  // A dropped connection: the indicator says reconnecting, then connected again (with a new round trip).
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as unknown as ViewerGlobals).qwdStates = seen;
    const el = document.getElementById('connection')!;
    new MutationObserver(() => seen.push(el.dataset.state!)).observe(el, { attributeFilter: ['data-state'] });
    (window as unknown as ViewerGlobals).qwdRfb.disconnect();
  });
  let states = '';
  await waitFor('the viewer to reconnect', async () => {
    // Each poll sets the state again: the changes are what count.
    states = (await page.evaluate(() => (window as unknown as ViewerGlobals).qwdStates as string[])).filter((st, i, all) => st !== all[i - 1]).join(' ');
    return states === 'reconnecting connected';
  }, 15000).catch((err) => {
    throw new Error(`${err.message}; the indicator went ${JSON.stringify(states)}`, { cause: err });
  });
  await waitFor('the round-trip time to show again', async () => /^\d+ ms$/.test(await page.locator('#connection .rtt').textContent() ?? ''), 10000);
  t.regex(await waitForStatus(page, 'Connected', 5000), /^Connected · 2 h 59 min left$/);
  t.false(await page.locator('#view-only-badge').isVisible(), 'no view-only badge for the control link');
  t.false(await page.locator('#osk-button').isVisible(), 'no on-screen keyboard button without a touch screen');

  // Every visible control has a name for screen readers (the panels' controls are checked at the end); sticky keys
  // say whether they are held.
  t.deepEqual(await unnamedVisibleControls(page), [], 'controls without an accessible name');
  t.deepEqual(await page.locator('[data-sticky]').evaluateAll((els) => els.map((el) => el.getAttribute('aria-pressed'))), ['false', 'false', 'false']);

  // From the desktop (which has the focus once connected, and sends Tab to the guest), Ctrl+Alt+Shift goes to
  // the toolbar's first button; Tab then reaches every toolbar control in order.
  t.is(await page.evaluate(() => document.activeElement?.tagName), 'CANVAS');
  await page.keyboard.down('Control');
  await page.keyboard.down('Alt');
  await page.keyboard.press('Shift');
  await page.keyboard.up('Alt');
  await page.keyboard.up('Control');
  const order = [await page.evaluate(() => document.activeElement?.id ?? '')];
  for (let i = 0; i < 3; i++) {
    await page.keyboard.press('Tab');
    order.push(await page.evaluate(() => document.activeElement?.id ?? ''));
  }
  t.deepEqual(order, ['keys-button', 'clipboard-button', 'display-button', 'fullscreen-button']);
  // The keys panel from the keyboard: Enter opens it with the focus inside, Space holds Ctrl, Escape closes it.
  await page.focus('#keys-button');
  await page.keyboard.press('Enter');
  t.true(await page.locator('#keys-panel').isVisible());
  t.is(await page.locator('#keys-button').getAttribute('aria-expanded'), 'true');
  t.is(await page.evaluate(() => document.activeElement?.getAttribute('data-sticky')), 'Control');
  await page.keyboard.press('Space');
  t.is(await page.locator('[data-sticky=Control]').getAttribute('aria-pressed'), 'true');
  await saveScreenshot(page, 'viewer-toolbar.png', t);
  await page.keyboard.press('Space');
  t.is(await page.locator('[data-sticky=Control]').getAttribute('aria-pressed'), 'false');
  await page.keyboard.press('Escape');
  t.false(await page.locator('#keys-panel').isVisible());
  t.is(await page.evaluate(() => document.activeElement?.id), 'keys-button', 'the focus goes back to the button');

  // Full screen, from a click (a user gesture), and back.
  await page.click('#fullscreen-button');
  await waitFor('the page to go full screen', () => page.evaluate(() => document.fullscreenElement === document.documentElement), 5000);
  // The button follows the browser's fullscreenchange event, which comes a frame after fullscreenElement changes.
  await waitFor('the button to say full screen is on', async () => (await page.locator('#fullscreen-button').getAttribute('aria-pressed')) === 'true', 5000);
  t.is(await page.locator('#fullscreen-button').textContent(), 'Exit full screen');
  await page.click('#fullscreen-button');
  await waitFor('the page to leave full screen', () => page.evaluate(() => document.fullscreenElement === null), 5000);
  await waitFor('the button to say full screen is off', async () => (await page.locator('#fullscreen-button').getAttribute('aria-pressed')) === 'false', 5000);
  t.is(await page.locator('#fullscreen-button').textContent(), 'Full screen');

  // Size modes: fit (the default) scales the 720×400 screen to the window; actual size is 1:1 and scrolls in a
  // small window; no remote resize offered (the page says data-resize="scale").
  await page.click('#display-button');
  t.true(await page.locator('input[name=scaling][value=fit]').isChecked());
  t.is(await page.locator('input[name=scaling][value=remote]').count(), 0);
  let g = await canvasGeometry(page);
  t.is(g.fbWidth, 720);
  t.true(Math.abs(g.width - 1024) <= 2, `fit: the canvas is ${g.width} px wide in a 1024 px window`);
  await page.check('input[name=scaling][value=native]');
  await waitFor('the canvas to show 1:1', async () => Math.abs((await canvasGeometry(page)).width - 720) <= 1, 5000);
  await page.setViewportSize({ width: 500, height: 400 });
  g = await waitFor('the 1:1 screen to scroll in a 500 px window', async () => {
    const now = await canvasGeometry(page);
    return now.holderScrollWidth > now.holderClientWidth ? now : false;
  }, 5000);
  t.true(Math.abs(g.width - 720) <= 1);
  await page.check('input[name=scaling][value=fit]');
  g = await waitFor('the screen to fit the 500 px window', async () => {
    const now = await canvasGeometry(page);
    return now.width <= 500 && now.holderScrollWidth <= now.holderClientWidth ? now : false;
  }, 5000);
  t.true(g.width > 450, `fit: ${g.width} px`);

  // Quality and compression go to noVNC and are kept by this browser, with the size mode, across a reload.
  await page.locator('#quality').fill('3');
  await page.locator('#compression').fill('7');
  await page.check('input[name=scaling][value=native]');
  t.deepEqual(await page.evaluate(() => [(window as unknown as ViewerGlobals).qwdRfb.qualityLevel, (window as unknown as ViewerGlobals).qwdRfb.compressionLevel]), [3, 7]);
  await page.reload();
  await waitForStatus(page, 'Connected', 15000);
  t.is(await page.locator('#quality').inputValue(), '3');
  t.is(await page.locator('#compression').inputValue(), '7');
  t.is(await page.locator('#quality-value').textContent(), '3');
  t.deepEqual(await page.evaluate(() => [(window as unknown as ViewerGlobals).qwdRfb.qualityLevel, (window as unknown as ViewerGlobals).qwdRfb.compressionLevel, (window as unknown as ViewerGlobals).qwdRfb.scaleViewport]), [3, 7, false]);
  t.true(await page.locator('input[name=scaling][value=native]').isChecked());

  // Each panel's controls have names too, once it is open.
  t.deepEqual(await unnamedControlsByPanel(page), { 'toolbar': [], 'keys-panel': [], 'clipboard-panel': [], 'display-panel': [] }, 'controls without an accessible name');
  assertNoPageProblems(t, 'viewer', browser.problems);
});

test.serial('in Chromium, the toolbar\'s keys reach the demo guest: Tab completes a command, sticky Ctrl + C interrupts one, Esc, arrows, F1–F12, sticky Alt and Super leave as their keysyms, Ctrl+Alt+Del reboots it', async (t) => {
  t.timeout(240_000);
  const { s, runDir } = await demoSession(t, 'keys');
  const browser = await launchChromium(t);
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  t.teardown(async () => {
    if (!t.passed) await saveScreenshot(page, 'viewer-toolbar-keys-failed.png', t);
  });
  const sent = recordSent(page);
  await openBootedViewer(page, s.viewerUrl, runDir);
  await page.click('#screen canvas');

  // "ech" + the toolbar's Tab: the shell completes "echo "; then "qwd" and Enter run it.
  await page.keyboard.type('ech', { delay: 30 });
  await page.click('#keys-button');
  await page.click('[data-key=Tab]');
  t.is(await page.evaluate(() => document.activeElement?.tagName), 'CANVAS', 'the desktop keeps the focus after a toolbar key');
  await page.keyboard.type('qwd', { delay: 30 });
  await page.keyboard.press('Enter');
  await waitForEchoes(page, '"ech" + Tab completed to "echo qwd"', 1);

  // A command that runs for minutes, stopped with the sticky Ctrl and "c": the shell then runs the next one.
  await page.keyboard.type('sleep 600', { delay: 30 });
  await page.keyboard.press('Enter');
  await page.click('[data-sticky=Control]');
  t.is(await page.locator('[data-sticky=Control]').getAttribute('aria-pressed'), 'true');
  await page.keyboard.press('c');
  await waitFor('the sticky Ctrl to let go after one key', async () => (await page.locator('[data-sticky=Control]').getAttribute('aria-pressed')) === 'false', 5000);
  await page.keyboard.type('echo qwd', { delay: 30 });
  await page.keyboard.press('Enter');
  await waitForEchoes(page, '"echo qwd" after Ctrl+C interrupted "sleep 600"', 2);
  await saveScreenshot(page, 'viewer-toolbar-keys.png', t);
  t.regex(await page.locator('#status').textContent() ?? '', /^Connected · 2 h 59 min left$/);

  // The other keys leave the page as the X keysyms they name (read on its WebSocket; a control link hands keys to
  // QEMU as they are): Esc, the arrows, F1–F12, and Alt and Super held for the next key, then let go.
  const keyEvents = () => sent.filter((m) => m.type === 'key' || m.type === 'qemu-key');
  const pressWith = async (selector: string, what: string) => {
    const before = keyEvents().length;
    await page.click(selector);
    await waitFor(`${what} to leave the page`, () => keyEvents().length > before, 5000);
    return keyEvents().slice(before);
  };
  const named: Array<[string, number]> = [
    ['Escape', 0xff1b], ['ArrowLeft', 0xff51], ['ArrowUp', 0xff52], ['ArrowRight', 0xff53], ['ArrowDown', 0xff54],
    ...Array.from({ length: 12 }, (_, i) => [`F${i + 1}`, 0xffbe + i] as [string, number]),
  ];
  for (const [key, keysym] of named) {
    const events = await pressWith(`[data-key=${key}]`, `the toolbar's ${key}`);
    t.deepEqual(events.map((e) => [e.keysym, e.down]), [[keysym, true], [keysym, false]], key);
  }
  for (const [sticky, keysym] of [['Alt', 0xffe9], ['Super', 0xffeb]] as const) {
    await page.click(`[data-sticky=${sticky}]`);
    const events = await pressWith('[data-key=Escape]', `${sticky} + Esc`);
    await waitFor(`${sticky} to be let go`, () => keyEvents().at(-1)?.keysym === keysym, 5000);
    t.deepEqual(
      keyEvents().slice(keyEvents().length - 4).map((e) => [e.keysym, e.down]),
      [[keysym, true], [0xff1b, true], [0xff1b, false], [keysym, false]], `${sticky} held for Esc (${events.length})`,
    );
    t.is(await page.locator(`[data-sticky=${sticky}]`).getAttribute('aria-pressed'), 'false');
  }

  // Ctrl+Alt+Del: BusyBox init reboots the guest, which boots a second time.
  await page.click('#ctrl-alt-del');
  await waitForBoots(runDir, 2, 90_000);
  t.is(await page.locator('#connection').getAttribute('data-state'), 'connected', 'the viewer stayed connected through the reboot');
  await waitForScreen(page, 'the rebooted guest to draw its screen again', (sc) => sc.lit > 500, 30000);
  assertNoPageProblems(t, 'viewer', browser.problems);
});

test.serial('in Chromium on a 390×844 touch phone, the session page and the viewer fit the screen, the on-screen keyboard (IME composition included) types into the guest, and tap, drag and two-finger scroll reach it as the mouse; at actual size a drag pans the view', async (t) => {
  t.timeout(240_000);
  const { s, runDir } = await demoSession(t, 'phone');
  const browser = await launchChromium(t, PHONE);
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  t.teardown(async () => {
    if (!t.passed) await saveScreenshot(page, 'viewer-phone-failed.png', t);
  });

  // The session page: links, QR codes, Extend and Stop, without sideways scrolling.
  await page.goto(s.url);
  const sessionPage = await noHorizontalScroll(page);
  t.true(sessionPage.scrollWidth <= sessionPage.innerWidth, `session page: ${sessionPage.scrollWidth} px wide in a ${sessionPage.innerWidth} px screen`);
  for (const selector of ['a:has-text("Connect")', 'figure.qr.control svg', 'button:has-text("Extend")', 'button:has-text("Stop")']) {
    const box = await page.locator(selector).boundingBox();
    t.truthy(box, `${selector} is shown`);
    t.true(box!.x >= 0 && box!.x + box!.width <= 390, `${selector} fits across the screen (${box!.x}+${box!.width})`);
  }
  await saveScreenshot(page, 'session-phone.png', t);

  const sent = recordSent(page);
  await openBootedViewer(page, s.viewerUrl, runDir);
  const viewer = await noHorizontalScroll(page);
  t.true(viewer.scrollWidth <= viewer.innerWidth, `viewer: ${viewer.scrollWidth} px wide in a ${viewer.innerWidth} px screen`);
  for (const id of ['osk-button', 'keys-button', 'display-button', 'status']) {
    const box = await page.locator(`#${id}`).boundingBox();
    t.true(!!box && box.x >= 0 && box.x + box.width <= 390 && box.y >= 0, `#${id} is on the screen: ${JSON.stringify(box)}`);
  }
  const g = await canvasGeometry(page);
  t.true(g.width <= 390 && g.width > 380, `the guest's screen fits the phone: ${g.width} px`);

  // The keyboard button focuses the hidden input (that is what raises a phone's keyboard). A phone's keyboard
  // sends text as input events with no usable keydown: insertText does exactly that; the Backspace is an
  // input event (deleteContentBackward) too; Enter comes as a key.
  await page.tap('#osk-button');
  t.is(await page.evaluate(() => document.activeElement?.id), 'osk-input');
  t.is(await page.locator('#osk-button').getAttribute('aria-pressed'), 'true');
  await page.keyboard.insertText('echo qwdx');
  await page.evaluate(() => document.execCommand('delete'));
  await page.keyboard.press('Enter');
  await waitForEchoes(page, '"echo qwdx", Backspace, Enter typed on the on-screen keyboard', 1);

  // An IME composing a word (CJK input, a phone's word suggestions): nothing goes out while it composes, the
  // committed word once.
  const cdp = await page.context().newCDPSession(page);
  const typedSince = (i: number) => sent.slice(i).filter((m) => (m.type === 'key' || m.type === 'qemu-key') && m.down).map((m) => String.fromCodePoint(m.keysym!)).join('');
  let from = sent.length;
  await cdp.send('Input.imeSetComposition', { text: 'ec', selectionStart: 2, selectionEnd: 2 });
  await cdp.send('Input.imeSetComposition', { text: 'ecg', selectionStart: 3, selectionEnd: 3 });
  t.is(await page.evaluate(() => (document.activeElement as HTMLInputElement).value.endsWith('ecg')), true, 'the input is composing');
  t.is(typedSince(from), '', 'nothing sent while composing');
  await cdp.send('Input.insertText', { text: 'echo' });
  await waitFor('the committed word to be sent', () => typedSince(from) === 'echo', 5000);
  await page.keyboard.insertText(' qwd');
  await page.keyboard.press('Enter');
  await waitForEchoes(page, '"echo" committed by an IME, then " qwd" and Enter', 2);
  await saveScreenshot(page, 'viewer-phone.png', t);

  // A tap is a click (button 1 pressed and released) where the finger was, in guest pixels.
  const tapX = g.x + g.width / 2, tapY = g.y + g.height / 2;
  from = sent.length;
  await page.touchscreen.tap(tapX, tapY);
  const press = await waitFor('a tap to reach the guest as a click', () => {
    const pointer = sent.slice(from).filter((m) => m.type === 'pointer');
    const down = pointer.findIndex((m) => m.buttons === 1);
    return down >= 0 && pointer.slice(down + 1).some((m) => m.buttons === 0) ? pointer[down]! : false;
  }, 5000);
  t.true(Math.abs(press.x! - g.fbWidth / 2) <= 3 && Math.abs(press.y! - g.fbHeight / 2) <= 3,
    `the click lands at ${press.x},${press.y} of ${g.fbWidth}×${g.fbHeight}`);

  // A one-finger drag holds button 1 while the pointer moves; two fingers moving up scroll (buttons 4/5).
  const touch = async (type: 'touchStart' | 'touchMove' | 'touchEnd', points: { x: number; y: number }[]) =>
    cdp.send('Input.dispatchTouchEvent', { type, touchPoints: points.map((p, id) => ({ ...p, id })) });
  from = sent.length;
  await touch('touchStart', [{ x: tapX - 60, y: tapY }]);
  for (let i = 1; i <= 6; i++) await touch('touchMove', [{ x: tapX - 60 + i * 20, y: tapY }]);
  await touch('touchEnd', []);
  const drag = await waitFor('a drag to reach the guest as a held button that moves', () => {
    const held = sent.slice(from).filter((m) => m.type === 'pointer' && m.buttons === 1);
    return new Set(held.map((m) => m.x)).size >= 2 && sent.slice(from).some((m) => m.type === 'pointer' && m.buttons === 0) ? held : false;
  }, 5000);
  t.true(drag.at(-1)!.x! > drag[0]!.x!, 'the pointer moved right with the finger');
  from = sent.length;
  await touch('touchStart', [{ x: tapX - 30, y: tapY + 40 }, { x: tapX + 30, y: tapY + 40 }]);
  for (let i = 1; i <= 8; i++) await touch('touchMove', [{ x: tapX - 30, y: tapY + 40 - i * 15 }, { x: tapX + 30, y: tapY + 40 - i * 15 }]);
  await touch('touchEnd', []);
  await waitFor('a two-finger scroll to reach the guest as wheel buttons', () => sent.slice(from).some((m) => m.type === 'pointer' && (m.buttons! & 0x18) !== 0), 5000);

  // Actual size on the phone: the 720 px desktop at 1:1 in a 390 px window; a one-finger drag moves the view
  // (no button pressed in the guest), and the page still does not scroll sideways.
  await page.tap('#display-button');
  await page.tap('input[name=scaling][value=native]');
  await page.tap('#display-button');
  await waitFor('the desktop to be clipped at 1:1', async () => (await page.evaluate(() => (window as unknown as ViewerGlobals).qwdRfb.clippingViewport)) === true, 5000);
  const unpanned = (await readScreen(page))!;
  t.true(unpanned.width <= 390, `the canvas shows a window-sized part of the desktop (${unpanned.width} px)`);
  from = sent.length;
  await touch('touchStart', [{ x: 300, y: tapY }]);
  for (let i = 1; i <= 6; i++) await touch('touchMove', [{ x: 300 - i * 30, y: tapY }]);
  await touch('touchEnd', []);
  await waitForScreen(page, 'the view to move with the finger', (sc) => changedPixels(unpanned, sc) > CELL_PX, 5000);
  const panned = await noHorizontalScroll(page);
  t.true(panned.scrollWidth <= panned.innerWidth, 'no sideways scrolling at 1:1');
  t.false(sent.slice(from).some((m) => m.type === 'pointer' && (m.buttons! & 1) !== 0), 'dragging the view presses no button in the guest');
  assertNoPageProblems(t, 'phone', browser.problems);
});

test.serial('in Chromium, a view-only viewer gets a badge and no keys, keyboard or paste, and what it types does not reach the guest', async (t) => {
  t.timeout(180_000);
  const { s, runDir } = await demoSession(t, 'vic');
  const watcher = await launchChromium(t, PHONE);
  const page = watcher.context.pages()[0] ?? await watcher.context.newPage();
  const sent = recordSent(page);
  const before = await openBootedViewer(page, s.viewViewerUrl, runDir, 'View-only');
  const viewer = await noHorizontalScroll(page);
  t.true(viewer.scrollWidth <= viewer.innerWidth, 'the view-only viewer fits the phone too');

  t.true(await page.locator('#view-only-badge').isVisible());
  t.is(await page.locator('#view-only-badge').textContent(), 'View only');
  for (const selector of ['#osk-button', '#osk-input', '#keys-button', '#keys-panel', '#ctrl-alt-del', '[data-sticky]', '#clipboard-send']) {
    t.is(await page.locator(selector).count(), 0, `${selector} is not on a view-only page`);
  }
  t.is(await page.locator('input[name=scaling][value=remote]').count(), 0);
  if (await page.locator('#clipboard-text').count()) t.not(await page.locator('#clipboard-text').getAttribute('readonly'), null, 'the clipboard text is read-only');
  await saveScreenshot(page, 'viewer-view-only.png', t);
  // Its controls, and those of its one panel, have names for screen readers.
  t.deepEqual(await unnamedControlsByPanel(page), { 'toolbar': [], 'display-panel': [] }, 'controls without an accessible name');

  // Typing and tapping: nothing leaves the browser, and the guest's screen stays as it was.
  await page.tap('#screen canvas');
  await page.keyboard.type('echo qwd', { delay: 30 });
  await page.keyboard.press('Enter');
  const after = await waitForQuietScreen(page, 2000, 15000);
  t.true(changedPixels(before, after) <= CELL_PX, 'the guest screen did not change');
  t.deepEqual(sent.filter((m) => m.type !== 'other' && m.type !== 'clipboard-caps'), [], 'no key, pointer or clipboard text was sent');

  // The same screen is live: what the owner types shows in the view-only viewer.
  const owner = await launchChromium(t);
  const ownerPage = owner.context.pages()[0] ?? await owner.context.newPage();
  await ownerPage.goto(s.viewerUrl);
  await waitForStatus(ownerPage, 'Connected', 15000);
  await ownerPage.click('#screen canvas');
  await ownerPage.keyboard.type('echo qwd', { delay: 30 });
  await ownerPage.keyboard.press('Enter');
  await waitForEchoes(page, 'the owner\'s "echo qwd", seen by the view-only viewer', 1);
  t.is(await echoCount(page), 1);
  assertNoPageProblems(t, 'view-only', watcher.problems);
});

test('in Chromium, the clipboard goes to the desktop from the panel and, with the browser\'s permission, by itself; text from the desktop shows in the panel and lands in the browser\'s clipboard', async (t) => {
  t.timeout(90_000);
  const setup = makeSetup(t, { qemu: { network: 'none' } });
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t);
  await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: broker.url });
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'clio', lifetimeS: 1800 });
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  const sent = recordSent(page);
  await page.goto(s.viewerUrl);
  await waitForStatus(page, 'Connected', 15000);
  const cutTexts = () => sent.filter((m) => m.type === 'cut-text').length;

  // The panel: typed text and Send (UTF-8 beyond Latin-1 included; how it reaches the guest is the bridge's and the agent's part).
  await page.click('#clipboard-button');
  await page.fill('#clipboard-text', 'Grüße, καλημέρα, 你好');
  let before = cutTexts();
  await page.click('#clipboard-send');
  await waitFor('the panel\'s text to be sent as client cut text', () => cutTexts() > before, 5000);
  t.regex(await page.locator('#clipboard-note').textContent() ?? '', /^Sent/);

  // Automatic: what the browser's clipboard holds goes to the desktop when the page gets the focus back.
  await page.evaluate(() => navigator.clipboard.writeText('copied elsewhere'));
  before = cutTexts();
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await waitFor('the browser\'s clipboard to be sent when the page gets the focus', () => cutTexts() > before, 5000);
  // The same text is not sent again on the next focus; new text is.
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await page.evaluate(() => navigator.clipboard.writeText('copied elsewhere, again'));
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await waitFor('the new clipboard text to be sent', () => cutTexts() > before + 1, 5000);
  t.is(cutTexts(), before + 2, 'the unchanged clipboard was not sent twice');

  // From the desktop: the blank machine has no clipboard agent, so noVNC's own `clipboard` event is raised in
  // the page (a fake of the guest's side only; the desktop image's tests copy for real).
  await page.evaluate(() => (window as unknown as ViewerGlobals).qwdRfb.dispatchEvent(new CustomEvent('clipboard', { detail: { text: 'from the guest: ½ ∑' } })));
  t.is(await page.locator('#clipboard-text').inputValue(), 'from the guest: ½ ∑');
  await waitFor('the guest\'s text to be in the browser\'s clipboard',
    async () => (await page.evaluate(() => navigator.clipboard.readText())) === 'from the guest: ½ ∑', 5000);
  assertNoPageProblems(t, 'viewer', browser.problems);
});

test('the viewer page offers only what the clipboard policy, the resize mode and the link allow', (t) => {
  const ids = (page: string) => [...page.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]).filter((id) => /clipboard|osk|keys|ctrl-alt-del|badge/.test(id!));
  const render = (access: 'control' | 'view', clipboard: ClipboardMode, resize: ResizeMode = 'scale') =>
    viewerPage('tok', 0, access, [60], null, 0, { clipboard, resize });
  const keys = ['keys-panel', 'ctrl-alt-del'];
  const fullClipboard = ['clipboard-panel', 'clipboard-text', 'clipboard-send', 'clipboard-note'];
  t.deepEqual(ids(render('control', 'both')), ['osk-button', 'keys-button', 'clipboard-button', ...keys, ...fullClipboard, 'osk-input']);
  t.deepEqual(ids(render('control', 'to-guest')), ['osk-button', 'keys-button', 'clipboard-button', ...keys, ...fullClipboard, 'osk-input']);
  t.regex(render('control', 'to-guest'), /Text you put here can be pasted in the desktop\./);
  t.deepEqual(ids(render('control', 'from-guest')),
    ['osk-button', 'keys-button', 'clipboard-button', ...keys, 'clipboard-panel', 'clipboard-text', 'clipboard-note', 'osk-input']);
  t.regex(render('control', 'from-guest'), /<textarea id="clipboard-text" rows="4" spellcheck="false" readonly>/);
  t.deepEqual(ids(render('control', 'off')), ['osk-button', 'keys-button', 'keys-panel', 'ctrl-alt-del', 'osk-input']);
  t.deepEqual(ids(render('view', 'both')), ['view-only-badge', 'clipboard-button', 'clipboard-panel', 'clipboard-text', 'clipboard-note']);
  t.deepEqual(ids(render('view', 'to-guest')), ['view-only-badge']);
  t.deepEqual(ids(render('view', 'off')), ['view-only-badge']);
  t.regex(render('control', 'off'), /data-clipboard="off" data-resize="scale"/);
  t.regex(render('control', 'both', 'remote'), /value="remote"> Resize the desktop to the window/);
  t.notRegex(render('view', 'both', 'remote'), /value="remote"/);
  t.notRegex(render('control', 'both', 'scale'), /value="remote"/);
  t.regex(viewerPage('tok', 0, 'control', [60]), /data-clipboard="both" data-resize="scale"/, 'the defaults');
});

test('in Chromium, a viewer page that says data-clipboard="off" and data-resize="remote" offers no clipboard, sends none by itself, and asks the guest to follow the window', async (t) => {
  t.timeout(90_000);
  const setup = makeSetup(t, { qemu: { network: 'none' } });
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t);
  // local-network-access: a page fulfilled by the test (below) counts as coming from outside, and Chromium would
  // then refuse its WebSocket to 127.0.0.1 (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS).
  await browser.context.grantPermissions(['clipboard-read', 'clipboard-write', 'local-network-access'], { origin: broker.url });
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'rhea', lifetimeS: 3 * 3600 });
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  // The broker renders these attributes from the machine (display: virtio, clipboard: off) and the site's policy. Here
  // the page is rendered with them (same function, the broker's own headers and CSP kept) while the blank machine
  // stays as it is (std VGA; clipboard both, so the bridge would pass a paste): what the page does not send is the
  // page's own doing, not the bridge's, and its resize request is only sent, never followed.
  await page.route(`${broker.url}/s/${s.token}/view`, async (route) => {
    const response = await route.fetch();
    const original = await response.text();
    const expiresAt = Number(/data-expires-at="(\d+)"/.exec(original)![1]);
    const body = viewerPage(s.token, expiresAt, 'control', setup.config.sessions.warnBeforeS, null, Date.now(), { clipboard: 'off', resize: 'remote' });
    await route.fulfill({ response, body });
  });
  const sent = recordSent(page);
  // "Fit" chosen earlier on a desktop that cannot follow the window does not take remote resize away here.
  await page.addInitScript(() => localStorage.setItem('qwd.viewer.scaling', 'fit'));
  await page.goto(s.viewerUrl);
  await waitForStatus(page, 'Connected', 15000);
  t.is(await page.locator('#clipboard-button').count(), 0);
  t.true(await page.locator('#keys-button').isVisible(), 'the keys are still there');
  await page.click('#display-button');
  t.true(await page.locator('input[name=scaling][value=remote]').isChecked(), 'remote resize is the default where the machine can do it');
  t.deepEqual(await page.evaluate(() => [(window as unknown as ViewerGlobals).qwdRfb.resizeSession, (window as unknown as ViewerGlobals).qwdRfb.scaleViewport]), [true, true]);
  // The blank machine's std VGA cannot follow (QEMU answers "invalid screen layout"): the request is what counts here.
  await waitFor('a SetDesktopSize request for the window\'s size', () => sent.some((m) => m.type === 'set-desktop-size'), 10000);
  await page.check('input[name=scaling][value=fit]');
  t.deepEqual(await page.evaluate(() => [(window as unknown as ViewerGlobals).qwdRfb.resizeSession, (window as unknown as ViewerGlobals).qwdRfb.scaleViewport]), [false, true]);
  t.deepEqual(await page.evaluate(() => [localStorage.getItem('qwd.viewer.scalingRemote'), localStorage.getItem('qwd.viewer.scaling')]), ['fit', 'fit'], 'kept for desktops that can follow');

  // The browser's clipboard stays in the browser: no cut text on focus, nor on a paste into the page.
  await page.evaluate(() => navigator.clipboard.writeText('secret'));
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await page.evaluate(() => {
    const data = new DataTransfer();
    data.setData('text/plain', 'pasted secret');
    document.querySelector('#screen canvas')!.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true }));
  });
  // A key typed afterwards arrives: whatever was to be sent before it has been sent by then.
  await page.click('#screen canvas');
  await page.keyboard.press('x');
  await waitFor('the key to be sent', () => sent.some((m) => (m.type === 'key' || m.type === 'qemu-key') && m.keysym === 0x78), 5000);
  t.deepEqual(sent.filter((m) => m.type === 'cut-text'), [], 'no clipboard text left the browser');
  assertNoPageProblems(t, 'viewer', browser.problems);
});
