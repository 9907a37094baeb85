import test from 'ava';
import { ViewOnlyFilter, clientMessageLength, RfbProtocolError } from '../../src/bridge/rfb-client-filter.js';

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
