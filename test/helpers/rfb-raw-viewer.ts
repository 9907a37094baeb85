// A raw RFB 3.8 viewer over a WebSocket (through the bridge) or straight on a
// VNC Unix socket, for clipboard and resize tests: it chooses its own
// SetEncodings (e.g. the Extended Clipboard and ExtendedDesktopSize
// pseudo-encodings) and reads every server message it can be sent with Raw as
// its only real encoding: FramebufferUpdate (Raw,
// DesktopSize, ExtendedDesktopSize), Bell and ServerCutText (plain or extended).
// And a recording proxy to put in front of a QEMU VNC socket, so a test sees
// exactly which client bytes the bridge let through to the VNC server, and
// the ClientCutTexts among them.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import zlib from 'node:zlib';
import WebSocket from 'ws';
import { frameClientMessage } from '../../src/bridge/rfb-client-filter.js';

export const ENCODING = { raw: 0, desktopSize: -223, extendedDesktopSize: -308, extendedClipboard: 0xc0a1e5ce | 0 } as const;
export const CLIP = { text: 1, caps: 1 << 24, request: 1 << 25, peek: 1 << 26, notify: 1 << 27, provide: 1 << 28 } as const;

export type ServerMessage =
  | { type: 'update'; rects: Array<{ x: number; y: number; w: number; h: number; encoding: number }> }
  | { type: 'bell' }
  | { type: 'cut'; extended: boolean; flags: number; data: Buffer };

class Reader {
  private buf = Buffer.alloc(0);
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private error: Error | null = null;
  push(data: Buffer): void {
    this.buf = Buffer.concat([this.buf, data]);
    this.drain();
  }
  fail(err: Error): void {
    this.error ??= err;
    if (this.waiter) this.waiter.reject(err);
    this.waiter = null;
  }
  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.buf.length < n && this.error) return reject(this.error);
      this.waiter = { n, resolve, reject };
      this.drain();
    });
  }
  private drain(): void {
    if (this.waiter && this.buf.length >= this.waiter.n) {
      const w = this.waiter;
      this.waiter = null;
      const out = Buffer.from(this.buf.subarray(0, w.n));
      this.buf = this.buf.subarray(w.n);
      w.resolve(out);
    }
  }
}

/** An RFB client past its handshake, whatever carries it. */
export interface RfbPeer {
  width: number;
  height: number;
  send(bytes: Buffer): void;
  /** The next server message (rejects when the connection closes first or after timeoutMs). */
  next(timeoutMs?: number): Promise<ServerMessage>;
  /** Asks for an update and returns the server messages up to and including its answer (a barrier). */
  untilUpdate(timeoutMs?: number): Promise<ServerMessage[]>;
  close(): void;
}

/** A raw viewer through the bridge's WebSocket. */
export interface RawViewer extends RfbPeer {
  ws: WebSocket;
  /** Resolves with the close code and reason once the bridge closes this viewer. */
  closed: Promise<{ code: number; reason: string }>;
}

/** A raw client on a VNC server's own Unix socket: no bridge, no policy. */
export interface RawVncClient extends RfbPeer {
  socket: net.Socket;
}

export async function connectRawViewer(url: string, encodings: number[], timeoutMs = 10000): Promise<RawViewer> {
  const ws = new WebSocket(url);
  ws.binaryType = 'nodebuffer';
  const reader = new Reader();
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => {
    reader.fail(new Error(`WebSocket closed (${code} ${reason.toString()})`));
    resolve({ code, reason: reason.toString() });
  }));
  ws.on('message', (d: Buffer) => reader.push(d));
  ws.on('error', (err) => reader.fail(err));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  const peer = await startRfb(reader, (bytes) => ws.send(bytes), () => ws.close(), encodings, timeoutMs);
  return Object.assign(peer, { ws, closed });
}

/**
 * The same client straight on a VNC Unix socket (QEMU's -vnc unix:…, security None),
 * as QEMU's other clipboard peers are: not through the bridge, so no clipboard policy applies.
 */
export async function connectRawVnc(socketPath: string, encodings: number[], timeoutMs = 10000): Promise<RawVncClient> {
  const reader = new Reader();
  const socket = net.connect(socketPath);
  socket.on('data', (d: Buffer) => reader.push(d));
  socket.on('error', (err) => reader.fail(err));
  socket.on('close', () => reader.fail(new Error(`VNC socket ${socketPath} closed`)));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const peer = await startRfb(reader, (bytes) => socket.write(bytes), () => socket.destroy(), encodings, timeoutMs);
  return Object.assign(peer, { socket });
}

/** RFB 3.8 with security None (RFC 6143 §7.1–7.3), shared, then SetEncodings (§7.5.2). */
async function startRfb(
  reader: Reader, send: (bytes: Buffer) => void, close: () => void, encodings: number[], timeoutMs: number,
): Promise<RfbPeer> {
  const timer = setTimeout(() => reader.fail(new Error(`RFB handshake timed out after ${timeoutMs} ms`)), timeoutMs);
  try {
    await reader.read(12);
    send(Buffer.from('RFB 003.008\n'));
    const count = (await reader.read(1))[0]!;
    const types = [...(await reader.read(count))];
    if (!types.includes(1)) throw new Error(`security None not offered (${types.join(',')})`);
    send(Buffer.from([1]));
    if ((await reader.read(4)).readUInt32BE(0) !== 0) throw new Error('security failed');
    send(Buffer.from([1])); // shared
    const init = await reader.read(24);
    await reader.read(init.readUInt32BE(20));
    const bytesPerPixel = init[4]! / 8;
    const enc = Buffer.alloc(4 + 4 * encodings.length);
    enc[0] = 2;
    enc.writeUInt16BE(encodings.length, 2);
    encodings.forEach((e, i) => enc.writeInt32BE(e, 4 + 4 * i));
    send(enc);
    const peer: RfbPeer = {
      width: init.readUInt16BE(0), height: init.readUInt16BE(2), send, close,
      async next(ms = 10000) {
        const deadline = setTimeout(() => reader.fail(new Error(`no server message within ${ms} ms`)), ms);
        try {
          return await readServerMessage(reader, bytesPerPixel);
        } finally {
          clearTimeout(deadline);
        }
      },
      async untilUpdate(ms = 10000) {
        // Non-incremental, so QEMU answers at its next refresh even when nothing changed, and for
        // a 16×16 corner only, so the answer is small. Only the answer carries pixels (Raw): QEMU's
        // unasked updates (a mode change) are pseudo-rectangles only, so the first update with
        // pixels is this request's, and everything QEMU did before it (messages sent earlier) is done.
        const req = Buffer.alloc(10);
        req[0] = 3;
        req.writeUInt16BE(16, 6);
        req.writeUInt16BE(16, 8);
        send(req);
        const seen: ServerMessage[] = [];
        for (;;) {
          const m = await peer.next(ms);
          seen.push(m);
          if (m.type === 'update' && m.rects.some((r) => r.encoding === ENCODING.raw)) return seen;
        }
      },
    };
    return peer;
  } finally {
    clearTimeout(timer);
  }
}

async function readServerMessage(reader: Reader, bytesPerPixel: number): Promise<ServerMessage> {
  const type = (await reader.read(1))[0]!;
  if (type === 0) {
    const n = (await reader.read(3)).readUInt16BE(1);
    const rects: Array<{ x: number; y: number; w: number; h: number; encoding: number }> = [];
    for (let i = 0; i < n; i++) {
      const h = await reader.read(12);
      const rect = { x: h.readUInt16BE(0), y: h.readUInt16BE(2), w: h.readUInt16BE(4), h: h.readUInt16BE(6), encoding: h.readInt32BE(8) };
      rects.push(rect);
      if (rect.encoding === ENCODING.raw) await reader.read(rect.w * rect.h * bytesPerPixel);
      else if (rect.encoding === ENCODING.extendedDesktopSize) {
        const screens = (await reader.read(4))[0]!;
        await reader.read(16 * screens);
      } else if (rect.encoding !== ENCODING.desktopSize) throw new Error(`unexpected rectangle encoding ${rect.encoding}`);
    }
    return { type: 'update', rects };
  }
  if (type === 2) return { type: 'bell' };
  if (type === 3) {
    const length = (await reader.read(7)).readInt32BE(3);
    const data = await reader.read(Math.abs(length));
    if (length >= 0) return { type: 'cut', extended: false, flags: 0, data };
    return { type: 'cut', extended: true, flags: data.readUInt32BE(0), data: data.subarray(4) };
  }
  throw new Error(`unexpected server message type ${type}`);
}

/** The text of an extended Provide's payload (zlib of u32 size + text). */
export function providedText(data: Buffer): string {
  const inflated = zlib.inflateSync(data);
  return inflated.subarray(4, 4 + inflated.readUInt32BE(0)).toString('utf8');
}

export function extendedCut(flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 6;
  h.writeInt32BE(-(4 + payload.length), 4);
  h.writeUInt32BE(flags >>> 0, 8);
  return Buffer.concat([h, payload]);
}

export function extendedProvide(text: string): Buffer {
  const utf8 = Buffer.from(`${text}\0`, 'utf8');
  const size = Buffer.alloc(4);
  size.writeUInt32BE(utf8.length);
  return extendedCut(CLIP.provide | CLIP.text, zlib.deflateSync(Buffer.concat([size, utf8])));
}

/**
 * An extended Provide exactly as noVNC 1.7 sends one (core/rfb.js extendedClipboardProvide):
 * line ends made CRLF, a trailing NUL, and its own Deflator (pako, Z_FULL_FLUSH: an unfinished stream).
 */
export async function novncProvide(text: string): Promise<Buffer> {
  const file = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'node_modules', '@novnc', 'novnc', 'core', 'deflator.js');
  const { default: Deflator } = (await import(pathToFileURL(file).href)) as { default: new () => { deflate(d: Uint8Array): Uint8Array } };
  const utf8 = Buffer.from(`${text.replace(/\r\n|\r|\n/g, '\r\n')}\0`, 'utf8');
  const size = Buffer.alloc(4);
  size.writeUInt32BE(utf8.length);
  return extendedCut(CLIP.provide | CLIP.text, Buffer.from(new Deflator().deflate(Buffer.concat([size, utf8]))));
}

export function plainCut(text: string | Buffer): Buffer {
  const body = Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1');
  const h = Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]);
  h.writeInt32BE(body.length, 4);
  return Buffer.concat([h, body]);
}

export function setDesktopSize(width: number, height: number): Buffer {
  const b = Buffer.alloc(8 + 16);
  b[0] = 251;
  b.writeUInt16BE(width, 2);
  b.writeUInt16BE(height, 4);
  b[6] = 1;
  b.writeUInt16BE(width, 8 + 8);
  b.writeUInt16BE(height, 8 + 10);
  return b;
}

/** A ClientCutText as it reached the VNC server (recorded by interposeRecorder). */
export interface RecordedCutText {
  extended: boolean;
  /** The extended form's flags (0 for plain text). */
  flags: number;
  data: Buffer;
}

/**
 * The ClientCutTexts in one connection's recorded client bytes: past the RFB 3.8
 * handshake with security None (version, security type, ClientInit: 14 bytes),
 * each message framed as the bridge frames it (RFC 6143 §7.5). Framing rather
 * than searching for bytes, so a message's absence means it was not sent.
 */
export function recordedCutTexts(bytes: Buffer): RecordedCutText[] {
  const out: RecordedCutText[] = [];
  let at = 12 + 1 + 1;
  while (at < bytes.length) {
    const f = frameClientMessage(bytes.subarray(at));
    if ('need' in f) break; // a message still on its way
    const end = at + f.header + f.body;
    if (end > bytes.length) break;
    if (bytes[at] === 6) {
      const length = bytes.readInt32BE(at + 4);
      if (length >= 0) out.push({ extended: false, flags: 0, data: bytes.subarray(at + 8, end) });
      else out.push({ extended: true, flags: bytes.readUInt32BE(at + 8), data: bytes.subarray(at + 12, end) });
    }
    at = end;
  }
  return out;
}

export interface RecordingProxy {
  /** Client → server bytes of each connection, in the order connections were made. */
  readonly received: Buffer[][];
  bytes(connection: number): Buffer;
  close(): Promise<void>;
}

/**
 * Moves the VNC server's Unix socket aside and listens at its path instead,
 * piping each connection to the real server and recording what the bridge
 * sends it. The real server keeps its listening socket (bound to the inode);
 * `close` puts the path back as it was.
 */
export async function interposeRecorder(socketPath: string): Promise<RecordingProxy> {
  const real = `${socketPath}.real`;
  fs.renameSync(socketPath, real);
  const received: Buffer[][] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const chunks: Buffer[] = [];
    received.push(chunks);
    const upstream = net.connect(real);
    sockets.add(client).add(upstream);
    client.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, () => resolve()));
  return {
    received,
    bytes: (i) => Buffer.concat(received[i] ?? []),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (fs.existsSync(real)) fs.renameSync(real, socketPath);
    },
  };
}
