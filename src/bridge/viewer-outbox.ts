// What waits for one viewer on its way out: the desktop's bytes, sent to the
// viewer's WebSocket as they are read (one binary message per read, ws.send),
// with explicit backpressure instead of a stream pipe. Once the bytes the
// WebSocket holds reach the high-water mark, the chunk that crosses it is sent
// with a callback and the desktop's stream is paused; when that chunk has been
// written to the viewer's socket (everything before it too), reading resumes.
// So what waits per viewer is bounded by the mark plus one read, and a viewer
// that stops reading stops its own VNC connection, not anyone else's (each
// viewer has its own). It is not the stall policy: the bridge looks at
// fullSince and decides when a viewer that does not drain is dropped.
// Owned by the bridge's per-viewer code in ws-bridge.ts; no state elsewhere.
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Clock } from '../clock.js';

/**
 * Bytes the WebSocket may hold for one viewer before the desktop's stream is paused. Larger lets more be in flight
 * between two wake-ups of the event loop (throughput: 64 KiB moved ≈ 20 % less than 256 KiB, 1 MiB no more than it);
 * smaller bounds what a slow viewer pins.
 */
export const OUTBOX_HIGH_WATER_BYTES = 256 * 1024;

export class ViewerOutbox {
  private full: number | null = null;

  constructor(
    private readonly ws: WebSocket, private readonly desktop: Duplex, private readonly clock: Clock,
    private readonly highWaterBytes = OUTBOX_HIGH_WATER_BYTES,
  ) {}

  /**
   * Sends a chunk read from the desktop. Returns whether the chunk is still held after the call (queued in the
   * viewer's socket): then the caller must not reuse its memory.
   */
  send(chunk: Buffer): boolean {
    // A viewer that is leaving gets nothing more (ws would count it as buffered and never send it).
    if (this.ws.readyState !== this.ws.OPEN) return false;
    if (this.ws.bufferedAmount + chunk.length < this.highWaterBytes) {
      this.ws.send(chunk);
    } else {
      this.ws.send(chunk, this.flushed);
      this.desktop.pause();
      this.full ??= this.clock.now();
    }
    return this.ws.bufferedAmount > 0;
  }

  /** When the viewer last became full (the desktop's stream paused, waiting for it to drain), or null. */
  get fullSince(): number | null {
    return this.full;
  }

  /** Bytes waiting to be sent to the viewer. */
  get buffered(): number {
    return this.ws.bufferedAmount;
  }

  /** The chunk that crossed the mark has been written, and all before it: read again. */
  private readonly flushed = (err?: Error) => {
    // The viewer is gone: its 'close' ends this link, there is nothing to resume.
    if (err) return;
    this.full = null;
    this.desktop.resume();
  };
}
