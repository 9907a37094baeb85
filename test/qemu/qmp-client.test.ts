import test from 'ava';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { QmpClient, type QmpEvent } from '../../src/qemu/qmp-client.js';
import { readRfbBanner } from '../../src/qemu/rfb-probe.js';
import { requireQemu, tempDir, waitFor } from '../helpers/env.js';
import { FakeClock } from '../helpers/fake-clock.js';
import fs from 'node:fs';

test.before(() => requireQemu());

/** qemu -machine none: starts in well under a second, answers QMP and RFB. */
async function startBareQemu(t: ExecutionContext) {
  const dir = tempDir(t);
  const qmp = path.join(dir, 'qmp.sock');
  const vnc = path.join(dir, 'vnc.sock');
  const child = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${qmp},server=on,wait=off`, '-vnc', `unix:${vnc}`], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  await waitFor('QMP socket', () => fs.existsSync(qmp) && fs.existsSync(vnc), 10000);
  return { child, qmp, vnc, exited };
}

test('greeting, capabilities, and replies routed by id', async (t) => {
  const { qmp } = await startBareQemu(t);
  const client = await QmpClient.connect(qmp);
  t.teardown(() => client.close());
  const [status, name, version] = await Promise.all([
    client.execute<{ status: string; running: boolean }>('query-status'),
    client.execute<{ name?: string }>('query-name'),
    client.execute<{ qemu: { major: number } }>('query-version'),
  ]);
  t.is(typeof status.running, 'boolean');
  t.deepEqual(name, {});
  t.true(version.qemu.major >= 7);
});

test('a QMP error reply rejects only its own command', async (t) => {
  const { qmp } = await startBareQemu(t);
  const client = await QmpClient.connect(qmp);
  t.teardown(() => client.close());
  const bad = client.execute('no-such-command');
  const good = client.execute('query-status');
  await t.throwsAsync(bad, { code: 'QWD_QMP_ERROR', message: /CommandNotFound/ });
  t.truthy(await good);
});

test('events are emitted', async (t) => {
  const { qmp } = await startBareQemu(t);
  const client = await QmpClient.connect(qmp);
  t.teardown(() => client.close());
  const events: QmpEvent[] = [];
  client.on('event', (e: QmpEvent) => events.push(e));
  await client.execute('stop');
  await waitFor('a STOP event', () => events.some((e) => e.event === 'STOP'), 5000);
  t.pass();
});

test('quit ends qemu and the connection', async (t) => {
  const { qmp, exited } = await startBareQemu(t);
  const client = await QmpClient.connect(qmp);
  await client.quit(5000);
  await exited;
  await t.throwsAsync(client.execute('query-status'), { code: 'QWD_QMP_ERROR' });
});

test('a server that never greets times out', async (t) => {
  const dir = tempDir(t);
  const sock = path.join(dir, 'silent.sock');
  const peers: net.Socket[] = [];
  const server = net.createServer((s) => peers.push(s));
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => { for (const s of peers) s.destroy(); server.close(); });
  // The client's timeout runs on a fake clock: it gives up at 300 ms of that clock, not before and not later.
  const clock = new FakeClock();
  let outcome: 'pending' | Error = 'pending';
  const connecting = QmpClient.connect(sock, { timeoutMs: 300, clock });
  connecting.then(() => { outcome = new Error('connected to a server that never greets'); }, (err: Error) => { outcome = err; });
  const peer = await waitFor('the server to accept the connection', () => peers[0]);
  const peerClosed = new Promise<void>((resolve) => peer.once('close', () => resolve()));
  await clock.advance(299);
  t.is(outcome, 'pending', 'still waiting for the greeting 1 ms before the timeout');
  await clock.advance(1);
  await t.throwsAsync(connecting, { code: 'QWD_QMP_TIMEOUT', message: /no greeting within 300 ms/ });
  await peerClosed; // and it hung up rather than leave the connection open
});

test('a command without an answer times out and later replies are ignored', async (t) => {
  const dir = tempDir(t);
  const sock = path.join(dir, 'slow.sock');
  const server = net.createServer((s) => {
    s.write('{"QMP": {"version": {}, "capabilities": []}}\n');
    s.on('data', (d) => {
      const msg = JSON.parse(d.toString().trim().split('\n')[0]!);
      if (msg.execute === 'qmp_capabilities') s.write(JSON.stringify({ return: {}, id: msg.id }) + '\n');
      // everything else: never answered
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => server.close());
  const client = await QmpClient.connect(sock);
  t.teardown(() => client.close());
  await t.throwsAsync(client.execute('query-status', undefined, { timeoutMs: 200 }), { code: 'QWD_QMP_TIMEOUT' });
});

test('the VNC socket answers with an RFB banner', async (t) => {
  const { vnc } = await startBareQemu(t);
  t.is(await readRfbBanner({ kind: 'unix', path: vnc }), 'RFB 003.008');
});
