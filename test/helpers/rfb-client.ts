// A minimal raw RFB 3.8 client (RFC 6143) over a WebSocket, for tests: does the
// handshake with security type None, asks for raw 32-bit pixels (and the
// DesktopSize pseudo-encoding, so a guest changing mode is followed), and reads
// FramebufferUpdates into a pixel buffer so tests can compare screens.
import WebSocket from 'ws';
import { setPixelFormatRgbx32 } from '../../src/qemu/rfb-client-messages.js';

export interface RfbSession {
  ws: WebSocket;
  /** The current framebuffer size (follows DesktopSize changes). */
  readonly width: number;
  readonly height: number;
  name: string;
  securityTypes: number[];
  /** Requests an update and resolves with the framebuffer after it (RGBX, 4 bytes/pixel). */
  update(incremental?: boolean, timeoutMs?: number): Promise<Buffer>;
  keyEvent(keysym: number, down: boolean): void;
  pointerEvent(x: number, y: number, buttons: number): void;
  /** Sends raw client-to-server bytes (for protocol tests: malformed or unknown messages). */
  sendRaw(bytes: Buffer): void;
  close(): void;
}

class Reader {
  private buf = Buffer.alloc(0);
  private waiters: Array<{ n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void }> = [];
  private error: Error | null = null;
  push(data: Buffer): void {
    this.buf = Buffer.concat([this.buf, data]);
    this.drain();
  }
  fail(err: Error): void {
    this.error = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }
  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.error) return reject(this.error);
      this.waiters.push({ n, resolve, reject });
      this.drain();
    });
  }
  private drain(): void {
    while (this.waiters.length && this.buf.length >= this.waiters[0]!.n) {
      const w = this.waiters.shift()!;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(Buffer.from(out));
    }
  }
}

export async function connectRfb(url: string, opts: { timeoutMs?: number } = {}): Promise<RfbSession> {
  const timeoutMs = opts.timeoutMs ?? 10000;
  const ws = new WebSocket(url);
  ws.binaryType = 'nodebuffer';
  const reader = new Reader();
  ws.on('message', (data: Buffer) => reader.push(data));
  ws.on('close', () => reader.fail(new Error('WebSocket closed')));
  ws.on('error', (err) => reader.fail(err));
  const timer = setTimeout(() => reader.fail(new Error(`RFB handshake timed out after ${timeoutMs} ms`)), timeoutMs);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  try {
    const banner = (await reader.read(12)).toString('latin1');
    if (!banner.startsWith('RFB ')) throw new Error(`not RFB: ${JSON.stringify(banner)}`);
    ws.send(Buffer.from('RFB 003.008\n'));
    const count = (await reader.read(1))[0]!;
    if (count === 0) {
      const len = (await reader.read(4)).readUInt32BE(0);
      throw new Error(`server refused: ${(await reader.read(len)).toString()}`);
    }
    const securityTypes = [...(await reader.read(count))];
    if (!securityTypes.includes(1)) throw new Error(`security None not offered (offered: ${securityTypes.join(',')})`);
    ws.send(Buffer.from([1]));
    const result = (await reader.read(4)).readUInt32BE(0);
    if (result !== 0) {
      // RFC 6143 §7.1.3: in 3.8 a failed SecurityResult is followed by a reason string.
      const reason = await reader.read(4).then(async (len) => (await reader.read(len.readUInt32BE(0))).toString('utf8')).catch(() => null);
      throw new Error(`security result ${result}${reason === null ? '' : `: ${reason}`}`);
    }
    ws.send(Buffer.from([1])); // ClientInit: shared
    const init = await reader.read(24);
    const width = init.readUInt16BE(0);
    const height = init.readUInt16BE(2);
    const name = (await reader.read(init.readUInt32BE(20))).toString('utf8');
    ws.send(setPixelFormatRgbx32());
    // SetEncodings: Raw (0) and the DesktopSize pseudo-encoding (-223).
    const enc = Buffer.alloc(12);
    enc[0] = 2;
    enc.writeUInt16BE(2, 2);
    enc.writeInt32BE(0, 4);
    enc.writeInt32BE(-223, 8);
    ws.send(enc);
    clearTimeout(timer);

    let fbWidth = width;
    let fbHeight = height;
    let fb = Buffer.alloc(fbWidth * fbHeight * 4);
    const session: RfbSession = {
      ws, name, securityTypes,
      get width() { return fbWidth; },
      get height() { return fbHeight; },
      async update(incremental = false, ms = 10000) {
        const req = Buffer.alloc(10);
        req[0] = 3;
        req[1] = incremental ? 1 : 0;
        req.writeUInt16BE(fbWidth, 6);
        req.writeUInt16BE(fbHeight, 8);
        ws.send(req);
        const deadline = setTimeout(() => reader.fail(new Error(`no FramebufferUpdate within ${ms} ms`)), ms);
        try {
          for (;;) {
            const type = (await reader.read(1))[0];
            if (type === 0) break;
            if (type === 2) continue; // Bell
            if (type === 3) {
              const hdr = await reader.read(7);
              await reader.read(hdr.readUInt32BE(3));
              continue;
            }
            if (type === 1) {
              const hdr = await reader.read(5);
              await reader.read(hdr.readUInt16BE(3) * 6);
              continue;
            }
            throw new Error(`unexpected server message ${type}`);
          }
          const hdr = await reader.read(3);
          const rects = hdr.readUInt16BE(1);
          for (let i = 0; i < rects; i++) {
            const r = await reader.read(12);
            const x = r.readUInt16BE(0), y = r.readUInt16BE(2), w = r.readUInt16BE(4), h = r.readUInt16BE(6);
            const encoding = r.readInt32BE(8);
            if (encoding === -223) {
              // DesktopSize pseudo-encoding
              fbWidth = w; fbHeight = h; fb = Buffer.alloc(w * h * 4);
              continue;
            }
            if (encoding !== 0) throw new Error(`unexpected encoding ${encoding}`);
            const pixels = await reader.read(w * h * 4);
            for (let row = 0; row < h; row++) pixels.copy(fb, ((y + row) * fbWidth + x) * 4, row * w * 4, (row + 1) * w * 4);
          }
          return Buffer.from(fb);
        } finally {
          clearTimeout(deadline);
        }
      },
      keyEvent(keysym, down) {
        const m = Buffer.alloc(8);
        m[0] = 4; m[1] = down ? 1 : 0; m.writeUInt32BE(keysym, 4);
        ws.send(m);
      },
      pointerEvent(x, y, buttons) {
        const m = Buffer.alloc(6);
        m[0] = 5; m[1] = buttons; m.writeUInt16BE(x, 2); m.writeUInt16BE(y, 4);
        ws.send(m);
      },
      sendRaw(bytes) {
        ws.send(bytes);
      },
      close() {
        ws.close();
      },
    };
    return session;
  } catch (err) {
    clearTimeout(timer);
    ws.terminate();
    throw err;
  }
}

/**
 * Waits until the guest has drawn text on its 720x400 text screen (not QEMU's own 640x480
 * placeholder); TCG on a busy CI host can take tens of seconds. Anywhere on the screen: once
 * SeaBIOS hands over to iPXE (the blank machine's NIC), iPXE's lines scroll the first row blank.
 */
export async function waitForGuestText(rfb: RfbSession, timeoutMs = 90_000): Promise<Buffer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fb = await rfb.update(false);
    // QEMU's "Guest has not initialized the display" placeholder is 640x480 with
    // its text in the middle; a text-mode guest's screen is 720x400.
    if (rfb.width === 720 && nonBlackPixels(fb) > 20) return fb;
    if (Date.now() > deadline) throw new Error(`no guest text on the screen within ${timeoutMs} ms (screen ${rfb.width}x${rfb.height})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Number of pixels that are not black. */
export function nonBlackPixels(fb: Buffer): number {
  let n = 0;
  for (let i = 0; i < fb.length; i += 4) if (fb[i]! | fb[i + 1]! | fb[i + 2]!) n++;
  return n;
}

/** Characters typed with Shift on a US keyboard: QEMU maps keysyms to keys, not to shifted keys. */
const SHIFTED = new Set('>_|&:"<?'.split(''));
const SHIFT_L = 0xffe1;
const RETURN = 0xff0d;

/** Types text as key presses ("\n" is Return), optionally pausing between keys (a slow guest's console). */
export async function typeText(rfb: Pick<RfbSession, 'keyEvent'>, text: string, pauseMs = 0): Promise<void> {
  for (const ch of text) {
    const sym = ch === '\n' ? RETURN : ch.charCodeAt(0);
    if (SHIFTED.has(ch)) rfb.keyEvent(SHIFT_L, true);
    rfb.keyEvent(sym, true);
    rfb.keyEvent(sym, false);
    if (SHIFTED.has(ch)) rfb.keyEvent(SHIFT_L, false);
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
  }
}
