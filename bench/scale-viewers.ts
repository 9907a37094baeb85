// The viewers of the scale run (bench/scale.ts). Each is a WebSocket through
// the broker's bridge that does the RFB 3.8 handshake (RFC 6143 §7.1–7.3;
// security None, which the bridge offers whatever QEMU asks), asks for Raw
// 32-bit pixels and the DesktopSize pseudo-encoding, then reads frames as
// noVNC does: one incremental FramebufferUpdateRequest after each update (QEMU
// answers when something on the screen changed, §7.5.3), plus one full
// (non-incremental) request every fullFrameEveryMs at a random phase, so the
// bridge moves real pixels at a known rate whether or not the screens change.
// The stream is parsed as it arrives (a state machine over a byte queue) and
// pixels are counted and dropped, never stored: 200 of these fit in one small
// process. They run in their own process (scale-viewers-main.ts) so that
// their work does not delay the benchmark's HTTP probes, which time the broker.
import WebSocket from 'ws';
import { setPixelFormatRgbx32 } from '../src/qemu/rfb-client-messages.js';
import { performance } from 'node:perf_hooks';

export interface ViewerSpec {
  /** For error messages: session id and link kind. */
  name: string;
  url: string;
}

export interface ViewerTotals {
  /** Viewers whose handshake finished and that have not closed. */
  open: number;
  updates: number;
  fullRequests: number;
  /** WebSocket payload bytes received (RFB messages; frame headers not counted). */
  bytes: number;
  /** Viewers that closed while closing was not expected (the bridge or QEMU dropped them). */
  closedUnexpectedly: number;
  /** The first few errors, for the report. */
  errors: string[];
}

/** A queue of received chunks that hands out exact byte counts without copying whole frames. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Drops up to n bytes; returns how many it dropped. */
  drop(n: number): number {
    let left = n;
    while (left > 0 && this.chunks.length) {
      const first = this.chunks[0]!;
      const avail = first.length - this.head;
      if (avail > left) {
        this.head += left;
        left = 0;
      } else {
        left -= avail;
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.length -= n - left;
    return n - left;
  }

  /** Exactly n bytes (a copy only when they span chunks), or null when fewer have arrived. */
  take(n: number): Buffer | null {
    if (this.length < n) return null;
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
    } else {
      out = Buffer.alloc(n);
      let filled = 0;
      let i = 0;
      let offset = this.head;
      while (filled < n) {
        const c = this.chunks[i++]!;
        filled += c.copy(out, filled, offset, Math.min(c.length, offset + n - filled));
        offset = 0;
      }
    }
    this.drop(n);
    return out;
  }
}

const RFB_RAW = 0;
const RFB_DESKTOP_SIZE = -223;

type Step = (bytes: Buffer) => void;

/** One viewer: connects, handshakes, then loops on update requests until closed. */
export class ScaleViewer {
  updates = 0;
  fullRequests = 0;
  bytes = 0;
  /** Resolves with the time from connect to the end of the first full update; rejects on any failure before. */
  readonly ready: Promise<number>;
  closed = false;
  error: string | null = null;

  private readonly ws: WebSocket;
  private readonly queue = new ByteQueue();
  private need = 12;
  private skip = 0;
  private afterSkip: () => void = () => {};
  private step: Step;
  private width = 0;
  private height = 0;
  private rectsLeft = 0;
  private fullTimer: NodeJS.Timeout | null = null;
  private settleReady: (ms: number) => void = () => {};
  private failReady: (err: Error) => void = () => {};
  private isReady = false;
  private readonly startedAt = performance.now();

  constructor(private readonly spec: ViewerSpec, private readonly fullFrameEveryMs: number, private readonly onClose: (v: ScaleViewer) => void) {
    this.ready = new Promise<number>((resolve, reject) => {
      this.settleReady = resolve;
      this.failReady = reject;
    });
    // Handled by whoever awaits it; a viewer that fails later is counted, not thrown.
    this.ready.catch(() => {});
    this.step = this.onBanner;
    this.ws = new WebSocket(spec.url, { perMessageDeflate: false });
    this.ws.binaryType = 'nodebuffer';
    this.ws.on('message', (data: Buffer) => {
      this.bytes += data.length;
      this.queue.push(data);
      try {
        this.parse();
      } catch (err) {
        this.fail(`${(err as Error).message}`);
      }
    });
    this.ws.on('unexpected-response', (_req, res) => this.fail(`HTTP ${res.statusCode} instead of a WebSocket upgrade`));
    this.ws.on('error', (err) => this.fail(err.message));
    this.ws.on('close', (code, reason) => {
      this.fail(`WebSocket closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
    });
  }

  /** Closes on purpose: not counted as a failure. */
  close(): void {
    this.closed = true;
    this.stopTimer();
    this.ws.close();
  }

  private stopTimer(): void {
    if (this.fullTimer) clearInterval(this.fullTimer);
    this.fullTimer = null;
  }

  private fail(message: string): void {
    if (this.closed) return;
    this.closed = true;
    this.error = `${this.spec.name}: ${message}`;
    this.stopTimer();
    this.ws.terminate();
    if (!this.isReady) this.failReady(new Error(this.error));
    this.onClose(this);
  }

  private parse(): void {
    for (;;) {
      if (this.skip > 0) {
        this.skip -= this.queue.drop(this.skip);
        if (this.skip > 0) return;
        this.afterSkip();
        continue;
      }
      const bytes = this.queue.take(this.need);
      if (!bytes) return;
      this.step(bytes);
    }
  }

  private expect(n: number, step: Step): void {
    this.need = n;
    this.step = step;
  }

  // RFC 6143 §7.1.1: ProtocolVersion.
  private onBanner = (b: Buffer): void => {
    if (!b.toString('latin1').startsWith('RFB ')) throw new Error(`not RFB: ${JSON.stringify(b.toString('latin1'))}`);
    this.ws.send(Buffer.from('RFB 003.008\n'));
    this.expect(1, this.onSecurityCount);
  };

  // §7.1.2: security types (0 = refused, a reason follows).
  private onSecurityCount = (b: Buffer): void => {
    if (b[0] === 0) throw new Error('the server refused the connection');
    this.expect(b[0]!, this.onSecurityTypes);
  };

  private onSecurityTypes = (b: Buffer): void => {
    if (!b.includes(1)) throw new Error(`security None not offered (offered ${[...b].join(',')})`);
    this.ws.send(Buffer.from([1]));
    this.expect(4, this.onSecurityResult);
  };

  // §7.1.3: SecurityResult, then ClientInit (shared: other viewers stay connected).
  private onSecurityResult = (b: Buffer): void => {
    if (b.readUInt32BE(0) !== 0) throw new Error(`security result ${b.readUInt32BE(0)}`);
    this.ws.send(Buffer.from([1]));
    this.expect(24, this.onServerInit);
  };

  // §7.3.2: ServerInit (size, pixel format, name length), then the name.
  private onServerInit = (b: Buffer): void => {
    this.width = b.readUInt16BE(0);
    this.height = b.readUInt16BE(2);
    const nameLength = b.readUInt32BE(20);
    if (nameLength === 0) this.afterInit();
    else this.expect(nameLength, () => this.afterInit());
  };

  private afterInit(): void {
    this.ws.send(setPixelFormatRgbx32());
    // §7.5.2 SetEncodings: Raw and DesktopSize.
    const enc = Buffer.alloc(12);
    enc[0] = 2;
    enc.writeUInt16BE(2, 2);
    enc.writeInt32BE(RFB_RAW, 4);
    enc.writeInt32BE(RFB_DESKTOP_SIZE, 8);
    this.ws.send(enc);
    this.request(false);
    this.expect(1, this.onMessageType);
  }

  /** §7.5.3 FramebufferUpdateRequest for the whole screen. */
  private request(incremental: boolean): void {
    if (this.closed) return;
    const req = Buffer.alloc(10);
    req[0] = 3;
    req[1] = incremental ? 1 : 0;
    req.writeUInt16BE(this.width, 6);
    req.writeUInt16BE(this.height, 8);
    this.ws.send(req);
    if (!incremental) this.fullRequests++;
  }

  // §7.6: server-to-client messages.
  private onMessageType = (b: Buffer): void => {
    switch (b[0]) {
      case 0: return this.expect(3, this.onUpdateHeader);
      case 1: return this.expect(5, (h) => this.skipThen(h.readUInt16BE(3) * 6, this.nextMessage)); // SetColourMapEntries
      case 2: return this.nextMessage(); // Bell
      case 3: return this.expect(7, (h) => this.skipThen(h.readUInt32BE(3), this.nextMessage)); // ServerCutText
      default: throw new Error(`unexpected server message type ${b[0]}`);
    }
  };

  private nextMessage = (): void => this.expect(1, this.onMessageType);

  /** Drops n bytes as they arrive (pixels, text), then goes on with `then`. */
  private skipThen(n: number, then: () => void): void {
    if (n === 0) return then();
    this.skip = n;
    this.afterSkip = then;
  }

  private onUpdateHeader = (b: Buffer): void => {
    this.rectsLeft = b.readUInt16BE(1);
    this.nextRect();
  };

  private nextRect = (): void => {
    if (this.rectsLeft === 0) return this.updateDone();
    this.rectsLeft--;
    this.expect(12, this.onRect);
  };

  private onRect = (r: Buffer): void => {
    const w = r.readUInt16BE(4);
    const h = r.readUInt16BE(6);
    const encoding = r.readInt32BE(8);
    if (encoding === RFB_DESKTOP_SIZE) {
      this.width = w;
      this.height = h;
      return this.nextRect();
    }
    if (encoding !== RFB_RAW) throw new Error(`unexpected encoding ${encoding}`);
    this.skipThen(w * h * 4, this.nextRect);
  };

  private updateDone(): void {
    this.updates++;
    this.nextMessage();
    if (!this.isReady) {
      this.isReady = true;
      this.settleReady(performance.now() - this.startedAt);
      // Full frames from now on, each viewer at its own phase so they do not come in bursts.
      const phase = Math.random() * this.fullFrameEveryMs;
      this.fullTimer = setTimeout(() => {
        this.request(false);
        this.fullTimer = setInterval(() => this.request(false), this.fullFrameEveryMs);
      }, phase);
    }
    this.request(true);
  }
}

/** The viewers of one process, with totals for the benchmark. */
export class ViewerPool {
  private readonly viewers: ScaleViewer[] = [];
  private expectClose = false;
  private closedUnexpectedly = 0;
  private readonly errors: string[] = [];

  constructor(private readonly fullFrameEveryMs: number) {}

  /** Connects viewers, at most `concurrency` handshakes at a time; resolves with each one's time to its first frame. */
  async connect(specs: readonly ViewerSpec[], concurrency: number, timeoutMs: number): Promise<{ firstFrameMs: number[]; failures: string[] }> {
    const firstFrameMs: number[] = [];
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < specs.length) {
        const spec = specs[next++]!;
        const viewer = new ScaleViewer(spec, this.fullFrameEveryMs, (v) => this.onClose(v));
        this.viewers.push(viewer);
        let timer: NodeJS.Timeout | undefined;
        try {
          firstFrameMs.push(await Promise.race([
            viewer.ready,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`${spec.name}: no first frame within ${timeoutMs} ms`)), timeoutMs);
            }),
          ]));
        } catch (err) {
          failures.push((err as Error).message);
          viewer.close();
        } finally {
          clearTimeout(timer);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, specs.length) }, worker));
    return { firstFrameMs, failures };
  }

  /** From now on a closing viewer is expected (its session is being stopped). */
  expectClosing(): void {
    this.expectClose = true;
  }

  totals(): ViewerTotals {
    let updates = 0;
    let fullRequests = 0;
    let bytes = 0;
    let open = 0;
    for (const v of this.viewers) {
      updates += v.updates;
      fullRequests += v.fullRequests;
      bytes += v.bytes;
      if (!v.closed) open++;
    }
    return { open, updates, fullRequests, bytes, closedUnexpectedly: this.closedUnexpectedly, errors: [...this.errors] };
  }

  closeAll(): void {
    this.expectClose = true;
    for (const v of this.viewers) v.close();
  }

  private onClose(v: ScaleViewer): void {
    if (this.expectClose) return;
    this.closedUnexpectedly++;
    if (this.errors.length < 5 && v.error) this.errors.push(v.error);
  }
}
