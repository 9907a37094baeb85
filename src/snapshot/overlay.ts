// Per-session disks. The master image is only ever a read-only backing file:
// sessions write into a qcow2 overlay in their own run dir (or, for ISO
// machines, into a blank qcow2 disk while the ISO is attached read-only).
//
// The overlay pins the chain that was checked: right before it is created the
// master's chain is checked again (it may have been replaced since the catalog
// was loaded), the overlay names the master by its real path with an explicit
// backing format and is created with -u (qemu-img opens nothing below it), and
// afterwards the chain seen through the overlay must be the very files checked.
import fs from 'node:fs/promises';
import path from 'node:path';
import { QwdError } from '../errors.js';
import { runTool } from '../qemu/run-tool.js';
import type { Machine } from '../catalog/descriptor.js';
import { checkBackingChain, verifyOverlayChain, type ChainCheck, type ChainLayer } from '../catalog/backing-chain.js';

export const OVERLAY_NAME = 'disk.qcow2';

/** The master as checked: its real path and format, the ones QEMU must be given. */
/**
 * The last clean check of each master, with a stamp of every layer (device,
 * inode, size, mtime and ctime in ns): a master whose files are all unchanged
 * since — any write or chmod moves ctime — is not checked again with qemu-img.
 * The chain through each new overlay is still verified (verifyOverlayChain).
 */
const checkedChains = new Map<string, { stamps: string; chain: ChainCheck }>();

/** The layers' stamp, or null when one is gone, or changed after `notAfterNs` (it may have changed during a check). */
async function layerStamps(image: string, layers: readonly ChainLayer[], notAfterNs?: bigint): Promise<string | null> {
  try {
    if ((await fs.realpath(image)) !== layers[0]?.realPath) return null;
    const stats = await Promise.all(layers.map((l) => fs.stat(l.realPath, { bigint: true })));
    if (notAfterNs !== undefined && stats.some((st) => st.ctimeNs >= notAfterNs)) return null;
    return stats.map((st) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`).join('|');
  } catch {
    return null; // a layer is gone: check again, which says why
  }
}

async function checkedChain(qemuImg: string, machine: Machine, machinesDir: string): Promise<ChainCheck> {
  const key = `${machinesDir}\0${machine.image}\0${machine.format ?? ''}`;
  const cached = checkedChains.get(key);
  if (cached && (await layerStamps(machine.image, cached.chain.layers)) === cached.stamps) return cached.chain;
  // Only files unchanged since a second before the check began are remembered as checked.
  const startedNs = BigInt(Date.now() - 1000) * 1_000_000n;
  const chain = await checkBackingChain(qemuImg, machine.image, machinesDir, machine.format);
  // Only qcow2 and raw layers: other formats (VMDK) name further files (extents) that the stamps do not cover.
  const plain = chain.layers.every((l) => l.format === 'qcow2' || l.format === 'raw');
  const stamps = chain.violations.length || !plain ? null : await layerStamps(machine.image, chain.layers, startedNs);
  if (stamps) checkedChains.set(key, { stamps, chain });
  else checkedChains.delete(key);
  return chain;
}

export async function pinMaster(qemuImg: string, machine: Machine, machinesDir: string) {
  const chain = await checkedChain(qemuImg, machine, machinesDir);
  if (chain.violations.length) {
    throw new QwdError('QWD_IMAGE_UNSAFE', `machine ${machine.name}: ${chain.violations.join('; ')}`, {
      userMessage: `The image of machine "${machine.name}" cannot be used; an administrator must run "qwdctl ` +
        `machines check".`,
    });
  }
  const master = chain.layers[0]!;
  return {
    machine: { ...machine, image: master.realPath, format: master.format }, chain,
    virtualSizeBytes: chain.virtualSizeBytes,
  };
}

export async function createOverlay(
  qemuImg: string, machine: Machine, runDir: string, isoDiskGiB: number, machinesDir: string,
): Promise<{ overlay: string; machine: Machine }> {
  const pinned = await pinMaster(qemuImg, machine, machinesDir);
  const overlay = path.join(runDir, OVERLAY_NAME);
  const argv = overlayArgv(pinned.machine, overlay, isoDiskGiB, pinned.virtualSizeBytes);
  try {
    await runTool(qemuImg, argv, { timeoutMs: 30000, errorCode: 'QWD_OVERLAY_FAILED' });
  } catch (err) {
    await fs.rm(overlay, { force: true }); // a qemu-img that failed half-way may have left a file
    throw err;
  }
  if (pinned.machine.format !== 'iso') {
    const problems = await verifyOverlayChain(qemuImg, overlay, pinned.chain.layers);
    if (problems.length) {
      await fs.rm(overlay, { force: true });
      throw new QwdError('QWD_IMAGE_UNSAFE', `machine ${machine.name}: ${problems.join('; ')}`, {
        userMessage: `The image of machine "${machine.name}" changed while the session was created; try again.`,
      });
    }
  }
  return { overlay, machine: pinned.machine };
}

/**
 * Pure: the qemu-img argv for a session disk. With `virtualSizeBytes` the
 * overlay is created unsafe (-u: the backing file is not opened) at that size.
 */
export function overlayArgv(
  machine: Machine, overlay: string, isoDiskGiB: number, virtualSizeBytes?: number,
): string[] {
  if (machine.format === 'iso') {
    return ['create', '-q', '-f', 'qcow2', overlay, `${machine.isoDiskGiB ?? isoDiskGiB}G`];
  }
  if (!machine.format) throw new Error(`machine ${machine.name}: format not detected`);
  const base = ['create', '-q', '-f', 'qcow2', '-F', machine.format, '-b', machine.image];
  return virtualSizeBytes ? [...base, '-u', overlay, String(virtualSizeBytes)] : [...base, overlay];
}
