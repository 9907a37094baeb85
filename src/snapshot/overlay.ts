// Per-session disks. The master image is only ever a read-only backing file:
// sessions write into a qcow2 overlay in their own run dir (or, for ISO
// machines, into a blank qcow2 disk while the ISO is attached read-only).
import path from 'node:path';
import { runTool } from '../qemu/run-tool.js';
import type { Machine } from '../catalog/descriptor.js';

export const OVERLAY_NAME = 'disk.qcow2';

export async function createOverlay(qemuImg: string, machine: Machine, runDir: string, isoDiskGiB: number): Promise<string> {
  const overlay = path.join(runDir, OVERLAY_NAME);
  const argv = overlayArgv(machine, overlay, isoDiskGiB);
  await runTool(qemuImg, argv, { timeoutMs: 30000, errorCode: 'QWD_OVERLAY_FAILED' });
  return overlay;
}

/** Pure: the qemu-img argv for a session disk. */
export function overlayArgv(machine: Machine, overlay: string, isoDiskGiB: number): string[] {
  if (machine.format === 'iso') {
    return ['create', '-q', '-f', 'qcow2', overlay, `${machine.isoDiskGiB ?? isoDiskGiB}G`];
  }
  if (!machine.format) throw new Error(`machine ${machine.name}: format not detected`);
  return ['create', '-q', '-f', 'qcow2', '-F', machine.format, '-b', machine.image, overlay];
}
