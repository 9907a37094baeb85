// Measurement 1: how long a user waits. For each session, created one at a
// time and stopped (DELETE) before the next one starts:
//   POST → ready:            POST /api/v1/sessions until its 201 (the broker
//                            answers once QMP answers and VNC sent its banner);
//   POST → first non-blank:  from the same POST until a full FramebufferUpdate
//                            read through the bridge (/ws/<token>, raw RFB
//                            client connected right after the 201) has a
//                            non-black pixel;
//   POST → first guest frame: the same, but the frame must also differ from
//                            QEMU's own placeholder text (see
//                            qemu-placeholder.ts): the first thing the guest drew.
// The broker's log timestamps split POST → ready into its phases.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { connectRfb, nonBlackPixels } from '../test/helpers/rfb-client.js';
import type { Cleanup } from './cleanup.js';
import { createSession, deleteSession } from './api.js';
import type { BrokerProcess } from './broker-process.js';
import { encodePng } from './png.js';

export interface SessionSample {
  id: string;
  /** POST sent → 201 received (ms). */
  readyMs: number;
  /** 201 → RFB handshake through the bridge done (ms). */
  handshakeMs: number;
  /** POST sent → first full update with a non-black pixel (ms); may be QEMU's placeholder. */
  frameMs: number;
  /** POST sent → first full update that is non-blank and not QEMU's placeholder (ms). */
  guestFrameMs: number;
  /** Whether the first non-blank frame was QEMU's placeholder rather than the guest's screen. */
  firstWasPlaceholder: boolean;
  /** Full updates requested until the guest's frame. */
  updates: number;
  frameWidth: number;
  frameHeight: number;
  nonBlackPixels: number;
  /** DELETE sent → 204 (ms): QMP quit, wait for exit, cleanup. */
  deleteMs: number;
  /** Broker-side phases (ms), from its log clock: POST → "session created", → "qemu spawned", → "session running". */
  toCreatedMs?: number;
  toSpawnedMs?: number;
  toRunningMs?: number;
}

export interface LatencyOptions {
  machine: string;
  memoryMiB: number;
  /** Where to save each session's first non-blank frame as PNG (null: nowhere). */
  saveFramesDir: string | null;
  frameDeadlineMs: number;
  /** QEMU's placeholder screen as this client receives it. */
  placeholder: Buffer;
}

/** One session: POST, connect a viewer, wait for a non-blank frame, DELETE. */
export async function measureOneSession(cleanup: Cleanup, broker: BrokerProcess, opts: LatencyOptions, label: string): Promise<SessionSample> {
  const wallStart = Date.now();
  const start = performance.now();
  const session = await createSession(broker.url, { machine: opts.machine, cpus: 1, memoryMiB: opts.memoryMiB, lifetimeS: 3600, user: 'bench' });
  const readyAt = performance.now();
  const unregister = cleanup.add(`DELETE session ${session.id}`, () => deleteSession(broker.url, session.token));
  try {
    const rfb = await connectRfb(session.wsUrl, { timeoutMs: 10000 });
    const handshakeAt = performance.now();
    let frameAt = 0;
    let firstWasPlaceholder = false;
    let frame: Buffer | null = null;
    let updates = 0;
    try {
      for (;;) {
        const remaining = opts.frameDeadlineMs - (performance.now() - start);
        if (remaining <= 0) throw new Error(`session ${session.id}: no frame drawn by the guest within ${opts.frameDeadlineMs} ms of the POST (${updates} full updates, ${frameAt ? 'only QEMU\'s placeholder' : 'all black'})`);
        const fb = await rfb.update(false, Math.min(10000, Math.max(1000, remaining)));
        updates++;
        if (nonBlackPixels(fb) === 0) continue;
        const placeholder = fb.equals(opts.placeholder);
        if (!frameAt) {
          frameAt = performance.now();
          firstWasPlaceholder = placeholder;
        }
        if (!placeholder) {
          frame = fb;
          break;
        }
      }
    } finally {
      rfb.close();
    }
    const guestFrameAt = performance.now();
    // The client keeps the ServerInit size (it does not announce DesktopSize).
    if (opts.saveFramesDir) fs.writeFileSync(path.join(opts.saveFramesDir, `${label}-guest-frame.png`), encodePng(frame, rfb.width, rfb.height));
    const deleteStart = performance.now();
    await deleteSession(broker.url, session.token);
    unregister();
    const deleteMs = performance.now() - deleteStart;
    const p = broker.phases.get(session.id) ?? {};
    return {
      id: session.id,
      readyMs: readyAt - start,
      handshakeMs: handshakeAt - readyAt,
      frameMs: frameAt - start,
      guestFrameMs: guestFrameAt - start,
      firstWasPlaceholder,
      updates,
      frameWidth: rfb.width,
      frameHeight: rfb.height,
      nonBlackPixels: nonBlackPixels(frame),
      deleteMs,
      toCreatedMs: p.created !== undefined ? p.created - wallStart : undefined,
      toSpawnedMs: p.spawned !== undefined ? p.spawned - wallStart : undefined,
      toRunningMs: p.running !== undefined ? p.running - wallStart : undefined,
    };
  } catch (err) {
    // The cleanup step registered above DELETEs the session; run it now so the next one starts alone.
    unregister();
    await deleteSession(broker.url, session.token).catch((e: Error) => {
      throw new Error(`${(err as Error).message}; and DELETE failed too: ${e.message}`, { cause: err });
    });
    throw err;
  }
}

/**
 * For context, not a target: POST → the demo guest's "QWD: boot ok" on its
 * serial port (kernel and initramfs up, shell on the console) — what a user
 * waits for beyond the first picture. No viewer is connected.
 */
export async function measureGuestBoot(cleanup: Cleanup, broker: BrokerProcess, runDir: string, opts: { machine: string; memoryMiB: number; timeoutMs: number }): Promise<number> {
  const start = performance.now();
  const session = await createSession(broker.url, { machine: opts.machine, cpus: 1, memoryMiB: opts.memoryMiB, lifetimeS: 3600, user: 'bench-boot' });
  const unregister = cleanup.add(`DELETE session ${session.id}`, () => deleteSession(broker.url, session.token));
  const serial = path.join(runDir, session.id, 'serial.log');
  try {
    for (;;) {
      let text = '';
      try {
        text = fs.readFileSync(serial, 'utf8');
      } catch {
        // Not written yet.
      }
      if (text.includes('QWD: boot ok')) return performance.now() - start;
      if (performance.now() - start > opts.timeoutMs) throw new Error(`session ${session.id}: no "QWD: boot ok" in ${serial} within ${opts.timeoutMs} ms; last output: ${JSON.stringify(text.slice(-300))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await deleteSession(broker.url, session.token);
    unregister();
  }
}
