import test from 'ava';
import {
  ViewOnlyFilter, RfbClientFilter, clientMessageLength, frameClientMessage, RfbProtocolError, MAX_CUT_TEXT_BYTES, type FilterAccess,
} from '../../src/bridge/rfb-client-filter.js';

const handshake = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1]), Buffer.from([1])]);
const setPixelFormat = Buffer.alloc(20); // type 0
const setEncodings = Buffer.from([2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0x21]);
const fbur = Buffer.from([3, 0, 0, 0, 0, 0, 2, 208, 1, 144]);
const key = Buffer.from([4, 1, 0, 0, 0, 0, 0, 0x61]);
const pointer = Buffer.from([5, 1, 0, 10, 0, 20]);
const cut = Buffer.concat([Buffer.from([6, 0, 0, 0, 0, 0, 0, 5]), Buffer.from('hello')]);
const extCut = Buffer.concat([Buffer.from([6, 0, 0, 0]), Buffer.from([0xff, 0xff, 0xff, 0xfc]), Buffer.from([1, 2, 3, 4])]); // length -4
const qemuKey = Buffer.from([255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]);
const qemuAudio = Buffer.from([255, 1, 0, 0]);
const fence = Buffer.from([248, 0, 0, 0, 0, 0, 0, 1, 2, 9, 9]);
const contUpdates = Buffer.from([150, 1, 0, 0, 0, 0, 2, 208, 1, 144]);
const desktopSize = Buffer.concat([Buffer.from([251, 0, 4, 0, 3, 0, 1, 0]), Buffer.alloc(16)]);
const xvp = Buffer.from([250, 0, 1, 2]);

async function filter(chunks: Buffer[]): Promise<{ out: Buffer; filter: ViewOnlyFilter; error: Error | null }> {
  const f = new ViewOnlyFilter();
  const parts: Buffer[] = [];
  f.on('data', (d: Buffer) => parts.push(d));
  let error: Error | null = null;
  f.on('error', (e) => (error = e));
  for (const c of chunks) f.write(c);
  f.end();
  await new Promise((r) => setImmediate(r));
  return { out: Buffer.concat(parts), filter: f, error };
}

test('message lengths follow RFC 6143 and the QEMU/noVNC extensions', (t) => {
  const table: Array<[Buffer, number]> = [[setPixelFormat, 20], [setEncodings, 16], [fbur, 10], [key, 8], [pointer, 6], [cut, 13], [extCut, 12], [qemuKey, 12], [qemuAudio, 4], [fence, 11], [contUpdates, 10], [desktopSize, 24], [xvp, 4]];
  for (const [msg, n] of table) {
    t.is(clientMessageLength(msg), n, `type ${msg[0]}`);
    t.is(clientMessageLength(msg.subarray(0, n - 1)), 0, `type ${msg[0]} incomplete`);
  }
  t.throws(() => clientMessageLength(Buffer.from([99])), { instanceOf: RfbProtocolError });
  t.throws(() => clientMessageLength(Buffer.from([255, 7])), { instanceOf: RfbProtocolError });
});

test('view-only drops key, pointer, clipboard, QEMU key, xvp and resize; keeps the rest in order', async (t) => {
  const all = [handshake, setPixelFormat, setEncodings, key, fbur, pointer, cut, extCut, qemuKey, qemuAudio, fence, contUpdates, desktopSize, xvp, fbur];
  const { out, error, filter: f } = await filter([Buffer.concat(all)]);
  t.is(error, null);
  t.deepEqual(out, Buffer.concat([handshake, setPixelFormat, setEncodings, fbur, qemuAudio, fence, contUpdates, fbur]));
  t.is(f.stats.dropped, 7);
});

test('framing survives any chunking, down to single bytes', async (t) => {
  const stream = Buffer.concat([handshake, setEncodings, key, pointer, cut, fbur, qemuKey, fbur]);
  const expected = Buffer.concat([handshake, setEncodings, fbur, fbur]);
  for (const size of [1, 2, 3, 5, 7, 13]) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < stream.length; i += size) chunks.push(stream.subarray(i, i + size));
    const { out, error } = await filter(chunks);
    t.is(error, null);
    t.deepEqual(out, expected, `chunks of ${size}`);
  }
});

test('VNC authentication responses and RFB 3.3 handshakes pass through', async (t) => {
  const vncAuth = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([2]), Buffer.alloc(16, 7), Buffer.from([1])]);
  t.deepEqual((await filter([Buffer.concat([vncAuth, key, fbur])])).out, Buffer.concat([vncAuth, fbur]));
  const v33 = Buffer.concat([Buffer.from('RFB 003.003\n'), Buffer.from([1])]);
  t.deepEqual((await filter([Buffer.concat([v33, pointer, fbur])])).out, Buffer.concat([v33, fbur]));
});

test('an unknown message type is an error (the viewer is closed), nothing after it passes', async (t) => {
  const { out, error } = await filter([Buffer.concat([handshake, fbur, Buffer.from([77, 1, 2, 3]), fbur])]);
  t.true(error instanceof RfbProtocolError);
  t.deepEqual(out.subarray(0, handshake.length + fbur.length), Buffer.concat([handshake, fbur]));
  t.is(out.length, handshake.length + fbur.length);
});

/** Feeds chunks one by one, recording the largest state the filter held between chunks. */
async function drive(access: FilterAccess, chunks: Iterable<Buffer>, opts: { maxCutTextBytes?: number } = {}) {
  const f = new RfbClientFilter({ access, ...opts });
  const parts: Buffer[] = [];
  let outBytes = 0;
  f.on('data', (d: Buffer) => {
    outBytes += d.length;
    if (parts.length < 64) parts.push(d);
  });
  let error: Error | null = null;
  f.on('error', (e) => (error ??= e));
  let maxBuffered = 0;
  let maxQueued = 0;
  for (const c of chunks) {
    if (f.destroyed) break;
    f.write(c);
    maxBuffered = Math.max(maxBuffered, f.bufferedBytes);
    maxQueued = Math.max(maxQueued, f.writableLength + f.readableLength);
  }
  await new Promise((r) => setImmediate(r)); // stream errors are emitted on a later tick
  return { f, out: () => Buffer.concat(parts), outBytes: () => outBytes, error: () => error as Error | null, maxBuffered, maxQueued };
}

function cutText(length: number, extended = false): Buffer {
  const header = Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]);
  header.writeInt32BE(extended ? -length : length, 4);
  return header;
}

function* inChunks(header: Buffer, bodyBytes: number, chunkBytes: number, trailer: Buffer): Generator<Buffer> {
  // The body is a repeated zero chunk: the test itself holds no 16 MiB either.
  const zeros = Buffer.alloc(chunkBytes);
  yield header;
  for (let left = bodyBytes; left > 0; left -= chunkBytes) yield left >= chunkBytes ? zeros : zeros.subarray(0, left);
  yield trailer;
}

test('framing: header and body sizes of every client message, and what is still needed', (t) => {
  const table: Array<[string, Buffer, ReturnType<typeof frameClientMessage>]> = [
    ['empty', Buffer.alloc(0), { need: 1 }],
    ['SetPixelFormat, partial', Buffer.from([0, 0, 0]), { need: 20 }],
    ['SetEncodings, count unknown', Buffer.from([2, 0]), { need: 4 }],
    ['SetEncodings of 65535', Buffer.from([2, 0, 0xff, 0xff]), { header: 4, body: 4 * 65535 }],
    ['ClientCutText, length unknown', Buffer.from([6, 0, 0, 0, 0]), { need: 8 }],
    ['ClientCutText of 4 GiB - 1 declared', Buffer.from([6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]), { header: 8, body: 0x7fffffff }],
    ['extended ClientCutText, -2^31', Buffer.from([6, 0, 0, 0, 0x80, 0, 0, 0]), { header: 8, body: 2 ** 31 }],
    ['ClientFence with 255 bytes', Buffer.from([248, 0, 0, 0, 0, 0, 0, 0, 255]), { header: 9, body: 255 }],
    ['SetDesktopSize of 255 screens', Buffer.from([251, 0, 4, 0, 3, 0, 255, 0]), { header: 8, body: 255 * 16 }],
    ['QEMU, subtype unknown', Buffer.from([255]), { need: 2 }],
    ['QEMU audio, op unknown', Buffer.from([255, 1, 0]), { need: 4 }],
    ['QEMU audio set format', Buffer.from([255, 1, 0, 2]), { need: 10 }],
    ['QEMU key', Buffer.concat([Buffer.from([255, 0]), Buffer.alloc(10)]), { header: 12, body: 0 }],
  ];
  for (const [name, buf, expected] of table) t.deepEqual(frameClientMessage(buf), expected, name);
  for (const bad of [[1], [7], [99], [149], [252], [254], [255, 2], [255, 1, 0, 3]]) {
    t.throws(() => frameClientMessage(Buffer.from(bad)), { instanceOf: RfbProtocolError }, `bytes ${bad.join(',')}`);
  }
});

// Every message both links may send, and what each link passes on.
const mixed = Buffer.concat([handshake, setPixelFormat, setEncodings, key, fbur, pointer, cut, extCut, qemuKey, qemuAudio, fence, contUpdates, desktopSize, xvp, fbur]);
const splitTable: Array<{ access: FilterAccess; expected: Buffer }> = [
  { access: 'view', expected: Buffer.concat([handshake, setPixelFormat, setEncodings, fbur, qemuAudio, fence, contUpdates, fbur]) },
  { access: 'control', expected: mixed },
];
for (const { access, expected } of splitTable) {
  test(`${access} link: the same bytes come out whatever the split, at every byte boundary into two and three chunks`, async (t) => {
    for (let i = 0; i <= mixed.length; i++) {
      const run = await drive(access, [mixed.subarray(0, i), mixed.subarray(i)]);
      t.is(run.error(), null);
      if (!run.out().equals(expected)) return t.fail(`split at ${i}`);
      t.true(run.maxBuffered < 20, `split at ${i}`);
    }
    for (let i = 1; i < mixed.length; i += 3) {
      for (let j = i; j < mixed.length; j += 5) {
        const run = await drive(access, [mixed.subarray(0, i), mixed.subarray(i, j), mixed.subarray(j)]);
        if (!run.out().equals(expected)) return t.fail(`split at ${i} and ${j}`);
      }
    }
    t.pass();
  });
}

const hugeDrops: Array<{ name: string; header: Buffer; bodyBytes: number }> = [
  { name: '16 MiB ClientCutText', header: cutText(16 * 1024 * 1024), bodyBytes: 16 * 1024 * 1024 },
  { name: '16 MiB extended ClientCutText', header: cutText(16 * 1024 * 1024, true), bodyBytes: 16 * 1024 * 1024 },
  { name: 'ClientCutText declaring 2 GiB, 8 MiB sent', header: cutText(0x7fffffff), bodyBytes: 8 * 1024 * 1024 },
];
for (const { name, header, bodyBytes } of hugeDrops) {
  test(`view-only: a ${name} in 4 KiB chunks is counted away, never buffered`, async (t) => {
    const complete = bodyBytes === Math.abs(header.readInt32BE(4));
    const run = await drive('view', inChunks(Buffer.concat([handshake, header]), bodyBytes, 4096, complete ? fbur : Buffer.alloc(0)));
    t.is(run.error(), null);
    t.true(run.maxBuffered <= 20, `at most one header held (held ${run.maxBuffered})`);
    t.true(run.maxQueued <= 64 * 1024, `the stream queues stay small (${run.maxQueued})`);
    t.is(run.f.stats.droppedBytes, 8 + bodyBytes);
    t.deepEqual(run.out(), complete ? Buffer.concat([handshake, fbur]) : handshake, 'only what follows the dropped message comes out');
  });
}

test('view-only: a large forwarded message (65535 encodings) streams through in pieces without being held', async (t) => {
  const header = Buffer.from([2, 0, 0xff, 0xff]);
  const run = await drive('view', inChunks(Buffer.concat([handshake, header]), 4 * 65535, 4096, fbur));
  t.is(run.error(), null);
  t.true(run.maxBuffered <= 20);
  t.is(run.outBytes(), handshake.length + 4 + 4 * 65535 + fbur.length);
  t.is(run.f.stats.dropped, 0);
});

const cutLimits: Array<{ name: string; access: FilterAccess; msg: Buffer; bodyBytes: number; refused: boolean }> = [
  { name: 'control: clipboard text of exactly the cap passes', access: 'control', msg: cutText(MAX_CUT_TEXT_BYTES), bodyBytes: MAX_CUT_TEXT_BYTES, refused: false },
  { name: 'control: one byte over the cap closes the viewer', access: 'control', msg: cutText(MAX_CUT_TEXT_BYTES + 1), bodyBytes: 0, refused: true },
  { name: 'control: extended clipboard over the cap closes the viewer', access: 'control', msg: cutText(MAX_CUT_TEXT_BYTES + 1, true), bodyBytes: 0, refused: true },
  { name: 'control: a 2 GiB declared length closes at once', access: 'control', msg: cutText(0x7fffffff), bodyBytes: 0, refused: true },
  { name: 'view: over the cap is dropped, not refused', access: 'view', msg: cutText(MAX_CUT_TEXT_BYTES + 1), bodyBytes: MAX_CUT_TEXT_BYTES + 1, refused: false },
];
for (const { name, access, msg, bodyBytes, refused } of cutLimits) {
  test(`clipboard cap — ${name}`, async (t) => {
    const run = await drive(access, inChunks(Buffer.concat([handshake, msg]), bodyBytes, 4096, fbur));
    t.true(run.maxBuffered <= 20);
    if (refused) {
      const err = run.error();
      t.true(err instanceof RfbProtocolError);
      t.is((err as RfbProtocolError).closeCode, 1009);
      t.regex((err as RfbProtocolError).closeReason, /clipboard text over the limit of 1048576 bytes/);
      t.deepEqual(run.out(), handshake, 'nothing of the refused message goes on');
    } else {
      t.is(run.error(), null);
      const through = access === 'control' ? 8 + bodyBytes : 0;
      t.is(run.outBytes(), handshake.length + through + fbur.length);
    }
  });
}

test('a configured smaller clipboard cap holds on control links', async (t) => {
  const run = await drive('control', [handshake, cutText(101), Buffer.alloc(101)], { maxCutTextBytes: 100 });
  t.is((run.error() as RfbProtocolError).closeCode, 1009);
});

test('control link: a type the bridge cannot frame is passed on unframed (QEMU judges it); view-only closes', async (t) => {
  const bogus = Buffer.from([77, 1, 2, 3]);
  const seen: string[] = [];
  const f = new RfbClientFilter({ access: 'control', onPassthrough: (e) => seen.push(e.message) });
  const parts: Buffer[] = [];
  f.on('data', (d: Buffer) => parts.push(d));
  f.write(Buffer.concat([handshake, fbur, bogus.subarray(0, 1)]));
  f.write(Buffer.concat([bogus.subarray(1), cutText(0x7fffffff)]));
  t.deepEqual(Buffer.concat(parts), Buffer.concat([handshake, fbur, bogus, cutText(0x7fffffff)]));
  t.deepEqual(seen, ['unknown client message type 77']);
  t.is(f.bufferedBytes, 0);
  const view = await drive('view', [handshake, fbur, bogus]);
  t.true(view.error() instanceof RfbProtocolError);
});
