// The clipboard through the bridge with the real noVNC 1.7 in a real Chromium
// (the product's viewer page), a real broker and a real QEMU with the
// qemu-vdagent chardev, behind the recording proxy of clipboard-bridge.test.ts.
// The blank guest has no agent, so the other end of the clipboard is a raw
// RFB viewer on the same desktop: QEMU's clipboard joins them as it joins a
// guest. Checks that noVNC's own negotiation (caps), paste (Notify, QEMU's
// Request, noVNC's Provide with its unfinished zlib stream) and copy (QEMU's
// Notify, noVNC's automatic Request, QEMU's Provide) work where the policy
// allows them and never reach QEMU where it does not.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu, waitFor, writeBlankMachine } from '../helpers/env.js';
import { launchChromium } from '../helpers/chromium.js';
import { recordSent, type SentMessage } from '../helpers/viewer-page.js';
import {
  CLIP, ENCODING, connectRawViewer, extendedCut, interposeRecorder, novncProvide, plainCut, providedText,
  type RawViewer, type ServerMessage,
} from '../helpers/rfb-raw-viewer.js';
import type { ClipboardMode } from '../../src/config/schema.js';

test.before(() => requireQemu());

const has = (haystack: Buffer, needle: Buffer) => haystack.indexOf(needle) >= 0;
const isNotify = (m: ServerMessage) => m.type === 'cut' && m.extended && (m.flags & CLIP.notify) !== 0;
const provided = (ms: ServerMessage[]) => ms.flatMap((m) => (m.type === 'cut' && m.extended && m.flags & CLIP.provide ? [providedText(m.data)] : []));

/** Reads updates (each a barrier) until `until` holds for what arrived, at most `rounds` times. */
async function readUntil(viewer: RawViewer, until: (seen: ServerMessage[]) => boolean, rounds = 100): Promise<ServerMessage[]> {
  const seen: ServerMessage[] = [];
  for (let i = 0; i < rounds && !until(seen); i++) seen.push(...await viewer.untilUpdate());
  return seen;
}

async function desktopInBrowser(t: ExecutionContext, machineClipboard: ClipboardMode, opts: { site?: Record<string, unknown>; viewOnly?: boolean } = {}) {
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
  // The other end: a raw control viewer that speaks the extended clipboard (connection 0).
  const peer = await connectRawViewer(s.wsUrl, [ENCODING.raw, ENCODING.extendedClipboard]);
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

test.serial('clipboard both: text pasted in noVNC reaches the other viewer through QEMU, and UTF-8 text from it arrives in noVNC', async (t) => {
  t.timeout(120_000);
  const d = await desktopInBrowser(t, 'both');
  // Browser → QEMU: noVNC sends Notify; the peer hears it and asks; QEMU asks noVNC, which provides.
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
