// The clipboard through the bridge with the real noVNC 1.7 in a real Chromium
// (the product's viewer page), a real broker and a real QEMU with the
// qemu-vdagent chardev, behind the recording proxy of clipboard-bridge.test.ts.
// The blank guest has no agent, so the other end of the clipboard is a raw
// RFB viewer on the same desktop: QEMU's clipboard joins them as it joins a
// guest (through the bridge, or on QEMU's own socket where the bridge's
// policy must not apply to it: see desktopInBrowser). Checks that noVNC's own negotiation (caps), paste (Notify, QEMU's
// Request, noVNC's Provide with its unfinished zlib stream) and copy (QEMU's
// Notify, noVNC's automatic Request, QEMU's Provide) work where the policy
// allows them and never reach QEMU where it does not.
import test, { type ExecutionContext } from 'ava';
import type { Page } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu, waitFor, writeBlankMachine } from '../helpers/env.js';
import { launchChromium } from '../helpers/chromium.js';
import { recordSent, type SentMessage } from '../helpers/viewer-page.js';
import {
  CLIP, ENCODING, connectRawViewer, connectRawVnc, extendedCut, interposeRecorder, novncProvide, plainCut, providedText,
  recordedCutTexts, type RfbPeer, type ServerMessage,
} from '../helpers/rfb-raw-viewer.js';
import type { ClipboardMode } from '../../src/config/schema.js';

test.before(() => requireQemu());

const has = (haystack: Buffer, needle: Buffer) => haystack.indexOf(needle) >= 0;
const isNotify = (m: ServerMessage) => m.type === 'cut' && m.extended && (m.flags & CLIP.notify) !== 0;
const provided = (ms: ServerMessage[]) => ms.flatMap((m) => (m.type === 'cut' && m.extended && m.flags & CLIP.provide ? [providedText(m.data)] : []));

/** Reads updates (each a barrier) until `until` holds for what arrived, at most `rounds` times. */
async function readUntil(viewer: RfbPeer, until: (seen: ServerMessage[]) => boolean, rounds = 100): Promise<ServerMessage[]> {
  const seen: ServerMessage[] = [];
  for (let i = 0; i < rounds && !until(seen); i++) seen.push(...await viewer.untilUpdate());
  return seen;
}

interface DesktopOptions {
  site?: Record<string, unknown>;
  viewOnly?: boolean;
  /**
   * Where the other end of the clipboard connects. 'bridge': a control viewer's WebSocket, held to
   * the same policy as noVNC. 'direct': QEMU's own VNC socket, which is where the guest's clipboard
   * sits for QEMU: the qemu-vdagent chardev (the guest's spice-vdagent) and every VNC client are
   * peers of one QEMU clipboard (ui/clipboard.c: an update is announced to every other peer, a
   * request goes to the owner; ui/vdagent.c and ui/vnc-clipboard.c are two such peers), and the
   * agent never goes through the bridge, so no viewer's policy applies to it. A peer through the
   * bridge could not stand in for the guest in 'to-guest' (its Request is dropped) nor in
   * 'from-guest' (its paste is dropped). The direct client goes through the test's recorder, a
   * plain pipe, so its bytes are connection 0 either way.
   */
  guestSide?: 'bridge' | 'direct';
}

async function desktopInBrowser(t: ExecutionContext, machineClipboard: ClipboardMode, opts: DesktopOptions = {}) {
  const setup = makeSetup(t, opts.site ? { bridge: opts.site } : {}, {
    machines: (d) => {
      writeBlankMachine(d, 'desk');
      const file = path.join(d, 'desk.yml');
      fs.writeFileSync(file, stringify({ ...parse(fs.readFileSync(file, 'utf8')), display: 'virtio', agent: 'spice-vdagent', clipboard: machineClipboard }));
    },
  });
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'desk', user: 'ada', lifetimeS: 3600 });
  const address = await broker.services.manager.vncEndpoint(broker.services.manager.get(s.id)!);
  if (address.kind !== 'unix') throw new Error('expected a Unix VNC socket');
  const recorder = await interposeRecorder(address.path);
  t.teardown(() => recorder.close());
  // The other end: a raw client that speaks the extended clipboard (connection 0).
  const encodings = [ENCODING.raw, ENCODING.extendedClipboard];
  const peer: RfbPeer = opts.guestSide === 'direct'
    ? await connectRawVnc(address.path, encodings)
    : await connectRawViewer(s.wsUrl, encodings);
  t.teardown(() => peer.close());
  await waitFor('the peer\'s VNC connection', () => recorder.received.length === 1);
  await peer.untilUpdate();
  // The product's viewer page with noVNC (connection 1); its clipboard events are collected.
  const browser = await launchChromium(t);
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  const sent: SentMessage[] = recordSent(page);
  await page.goto(opts.viewOnly ? s.viewViewerUrl : s.viewerUrl);
  await page.waitForFunction(() => (window as unknown as { qwdRfb?: { _rfbConnectionState: string } }).qwdRfb?._rfbConnectionState === 'connected', undefined, { timeout: 20000 });
  await page.evaluate(() => {
    const w = window as unknown as { qwdRfb: EventTarget; qwdGot: string[] };
    w.qwdGot = [];
    w.qwdRfb.addEventListener('clipboard', (e) => w.qwdGot.push((e as CustomEvent<{ text: string }>).detail.text));
  });
  await waitFor('noVNC\'s VNC connection', () => recorder.received.length === 2);
  return { broker, s, recorder, peer, page, sent, problems: browser.problems };
}

/**
 * noVNC pastes the extended way (Notify, then a Provide in UTF-8) only once QEMU's clipboard caps have reached it;
 * before that it sends a plain, Latin-1 ClientCutText. A paste right after "connected" can come before them.
 */
async function clipboardCapsReached(page: Page): Promise<void> {
  await page.waitForFunction(() => {
    const rfb = (window as unknown as { qwdRfb: { _clipboardServerCapabilitiesFormats: Record<number, unknown>; _clipboardServerCapabilitiesActions: Record<number, unknown> } }).qwdRfb;
    // extendedClipboardFormatText (1) and extendedClipboardActionNotify (1 << 27), noVNC's core/rfb.js
    return !!rfb._clipboardServerCapabilitiesFormats[1] && !!rfb._clipboardServerCapabilitiesActions[1 << 27];
  }, undefined, { timeout: 20000 });
}

test.serial('clipboard both: text pasted in noVNC reaches the other viewer through QEMU, and UTF-8 text from it arrives in noVNC', async (t) => {
  t.timeout(120_000);
  const d = await desktopInBrowser(t, 'both');
  // Browser → QEMU: noVNC sends Notify; the peer hears it and asks; QEMU asks noVNC, which provides.
  await clipboardCapsReached(d.page);
  await d.page.evaluate((text) => (window as unknown as { qwdRfb: { clipboardPasteFrom(s: string): void } }).qwdRfb.clipboardPasteFrom(text), 'from the browser: Grüße\n');
  await readUntil(d.peer, (seen) => seen.some(isNotify));
  d.peer.send(extendedCut(CLIP.request | CLIP.text));
  const got = await readUntil(d.peer, (seen) => provided(seen).length > 0);
  t.deepEqual(provided(got), ['from the browser: Grüße\r\n\0'], 'noVNC\'s Provide (CRLF, a trailing NUL) went through the bridge and QEMU');

  // QEMU → browser: the peer pastes UTF-8; noVNC hears the Notify, asks, and gets the text.
  d.peer.send(Buffer.concat([extendedCut(CLIP.notify | CLIP.text), await novncProvide('to the browser: Ελληνικά, 中文')]));
  await d.page.waitForFunction(() => (window as unknown as { qwdGot: string[] }).qwdGot.some((s) => s.includes('中文')), undefined, { timeout: 20000 });
  const inPage = await d.page.evaluate(() => (window as unknown as { qwdGot: string[] }).qwdGot);
  t.true(inPage.some((s) => s.startsWith('to the browser: Ελληνικά, 中文')), JSON.stringify(inPage));
  t.deepEqual(d.problems.errors, []);
});

test.serial('clipboard off: noVNC gets no clipboard from QEMU and its paste never reaches QEMU', async (t) => {
  t.timeout(120_000);
  const d = await desktopInBrowser(t, 'off');
  const noVncBytes = () => d.recorder.bytes(1);
  t.false(has(noVncBytes(), Buffer.from([0xc0, 0xa1, 0xe5, 0xce])), 'the pseudo-encoding was hidden from QEMU');
  // Without QEMU's caps noVNC pastes a plain ClientCutText; then a key (Shift) as a barrier: once it reached
  // QEMU, everything noVNC sent before it has been decided.
  await d.page.evaluate(() => {
    const rfb = (window as unknown as { qwdRfb: { clipboardPasteFrom(s: string): void; sendKey(k: number, c: string, down?: boolean): void } }).qwdRfb;
    rfb.clipboardPasteFrom('secret from the browser');
    rfb.sendKey(0xffe1, 'ShiftLeft', true);
    rfb.sendKey(0xffe1, 'ShiftLeft', false);
  });
  await waitFor('noVNC\'s key to reach QEMU', () => has(noVncBytes(), Buffer.from([0, 0, 0xff, 0xe1])));
  t.false(has(noVncBytes(), Buffer.from('secret from the browser')), 'the paste was dropped by the bridge');
  // The peer's paste is dropped too, so QEMU has nothing to offer noVNC.
  d.peer.send(plainCut('secret from the desktop'));
  await d.peer.untilUpdate();
  t.false(has(d.recorder.bytes(0), Buffer.from('secret from the desktop')));
  t.deepEqual(await d.page.evaluate(() => (window as unknown as { qwdGot: string[] }).qwdGot), []);
  t.deepEqual(d.problems.errors, []);
});

/** Extended clipboard messages other than caps (whose action bits list what a client can do, not what it does). */
const actions = (bytes: Buffer) => recordedCutTexts(bytes).filter((c) => c.extended && !(c.flags & CLIP.caps));
/** noVNC's messages that ask for the guest's text (Request, Peek), as they reached QEMU. */
const asksFor = (bytes: Buffer) => actions(bytes).filter((c) => c.flags & (CLIP.request | CLIP.peek));
/** noVNC's paste as it reached QEMU: plain text, or an extended Notify or Provide. */
const pastes = (bytes: Buffer) => [
  ...recordedCutTexts(bytes).filter((c) => !c.extended), ...actions(bytes).filter((c) => c.flags & (CLIP.notify | CLIP.provide)),
];
/** Shift's keysym, in a KeyEvent or in QEMU's extended key event (which noVNC sends when QEMU offers it). */
const SHIFT = Buffer.from([0, 0, 0xff, 0xe1]);

test.serial('clipboard to-guest: text pasted in noVNC reaches the guest side through QEMU, and the bridge drops noVNC\'s requests for the guest\'s text', async (t) => {
  t.timeout(120_000);
  const d = await desktopInBrowser(t, 'to-guest', { guestSide: 'direct' });
  t.is(await d.page.locator('#status').getAttribute('data-clipboard'), 'to-guest');
  const requestsSent = () => d.sent.filter((m) => m.type === 'clipboard-request').length;
  // Browser → QEMU, as in 'both': the guest side hears noVNC's Notify, asks, and QEMU gets noVNC's Provide for it.
  await clipboardCapsReached(d.page);
  await d.page.evaluate((text) => (window as unknown as { qwdRfb: { clipboardPasteFrom(s: string): void } }).qwdRfb.clipboardPasteFrom(text), 'from the browser: Grüße\n');
  await readUntil(d.peer, (seen) => seen.some(isNotify));
  d.peer.send(extendedCut(CLIP.request | CLIP.text));
  const got = await readUntil(d.peer, (seen) => provided(seen).length > 0);
  t.deepEqual(provided(got), ['from the browser: Grüße\r\n\0'], 'noVNC\'s Provide went through the bridge and QEMU');

  // Guest → browser: the guest side copies; QEMU tells noVNC (a Notify: flags, no text) and noVNC asks at once.
  // Its Request leaves the page (on its WebSocket); the bridge drops it, and QEMU sends the text only in answer to one.
  t.is(requestsSent(), 0);
  d.peer.send(Buffer.concat([extendedCut(CLIP.notify | CLIP.text), await novncProvide('secret from the desktop')]));
  await waitFor('noVNC to ask for the guest\'s text', () => requestsSent() === 1);
  // A key as a barrier: once it reached QEMU, the Request sent before it has been decided.
  await d.page.evaluate(() => {
    const rfb = (window as unknown as { qwdRfb: { sendKey(k: number, c: string, down?: boolean): void } }).qwdRfb;
    rfb.sendKey(0xffe1, 'ShiftLeft', true);
    rfb.sendKey(0xffe1, 'ShiftLeft', false);
  });
  await waitFor('noVNC\'s key to reach QEMU', () => has(d.recorder.bytes(1), SHIFT));
  t.deepEqual(asksFor(d.recorder.bytes(1)), [], 'the bridge dropped noVNC\'s Request');
  // The way back: QEMU has read noVNC's bytes once it answers the guest side's next update request; then a second
  // Notify reaches noVNC after any Provide QEMU would have sent, and noVNC's second Request shows it arrived.
  await d.peer.untilUpdate();
  d.peer.send(extendedCut(CLIP.notify | CLIP.text));
  await waitFor('noVNC to hear the second Notify', () => requestsSent() === 2);
  t.deepEqual(await d.page.evaluate(() => (window as unknown as { qwdGot: string[] }).qwdGot), [], 'no Provide reached noVNC');
  t.deepEqual(asksFor(d.recorder.bytes(1)), []);
  t.deepEqual(d.problems.errors, []);
});

test.serial('clipboard from-guest: UTF-8 text the guest side copies arrives in noVNC, and the bridge drops noVNC\'s paste (its Notify, and a Provide)', async (t) => {
  t.timeout(120_000);
  const d = await desktopInBrowser(t, 'from-guest', { guestSide: 'direct' });
  t.is(await d.page.locator('#status').getAttribute('data-clipboard'), 'from-guest');
  // Guest → browser: the guest side copies; noVNC hears the Notify, asks, and gets the text.
  d.peer.send(Buffer.concat([extendedCut(CLIP.notify | CLIP.text), await novncProvide('to the browser: Ελληνικά, 中文')]));
  await d.page.waitForFunction(() => (window as unknown as { qwdGot: string[] }).qwdGot.some((s) => s.includes('中文')), undefined, { timeout: 20000 });
  const inPage = await d.page.evaluate(() => (window as unknown as { qwdGot: string[] }).qwdGot);
  t.true(inPage.some((s) => s.startsWith('to the browser: Ελληνικά, 中文')), JSON.stringify(inPage));
  t.true(asksFor(d.recorder.bytes(1)).length > 0, 'noVNC\'s Request went through the bridge');

  // Browser → guest: the page would not offer it, so noVNC is made to send it: its paste API (an extended Notify, as
  // it has QEMU's caps) and a Provide with the text (as it answers QEMU's Request), then a key as a barrier.
  const cutTextsSent = () => d.sent.filter((m) => m.type === 'cut-text').length;
  const before = cutTextsSent();
  await d.page.evaluate((text) => {
    type Rfb = { clipboardPasteFrom(s: string): void; sendKey(k: number, c: string, down?: boolean): void; _sock: unknown };
    const rfb = (window as unknown as { qwdRfb: Rfb }).qwdRfb;
    const messages = (rfb.constructor as unknown as { messages: { extendedClipboardProvide(sock: unknown, formats: number[], texts: string[]): void } }).messages;
    rfb.clipboardPasteFrom(text);
    messages.extendedClipboardProvide(rfb._sock, [1], [text]);
    rfb.sendKey(0xffe1, 'ShiftLeft', true);
    rfb.sendKey(0xffe1, 'ShiftLeft', false);
  }, 'secret from the browser');
  await waitFor('noVNC\'s key to reach QEMU', () => has(d.recorder.bytes(1), SHIFT));
  t.is(cutTextsSent(), before + 2, 'noVNC sent its Notify and its Provide on its WebSocket');
  t.deepEqual(pastes(d.recorder.bytes(1)), [], 'the bridge dropped both');
  // And the guest side heard of no new clipboard.
  t.false((await d.peer.untilUpdate()).some(isNotify));
  t.deepEqual(d.problems.errors, []);
});

test.serial('a view-only page the site lets copy (bridge.viewOnlyClipboard) receives the guest\'s clipboard, and its keys and clicks still reach nothing', async (t) => {
  t.timeout(120_000);
  const d = await desktopInBrowser(t, 'both', { site: { clipboard: 'both', viewOnlyClipboard: true }, viewOnly: true });
  t.is(await d.page.locator('#status').getAttribute('data-clipboard'), 'from-guest');
  // QEMU → view-only page: the peer pastes; noVNC (its input stopped by the page, not by its own view-only mode) asks and gets it.
  d.peer.send(Buffer.concat([extendedCut(CLIP.notify | CLIP.text), await novncProvide('for the watchers: Grüße')]));
  await d.page.waitForFunction(() => (window as unknown as { qwdGot: string[] }).qwdGot.some((s) => s.includes('Grüße')), undefined, { timeout: 20000 });
  // Typing and clicking on the desktop: the page stops them before noVNC, which sends no input at all
  // (what leaves the browser, read on its WebSocket; the bridge would drop it anyway).
  await d.page.locator('#screen canvas').click({ position: { x: 40, y: 40 } });
  await d.page.keyboard.type('rm -rf /');
  await d.page.mouse.wheel(0, 120);
  // A barrier: noVNC's own clipboard request, sent after the input would have been.
  d.peer.send(Buffer.concat([extendedCut(CLIP.notify | CLIP.text), await novncProvide('barrier')]));
  await d.page.waitForFunction(() => (window as unknown as { qwdGot: string[] }).qwdGot.some((s) => s.includes('barrier')), undefined, { timeout: 20000 });
  t.deepEqual(d.sent.filter((m) => ['key', 'qemu-key', 'pointer', 'cut-text', 'set-desktop-size'].includes(m.type)), [], 'no key, pointer, paste or resize left the page');
  t.true(d.sent.some((m) => m.type === 'clipboard-request'), 'its clipboard requests were recorded (and are all it sent)');
  t.deepEqual(d.problems.errors, []);
});
