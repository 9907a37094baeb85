// End to end in a real browser: Debian's Chromium (through playwright-core)
// fills the form, lands on the session page with its QR code, opens the noVNC
// viewer against a real broker booting the demo guest under QEMU, types into
// the guest's shell, and a second browser joins through the share link while
// the first is still connected; with a short life-time, both pages count
// down, warn before the end and say why it ended. Screenshots are kept in
// test-artifacts/.
/// <reference lib="dom" />
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Page } from 'playwright-core';
import { api, startTestBroker } from '../helpers/broker.js';
import { launchChromium, requireChromium } from '../helpers/chromium.js';
import { ARTIFACTS, CELL_PX, TOKEN_PATH, type Screen, assertNoPageProblems, changedPixels, findEchoedCommand, openInNewTab, readScreen, saveScreenshot, waitForQuietScreen, waitForScreen, waitForSerialLine, waitForStatus } from '../helpers/viewer-page.js';
import { makeSetup, requireDemoImage, requireQemu, waitFor, writeDemoMachine } from '../helpers/env.js';

test.before(() => {
  requireQemu();
  requireChromium();
  requireDemoImage();
});


test('in Chromium, the form starts the demo guest, the viewer shows and types into it, and the share link shows the same screen', async (t) => {
  t.timeout(180_000);
  const started = Date.now();
  fs.rmSync(path.join(ARTIFACTS, 'browser-viewer-failed.png'), { force: true });
  const setup = makeSetup(t, {}, { machines: (d) => writeDemoMachine(d) });
  const broker = await startTestBroker(t, setup.config);
  const owner = await launchChromium(t);

  // The form: the only machine is pre-selected; a name is all it needs.
  const page = owner.context.pages()[0] ?? await owner.context.newPage();
  await page.goto(`${broker.url}/`);
  t.true(await page.locator('input[name=machine][value=demo]').isChecked(), 'demo is pre-selected');
  await page.fill('input[name=user]', 'tester');
  await page.getByRole('button', { name: 'Create' }).click();
  await page.waitForURL(TOKEN_PATH, { timeout: 30000 });

  // The session page: the QR code is drawn, the share link is this page.
  const sessionUrl = page.url();
  t.true(sessionUrl.startsWith(`${broker.url}/s/`), sessionUrl);
  const token = TOKEN_PATH.exec(new URL(sessionUrl).pathname)![1]!;
  const found = broker.services.manager.lookupToken(token);
  if (found.kind !== 'live') return t.fail(`the new session's token looks up as ${found.kind}`);
  t.is(found.row.owner, 'tester');
  t.is(found.row.machine, 'demo');
  t.true(await page.locator('figure.qr.control svg').isVisible(), 'the control QR code is visible');
  t.true(await page.locator('figure.qr.view svg').isVisible(), 'the view-only QR code is visible');
  t.is(await page.locator('input.share[aria-label="Control link"]').inputValue(), sessionUrl);
  t.is(await page.getByRole('link', { name: 'Connect' }).getAttribute('href'), `${sessionUrl}/view`);
  await saveScreenshot(page, 'browser-session.png', t);

  // The viewer, in the tab Connect opens: noVNC connects, then the guest draws.
  const viewer = await openInNewTab(page, 'a:has-text("Connect")');
  // Runs before the browser closes (teardowns run last-in first-out): what the viewer showed when it failed.
  t.teardown(async () => {
    if (!t.passed) await saveScreenshot(viewer, 'browser-viewer-failed.png', t);
  });
  t.is(viewer.url(), `${sessionUrl}/view`);
  await waitForStatus(viewer, 'Connected', 15000);
  const first = await waitForScreen(viewer, 'noVNC\'s canvas to show the guest (non-blank)', (s) => s.lit > 500, 30000);
  t.log(`guest screen ${first.width}×${first.height}, first non-blank after ${Date.now() - started} ms`);

  // Keys reach the guest. Type only once its shell reads the console: the
  // guest says "QWD: boot ok" on its serial port just before init starts the
  // shell, and the screen then settles on the prompt (keys typed earlier are
  // lost in the boot, which would prove nothing).
  await waitForSerialLine(found.row.runDir, 'QWD: boot ok', 60000);
  const quiet = await waitForQuietScreen(viewer, 2000, 30000);
  t.log(`guest booted and its screen quiet after ${Date.now() - started} ms`);
  t.is(findEchoedCommand(quiet), null, 'nothing was typed yet');
  await viewer.click('#screen canvas');
  await viewer.keyboard.type('echo qwd', { delay: 30 });
  // The shell echoes the keys: more changes than a blinking cursor can make.
  const typed = await waitForScreen(viewer, 'the typed command to show on the guest screen', (s) => changedPixels(quiet, s) > CELL_PX, 10000);
  // The command has not run before Enter: its output line appears only after it.
  // (Comparing pixel counts here would be too weak a proof: "qwd" and the next
  // prompt light fewer pixels than a text cell row when the echo was complete.)
  t.is(findEchoedCommand(typed), null, 'the command did not run before Enter');
  await viewer.keyboard.press('Enter');
  const answered = await waitForScreen(viewer, 'the shell to run the typed "echo qwd" (the command line, then "qwd" on the next line)', (s) => findEchoedCommand(s) !== null, 10000);
  t.log(`"echo qwd" ran in the guest, on text row ${findEchoedCommand(answered)!.row + 1}`);
  await saveScreenshot(viewer, 'browser-viewer.png', t);

  // A colleague (a second browser, its own profile) opens the share link,
  // then its viewer, while the owner stays connected: same screen for both.
  const colleague = await launchChromium(t);
  const shared = colleague.context.pages()[0] ?? await colleague.context.newPage();
  await shared.goto(await page.locator('input.share[aria-label="Control link"]').inputValue());
  t.is(shared.url(), sessionUrl);
  const sharedViewer = await openInNewTab(shared, 'a:has-text("Connect")');
  await waitForStatus(sharedViewer, 'Connected', 15000);
  // Read both canvases each round: the guest may still be drawing, so they
  // match once both have caught up (a blinking cursor aside).
  let ownerNow: Screen | null = answered;
  const seen = await waitForScreen(sharedViewer, 'the shared viewer to show the same screen as the owner\'s', (s) => s.lit > 500 && !!ownerNow && changedPixels(ownerNow, s) <= CELL_PX, 15000, async () => {
    ownerNow = await readScreen(viewer);
  });
  t.is(seen.width, first.width);
  t.is(seen.height, first.height);
  t.deepEqual(findEchoedCommand(seen), findEchoedCommand(answered), 'the colleague sees the command the owner typed');
  t.is(broker.bridge.viewerCount(found.row.id), 2);
  t.regex(await viewer.locator('#status').textContent() ?? '', /^Connected/, 'the owner is still connected');
  // The viewer asks the API who is here every 5 s.
  await waitFor('the owner\'s viewer to say someone else is connected', async () => (await viewer.locator('#others').textContent()) === '1 other person is connected', 12000);
  t.true(await viewer.locator('#others').isVisible());

  assertNoPageProblems(t, 'owner', owner.problems);
  assertNoPageProblems(t, 'colleague', colleague.problems);
  t.log(`done in ${Date.now() - started} ms`);
});

/** The number of seconds a countdown text shows, read with `pattern` (one group); fails the test on any other text. */
function secondsIn(text: string | null, pattern: RegExp): number {
  const m = pattern.exec(text ?? '');
  if (!m) throw new Error(`expected a countdown like ${pattern}, the page says ${JSON.stringify(text)}`);
  return Number(m[1]);
}

/**
 * From a loaded session page: its countdown and warning, and the viewer opened
 * by Connect once it is connected; fails (naming why) when that took so long
 * that 9 s or less of the short life-time are left for the test.
 */
async function openCountdownPages(t: ExecutionContext, page: Page, expiresAt: number) {
  const countdown = page.locator('section.session .countdown');
  const warning = page.locator('section.session p.warning');
  const viewer = await openInNewTab(page, 'a:has-text("Connect")');
  await waitForStatus(viewer, 'Connected', 15000);
  const early = (expiresAt - Date.now()) / 1000;
  t.true(early > 9, `the pages loaded with ${early.toFixed(1)} s left: too slow for this test`);
  return { countdown, warning, viewer };
}

test('in Chromium, the session page and the viewer count down, warn before the end, and say when the life-time ran out', async (t) => {
  t.timeout(90_000);
  // The blank machine (SeaBIOS only) starts in a fraction of a second: this test is about the pages, not the guest.
  // No guest network: its namespace costs start-up time this short life-time cannot spare on a busy host.
  const setup = makeSetup(t, { purge: { schedule: '* * * * * *' }, sessions: { warnBeforeS: [8] }, qemu: { network: 'none' } });
  const broker = await startTestBroker(t, setup.config);
  // Chromium first: its start-up (seconds on a busy host) must not eat the session's short life-time.
  const browser = await launchChromium(t);
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  // 30 s: Chromium and two pages may take ten seconds or more to load on a busy host; 9 s must be left after that.
  const { json: s, status } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'tess', lifetimeS: 30 });
  t.is(status, 201);
  const expiresAt = Date.parse(s.expiresAt);
  await page.goto(s.url);
  const { countdown, warning, viewer } = await openCountdownPages(t, page, expiresAt);

  // More than 8 s left: the remaining time shows, no warning yet.
  t.true(secondsIn(await countdown.textContent(), /^(\d+) s$/) > 8);
  t.false(await warning.isVisible(), 'no warning before the first point');
  t.true(secondsIn(await viewer.locator('#status').textContent(), /^Connected · 0 min (\d+) s left$/) > 8);

  // At 8 s before the end both pages warn, and still count down.
  await waitFor('the session page\'s warning', () => warning.isVisible(), expiresAt - 8000 - Date.now() + 10_000);
  t.regex(await warning.textContent() ?? '', /^This desktop ends in [1-8] s\. Save your work, or extend it\.$/);
  t.is(await warning.getAttribute('role'), 'alert');
  t.true(Date.now() >= expiresAt - 9000, 'not before the warning point');
  const viewerWarning = await waitForStatus(viewer, 'This desktop ends in', 3000);
  t.regex(viewerWarning, /^This desktop ends in 0 min [0-8] s: save your work\.$/);
  t.regex(await viewer.locator('#status').getAttribute('class') ?? '', /\bwarn\b/);
  const a = Number(/(\d) s\./.exec(await warning.textContent() ?? '')![1]);
  await waitFor('the warning to count down', async () => Number(/(\d) s\./.exec(await warning.textContent() ?? '')?.[1] ?? a) < a, 3000);

  // At the end the purge job stops the session: the viewer says why; the page reloads into the tombstone.
  t.is(await waitForStatus(viewer, 'This desktop has ended', 15000), 'This desktop has ended (its life-time ran out).');
  await waitFor('the session page to show that the desktop ended', async () => /life-time ran out/.test(await page.locator('body').textContent().catch(() => '') ?? ''), 10000);
  t.deepEqual(browser.problems.errors, [], 'no uncaught errors in the pages');
  await saveScreenshot(viewer, 'browser-viewer-ended.png', t);
});

test('in Chromium with the browser clock 10 minutes ahead, the pages count down on the server\'s clock and the session page does not reload in a loop', async (t) => {
  t.timeout(90_000);
  const setup = makeSetup(t, { purge: { schedule: '* * * * * *' }, sessions: { warnBeforeS: [6] }, qemu: { network: 'none' } });
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t);
  const { json: s, status } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'skew', lifetimeS: 30 });
  t.is(status, 201);
  const expiresAt = Date.parse(s.expiresAt);
  // Playwright's clock: time flows normally, but the pages' Date says 10 minutes later than the server's.
  const skewMs = 10 * 60_000;
  await browser.context.clock.install({ time: Date.now() + skewMs });
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  let loads = 0;
  page.on('request', (r) => { if (r.isNavigationRequest() && r.frame() === page.mainFrame()) loads++; });
  await page.goto(s.url);
  t.true(await page.evaluate((server) => Date.now() - server > 9 * 60_000, Date.now()), 'the browser\'s clock really is ahead');
  const { countdown, warning, viewer } = await openCountdownPages(t, page, expiresAt);

  // The time left as the server sees it (under 30 s, more than 9), not 0 s, and no warning yet.
  const shown = secondsIn(await countdown.textContent(), /^(\d+) s$/);
  t.true(shown > 6 && shown <= 30);
  t.false(await warning.isVisible(), 'no warning yet');
  t.true(secondsIn(await viewer.locator('#status').textContent(), /^Connected · 0 min (\d+) s left$/) > 6);
  // It counts down (on the server's clock) without reloading.
  await waitFor('the countdown to go down', async () => secondsIn(await countdown.textContent(), /^(\d+) s$/) < shown, 5000);
  t.is(loads, 1, 'the session page has not reloaded');

  // The warning comes at 6 s before the end on the server's clock, in both pages.
  await waitFor('the session page\'s warning', () => warning.isVisible(), expiresAt - 6000 - Date.now() + 10_000);
  t.true(Date.now() >= expiresAt - 7000, 'not before the warning point');
  t.regex(await waitForStatus(viewer, 'This desktop ends in', 3000), /^This desktop ends in 0 min [0-6] s: save your work\.$/);

  // At the end the page asks the server, which says the desktop ended: one reload, into the tombstone.
  await waitFor('the session page to show that the desktop ended', async () => /life-time ran out/.test(await page.locator('body').textContent().catch(() => '') ?? ''), 15000);
  t.true(Date.now() >= expiresAt, 'not before the end on the server\'s clock');
  await new Promise((r) => setTimeout(r, 3000));
  t.is(loads, 2, 'exactly one reload: at the end, after the server said so');
  t.is(await waitForStatus(viewer, 'This desktop has ended', 15000), 'This desktop has ended (its life-time ran out).');
  t.deepEqual(browser.problems.errors, [], 'no uncaught errors in the pages');
});

test('in Chromium, the view-only page of a running desktop stays put (it polls, it does not reload)', async (t) => {
  t.timeout(60_000);
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const browser = await launchChromium(t);
  const { json: s, status } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'vera', lifetimeS: 600 });
  t.is(status, 201);
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  let loads = 0;
  let polls = 0;
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.frame() === page.mainFrame()) loads++;
    else if (r.url().includes('/api/v1/sessions/')) polls++;
  });
  await page.goto(s.viewUrl);
  // The page asks the API every 2 s: after three rounds it is still the page first loaded.
  await waitFor('three polls of the API', () => polls >= 3, 20_000);
  t.is(loads, 1, 'loaded once');
  t.deepEqual(browser.problems.errors, [], 'no uncaught errors in the page');
});
