// What a prepare waits for after the guest says it is ready: its screen drawn
// and still. A process that has started (xfdesktop) has not painted yet, and a
// state saved before the paint shows a black screen to every resumed session
// until the guest draws again (≈ 5–8 s under TCG). QEMU 7.2 also brings
// virtio-vga's 2D scanout into its console only while a display client asks
// for frames, so the watch is such a client: an RFB 3.8 viewer on the VM's own
// VNC socket (RFC 6143: security None, shared, raw 32-bit pixels) that keeps
// asking for frames and notes when more than a cursor's worth of pixels last
// changed.
import net from 'node:net';
import { QwdError } from '../errors.js';
import type { Clock } from '../clock.js';
import { framebufferUpdateRequest, setPixelFormatRgbx32 } from '../qemu/rfb-client-messages.js';

/** How often the watch asks for the changes since the last frame. */
const ASK_EVERY_MS = 250;

export class ScreenWatch {
  private readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private queued = 0;
  private need: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private frame = Buffer.alloc(0);
  private width = 0;
  private height = 0;
  private changedAt: number;
  private stopAsking: (() => void) | null = null;

  private constructor(socketPath: string, private readonly clock: Clock) {
    this.changedAt = clock.now();
    this.socket = net.createConnection(socketPath);
    // Listeners first: QEMU sends its banner as soon as it accepts.
    this.socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.queued += chunk.length;
      this.feed();
    });
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => this.fail(new Error('the VM closed its VNC connection')));
  }

  /** Connects, does the handshake and starts asking for frames; rejects unless the VNC speaks RFB 3.8 with None. */
  static async open(socketPath: string, clock: Clock): Promise<ScreenWatch> {
    const watch = new ScreenWatch(socketPath, clock);
    try {
      await watch.handshake();
    } catch (err) {
      watch.close();
      throw new QwdError('QWD_PREPARE_FAILED', `watching the VM's screen: ${(err as Error).message}`, { cause: err });
    }
    void watch.readFrames().catch((err: Error) => watch.fail(err));
    return watch;
  }

  /** Some pixel is not black. */
  drawn(): boolean {
    const f = this.frame;
    for (let i = 0; i < f.length; i += 4) if (f[i]! | f[i + 1]! | f[i + 2]!) return true;
    return false;
  }

  /**
   * Resolves once the screen has been drawn and has not changed for quietMs; false when it
   * did not happen within timeoutMs (an animation, a clock with seconds): the caller goes on. goOn runs before each
   * look and may throw (an interrupted prepare, a VM that died).
   */
  async waitQuiet(quietMs: number, timeoutMs: number, goOn: () => Promise<void> = async () => {}): Promise<boolean> {
    const deadline = this.clock.now() + timeoutMs;
    for (;;) {
      await goOn();
      if (this.failure) throw this.failure;
      if (this.clock.now() - this.changedAt >= quietMs && this.drawn()) return true;
      if (this.clock.now() >= deadline) return false;
      await this.clock.sleep(ASK_EVERY_MS);
    }
  }

  close(): void {
    this.stopAsking?.();
    this.socket.destroy();
  }

  private async handshake(): Promise<void> {
    const version = (await this.read(12)).toString('latin1');
    if (!/^RFB 003\.00[78]\n$/.test(version)) throw new Error(`not an RFB 3.7/3.8 server: ${JSON.stringify(version)}`);
    this.socket.write('RFB 003.008\n');
    const count = (await this.read(1))[0]!;
    if (count === 0) throw new Error(`the server refused: ${await this.readReason()}`);
    if (!(await this.read(count)).includes(1)) throw new Error('the server does not offer security type None');
    this.socket.write(Buffer.from([1]));
    if ((await this.read(4)).readUInt32BE(0) !== 0) throw new Error(`security failed: ${await this.readReason()}`);
    this.socket.write(Buffer.from([1])); // ClientInit, shared
    const init = await this.read(24);
    this.resize(init.readUInt16BE(0), init.readUInt16BE(2));
    await this.read(init.readUInt32BE(20)); // the desktop's name
    // SetEncodings: raw only.
    const encodings = Buffer.from([2, 0, 0, 1, 0, 0, 0, 0]);
    this.socket.write(Buffer.concat([setPixelFormatRgbx32(), encodings, this.request(false)]));
    this.stopAsking = this.clock.after(ASK_EVERY_MS, () => this.ask(), { background: true });
  }

  private ask(): void {
    if (this.socket.destroyed) return;
    this.socket.write(this.request(true));
    this.stopAsking = this.clock.after(ASK_EVERY_MS, () => this.ask(), { background: true });
  }

  private request(incremental: boolean): Buffer {
    return framebufferUpdateRequest(incremental, this.width, this.height);
  }

  private async readFrames(): Promise<void> {
    for (;;) {
      const type = (await this.read(1))[0]!;
      if (type === 0) {
        const rects = (await this.read(3)).readUInt16BE(1);
        let changed = 0;
        for (let i = 0; i < rects; i++) changed += await this.readRect();
        // A blinking text cursor is not a change: more than 0.1 % of the screen is.
        if (changed > (this.width * this.height) / 1000) this.changedAt = this.clock.now();
      } else if (type === 1) {
        await this.read((await this.read(5)).readUInt16BE(3) * 6);
      } else if (type === 3) {
        await this.read((await this.read(7)).readUInt32BE(3));
      } else if (type !== 2) {
        throw new Error(`unexpected RFB message type ${type}`);
      }
    }
  }

  /** Reads one raw rectangle into the frame; the number of pixels it changed. */
  private async readRect(): Promise<number> {
    const head = await this.read(12);
    const [x, y, w, h] = [head.readUInt16BE(0), head.readUInt16BE(2), head.readUInt16BE(4), head.readUInt16BE(6)];
    const encoding = head.readInt32BE(8);
    if (encoding !== 0) throw new Error(`unexpected RFB encoding ${encoding}`);
    const pixels = await this.read(w * h * 4);
    if (x + w > this.width || y + h > this.height) {
      this.resize(Math.max(this.width, x + w), Math.max(this.height, y + h));
    }
    let changed = 0;
    for (let row = 0; row < h; row++) {
      const from = pixels.subarray(row * w * 4, (row + 1) * w * 4);
      const at = ((y + row) * this.width + x) * 4;
      const to = this.frame.subarray(at, at + from.length);
      if (!from.equals(to)) {
        for (let i = 0; i < from.length; i += 4) if (from.readUInt32LE(i) !== to.readUInt32LE(i)) changed++;
      }
      from.copy(this.frame, at);
    }
    return changed;
  }

  private resize(width: number, height: number): void {
    const frame = Buffer.alloc(width * height * 4);
    for (let row = 0; row < Math.min(height, this.height); row++) {
      const from = row * this.width * 4;
      this.frame.copy(frame, row * width * 4, from, from + Math.min(width, this.width) * 4);
    }
    [this.frame, this.width, this.height] = [frame, width, height];
    this.changedAt = this.clock.now();
  }

  private async readReason(): Promise<string> {
    return (await this.read((await this.read(4)).readUInt32BE(0))).toString('utf8');
  }

  private read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.need = { n, resolve, reject };
      this.feed();
    });
  }

  private feed(): void {
    if (!this.need || this.queued < this.need.n) return;
    const { n, resolve } = this.need;
    this.need = null;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.queued -= n;
    resolve(all.subarray(0, n));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.stopAsking?.();
    if (this.need) {
      const { reject } = this.need;
      this.need = null;
      reject(this.failure);
    }
  }
}
