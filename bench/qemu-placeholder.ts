// QEMU's placeholder screen, captured for comparison. Until the guest's VGA
// BIOS sets a video mode, QEMU's console shows its own text "Guest has not
// initialized the display (yet)." in white on black (ui/console.c,
// qemu_create_placeholder_surface). That frame has non-black pixels but
// nothing the guest drew, so "first non-blank frame" alone can be QEMU talking
// to itself. To tell the two apart exactly, the benchmark captures the
// placeholder once from a QEMU that is paused before the first guest
// instruction (-S) and has the same display (-vga std, VNC on a Unix socket),
// read through the real bridge (harness) with the same RFB client.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connectRfb, nonBlackPixels } from '../test/helpers/rfb-client.js';
import { readRfbBanner } from '../src/qemu/rfb-probe.js';
import type { Cleanup } from './cleanup.js';
import { spawnTracked } from './processes.js';
import { startHarnessBridge } from './bridge-harness.js';

export async function capturePlaceholderFrame(cleanup: Cleanup, qemuBinary: string): Promise<Buffer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-bench-ph-'));
  const removeDir = cleanup.add(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  const socket = path.join(dir, 'vnc.sock');
  const qemu = spawnTracked(cleanup, 'paused qemu (placeholder frame)', qemuBinary, [
    '-S', '-nodefaults', '-no-user-config', '-machine', 'pc,accel=tcg', '-vga', 'std',
    '-display', 'none', '-vnc', `unix:${socket}`, '-monitor', 'none', '-serial', 'none',
  ]);
  try {
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        await readRfbBanner({ kind: 'unix', path: socket }, 1000);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`paused qemu (pid ${qemu.pid}) did not answer on ${socket} within 10 s: ${(err as Error).message}; stderr: ${qemu.stderr.join('\n')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const harness = await startHarnessBridge({ kind: 'unix', path: socket });
    try {
      const rfb = await connectRfb(harness.wsUrl);
      try {
        const frame = await rfb.update(false, 5000);
        if (nonBlackPixels(frame) === 0) throw new Error('the paused qemu showed an all-black screen, not its placeholder text');
        return frame;
      } finally {
        rfb.close();
      }
    } finally {
      await harness.close();
    }
  } finally {
    await qemu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    removeDir();
  }
}
