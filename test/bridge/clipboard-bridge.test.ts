// The clipboard policy end to end: real brokers, real WebSocket viewers, and a
// real QEMU per session started from a machine with display: virtio and
// agent: spice-vdagent (so QEMU takes that argv and its qemu-vdagent chardev).
// Between the bridge and QEMU's VNC socket sits a recording proxy, so each
// test sees exactly which client bytes reached the VNC server. The blank
// guest runs no agent, so the guest itself never copies anything; the source
// of clipboard text for "copying" is instead one control viewer pasting
// through QEMU's own clipboard, which QEMU then offers to the other viewers
// (Notify, then Provide on their Request) — the same messages a guest copy gives.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import zlib from 'node:zlib';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu, waitFor, writeBlankMachine } from '../helpers/env.js';
import {
  CLIP, ENCODING, connectRawViewer, extendedCut, interposeRecorder, novncProvide, plainCut, providedText, setDesktopSize,
  type RawViewer, type RecordingProxy, type ServerMessage,
} from '../helpers/rfb-raw-viewer.js';
import { CLIPBOARD_MODES, type ClipboardMode } from '../../src/config/schema.js';
import { clipboardModeOf, decideClipboardPolicy } from '../../src/bridge/clipboard-policy.js';
import type { Broker } from '../../src/main.js';
import type { MachineDisplay } from '../../src/catalog/descriptor.js';

test.before(() => requireQemu());

/** A blank machine with the desktop keys: virtio-vga, the vdagent chardev, and its own clipboard policy. */
function writeDesktopMachine(dir: string, name: string, clipboard: ClipboardMode, display: MachineDisplay): void {
  writeBlankMachine(dir, name);
  const file = path.join(dir, `${name}.yml`);
  fs.writeFileSync(file, stringify({ ...parse(fs.readFileSync(file, 'utf8')), display, agent: 'spice-vdagent', clipboard }));
}

const ENCODINGS = [ENCODING.raw, ENCODING.extendedClipboard, ENCODING.extendedDesktopSize];
const HIDDEN = -1;

function setEncodingsBytes(encodings: number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * encodings.length);
  b[0] = 2;
  b.writeUInt16BE(encodings.length, 2);
  encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
  return b;
}

interface Desktop {
  broker: Broker;
  s: { id: string; wsUrl: string; viewWsUrl: string; token: string };
  recorder: RecordingProxy;
  /** Connects a viewer and says which recorded connection is its own. */
  connect(link: 'control' | 'view'): Promise<{ viewer: RawViewer; conn: number; first: ServerMessage[] }>;
}

async function startDesktop(
  t: ExecutionContext, site: { clipboard: ClipboardMode; viewOnlyClipboard: boolean }, machine: ClipboardMode, display: MachineDisplay = 'virtio',
): Promise<Desktop> {
  const setup = makeSetup(t, { bridge: site }, { machines: (d) => writeDesktopMachine(d, 'desk', machine, display) });
  const broker = await startTestBroker(t, setup.config);
  const { status, json: s, text } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'desk', user: 'ada', lifetimeS: 3600 });
  if (status >= 300) throw new Error(`session not created: ${status} ${text}`);
  const row = broker.services.manager.get(s.id)!;
  const address = await broker.services.manager.vncEndpoint(row);
  if (address.kind !== 'unix') throw new Error('expected a Unix VNC socket');
  const recorder = await interposeRecorder(address.path);
  const viewers: RawViewer[] = [];
  t.teardown(async () => {
    for (const v of viewers) v.close();
    await recorder.close();
  });
  return {
    broker, s, recorder,
    async connect(link) {
      const before = recorder.received.length;
      const viewer = await connectRawViewer(link === 'control' ? s.wsUrl : s.viewWsUrl, ENCODINGS);
      viewers.push(viewer);
      await waitFor('the viewer\'s VNC connection', () => recorder.received.length > before);
      // Its caps (if QEMU sends them) come at once after SetEncodings, before the update asked for after it.
      const first = await viewer.untilUpdate();
      return { viewer, conn: before, first };
    },
  };
}

const isCaps = (m: ServerMessage) => m.type === 'cut' && m.extended && (m.flags & CLIP.caps) !== 0;
const isNotify = (m: ServerMessage) => m.type === 'cut' && m.extended && (m.flags & CLIP.notify) !== 0;
const provides = (ms: ServerMessage[]) => ms.flatMap((m) => (m.type === 'cut' && m.extended && m.flags & CLIP.provide ? [providedText(m.data)] : []));
const has = (haystack: Buffer, needle: Buffer) => haystack.indexOf(needle) >= 0;

// One broker per machine policy (site both) plus a stricter site over a permissive machine;
// in each: a control viewer that pastes, a control viewer that copies, and a view-only viewer.
const cases: Array<{ site: ClipboardMode; viewOnlyClipboard: boolean; machine: ClipboardMode }> = [
  ...CLIPBOARD_MODES.map((machine) => ({ site: 'both' as ClipboardMode, viewOnlyClipboard: true, machine })),
  { site: 'to-guest', viewOnlyClipboard: true, machine: 'both' },
  { site: 'both', viewOnlyClipboard: false, machine: 'both' },
];
for (const { site, viewOnlyClipboard, machine } of cases) {
  test.serial(`site ${site} (view-only clipboard ${viewOnlyClipboard ? 'on' : 'off'}), machine ${machine}: what reaches QEMU and what comes back, for control and view-only viewers`, async (t) => {
    const d = await startDesktop(t, { clipboard: site, viewOnlyClipboard }, machine);
    const ctl = decideClipboardPolicy({ clipboard: site, viewOnlyClipboard }, machine, 'control');
    const view = decideClipboardPolicy({ clipboard: site, viewOnlyClipboard }, machine, 'view');
    const ctlAny = ctl.toGuest || ctl.fromGuest;
    // What the viewer page will be told is what the bridge enforces.
    t.is(d.broker.bridge.clipboardMode('desk', 'control'), clipboardModeOf(ctl));
    t.is(d.broker.bridge.clipboardMode('desk', 'view'), clipboardModeOf(view));
    t.is(d.broker.bridge.clipboardMode('no-such-machine', 'control'), 'off', 'a machine gone from the catalog gets no clipboard');

    const paster = await d.connect('control');
    const copier = await d.connect('control');
    const watcher = await d.connect('view');
    // The pseudo-encoding reaches QEMU only for viewers with some clipboard; then QEMU sends them its caps.
    t.is(has(d.recorder.bytes(paster.conn), setEncodingsBytes(ENCODINGS)), ctlAny);
    t.is(has(d.recorder.bytes(paster.conn), setEncodingsBytes([ENCODING.raw, HIDDEN, ENCODING.extendedDesktopSize])), !ctlAny);
    t.is(paster.first.some(isCaps), ctlAny, 'caps to control viewers');
    t.is(watcher.first.some(isCaps), view.fromGuest, 'caps to view-only viewers');

    // The control viewer pastes (plain ClientCutText, as an old client does).
    const text = `pasted into the ${machine} desktop`;
    paster.viewer.send(plainCut(text));
    await paster.viewer.untilUpdate();
    t.is(has(d.recorder.bytes(paster.conn), plainCut(text)), ctl.toGuest, 'the paste reaches QEMU only when pasting is allowed');

    // QEMU now offers that clipboard to the others; each asks for it.
    for (const [who, policy] of [[copier, ctl], [watcher, view]] as const) {
      const heard = await who.viewer.untilUpdate();
      // Notify carries no text; it reaches a viewer that has the pseudo-encoding (QEMU sends it unasked).
      t.is(heard.some(isNotify), ctl.toGuest && (policy.toGuest || policy.fromGuest));
      const request = extendedCut(CLIP.request | CLIP.text);
      who.viewer.send(request);
      const answer = await who.viewer.untilUpdate();
      t.is(has(d.recorder.bytes(who.conn), request), policy.fromGuest, 'the request reaches QEMU only when copying is allowed');
      t.deepEqual(provides(answer), ctl.toGuest && policy.fromGuest ? [text] : [], 'clipboard text arrives only where both directions of its way are allowed');
    }

    // The extended paste (noVNC's way: Notify, then Provide) and a view-only viewer trying every way to paste.
    const notify = extendedCut(CLIP.notify | CLIP.text);
    const extText = 'extended paste: Grüße, Ελληνικά, 中文\r\n';
    const provide = await novncProvide(extText); // noVNC's own Deflator: an unfinished zlib stream, as QEMU gets it from browsers
    paster.viewer.send(Buffer.concat([notify, provide]));
    watcher.viewer.send(Buffer.concat([plainCut('view-only paste'), notify, provide]));
    await paster.viewer.untilUpdate();
    await watcher.viewer.untilUpdate();
    t.is(has(d.recorder.bytes(paster.conn), Buffer.concat([notify, provide])), ctl.toGuest);
    const watcherBytes = d.recorder.bytes(watcher.conn);
    t.false(has(watcherBytes, plainCut('view-only paste')) || has(watcherBytes, notify) || has(watcherBytes, provide), 'a view-only viewer never pastes');
    // The extended paste went into QEMU's clipboard as UTF-8: the other control viewer gets it back intact where it may copy.
    await copier.viewer.untilUpdate();
    copier.viewer.send(extendedCut(CLIP.request | CLIP.text));
    t.deepEqual(provides(await copier.viewer.untilUpdate()), ctl.toGuest && ctl.fromGuest ? [`${extText}\0`] : []);

    // Every viewer is still connected, and the session is untouched.
    t.deepEqual(d.broker.bridge.viewerCounts(d.s.id), { control: 2, view: 1 });
    t.is((await api(d.broker, 'GET', `/api/v1/sessions/${d.s.token}`)).json.state, 'running');
  });
}

// QEMU 7.2 takes each display's argv (with the vdagent devices) and answers SetDesktopSize by display:
// 4 "request forwarded" to the guest with virtio-vga, 3 "invalid screen layout" with VGA and qxl-vga.
const resizeTable: Array<[MachineDisplay, number]> = [['virtio', 4], ['std', 3], ['qxl', 3]];
for (const [display, status] of resizeTable) {
  test.serial(`remote resize, display ${display}: a control viewer's SetDesktopSize reaches QEMU and its ExtendedDesktopSize answer (status ${status}) comes back; a view-only viewer's is dropped`, async (t) => {
    const d = await startDesktop(t, { clipboard: 'both', viewOnlyClipboard: false }, 'both', display);
    const watcher = await d.connect('view');
    const resize = setDesktopSize(1024, 768);
    watcher.viewer.send(resize);
    const watcherSaw = await watcher.viewer.untilUpdate();
    t.false(has(d.recorder.bytes(watcher.conn), resize), 'not forwarded for view-only');
    const answerTo = (ms: ServerMessage[]) => ms.flatMap((m) => (m.type === 'update' ? m.rects.filter((r) => r.encoding === ENCODING.extendedDesktopSize && r.x === 1) : []));
    t.deepEqual(answerTo(watcherSaw), []);

    const owner = await d.connect('control');
    owner.viewer.send(resize);
    const ownerSaw = [...await owner.viewer.untilUpdate()];
    while (answerTo(ownerSaw).length === 0) ownerSaw.push(...await owner.viewer.untilUpdate());
    t.true(has(d.recorder.bytes(owner.conn), resize), 'forwarded for control');
    // RFC 6143 §7.8.2 (ExtendedDesktopSize): x = 1 answers this client's own request, y is the status.
    t.is(answerTo(ownerSaw)[0]!.y, status);
  });
}

// Hostile clipboard messages close only the viewer that sent them, with a clear reason.
const hostile: Array<{ name: string; bytes: Buffer; code: number; reason: RegExp }> = [
  { name: 'an extended clipboard message of 0 bytes', bytes: Buffer.from([6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 0, 0]), code: 4003, reason: /^malformed clipboard message$/ },
  { name: '10 MiB of clipboard text', bytes: plainCut(Buffer.alloc(10 * 1024 * 1024, 0x41)).subarray(0, 512 * 1024), code: 1009, reason: /^clipboard text over the limit of 1048576 bytes$/ },
  { name: 'an extended Provide whose zlib data is invalid', bytes: extendedCut(CLIP.provide | CLIP.text, Buffer.from('definitely not zlib')), code: 4003, reason: /^clipboard data is not valid zlib$/ },
  { name: 'a Provide whose text length lies about its size', bytes: extendedCut(CLIP.provide | CLIP.text, zlib.deflateSync(Buffer.from([0, 0, 0x10, 0, 0x41]))), code: 4003, reason: /^clipboard data sizes do not match$/ },
];
test.serial('hostile clipboard messages close only the viewer that sent them, with a clear reason; the session, the other viewers and the broker carry on', async (t) => {
  const d = await startDesktop(t, { clipboard: 'both', viewOnlyClipboard: false }, 'both');
  const bystander = await d.connect('control');
  for (const { name, bytes, code, reason } of hostile) {
    const { viewer, conn } = await d.connect('control');
    viewer.send(bytes);
    const closed = await viewer.closed;
    t.is(closed.code, code, name);
    t.regex(closed.reason, reason, name);
    t.false(has(d.recorder.bytes(conn), bytes.subarray(0, 12)), `${name}: nothing of it reached QEMU`);
    t.true((await bystander.viewer.untilUpdate()).some((m) => m.type === 'update'), `${name}: the other viewer still gets frames`);
    await waitFor('the closed viewer to be uncounted', () => d.broker.bridge.viewerCounts(d.s.id).control === 1);
  }
  // A clipboard message of 0 bytes is a valid, empty paste: it goes on and the viewer stays.
  const { viewer, conn } = await d.connect('control');
  viewer.send(plainCut(''));
  await viewer.untilUpdate();
  t.true(has(d.recorder.bytes(conn), plainCut('')));
  t.is((await fetch(`${d.broker.url}/healthz`)).status, 200);
  t.is((await api(d.broker, 'GET', `/api/v1/sessions/${d.s.token}`)).json.state, 'running');
});

test.serial('a plain cut text whose length lies (its text runs on into what no client message starts with) closes only that viewer, saying why', async (t) => {
  const d = await startDesktop(t, { clipboard: 'both', viewOnlyClipboard: false }, 'both');
  const bystander = await d.connect('control');
  const { viewer } = await d.connect('control');
  // Says 4 bytes and sends 12: the bridge frames the 4, then reads type 200, which a control link leaves to QEMU.
  viewer.send(Buffer.concat([plainCut('ABCD'), Buffer.from([200, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41])]));
  const closed = await viewer.closed;
  t.is(closed.code, 4003);
  t.is(closed.reason, 'the desktop dropped this viewer after a message it could not read (unknown client message type 200)');
  t.true((await bystander.viewer.untilUpdate()).some((m) => m.type === 'update'), 'the other viewer still gets frames');
  await waitFor('the closed viewer to be uncounted', () => d.broker.bridge.viewerCounts(d.s.id).control === 1);
  t.is((await fetch(`${d.broker.url}/healthz`)).status, 200);
  t.is((await api(d.broker, 'GET', `/api/v1/sessions/${d.s.token}`)).json.state, 'running');
});
