// Builds the cloud-init NoCloud seed (an ISO 9660 volume labelled "cidata"
// with user-data and meta-data) in the session's run dir, with genisoimage
// spawned from an argv array. Also runs virt-customize --firstboot on the
// session overlay for machines that use that delivery.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { runTool } from '../qemu/run-tool.js';
import { asShellScript, cloudInitMetaData, cloudInitUserData, type ResolvedScript } from './boot-scripts.js';

export async function buildSeedIso(
  genisoimage: string, runDir: string, sessionId: string, machine: string, scripts: readonly ResolvedScript[],
): Promise<string> {
  const dir = path.join(runDir, 'cidata');
  await fsp.mkdir(dir, { mode: 0o700 });
  await fsp.writeFile(path.join(dir, 'user-data'), cloudInitUserData(scripts), { mode: 0o600 });
  await fsp.writeFile(path.join(dir, 'meta-data'), cloudInitMetaData(sessionId, machine), { mode: 0o600 });
  const iso = path.join(runDir, 'seed.iso');
  await runTool(
    genisoimage,
    [
      '-quiet', '-output', iso, '-volid', 'cidata', '-joliet', '-rock', path.join(dir, 'user-data'),
      path.join(dir, 'meta-data'),
    ],
    { timeoutMs: 30000, errorCode: 'QWD_LAUNCH_FAILED', installHint: 'install the Debian package genisoimage' },
  );
  return iso;
}

/** Pure: the virt-customize argv that installs the scripts as first-boot scripts of the overlay. */
export function virtCustomizeArgv(overlay: string, scriptFiles: readonly string[]): string[] {
  return ['--format', 'qcow2', '-a', overlay, '--no-network', ...scriptFiles.flatMap((f) => ['--firstboot', f])];
}

export async function applyVirtCustomize(
  virtCustomize: string, runDir: string, overlay: string, scripts: readonly ResolvedScript[],
): Promise<void> {
  const dir = path.join(runDir, 'firstboot');
  await fsp.mkdir(dir, { mode: 0o700 });
  const files: string[] = [];
  for (const [i, s] of scripts.entries()) {
    const file = path.join(dir, `${String(i + 1).padStart(2, '0')}-${s.name.replace(/[^A-Za-z0-9._-]/g, '_')}.sh`);
    await fsp.writeFile(file, asShellScript(s.text), { mode: 0o700 });
    files.push(file);
  }
  await runTool(
    virtCustomize, virtCustomizeArgv(overlay, files),
    {
      timeoutMs: 600000, errorCode: 'QWD_LAUNCH_FAILED',
      installHint: 'install the Debian package guestfs-tools, or use delivery: cloud-init',
    },
  );
}
