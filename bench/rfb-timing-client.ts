// A minimal RFB 3.8 client (RFC 6143) for timing, over either transport a
// viewer of this broker can have: a WebSocket through the bridge, or QEMU's
// own VNC Unix socket (straight, no bridge). Security type None, raw 32-bit
// pixels. Unlike test/helpers/rfb-client.ts it does not ask and wait: it keeps
// an incremental FramebufferUpdateRequest outstanding at all times (as noVNC
// does) and reports each server message as it completes, stamped with the
// arrival time (performance.now()) of the bytes that completed it, and, for a
// FramebufferUpdate, how many pixels it changed.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { setPixelFormatRgbx32 } from '../src/qemu/rfb-client-messages.js';

export const ENCODING = { raw: 0, desktopSize: -223, pointerTypeChange: -257, extKeyEvent: -258 } as const;

export interface Transport {
  send(bytes: Buffer): void;
  close(): void;
  /** Called with every chunk received and the time it arrived. */
  onData(cb: (bytes: Buffer, at: number) => void): void;
  onClose(cb: (err: Error) => void): void;
}

export interface TimedUpdate {
  /** Arrival time of the last byte of the update (performance.now()). */
  at: number;
  rects: Array<{ x: number; y: number; w: number; h: number; encoding: number }>;
  /** Pixels whose value the update changed. */
  changedPixels: number;
}

export function webSocketTransport(url: string, timeoutMs = 10000): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`${url}: no WebSocket within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`${url}: HTTP ${res.statusCode} instead of a WebSocket upgrade`));
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.once('open', () => {
      clearTimeout(timer);
      resolve({
        send: (bytes) => ws.send(bytes),
        close: () => ws.close(),
        onData: (cb) => ws.on('message', (data: Buffer) => cb(data, performance.now())),
        onClose: (cb) => {
          ws.on('close', (code, reason) => cb(new Error(`WebSocket closed (${code} ${reason.toString()})`)));
          ws.on('error', cb);
        },
      });
    });
  });
}

export function unixSocketTransport(socketPath: string, timeoutMs = 10000): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`${socketPath}: no connection within ${timeoutMs} ms`)));
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.setTimeout(0);
      socket.off('error', reject);
      resolve({
        send: (bytes) => socket.write(bytes),
        close: () => socket.destroy(),
        onData: (cb) => socket.on('data', (data: Buffer) => cb(data, performance.now())),
        onClose: (cb) => {
          socket.on('close', () => cb(new Error(`${socketPath}: connection closed`)));
          socket.on('error', cb);
        },
      });
    });
  });
}

/** Bytes in arrival order, each chunk with the time it came; read(n) says when its last byte came. */
class TimedReader {
  private chunks: Array<{ bytes: Buffer; at: number }> = [];
  private length = 0;
  private waiter: { n: number; resolve: (r: { bytes: Buffer; at: number }) => void; reject: (e: Error) => void } | null = null;
  private error: Error | null = null;

  push(bytes: Buffer, at: number): void {
    this.chunks.push({ bytes, at });
    this.length += bytes.length;
    this.drain();
  }

  fail(err: Error): void {
    this.error ??= err;
    this.waiter?.reject(err);
    this.waiter = null;
  }

  read(n: number): Promise<{ bytes: Buffer; at: number }> {
    return new Promise((resolve, reject) => {
      if (this.error && this.length < n) return reject(this.error);
      this.waiter = { n, resolve, reject };
      this.drain();
    });
  }

  private drain(): void {
    if (!this.waiter || this.length < this.waiter.n) return;
    const { n, resolve } = this.waiter;
    this.waiter = null;
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let at = 0;
    while (filled < n) {
      const head = this.chunks[0]!;
      const take = Math.min(n - filled, head.bytes.length);
      head.bytes.copy(out, filled, 0, take);
      filled += take;
      at = head.at;
      if (take === head.bytes.length) this.chunks.shift();
      else head.bytes = head.bytes.subarray(take);
    }
    this.length -= n;
    resolve({ bytes: out, at });
  }
}

export class RfbTimingClient {
  width = 0;
  height = 0;
  name = '';
  /** Every FramebufferUpdate, as it completes. */
  onUpdate: (u: TimedUpdate) => void = () => {};
  private fb = Buffer.alloc(0);
  private closed: Error | null = null;

  private constructor(private readonly transport: Transport, private readonly reader: TimedReader) {}

  /** Handshake (security None, shared), 32-bit true colour, the given encodings; then updates flow. */
  static async connect(transport: Transport, encodings: number[], timeoutMs = 10000): Promise<RfbTimingClient> {
    const reader = new TimedReader();
    transport.onData((bytes, at) => reader.push(bytes, at));
    transport.onClose((err) => reader.fail(err));
    const client = new RfbTimingClient(transport, reader);
    const timer = setTimeout(() => reader.fail(new Error(`RFB handshake not done within ${timeoutMs} ms`)), timeoutMs);
    try {
      const banner = (await reader.read(12)).bytes.toString('latin1');
      if (!banner.startsWith('RFB ')) throw new Error(`not RFB: ${JSON.stringify(banner)}`);
      transport.send(Buffer.from('RFB 003.008\n'));
      const count = (await reader.read(1)).bytes[0]!;
      if (count === 0) throw new Error('the server refused the connection');
      const types = [...(await reader.read(count)).bytes];
      if (!types.includes(1)) throw new Error(`security type None not offered (offered ${types.join(', ')})`);
      transport.send(Buffer.from([1]));
      const result = (await reader.read(4)).bytes.readUInt32BE(0);
      if (result !== 0) throw new Error(`security result ${result}`);
      transport.send(Buffer.from([1])); // ClientInit: shared, so that other viewers stay connected (RFC 6143 §7.3.1)
      const init = (await reader.read(24)).bytes;
      client.width = init.readUInt16BE(0);
      client.height = init.readUInt16BE(2);
      client.name = (await reader.read(init.readUInt32BE(20))).bytes.toString('utf8');
      client.fb = Buffer.alloc(client.width * client.height * 4);
      transport.send(setPixelFormatRgbx32());
      client.setEncodings(encodings);
    } finally {
      clearTimeout(timer);
    }
    void client.readMessages();
    return client;
  }

  /** SetEncodings (§7.5.2). */
  setEncodings(encodings: number[]): void {
    const msg = Buffer.alloc(4 + 4 * encodings.length);
    msg[0] = 2;
    msg.writeUInt16BE(encodings.length, 2);
    encodings.forEach((e, i) => msg.writeInt32BE(e, 4 + 4 * i));
    this.transport.send(msg);
  }

  /** FramebufferUpdateRequest (§7.5.3) for the whole screen. */
  requestUpdate(incremental: boolean): void {
    const msg = Buffer.alloc(10);
    msg[0] = 3;
    msg[1] = incremental ? 1 : 0;
    msg.writeUInt16BE(this.width, 6);
    msg.writeUInt16BE(this.height, 8);
    this.transport.send(msg);
  }

  /** A key press and release (KeyEvent, §7.5.4), sent together. */
  keyPress(keysym: number): void {
    this.transport.send(Buffer.concat([keyEvent(keysym, true), keyEvent(keysym, false)]));
  }

  /** Sends key presses for text ("\n" is Return), a pause between keys; for typing commands, not for timing. */
  async type(text: string, pauseMs = 20): Promise<void> {
    const shifted = new Set('>_|&:"<?'.split(''));
    for (const ch of text) {
      const sym = ch === '\n' ? 0xff0d : ch.charCodeAt(0);
      if (shifted.has(ch)) this.transport.send(keyEvent(0xffe1, true));
      this.transport.send(keyEvent(sym, true));
      this.transport.send(keyEvent(sym, false));
      if (shifted.has(ch)) this.transport.send(keyEvent(0xffe1, false));
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  }

  close(): void {
    this.transport.close();
  }

  get error(): Error | null {
    return this.closed;
  }

  private async readMessages(): Promise<void> {
    try {
      for (;;) {
        const { bytes: [type] } = await this.reader.read(1);
        if (type === 0) await this.readUpdate();
        else if (type === 1) {
          const hdr = (await this.reader.read(5)).bytes;
          await this.reader.read(hdr.readUInt16BE(3) * 6);
        } else if (type === 2) continue; // Bell
        else if (type === 3) {
          const hdr = (await this.reader.read(7)).bytes;
          const len = hdr.readInt32BE(3);
          await this.reader.read(Math.abs(len));
        } else throw new Error(`unexpected server message type ${type}`);
      }
    } catch (err) {
      this.closed = err as Error;
    }
  }

  private async readUpdate(): Promise<void> {
    const hdr = await this.reader.read(3);
    const count = hdr.bytes.readUInt16BE(1);
    let at = hdr.at;
    let changed = 0;
    const rects: TimedUpdate['rects'] = [];
    for (let i = 0; i < count; i++) {
      const r = await this.reader.read(12);
      at = r.at;
      const rect = { x: r.bytes.readUInt16BE(0), y: r.bytes.readUInt16BE(2), w: r.bytes.readUInt16BE(4), h: r.bytes.readUInt16BE(6), encoding: r.bytes.readInt32BE(8) };
      rects.push(rect);
      if (rect.encoding === ENCODING.desktopSize) {
        this.width = rect.w;
        this.height = rect.h;
        this.fb = Buffer.alloc(rect.w * rect.h * 4);
        continue;
      }
      if (rect.encoding === ENCODING.extKeyEvent || rect.encoding === ENCODING.pointerTypeChange) continue;
      if (rect.encoding !== ENCODING.raw) throw new Error(`unexpected encoding ${rect.encoding}`);
      const px = await this.reader.read(rect.w * rect.h * 4);
      at = px.at;
      changed += this.paint(rect, px.bytes);
    }
    this.onUpdate({ at, rects, changedPixels: changed });
    if (!this.closed) this.requestUpdate(true);
  }

  /** Copies a raw rectangle into the framebuffer; returns how many pixels changed. */
  private paint(rect: { x: number; y: number; w: number; h: number }, pixels: Buffer): number {
    let changed = 0;
    for (let row = 0; row < rect.h; row++) {
      const dst = ((rect.y + row) * this.width + rect.x) * 4;
      const src = row * rect.w * 4;
      for (let col = 0; col < rect.w; col++) {
        const d = dst + col * 4;
        const s = src + col * 4;
        if (this.fb[d] !== pixels[s] || this.fb[d + 1] !== pixels[s + 1] || this.fb[d + 2] !== pixels[s + 2]) changed++;
      }
      pixels.copy(this.fb, dst, src, src + rect.w * 4);
    }
    return changed;
  }
}

function keyEvent(keysym: number, down: boolean): Buffer {
  const msg = Buffer.alloc(8);
  msg[0] = 4;
  msg[1] = down ? 1 : 0;
  msg.writeUInt32BE(keysym, 4);
  return msg;
}
