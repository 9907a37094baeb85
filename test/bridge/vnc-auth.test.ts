// The broker's VNC Authentication toward QEMU (RFC 6143 §7.2.2) and the None
// handshake it offers viewers instead: the DES answer against vectors computed
// elsewhere, the handshake machines table by table, then real QEMU with
// `-vnc …,password-secret=…` reached directly and through a WebSocket the way
// the bridge does it.
import anyTest, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Readable, type Duplex } from 'node:stream';
import { WebSocketServer, createWebSocketStream } from 'ws';
import {
  connectAuthenticatedVnc,
  encodeReason,
  parseProtocolVersion,
  parseReason,
  parseSecurityResult,
  parseSecurityType33,
  parseSecurityTypes,
  pickUpstreamSecurity,
  protocolVersion,
  securityResult,
  stepDownstream,
  stepUpstream,
  vncAuthResponse,
  type DesktopOutcome,
  type DownstreamState,
  type RfbMinor,
  type UpstreamState,
} from '../../src/bridge/vnc-auth.js';
import { readRfbBanner } from '../../src/qemu/rfb-probe.js';
import { connectVnc } from '../../src/bridge/vnc-connect.js';
import { QwdError } from '../../src/errors.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { pidsMentioning, requireQemu, tempDir, waitFor } from '../helpers/env.js';
import { FakeClock } from '../helpers/fake-clock.js';

// One at a time: most tests start their own QEMU, and two dozen starting at
// once on a 2-core host (beside the other test files) stretched handshakes past
// their budgets; serial, the file takes a few seconds more.
const test = anyTest.serial;

const HOST = '127.0.0.1';
const PASSWORD = 'Zq7#kP2m';
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const banner = (minor: RfbMinor) => Buffer.from(`RFB 003.00${minor}\n`, 'latin1');

// ---------------------------------------------------------------------------
// DES

test('vncAuthResponse is single DES with the bit-reversed password as key (vectors from openssl des-ecb)', (t) => {
  // Computed outside this code: key bytes bit-reversed by a Python one-liner,
  // then `openssl enc -des-ecb -provider legacy -nopad -K <key>`.
  t.deepEqual(vncAuthResponse('secret', hex('000102030405060708090a0b0c0d0e0f')), hex('ee22539f33a5983ec12f9c2edbc995dd'));
  t.deepEqual(vncAuthResponse('password', hex('0f1e2d3c4b5a69788796a5b4c3d2e1f0')), hex('81f977add76712bc6d838fbfc4ee9445'));
});

test('only the first 8 password bytes count and shorter passwords are zero-padded', (t) => {
  const challenge = randomBytes(16);
  t.deepEqual(vncAuthResponse('password-and-more', challenge), vncAuthResponse('password', challenge));
  t.deepEqual(vncAuthResponse('abc', challenge), vncAuthResponse('abc\0\0\0\0\0', challenge));
  t.notDeepEqual(vncAuthResponse('abd', challenge), vncAuthResponse('abc', challenge));
});

test('vncAuthResponse refuses a challenge that is not 16 bytes', (t) => {
  t.throws(() => vncAuthResponse('secret', Buffer.alloc(15)), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------
// Parsers

test('ProtocolVersion: 3.3, 3.7 and 3.8, anything else well-formed is 3.3 (RFC 6143 §7.1.1)', (t) => {
  t.is(parseProtocolVersion(Buffer.from('RFB 003.00')), null);
  t.deepEqual(parseProtocolVersion(Buffer.from('RFB 003.008\nrest')), { consumed: 12, value: 8 });
  t.deepEqual(parseProtocolVersion(Buffer.from('RFB 003.007\n')), { consumed: 12, value: 7 });
  t.deepEqual(parseProtocolVersion(Buffer.from('RFB 003.003\n')), { consumed: 12, value: 3 });
  t.deepEqual(parseProtocolVersion(Buffer.from('RFB 003.889\n')), { consumed: 12, value: 3 });
  t.deepEqual(parseProtocolVersion(Buffer.from('RFB 004.001\n')), { consumed: 12, value: 3 });
  t.throws(() => parseProtocolVersion(Buffer.from('GET / HTTP/1.1\r\n')), { name: 'RfbProtocolError' });
  t.deepEqual(protocolVersion(7), banner(7));
});

test('security types, 3.3 security type, SecurityResult and reason parsers', (t) => {
  const qemuReason = Buffer.concat([u32(22), Buffer.from('Authentication failed\0')]); // what QEMU 7.2 sends
  const cases: Array<[string, unknown, unknown]> = [
    ['types: empty', parseSecurityTypes(Buffer.alloc(0)), null],
    ['types: partial list', parseSecurityTypes(Buffer.from([2, 1])), null],
    ['types: list', parseSecurityTypes(Buffer.from([2, 2, 1, 9])), { consumed: 3, value: { types: [2, 1] } }],
    ['types: failure, partial reason', parseSecurityTypes(Buffer.concat([Buffer.from([0]), u32(5), Buffer.from('to')])), null],
    ['types: failure', parseSecurityTypes(Buffer.concat([Buffer.from([0]), encodeReason('too many')])), { consumed: 13, value: { failure: 'too many' } }],
    ['3.3: type', parseSecurityType33(u32(2)), { consumed: 4, value: { types: [2] } }],
    ['3.3: failure', parseSecurityType33(Buffer.concat([u32(0), encodeReason('no')])), { consumed: 10, value: { failure: 'no' } }],
    ['result: partial', parseSecurityResult(Buffer.from([0, 0]), 8), null],
    ['result: ok', parseSecurityResult(u32(0), 8), { consumed: 4, value: { ok: true } }],
    ['result: 3.8 failure, QEMU NUL-terminated', parseSecurityResult(Buffer.concat([u32(1), qemuReason]), 8), { consumed: 30, value: { ok: false, reason: 'Authentication failed' } }],
    ['result: 3.8 failure, reason not all here', parseSecurityResult(Buffer.concat([u32(1), qemuReason.subarray(0, 10)]), 8), null],
    ['result: 3.7 failure has no reason', parseSecurityResult(u32(1), 7), { consumed: 4, value: { ok: false, reason: 'authentication failed' } }],
    ['reason at offset', parseReason(Buffer.concat([Buffer.from([9]), encodeReason('é')]), 1), { consumed: 7, value: 'é' }],
    ['encode result: ok', securityResult({ ok: true }, 8), u32(0)],
    ['encode result: 3.8 failure', securityResult({ ok: false, reason: 'no' }, 8), Buffer.concat([u32(1), encodeReason('no')])],
    ['encode result: 3.7 failure', securityResult({ ok: false, reason: 'no' }, 7), u32(1)],
    ['pick: VNC auth first', pickUpstreamSecurity([1, 2]), 2],
    ['pick: None alone', pickUpstreamSecurity([1]), 1],
    ['pick: nothing we speak', pickUpstreamSecurity([19, 16]), null],
  ];
  for (const [title, got, want] of cases) t.deepEqual(got, want, title);
  t.throws(() => parseReason(u32(1 << 30)), { name: 'RfbProtocolError' });
});

// ---------------------------------------------------------------------------
// The machines

/** Feeds the desktop's bytes to stepUpstream (one byte at a time when asked) and collects our replies. */
function runUpstream(fromDesktop: Buffer, password: string, byteByByte = false): { state: UpstreamState; replies: Buffer; rest: Buffer } {
  let state: UpstreamState = { phase: 'version' };
  let buf = Buffer.alloc(0);
  const replies: Buffer[] = [];
  const chunks = byteByByte ? [...fromDesktop].map((b) => Buffer.from([b])) : [fromDesktop];
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    for (let step = stepUpstream(state, buf, password); step; step = stepUpstream(state, buf, password)) {
      buf = buf.subarray(step.consumed);
      state = step.next;
      if (step.reply) replies.push(step.reply);
    }
  }
  return { state, replies: Buffer.concat(replies), rest: buf };
}

test('toward the desktop: 3.8 with VNC Authentication, whole or byte by byte', (t) => {
  const challenge = randomBytes(16);
  const desktop = Buffer.concat([banner(8), Buffer.from([1, 2]), challenge, u32(0), Buffer.from('server-init')]);
  for (const byteByByte of [false, true]) {
    const run = runUpstream(desktop, PASSWORD, byteByByte);
    t.deepEqual(run.state, { phase: 'authenticated', security: 2 });
    t.deepEqual(run.replies, Buffer.concat([banner(8), Buffer.from([2]), vncAuthResponse(PASSWORD, challenge)]));
    t.deepEqual(run.rest, Buffer.from('server-init'), 'bytes after SecurityResult are left for pass-through');
  }
});

test('toward the desktop: None-only desktops, 3.7 and 3.3 servers, and every refusal', (t) => {
  const challenge = randomBytes(16);
  t.deepEqual(runUpstream(Buffer.concat([banner(8), Buffer.from([1, 1]), u32(0)]), PASSWORD).state, { phase: 'authenticated', security: 1 });
  const none37 = runUpstream(Buffer.concat([banner(7), Buffer.from([1, 1])]), PASSWORD);
  t.deepEqual(none37.state, { phase: 'authenticated', security: 1 }, '3.7 sends no SecurityResult after None');
  t.deepEqual(none37.replies, Buffer.concat([banner(7), Buffer.from([1])]));
  const auth33 = runUpstream(Buffer.concat([banner(3), u32(2), challenge, u32(0)]), PASSWORD);
  t.deepEqual(auth33.state, { phase: 'authenticated', security: 2 });
  t.deepEqual(auth33.replies, Buffer.concat([banner(3), vncAuthResponse(PASSWORD, challenge)]), 'in 3.3 the client does not choose');
  t.deepEqual(runUpstream(Buffer.concat([Buffer.from('RFB 003.889\n'), u32(1)]), PASSWORD).state, { phase: 'authenticated', security: 1 });

  t.deepEqual(runUpstream(Buffer.concat([banner(8), Buffer.from([1, 2]), challenge, u32(1), encodeReason('Authentication failed')]), 'wrong').state, { phase: 'refused', reason: 'Authentication failed' });
  t.deepEqual(runUpstream(Buffer.concat([banner(8), Buffer.from([0]), encodeReason('Too many connections')]), PASSWORD).state, { phase: 'refused', reason: 'Too many connections' });
  t.deepEqual(runUpstream(Buffer.concat([banner(3), u32(0), encodeReason('busy')]), PASSWORD).state, { phase: 'refused', reason: 'busy' });
  const vencrypt = runUpstream(Buffer.concat([banner(8), Buffer.from([1, 19])]), PASSWORD);
  t.is(vencrypt.state.phase, 'refused');
  t.regex((vencrypt.state as { reason: string }).reason, /security types \[19\].*VNC Authentication \(2\) and None \(1\)/);
  t.throws(() => runUpstream(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), PASSWORD), { name: 'RfbProtocolError' });
});

/** Runs stepDownstream over the viewer's bytes with a fixed desktop outcome. */
function runDownstream(fromViewer: Buffer, desktop: DesktopOutcome, state: DownstreamState = { phase: 'version' }): { state: DownstreamState; replies: Buffer; rest: Buffer } {
  let buf = fromViewer;
  const replies: Buffer[] = [];
  for (let step = stepDownstream(state, buf, desktop); step; step = stepDownstream(state, buf, desktop)) {
    buf = buf.subarray(step.consumed);
    state = step.next;
    if (step.reply) replies.push(step.reply);
  }
  return { state, replies: Buffer.concat(replies), rest: buf };
}

test('toward the viewer: None for 3.8, 3.7 and 3.3, each version answered as RFC 6143 §7.1 says', (t) => {
  const ok: DesktopOutcome = { state: 'ok' };
  const clientInit = Buffer.from([1]);
  const cases: Array<[string, Buffer, Buffer]> = [
    ['3.8: offer, choice, SecurityResult OK', Buffer.concat([banner(8), Buffer.from([1]), clientInit]), Buffer.concat([Buffer.from([1, 1]), u32(0)])],
    ['3.7: offer, choice, no SecurityResult', Buffer.concat([banner(7), Buffer.from([1]), clientInit]), Buffer.from([1, 1])],
    ['3.3: the server picks None, no SecurityResult', Buffer.concat([banner(3), clientInit]), u32(1)],
  ];
  for (const [title, viewer, replies] of cases) {
    const run = runDownstream(viewer, ok);
    t.deepEqual(run.state, { phase: 'ready' }, title);
    t.deepEqual(run.replies, replies, title);
    t.deepEqual(run.rest, clientInit, `${title}: ClientInit is left for pass-through`);
  }
});

test('toward the viewer: 3.8 sees the offer at once and waits for the desktop before its SecurityResult', (t) => {
  const waiting = runDownstream(Buffer.concat([banner(8), Buffer.from([1])]), { state: 'pending' });
  t.deepEqual(waiting.state, { phase: 'await-desktop', minor: 8, offered: true });
  t.deepEqual(waiting.replies, Buffer.from([1, 1]));
  const early37 = runDownstream(banner(7), { state: 'pending' });
  t.deepEqual(early37.state, { phase: 'await-desktop', minor: 7, offered: false }, '3.7 is offered None only once the desktop said yes');
  t.deepEqual(early37.replies, Buffer.alloc(0));
});

test('toward the viewer: a desktop failure is reported in the form each version allows', (t) => {
  const failed: DesktopOutcome = { state: 'failed', reason: 'the desktop refused the connection: Authentication failed' };
  const reason = encodeReason(failed.reason);
  const cases: Array<[string, Buffer, Buffer]> = [
    ['3.8: SecurityResult failed + reason', Buffer.concat([banner(8), Buffer.from([1])]), Buffer.concat([Buffer.from([1, 1]), u32(1), reason])],
    ['3.7: zero security types + reason', banner(7), Buffer.concat([Buffer.from([0]), reason])],
    ['3.3: security type 0 + reason', banner(3), Buffer.concat([u32(0), reason])],
  ];
  for (const [title, viewer, replies] of cases) {
    const run = runDownstream(viewer, failed);
    t.deepEqual(run.state, { phase: 'refused', by: 'desktop', reason: failed.reason }, title);
    t.deepEqual(run.replies, replies, title);
  }
  // 3.7 after the None offer: no SecurityResult exists to carry a failure; only closing is left.
  const late37 = runDownstream(Buffer.from([1]), failed, { phase: 'choice', minor: 7 });
  t.is(late37.state.phase, 'refused');
  t.deepEqual(late37.replies, Buffer.alloc(0));
});

test('toward the viewer: a security type other than None is refused, with a reason from 3.8 on', (t) => {
  const run8 = runDownstream(Buffer.concat([banner(8), Buffer.from([2])]), { state: 'ok' });
  t.is(run8.state.phase, 'refused');
  t.is((run8.state as { by: string }).by, 'viewer');
  t.is(run8.replies.readUInt32BE(2), 1);
  t.regex(parseReason(run8.replies, 6)!.value, /security type 2 was not offered/);
  const run7 = runDownstream(Buffer.from([16]), { state: 'ok' }, { phase: 'choice', minor: 7 });
  t.deepEqual(run7.replies, u32(1));
  t.throws(() => runDownstream(Buffer.from('HELLO WORLD!'), { state: 'ok' }), { name: 'RfbProtocolError' });
});

// ---------------------------------------------------------------------------
// Real QEMU

anyTest.before(() => requireQemu());

/** A free TCP port on 127.0.0.1 (the kernel's ephemeral range is above 5900). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, HOST, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (port < 5900) throw new Error(`port ${port} is below 5900 and cannot be a VNC display`);
  return port;
}

interface VncQemu {
  pid: number;
  port: number;
}

/**
 * `-machine none` QEMU with VNC on TCP, password-protected unless `secret` is
 * null. Its PID is killed in teardown, and the test fails if it outlives that.
 */
async function startVncQemu(t: ExecutionContext, secret: string | null): Promise<VncQemu> {
  const dir = tempDir(t, 'qwd-vnc-');
  const args = ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${dir}/qmp.sock,server=on,wait=off`];
  if (secret !== null) {
    fs.writeFileSync(path.join(dir, 'secret'), secret, { mode: 0o600 });
    args.push('-object', `secret,id=vncpw,file=${dir}/secret`);
  }
  for (let attempt = 1; ; attempt++) {
    // Another process may take the port between our probe and QEMU's bind: retry.
    const port = await freePort();
    const vnc = `${HOST}:${port - 5900}${secret === null ? '' : ',password-secret=vncpw'}`;
    const child = spawn('qemu-system-x86_64', [...args, '-vnc', vnc], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      const left = pidsMentioning(dir);
      if (left.length) throw new Error(`qemu ${child.pid} outlived its test: ${left.join(', ')}`);
    });
    for (const deadline = Date.now() + 10_000; ; ) {
      if (child.exitCode !== null || child.signalCode !== null) break;
      if (await readRfbBanner({ kind: 'tcp', host: HOST, port }, 500).then(() => true, () => false)) return { pid: child.pid!, port };
      if (Date.now() > deadline) throw new Error(`qemu did not answer on VNC ${HOST}:${port} within 10 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await exited;
    if (!/in use|bind|listen/i.test(stderr) || attempt >= 5) throw new Error(`qemu exited during start-up: ${stderr}`);
  }
}

/** Reads exact byte counts from a stream and keeps every byte it received. */
class StreamReader {
  /** Bytes not yet handed to a read(), as received (joined only when a read takes them: no quadratic copying of 16 MiB). */
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private readonly chunks: Buffer[] = [];
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private ended = false;

  constructor(stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.pending.push(chunk);
      this.pendingLength += chunk.length;
      this.drain();
    });
    stream.on('end', () => this.finish());
    stream.on('close', () => this.finish());
  }

  read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${n} bytes within ${timeoutMs} ms (have ${this.pendingLength})`)), timeoutMs);
      this.waiter = { n, resolve: (b) => { clearTimeout(timer); resolve(b); }, reject: (e) => { clearTimeout(timer); reject(e); } };
      this.drain();
    });
  }

  /** Every byte received so far. */
  received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  private finish(): void {
    this.ended = true;
    this.drain();
  }

  private drain(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.pendingLength >= w.n) {
      this.waiter = null;
      const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      const rest = all.subarray(w.n);
      this.pending = rest.length ? [rest] : [];
      this.pendingLength = rest.length;
      w.resolve(all.subarray(0, w.n));
    } else if (this.ended) {
      this.waiter = null;
      w.reject(new Error(`stream ended with ${this.pendingLength} of ${w.n} bytes`));
    }
  }
}

/** Watches a stream's errors and close, as the bridge does. */
function watch(stream: Duplex): { errors: Error[]; closed: Promise<void> } {
  const errors: Error[] = [];
  stream.on('error', (err) => errors.push(err));
  return { errors, closed: new Promise((resolve) => stream.once('close', () => resolve())) };
}

/** The viewer's handshake with security None, for each version. */
async function viewerHandshake(t: ExecutionContext, vnc: Duplex, reader: StreamReader, minor: RfbMinor): Promise<void> {
  t.deepEqual(await reader.read(12), banner(8));
  vnc.write(banner(minor));
  if (minor === 3) {
    t.deepEqual(await reader.read(4), u32(1), '3.3: the server chose None');
    return;
  }
  t.deepEqual(await reader.read(2), Buffer.from([1, 1]), 'offered None only');
  vnc.write(Buffer.from([1]));
  if (minor === 8) t.deepEqual(await reader.read(4), u32(0), 'SecurityResult OK');
}

/** ClientInit, ServerInit, then one full FramebufferUpdate in the server's own pixel format (Raw). */
async function viewerInitAndFrame(vnc: Duplex, reader: StreamReader): Promise<{ width: number; height: number; name: string; pixelBytes: number }> {
  vnc.write(Buffer.from([1])); // ClientInit: shared
  const init = await reader.read(24);
  const width = init.readUInt16BE(0);
  const height = init.readUInt16BE(2);
  const bytesPerPixel = init[4]! / 8;
  const name = (await reader.read(init.readUInt32BE(20))).toString('utf8');
  const request = Buffer.alloc(10);
  request[0] = 3; // FramebufferUpdateRequest, not incremental
  request.writeUInt16BE(width, 6);
  request.writeUInt16BE(height, 8);
  vnc.write(request);
  const head = await reader.read(4);
  if (head[0] !== 0) throw new Error(`expected a FramebufferUpdate, got message type ${head[0]}`);
  let pixelBytes = 0;
  for (let i = head.readUInt16BE(2); i > 0; i--) {
    const rect = await reader.read(12);
    if (rect.readInt32BE(8) !== 0) throw new Error(`expected Raw encoding, got ${rect.readInt32BE(8)}`);
    const n = rect.readUInt16BE(4) * rect.readUInt16BE(6) * bytesPerPixel;
    pixelBytes += (await reader.read(n)).length;
  }
  return { width, height, name, pixelBytes };
}

test('a 3.8 viewer gets ServerInit and a frame through QEMU\'s VNC password, and no byte of the password', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, PASSWORD);
  t.teardown(() => vnc.destroy());
  const { errors, closed } = watch(vnc);
  const reader = new StreamReader(vnc);
  await viewerHandshake(t, vnc, reader, 8);
  t.deepEqual(reader.received(), Buffer.concat([banner(8), Buffer.from([1, 1]), u32(0)]), 'the viewer saw exactly the None handshake');
  const screen = await viewerInitAndFrame(vnc, reader);
  t.true(screen.width >= 320 && screen.width <= 4096 && screen.height >= 200 && screen.height <= 4096, `${screen.width}x${screen.height}`);
  t.is(screen.pixelBytes, screen.width * screen.height * 4, 'a full 32 bpp frame');
  t.is(screen.name, 'QEMU');
  t.is(reader.received().indexOf(PASSWORD), -1);
  t.is(reader.received().indexOf(Buffer.from(PASSWORD).subarray(0, 4)), -1);
  vnc.destroy();
  await closed;
  t.deepEqual(errors, []);
});

for (const minor of [3, 7] as const) {
  test(`a 3.${minor} viewer also gets the desktop`, async (t) => {
    const qemu = await startVncQemu(t, PASSWORD);
    const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, PASSWORD);
    t.teardown(() => vnc.destroy());
    const reader = new StreamReader(vnc);
    await viewerHandshake(t, vnc, reader, minor);
    const screen = await viewerInitAndFrame(vnc, reader);
    t.is(screen.pixelBytes, screen.width * screen.height * 4);
    t.true(screen.width > 0 && screen.height > 0);
  });
}

test('a viewer that answers from inside its data handler (synchronous re-entry) still gets the desktop', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  for (const minor of [8, 7, 3] as const) {
    const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, PASSWORD);
    t.teardown(() => vnc.destroy());
    // Each reply is written synchronously in 'data', while the Duplex is still inside push():
    // [bytes received so far, what to answer].
    const clientInit = Buffer.from([1]);
    const script: Array<[number, Buffer]> =
      minor === 8 ? [[12, banner(8)], [14, Buffer.from([1])], [18, clientInit]]
      : minor === 7 ? [[12, banner(7)], [14, Buffer.from([1])], [14, clientInit]]
      : [[12, banner(3)], [16, clientInit]];
    const handshake = script[script.length - 1]![0];
    let got = Buffer.alloc(0);
    const serverInit = new Promise<Buffer>((resolve, reject) => {
      vnc.on('error', reject);
      vnc.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        while (script.length && got.length >= script[0]![0]) vnc.write(script.shift()![1]);
        if (got.length >= handshake + 24) resolve(got.subarray(handshake, handshake + 24));
      });
    });
    const init = await serverInit;
    t.true(init.readUInt16BE(0) > 0 && init.readUInt16BE(2) > 0, `3.${minor}`);
  }
});

test('with the wrong password the viewer reads why, and the stream fails with QWD_VNC_AUTH_FAILED and closes', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  for (const minor of [8, 7, 3] as const) {
    const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, 'Wrong-pw');
    t.teardown(() => vnc.destroy());
    const { errors, closed } = watch(vnc);
    const reader = new StreamReader(vnc);
    t.deepEqual(await reader.read(12), banner(8));
    vnc.write(banner(minor));
    if (minor === 8) {
      t.deepEqual(await reader.read(2), Buffer.from([1, 1]));
      vnc.write(Buffer.from([1]));
      t.deepEqual(await reader.read(4), u32(1), '3.8: SecurityResult failed');
    } else if (minor === 7) {
      t.is((await reader.read(1))[0], 0, '3.7: no security types');
    } else {
      t.deepEqual(await reader.read(4), u32(0), '3.3: security type 0');
    }
    const reason = (await reader.read((await reader.read(4)).readUInt32BE(0))).toString('utf8');
    t.is(reason, 'the desktop refused the connection: Authentication failed', `3.${minor}`);
    await closed;
    t.is(errors.length, 1);
    t.true(errors[0] instanceof QwdError);
    t.is((errors[0] as QwdError).code, 'QWD_VNC_AUTH_FAILED');
    t.regex(errors[0]!.message, new RegExp(`VNC ${HOST}:${qemu.port} refused the broker's authentication: Authentication failed`));
    t.false(errors[0]!.message.includes('Wrong-pw'));
  }
});

test('a viewer that picks a security type other than None is refused with a reason and closed', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, PASSWORD);
  t.teardown(() => vnc.destroy());
  const { errors, closed } = watch(vnc);
  const reader = new StreamReader(vnc);
  await reader.read(12);
  vnc.write(banner(8));
  t.deepEqual(await reader.read(2), Buffer.from([1, 1]));
  vnc.write(Buffer.from([2])); // VNC Authentication: not offered
  t.deepEqual(await reader.read(4), u32(1));
  const reason = (await reader.read((await reader.read(4)).readUInt32BE(0))).toString('utf8');
  t.regex(reason, /security type 2 was not offered/);
  await closed;
  t.is((errors[0] as QwdError | undefined)?.code, 'QWD_BAD_REQUEST');
  t.is(reader.received().indexOf(PASSWORD), -1);
});

test('a desktop that offers only None is reached without using the password', async (t) => {
  const qemu = await startVncQemu(t, null);
  const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, PASSWORD);
  t.teardown(() => vnc.destroy());
  const reader = new StreamReader(vnc);
  await viewerHandshake(t, vnc, reader, 8);
  const screen = await viewerInitAndFrame(vnc, reader);
  t.is(screen.pixelBytes, screen.width * screen.height * 4);
});

test('readRfbBanner probes the endpoint itself even when the address has a password', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  t.is(await readRfbBanner({ kind: 'tcp', host: HOST, port: qemu.port, password: PASSWORD }), 'RFB 003.008');
});

test('a refused TCP connection reaches the viewer as an RFB failure and fails with QWD_VNC_UNREACHABLE', async (t) => {
  const port = await freePort(); // nothing listens there any more
  const vnc = connectAuthenticatedVnc({ host: HOST, port }, PASSWORD);
  t.teardown(() => vnc.destroy());
  const { errors, closed } = watch(vnc);
  const reader = new StreamReader(vnc);
  await reader.read(12);
  vnc.write(banner(8));
  await reader.read(2);
  vnc.write(Buffer.from([1]));
  t.deepEqual(await reader.read(4), u32(1));
  t.is((await reader.read((await reader.read(4)).readUInt32BE(0))).toString(), 'the desktop cannot be reached');
  await closed;
  t.is((errors[0] as QwdError).code, 'QWD_VNC_UNREACHABLE');
  t.regex(errors[0]!.message, /ECONNREFUSED/);
});

test('a desktop that accepts but never speaks is given up after timeoutMs, and the viewer is told', async (t) => {
  // A silent TCP peer, not QEMU: QEMU always sends its banner at once.
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => sockets.push(s));
  await new Promise<void>((resolve) => silent.listen(0, HOST, resolve));
  t.teardown(() => { for (const s of sockets) s.destroy(); silent.close(); });
  // The handshake budget runs on a fake clock: the desktop gets all of it, and the bridge gives up when it is spent.
  const clock = new FakeClock();
  const vnc = connectAuthenticatedVnc({ host: HOST, port: (silent.address() as net.AddressInfo).port }, PASSWORD, { timeoutMs: 300, clock });
  t.teardown(() => vnc.destroy());
  const { errors, closed } = watch(vnc);
  let isClosed = false;
  void closed.then(() => { isClosed = true; });
  const reader = new StreamReader(vnc);
  await reader.read(12);
  vnc.write(banner(7));
  await waitFor('the silent desktop to accept the connection', () => sockets.length === 1);
  await clock.advance(299);
  t.is(reader.received().length, 12, 'nothing after our banner 1 ms before the budget is spent: still waiting for the desktop');
  t.false(isClosed);
  t.deepEqual(errors, []);
  await clock.advance(1);
  t.is((await reader.read(1))[0], 0, 'zero security types');
  t.is((await reader.read((await reader.read(4)).readUInt32BE(0))).toString(), 'the desktop did not answer in time');
  await closed;
  t.is((errors[0] as QwdError).code, 'QWD_VNC_UNREACHABLE');
  t.regex(errors[0]!.message, /no RFB handshake within 300 ms/);
});

test('a viewer that never finishes its handshake is closed after timeoutMs', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  // The budget covers QEMU's side too, which must finish first: leave it room on a loaded host.
  const vnc = connectAuthenticatedVnc({ host: HOST, port: qemu.port }, PASSWORD, { timeoutMs: 2000 });
  t.teardown(() => vnc.destroy());
  const { errors, closed } = watch(vnc);
  vnc.resume();
  await closed;
  t.is((errors[0] as QwdError).code, 'QWD_BAD_REQUEST');
  t.regex(errors[0]!.message, /did not finish the RFB handshake within 2000 ms/);
});

test('pass-through keeps every byte in order both ways and holds back a viewer that does not read', async (t) => {
  // A scripted RFB server, not QEMU: QEMU cannot be made to echo arbitrary
  // bytes. It checks the DES answer, then echoes everything after SecurityResult.
  const challenge = randomBytes(16);
  const sockets: net.Socket[] = [];
  const echo = net.createServer((s) => {
    sockets.push(s);
    s.write(banner(8));
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 12 + 1 + 16) return;
      s.off('data', onData);
      const ok = buf.subarray(0, 12).equals(banner(8)) && buf[12] === 2 && buf.subarray(13, 29).equals(vncAuthResponse(PASSWORD, challenge));
      if (!ok) return void s.end(Buffer.concat([u32(1), encodeReason('bad')]));
      s.write(u32(0));
      s.unshift(buf.subarray(29));
      s.pipe(s);
    };
    s.on('data', onData);
    s.write(Buffer.from([1, 2]));
    s.write(challenge);
    s.on('error', () => s.destroy()); // the test ends by destroying the stream; resets are expected
  });
  await new Promise<void>((resolve) => echo.listen(0, HOST, resolve));
  t.teardown(() => { for (const s of sockets) s.destroy(); echo.close(); });

  const vnc = connectAuthenticatedVnc({ host: HOST, port: (echo.address() as net.AddressInfo).port }, PASSWORD);
  t.teardown(() => vnc.destroy());
  const reader = new StreamReader(vnc);
  await viewerHandshake(t, vnc, reader, 8);
  const handshakeBytes = reader.received().length;

  // 16 MiB out; the viewer side does not read for a while.
  const payload = randomBytes(16 * 1024 * 1024);
  vnc.pause();
  Readable.from((function* () { for (let i = 0; i < payload.length; i += 50_000) yield payload.subarray(i, i + 50_000); })()).pipe(vnc, { end: false });
  await new Promise((r) => setTimeout(r, 400));
  t.true(vnc.readableLength < 1024 * 1024, `buffered toward the viewer while it did not read: ${vnc.readableLength} bytes`);
  vnc.resume();
  const echoed = await reader.read(payload.length, 20_000);
  t.is(createHash('sha256').update(echoed).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  t.is(reader.received().length, handshakeBytes + payload.length);
});

// ---------------------------------------------------------------------------
// Through a WebSocket, the way the bridge pipes a viewer

async function wsBridge(t: ExecutionContext, address: Parameters<typeof connectVnc>[0]): Promise<string> {
  const wss = new WebSocketServer({ host: HOST, port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  t.teardown(() => { for (const c of wss.clients) c.terminate(); wss.close(); });
  wss.on('connection', (ws) => {
    // As in src/bridge/ws-bridge.ts: pipes both ways, and either side ending ends both.
    const vnc = connectVnc(address);
    const wsStream = createWebSocketStream(ws, { allowHalfOpen: false });
    vnc.pipe(wsStream);
    wsStream.pipe(vnc);
    const finish = () => {
      vnc.destroy();
      wsStream.destroy();
      if (ws.readyState === ws.OPEN) ws.close(1000);
    };
    vnc.on('error', finish);
    vnc.on('close', finish);
    wsStream.on('error', finish);
    ws.on('close', finish);
  });
  return `ws://${HOST}:${(wss.address() as net.AddressInfo).port}/`;
}

test('through a WebSocket, the test RFB client sees security None and gets a frame from a password-protected QEMU', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  const url = await wsBridge(t, { kind: 'tcp', host: HOST, port: qemu.port, password: PASSWORD });
  const rfb = await connectRfb(url);
  t.teardown(() => rfb.close());
  t.deepEqual(rfb.securityTypes, [1]);
  const fb = await rfb.update(false);
  t.is(fb.length, rfb.width * rfb.height * 4);
  t.true(rfb.width >= 320 && rfb.height >= 200);
});

test('through a WebSocket, a wrong password reaches the viewer as the reason it was refused', async (t) => {
  const qemu = await startVncQemu(t, PASSWORD);
  const url = await wsBridge(t, { kind: 'tcp', host: HOST, port: qemu.port, password: 'Wrong-pw' });
  await t.throwsAsync(connectRfb(url, { timeoutMs: 5000 }), { message: 'security result 1: the desktop refused the connection: Authentication failed' });
});
