// The reading end of the throughput measurement: connect one way (straight to
// the source over its Unix socket or over plain TCP on 127.0.0.1, `ws`
// client, or a byte-counting WebSocket client), read as fast as possible,
// and after a warm-up count bytes over a fixed window. CPU use of
// the reader (this process), the relay and the source is sampled at the
// window's edges. Runs in its own small process (throughput-reader-main.ts):
// in a process that has loaded the broker's module graph and run the other
// measurements, the reader's own garbage collection — 64 KiB buffers at
// GB/s — cost several times more and made it, not the relay, the bottleneck.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { groupCpuMs, processCpuMs } from './processes.js';

export type ReaderKind = 'unix' | 'tcp' | 'ws' | 'raw-ws';

export interface ReaderJob {
  kind: ReaderKind;
  /** Unix socket path (unix), tcp://127.0.0.1:<port> (tcp) or ws:// URL. */
  target: string;
  windowMs: number;
  warmUpMs: number;
  sourcePid: number;
  /** The relay's PID, and whether to count its whole process group (websockify forks per connection). */
  relay: { pid: number; group: boolean } | null;
  /**
   * Viewers read at once (readMany; default 1, readFor). With several, the window is timed by the clock (it starts
   * once every connection is streaming and the warm-up has passed) and the reader prints {"windowStart":true}
   * when it starts, so that something else can be measured over the same window.
   */
  connections?: number;
}

export interface ReaderResult {
  bytes: number;
  seconds: number;
  messages: number;
  readerCpuMs: number;
  relayCpuMs: number | null;
  sourceCpuMs: number;
}

export function readFor(job: ReaderJob): Promise<ReaderResult> {
  const relayCpu = job.relay ? (job.relay.group ? () => groupCpuMs(job.relay!.pid) : () => processCpuMs(job.relay!.pid)) : null;
  return new Promise<ReaderResult>((resolve, reject) => {
    let firstAt = 0;
    let start: { at: number; bytes: number; messages: number; reader: NodeJS.CpuUsage; relay: number; source: number } | null = null;
    let bytes = 0;
    let messages = 0;
    let settled = false;
    let close = () => {};
    const limitMs = job.windowMs + job.warmUpMs + 10000;
    const hardTimer = setTimeout(() => finish(new Error(`no complete ${job.windowMs} ms window within ${limitMs} ms (${bytes} bytes read)`)), limitMs);
    const finish = (err: Error | null, result?: ReaderResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(hardTimer);
      close();
      if (err) reject(err);
      else resolve(result!);
    };
    const onBytes = (n: number) => {
      if (settled) return;
      const now = performance.now();
      bytes += n;
      messages++;
      if (!firstAt) firstAt = now;
      if (!start) {
        if (now - firstAt >= job.warmUpMs) start = { at: now, bytes, messages, reader: process.cpuUsage(), relay: relayCpu?.() ?? 0, source: processCpuMs(job.sourcePid) };
        return;
      }
      if (now - start.at < job.windowMs) return;
      const reader = process.cpuUsage(start.reader);
      finish(null, {
        bytes: bytes - start.bytes,
        seconds: (now - start.at) / 1000,
        messages: messages - start.messages,
        readerCpuMs: (reader.user + reader.system) / 1000,
        relayCpuMs: relayCpu ? relayCpu() - start.relay : null,
        sourceCpuMs: processCpuMs(job.sourcePid) - start.source,
      });
    };
    const fail = (err: Error) => finish(new Error(`${job.kind} ${job.target}: ${err.message}`));
    if (job.kind === 'unix' || job.kind === 'tcp') {
      const socket = job.kind === 'unix' ? net.createConnection(job.target) : tcpConnection(job.target);
      close = () => socket.destroy();
      socket.on('data', (chunk: Buffer) => onBytes(chunk.length));
      socket.on('error', fail);
      socket.on('close', () => fail(new Error('the source closed the connection')));
    } else if (job.kind === 'raw-ws') {
      const socket = rawWebSocket(job.target, onBytes, fail);
      close = () => socket.destroy();
    } else {
      const ws = new WebSocket(job.target, { perMessageDeflate: false });
      close = () => ws.terminate();
      ws.on('message', (data: Buffer) => onBytes(data.length));
      ws.on('unexpected-response', (_req, res) => fail(new Error(`HTTP ${res.statusCode} instead of a WebSocket upgrade`)));
      ws.on('error', fail);
      ws.on('close', (code, reason) => fail(new Error(`WebSocket closed (${code} ${reason.toString()})`)));
    }
  });
}

export interface ManyResult extends ReaderResult {
  /** Bytes each connection read in the window. */
  perConnectionBytes: number[];
}

/** Several relay connections (ws or raw-ws) read at once over one window timed by the clock. */
export function readMany(job: ReaderJob, onWindowStart: () => void): Promise<ManyResult> {
  const n = job.connections ?? 1;
  if (job.kind !== 'ws' && job.kind !== 'raw-ws') throw new Error(`readMany reads relays (ws, raw-ws), not ${job.kind}`);
  const relayCpu = job.relay ? (job.relay.group ? () => groupCpuMs(job.relay!.pid) : () => processCpuMs(job.relay!.pid)) : null;
  return new Promise<ManyResult>((resolve, reject) => {
    const counts = new Array<number>(n).fill(0);
    const closers: Array<() => void> = [];
    const timers: NodeJS.Timeout[] = [];
    let streaming = 0;
    let settled = false;
    const finish = (err: Error | null, result?: ManyResult) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      for (const close of closers) close();
      if (err) reject(err);
      else resolve(result!);
    };
    const limitMs = job.windowMs + job.warmUpMs + 20000;
    timers.push(setTimeout(() => finish(new Error(`no complete ${job.windowMs} ms window within ${limitMs} ms (${streaming} of ${n} connections streaming)`)), limitMs));
    const startWindow = () => {
      const start = { at: performance.now(), counts: [...counts], reader: process.cpuUsage(), relay: relayCpu?.() ?? 0, source: processCpuMs(job.sourcePid) };
      onWindowStart();
      timers.push(setTimeout(() => {
        const seconds = (performance.now() - start.at) / 1000;
        const reader = process.cpuUsage(start.reader);
        const perConnectionBytes = counts.map((c, i) => c - start.counts[i]!);
        finish(null, {
          bytes: perConnectionBytes.reduce((a, b) => a + b, 0), seconds, messages: 0, perConnectionBytes,
          readerCpuMs: (reader.user + reader.system) / 1000,
          relayCpuMs: relayCpu ? relayCpu() - start.relay : null,
          sourceCpuMs: processCpuMs(job.sourcePid) - start.source,
        });
      }, job.windowMs));
    };
    for (let i = 0; i < n; i++) {
      let first = true;
      const onBytes = (bytes: number) => {
        counts[i]! += bytes;
        if (first) {
          first = false;
          if (++streaming === n) timers.push(setTimeout(startWindow, job.warmUpMs));
        }
      };
      const fail = (err: Error) => finish(new Error(`connection ${i + 1} of ${n}, ${job.kind} ${job.target}: ${err.message}`));
      if (job.kind === 'raw-ws') {
        const socket = rawWebSocket(job.target, onBytes, fail);
        closers.push(() => socket.destroy());
      } else {
        const ws = new WebSocket(job.target, { perMessageDeflate: false });
        closers.push(() => ws.terminate());
        ws.on('message', (data: Buffer) => onBytes(data.length));
        ws.on('unexpected-response', (_req, res) => fail(new Error(`HTTP ${res.statusCode} instead of a WebSocket upgrade`)));
        ws.on('error', fail);
        ws.on('close', (code, reason) => fail(new Error(`WebSocket closed (${code} ${reason.toString()})`)));
      }
    }
  });
}

/** A plain TCP connection to tcp://<host>:<port>. */
function tcpConnection(url: string): net.Socket {
  const u = new URL(url);
  if (u.protocol !== 'tcp:' || !u.port) throw new Error(`not a tcp://<host>:<port> address: ${url}`);
  return net.createConnection(Number(u.port), u.hostname);
}

/**
 * A WebSocket client that does only the opening handshake (RFC 6455 §4.1) and
 * then reports the size of every socket read as it comes: no frame parsing,
 * no message assembly. For measuring what a relay can push, not for use.
 */
function rawWebSocket(url: string, onBytes: (n: number) => void, onError: (err: Error) => void): net.Socket {
  const u = new URL(url);
  const socket = net.createConnection(Number(u.port), u.hostname);
  let head = Buffer.alloc(0);
  let upgraded = false;
  socket.on('connect', () => {
    socket.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  });
  socket.on('data', (chunk: Buffer) => {
    if (upgraded) return onBytes(chunk.length);
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    const status = head.subarray(0, head.indexOf('\r\n')).toString('latin1');
    if (!/^HTTP\/1\.1 101 /.test(status)) return onError(new Error(`upgrade refused: ${status}`));
    upgraded = true;
    if (head.length > end + 4) onBytes(head.length - end - 4);
  });
  socket.on('error', onError);
  socket.on('close', () => onError(new Error('connection closed')));
  return socket;
}
