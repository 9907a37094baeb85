// The desktop → viewer path of the bridge (viewer-outbox.ts, vnc-connect.ts
// readDesktop): the desktop's bytes are read into a buffer the bridge reuses
// whenever the viewer's socket took the previous chunk at once, and into a new
// one when it did not. A viewer that keeps stopping and starting to read makes
// both happen many times; every byte must still arrive, in order, and what the
// bridge holds must stay within the outbox's bound.
// The desktop here is a FAKE VNC source on a Unix socket (a banner, then tens of
// MiB of known bytes as fast as the bridge takes them): QEMU cannot be made to
// send a stream whose every byte a test knows. It is put in the place of a
// real session's VNC socket, as the benchmark does (bench/bridge-throughput.ts);
// the session, broker and bridge are the real ones.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu, tempDir } from '../helpers/env.js';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { vmPaths } from '../../src/launcher/local.js';
import { OUTBOX_HIGH_WATER_BYTES } from '../../src/bridge/viewer-outbox.js';
import { DESKTOP_READ_BYTES } from '../../src/bridge/vnc-connect.js';

test.before(() => requireQemu());

const TOTAL_BYTES = 48 * 1024 * 1024;

/** Serves one connection: the RFB banner, then TOTAL_BYTES of a known sequence, with backpressure; then it ends. */
function startSource(socketPath: string): Promise<{ server: net.Server; sent: Promise<string> }> {
  let resolveSent: (hash: string) => void = () => {};
  const sent = new Promise<string>((resolve) => {
    resolveSent = resolve;
  });
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.resume();
    const hash = crypto.createHash('sha256');
    const banner = Buffer.from('RFB 003.008\n');
    hash.update(banner);
    socket.write(banner);
    let left = TOTAL_BYTES;
    let counter = 0;
    const pump = () => {
      while (left > 0) {
        // Chunks of uneven size, each different: a reused buffer that is overwritten too early shows.
        const size = Math.min(left, 1000 + ((counter * 7919) % (200 * 1024)));
        const chunk = crypto.createHash('sha512').update(String(counter++)).digest();
        const data = Buffer.alloc(size, chunk);
        hash.update(data);
        left -= size;
        if (!socket.write(data)) return void socket.once('drain', pump);
      }
      socket.end();
      resolveSent(hash.digest('hex'));
    };
    pump();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve({ server, sent }));
  });
}

test('a viewer that keeps stopping and starting to read gets every byte of the desktop in order, and the bridge holds at most its bound', async (t) => {
  t.timeout(120_000);
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 });
  const paths = vmPaths(path.join(setup.config.runDir, s.id));
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 5000 });
  try {
    await qmp.execute('stop'); // the guest's CPU is not needed
  } finally {
    qmp.close();
  }
  const { server, sent } = await startSource(path.join(tempDir(t), 'source.sock'));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  fs.renameSync(paths.vncSocket, `${paths.vncSocket}.qemu`);
  fs.symlinkSync(server.address() as string, paths.vncSocket);

  const ws = new WebSocket(s.wsUrl, { perMessageDeflate: false });
  t.teardown(() => ws.terminate());
  const hash = crypto.createHash('sha256');
  let received = 0;
  // After about every MiB, the viewer stops reading for 5–60 ms: the bridge's writes then stop completing at once.
  let nextPauseAt = 0;
  let pauses = 0;
  // What the bridge holds is read at each message and at the end of each pause, when it is at its fullest.
  let most = 0;
  const measure = () => {
    most = Math.max(most, broker.bridge.bufferedBytes(s.id));
  };
  ws.on('message', (data: Buffer) => {
    hash.update(data);
    received += data.length;
    measure();
    if (received < nextPauseAt) return;
    nextPauseAt = received + 512 * 1024 + Math.random() * 1024 * 1024;
    ws.pause();
    pauses++;
    setTimeout(() => {
      measure();
      ws.resume();
    }, 5 + Math.random() * 55);
  });
  const closed = await new Promise<{ code: number; reason: string }>((resolve) => {
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });

  t.log(`${received} bytes received, ${pauses} pauses; the bridge held at most ${most} bytes`);
  t.deepEqual(closed, { code: 1000, reason: 'desktop connection closed' });
  t.is(received, 12 + TOTAL_BYTES);
  t.is(hash.digest('hex'), await sent, 'the same bytes, in the same order');
  t.true(pauses >= 30, `the viewer stopped reading ${pauses} times`);
  // The mark, the chunk that crossed it, and its frame header.
  t.true(most <= OUTBOX_HIGH_WATER_BYTES + DESKTOP_READ_BYTES + 14, `held ${most} bytes`);
});
