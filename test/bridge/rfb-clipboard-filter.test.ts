// The clipboard policy in the browser → VNC filter, pure: which plain and
// extended ClientCutText messages go on for every policy and link, the
// Extended Clipboard pseudo-encoding hidden from QEMU for viewers with no
// clipboard, and hostile clipboard messages (empty, oversized, bad zlib,
// lying sizes) refused with a clear reason. End to end: test/bridge/clipboard-bridge.test.ts.
import test from 'ava';
import zlib from 'node:zlib';
import {
  RfbClientFilter, RfbProtocolError, CLIPBOARD_FLAG, EXTENDED_CLIPBOARD_ENCODING, IGNORED_ENCODING, MAX_CUT_TEXT_BYTES,
  checkClipboardProvide, type FilterAccess,
} from '../../src/bridge/rfb-client-filter.js';
import { clipboardDirections, type ClipboardPolicy } from '../../src/bridge/clipboard-policy.js';
import { CLIPBOARD_MODES } from '../../src/config/schema.js';
import { novncProvide } from '../helpers/rfb-raw-viewer.js';

const handshake = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1]), Buffer.from([1])]);
const fbur = Buffer.from([3, 0, 0, 0, 0, 0, 2, 208, 1, 144]);

function setEncodings(...encodings: number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * encodings.length);
  b[0] = 2;
  b.writeUInt16BE(encodings.length, 2);
  encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
  return b;
}
function plainCut(text: string | Buffer): Buffer {
  const body = Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1');
  const h = Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]);
  h.writeInt32BE(body.length, 4);
  return Buffer.concat([h, body]);
}
function extCut(flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 6;
  h.writeInt32BE(-(4 + payload.length), 4);
  h.writeUInt32BE(flags >>> 0, 8);
  return Buffer.concat([h, payload]);
}
/** A Provide as noVNC sends one: zlib of (u32 size, UTF-8 text with CRLF and a trailing NUL). */
function provide(text: string): Buffer {
  const utf8 = Buffer.from(`${text.replace(/\n/g, '\r\n')}\0`, 'utf8');
  const size = Buffer.alloc(4);
  size.writeUInt32BE(utf8.length);
  return extCut(CLIPBOARD_FLAG.provide | CLIPBOARD_FLAG.text, zlib.deflateSync(Buffer.concat([size, utf8])));
}
const caps = extCut(CLIPBOARD_FLAG.caps | CLIPBOARD_FLAG.text | CLIPBOARD_FLAG.request | CLIPBOARD_FLAG.notify | CLIPBOARD_FLAG.provide, Buffer.from([0, 0x10, 0, 0]));
const notify = extCut(CLIPBOARD_FLAG.notify | CLIPBOARD_FLAG.text);
const request = extCut(CLIPBOARD_FLAG.request | CLIPBOARD_FLAG.text);
const peek = extCut(CLIPBOARD_FLAG.peek);
const pasted = provide('Grüße, Ελληνικά, 中文\nline 2');
const plain = plainCut('héllo');
const encodingsWithClipboard = setEncodings(7, 16, EXTENDED_CLIPBOARD_ENCODING, -308, -223);
const encodingsHidden = setEncodings(7, 16, IGNORED_ENCODING, -308, -223);

async function run(access: FilterAccess, clipboard: ClipboardPolicy | undefined, chunks: Buffer[]) {
  const f = new RfbClientFilter({ access, ...(clipboard ? { clipboard } : {}) });
  const parts: Buffer[] = [];
  f.on('data', (d: Buffer) => parts.push(d));
  let error: RfbProtocolError | null = null;
  f.on('error', (e) => (error ??= e as RfbProtocolError));
  let maxBuffered = 0;
  for (const c of chunks) {
    if (f.destroyed) break;
    f.write(c);
    maxBuffered = Math.max(maxBuffered, f.bufferedBytes);
  }
  await new Promise((r) => setImmediate(r));
  return { out: Buffer.concat(parts), error: error as RfbProtocolError | null, stats: f.stats, maxBuffered };
}

// Every policy on every link: the messages that move text toward the guest pass only
// with toGuest, the ones that ask for the guest's only with fromGuest, caps with either.
const links: Array<[string, FilterAccess, (p: ClipboardPolicy) => ClipboardPolicy]> = [
  ['control', 'control', (p) => p],
  ['view-only (viewOnlyClipboard off)', 'view', () => ({ toGuest: false, fromGuest: false })],
  ['view-only (viewOnlyClipboard on)', 'view', (p) => ({ toGuest: false, fromGuest: p.fromGuest })],
];
for (const mode of CLIPBOARD_MODES) {
  for (const [name, access, forLink] of links) {
    test(`policy ${mode}, ${name}: clipboard messages pass only in the allowed directions`, async (t) => {
      const policy = forLink(clipboardDirections(mode));
      // A view-only filter is given the policy as the bridge computes it; it never lets a paste through even if told to.
      const given = access === 'view' ? { toGuest: true, fromGuest: policy.fromGuest } : policy;
      const any = policy.toGuest || policy.fromGuest;
      const input = [handshake, encodingsWithClipboard, caps, plain, notify, pasted, request, peek, plainCut(''), fbur];
      const expected = [
        handshake, any ? encodingsWithClipboard : encodingsHidden,
        ...(any ? [caps] : []),
        ...(policy.toGuest ? [plain, notify, pasted] : []),
        ...(policy.fromGuest ? [request, peek] : []),
        ...(policy.toGuest ? [plainCut('')] : []),
        fbur,
      ];
      for (const chunks of [[Buffer.concat(input)], [...Buffer.concat(input)].map((b) => Buffer.from([b]))]) {
        const r = await run(access, given, chunks);
        t.is(r.error, null);
        t.deepEqual(r.out, Buffer.concat(expected), chunks.length === 1 ? 'one chunk' : 'byte by byte');
        t.is(r.stats.dropped, input.length - expected.length);
      }
    });
  }
}

test('a view-only link never pastes, whatever policy it is given', async (t) => {
  const r = await run('view', { toGuest: true, fromGuest: true }, [handshake, plain, notify, pasted, request, fbur]);
  t.deepEqual(r.out, Buffer.concat([handshake, request, fbur]));
});

test('without a policy, control links keep today\'s behaviour (everything passes) and view-only links get no clipboard', async (t) => {
  const input = Buffer.concat([handshake, encodingsWithClipboard, caps, plain, notify, pasted, request, fbur]);
  t.deepEqual((await run('control', undefined, [input])).out, input);
  t.deepEqual((await run('view', undefined, [input])).out, Buffer.concat([handshake, encodingsHidden, fbur]));
});

test('the pseudo-encoding is found and replaced however SetEncodings is split, and nothing else changes', async (t) => {
  const input = Buffer.concat([handshake, setEncodings(EXTENDED_CLIPBOARD_ENCODING), encodingsWithClipboard, setEncodings(), fbur]);
  const expected = Buffer.concat([handshake, setEncodings(IGNORED_ENCODING), encodingsHidden, setEncodings(), fbur]);
  for (let i = 0; i <= input.length; i++) {
    const r = await run('control', { toGuest: false, fromGuest: false }, [input.subarray(0, i), input.subarray(i)]);
    if (!r.out.equals(expected) || r.error) return t.fail(`split at ${i}`);
    t.true(r.maxBuffered <= 20);
  }
  t.pass();
});

test('an extended Provide is held only until it is complete and checked, at any split, then goes on unchanged', async (t) => {
  const input = Buffer.concat([handshake, pasted, fbur]);
  for (let i = 0; i <= input.length; i++) {
    const r = await run('control', { toGuest: true, fromGuest: false }, [input.subarray(0, i), input.subarray(i)]);
    if (!r.out.equals(input) || r.error) return t.fail(`split at ${i}`);
  }
  t.pass();
});

/** An extended Provide with this raw (already compressed, or not) payload. */
const rawProvide = (payload: Buffer) => extCut(CLIPBOARD_FLAG.provide | CLIPBOARD_FLAG.text, payload);
const lyingText = (() => {
  const inner = Buffer.alloc(8);
  inner.writeUInt32BE(1000, 0); // says 1000 bytes of text, 4 follow
  return rawProvide(zlib.deflateSync(inner));
})();
const bomb = rawProvide(zlib.deflateSync(Buffer.alloc(MAX_CUT_TEXT_BYTES + 1))); // ~1 KiB that inflates past the cap

const hostile: Array<{ name: string; msg: Buffer; code: number; reason: RegExp }> = [
  { name: 'an extended message of 0 bytes (no flags)', msg: Buffer.from([6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 0, 0]), code: 4003, reason: /^malformed clipboard message$/ },
  { name: 'an extended Provide with no data at all', msg: rawProvide(Buffer.alloc(0)), code: 4003, reason: /^clipboard data is not valid zlib$/ },
  { name: 'an extended Provide whose data is not zlib', msg: rawProvide(Buffer.from('this is not zlib at all')), code: 4003, reason: /^clipboard data is not valid zlib$/ },
  // Unfinished zlib is accepted (as QEMU and noVNC do); what it gives must still hold the sizes it declares.
  { name: 'an extended Provide whose zlib stream is cut short', msg: rawProvide(zlib.deflateSync(Buffer.from('\0\0\0\x05hello')).subarray(0, 6)), code: 4003, reason: /^clipboard data sizes do not match$/ },
  { name: 'an extended Provide whose text size lies about its data', msg: lyingText, code: 4003, reason: /^clipboard data sizes do not match$/ },
  { name: 'an extended Provide that inflates past the cap (a zlib bomb)', msg: bomb, code: 1009, reason: /^clipboard text over the limit of 1048576 bytes$/ },
  { name: '10 MiB of plain clipboard text', msg: plainCut(Buffer.alloc(10 * 1024 * 1024, 0x41)), code: 1009, reason: /^clipboard text over the limit/ },
  { name: '10 MiB of extended clipboard data', msg: extCut(CLIPBOARD_FLAG.provide | CLIPBOARD_FLAG.text, Buffer.alloc(10 * 1024 * 1024)), code: 1009, reason: /^clipboard text over the limit/ },
];
for (const { name, msg, code, reason } of hostile) {
  test(`control link that may paste: ${name} closes the viewer (${code}) and nothing of it goes on`, async (t) => {
    const r = await run('control', { toGuest: true, fromGuest: true }, [handshake, msg, fbur]);
    t.true(r.error instanceof RfbProtocolError);
    t.is(r.error!.closeCode, code);
    t.regex(r.error!.closeReason, reason);
    t.deepEqual(r.out, handshake);
  });
}

test('a link that may not paste drops a bad Provide unread (no check needed) but still refuses oversized and malformed messages', async (t) => {
  for (const msg of [lyingText, bomb, rawProvide(Buffer.from('not zlib'))]) {
    const r = await run('control', { toGuest: false, fromGuest: true }, [handshake, msg, fbur]);
    t.is(r.error, null);
    t.deepEqual(r.out, Buffer.concat([handshake, fbur]));
  }
  const big = await run('control', { toGuest: false, fromGuest: false }, [handshake, plainCut(Buffer.alloc(10 * 1024 * 1024))]);
  t.is(big.error?.closeCode, 1009, 'a control viewer sending 10 MiB is closed whatever the policy');
  const bad = await run('view', { toGuest: false, fromGuest: false }, [handshake, Buffer.from([6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0])]);
  t.is(bad.error?.closeReason, 'malformed clipboard message');
});

test('a lying plain length swallows what follows as text: the filter frames it exactly as QEMU does, and a restricted control link closes on the garbage after it', async (t) => {
  // Says 3 bytes, sends "hello": "lo" is read as the next message (type 0x6c, unknown).
  const lie = Buffer.concat([Buffer.from([6, 0, 0, 0, 0, 0, 0, 3]), Buffer.from('hello')]);
  const restricted = await run('control', { toGuest: true, fromGuest: false }, [handshake, lie, fbur]);
  t.true(restricted.error instanceof RfbProtocolError);
  t.regex(restricted.error!.message, /unknown client message type 108/);
  t.deepEqual(restricted.out, Buffer.concat([handshake, lie.subarray(0, 11)]));
  const view = await run('view', undefined, [handshake, lie, fbur]);
  t.true(view.error instanceof RfbProtocolError, 'view-only closes too');
});

test('a 10 MiB clipboard message from a view-only viewer is counted away, never held', async (t) => {
  const r = await run('view', { toGuest: false, fromGuest: true }, [handshake, extCut(CLIPBOARD_FLAG.provide | CLIPBOARD_FLAG.text, Buffer.alloc(10 * 1024 * 1024)), fbur]);
  t.is(r.error, null);
  t.deepEqual(r.out, Buffer.concat([handshake, fbur]));
  t.true(r.maxBuffered <= 20);
});

test('checkClipboardProvide accepts every format its flags name when the sizes add up', (t) => {
  const two = Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('hi'), Buffer.from([0, 0, 0, 3]), Buffer.from('<b>')]);
  t.notThrows(() => checkClipboardProvide(CLIPBOARD_FLAG.provide | CLIPBOARD_FLAG.text | 4, zlib.deflateSync(two), 1024));
  t.throws(() => checkClipboardProvide(CLIPBOARD_FLAG.provide | CLIPBOARD_FLAG.text | 2 | 4, zlib.deflateSync(two), 1024), { message: /format 2 declares no bytes/ });
});

test('the first clipboard message the policy drops is told once (for the operator log), with the policy; allowed ones are not', async (t) => {
  const told: ClipboardPolicy[] = [];
  const f = new RfbClientFilter({ access: 'control', clipboard: { toGuest: false, fromGuest: true }, onClipboardDropped: (p) => told.push(p) });
  f.resume();
  f.write(Buffer.concat([handshake, request, caps, fbur]));
  t.deepEqual(told, []);
  f.write(Buffer.concat([plain, notify, pasted]));
  t.deepEqual(told, [{ toGuest: false, fromGuest: true }]);
});

test('a Provide as noVNC 1.7 builds it (its own Deflator: Z_FULL_FLUSH, no final block; CRLF; a trailing NUL) passes unchanged', async (t) => {
  for (const text of ['hello', 'Grüße, Ελληνικά, 中文\nline 2\n', 'x'.repeat(200_000)]) {
    const msg = await novncProvide(text);
    t.throws(() => zlib.inflateSync(msg.subarray(12)), undefined, 'the stream is really unfinished');
    const r = await run('control', { toGuest: true, fromGuest: false }, [handshake, msg, fbur]);
    t.is(r.error, null);
    t.deepEqual(r.out, Buffer.concat([handshake, msg, fbur]));
  }
});
