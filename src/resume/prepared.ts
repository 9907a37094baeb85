// Prepared states: a machine booted once, saved (RAM and device state) next to
// a frozen copy of its disk as it was at that instant, so that sessions of that
// size resume it instead of booting (qwdctl machines prepare, prepare.ts).
// This file knows where they live and decides, purely, whether one may be
// used: a state loads only into the machine it was saved from (same QEMU, same
// master image, same devices, same CPUs and memory), and anything else is a
// cold boot with the reason logged and shown by `machines check`.
//
// Layout: <machinesDir>/prepared/<machine>/<cpus>c-<memoryMiB>m/
//   disk.qcow2   the frozen disk (qcow2 over the master; sessions get an overlay on it)
//   state.zst    the migration stream, zstd-compressed
//   meta.json    what it was saved from (PreparedMeta)
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Machine, ResumeSize } from '../catalog/descriptor.js';
import type { Config } from '../config/schema.js';
import { buildQemuArgv, type ArgvOptions } from '../qemu/argv.js';
import { findProgram, runTool } from '../qemu/run-tool.js';

export const PREPARED_DIR = 'prepared';
export const FROZEN_DISK = 'disk.qcow2';
export const STATE_FILE = 'state.zst';
export const META_FILE = 'meta.json';

export interface PreparedMeta {
  readonly format: 1;
  readonly machine: string;
  readonly cpus: number;
  readonly memoryMiB: number;
  /** `qemu-system-… --version`, first line. */
  readonly qemuVersion: string;
  /** The master the frozen disk is over, as it was: real path, size, mtime (masterStamp). */
  readonly master: string;
  /** What the session's QEMU must look like for the state to load (deviceKey). */
  readonly deviceKey: string;
  readonly preparedAt: number;
  readonly stateBytes: number;
  /** Boot until ready, then save: how long preparing took. */
  readonly prepareMs: number;
}

/** The directory of one prepared size. */
export function preparedDir(machinesDir: string, machine: string, size: ResumeSize): string {
  return path.join(machinesDir, PREPARED_DIR, machine, `${size.cpus}c-${size.memoryMiB}m`);
}

/** Whether sessions of this size are meant to resume (the descriptor lists the size). */
export function resumeSizeListed(machine: Machine, size: ResumeSize): boolean {
  return machine.resume?.sizes.some((s) => s.cpus === size.cpus && s.memoryMiB === size.memoryMiB) ?? false;
}

/**
 * Pure: the device set a state is tied to, as a digest of the argv a session of this machine and size gets with
 * every per-session value (paths, names) fixed. A descriptor change that changes the guest's hardware (display,
 * disk interface, network, agents) changes it; a new run dir or session id does not.
 */
export function deviceKey(
  machine: Machine, size: ResumeSize, opts: Pick<ArgvOptions, 'accel' | 'network' | 'uefiFirmware'>,
): string {
  const dir = '/prepared';
  const argv = buildQemuArgv(
    { ...machine, image: `${dir}/master`, file: `${dir}/machine.yml` }, size,
    {
      overlay: `${dir}/disk.qcow2`, qmpSocket: `${dir}/qmp.sock`, vncSocket: `${dir}/vnc.sock`,
      serialLog: `${dir}/serial.log`, pidFile: `${dir}/qemu.pid`, qgaSocket: `${dir}/qga.sock`,
    },
    { sessionId: 'prepared', sandbox: false, runAs: null, vdagentLater: true, ...opts },
  );
  return crypto.createHash('sha256').update(JSON.stringify(argv)).digest('hex').slice(0, 32);
}

/** The master as it is now: real path, inode, size, mtime and ctime (a master copied over or rebuilt changes it). */
export async function masterStamp(image: string): Promise<string> {
  const real = await fsp.realpath(image);
  const st = await fsp.stat(real, { bigint: true });
  // The inode and ctime too: a master copied in with its times kept (cp -p, rsync -a) has the same size and mtime.
  return `${real}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

export interface CurrentFacts {
  qemuVersion: string;
  master: string;
  deviceKey: string;
}

export type ResumeDecision =
  | { resume: true; dir: string; meta: PreparedMeta }
  | { resume: false; reason: string };

/** Pure: may a prepared state with this meta be loaded into a session made from these facts? */
export function decideResume(dir: string, meta: PreparedMeta, size: ResumeSize, now: CurrentFacts): ResumeDecision {
  if (meta.cpus !== size.cpus || meta.memoryMiB !== size.memoryMiB) {
    return { resume: false, reason: `the state was saved with ${meta.cpus} CPU(s) and ${meta.memoryMiB} MiB` };
  }
  if (meta.qemuVersion !== now.qemuVersion) {
    return {
      resume: false,
      reason: `the state was saved by another QEMU (${meta.qemuVersion}; now ${now.qemuVersion}): prepare it again`,
    };
  }
  if (meta.master !== now.master) {
    return { resume: false, reason: 'the master image changed since the state was saved: prepare it again' };
  }
  if (meta.deviceKey !== now.deviceKey) {
    return {
      resume: false,
      reason: 'the machine\'s devices changed since the state was saved (descriptor or config): prepare it again',
    };
  }
  return { resume: true, dir, meta };
}

/** Reads a prepared size's meta; null when it was never prepared; an Error (with the reason) when unreadable. */
export async function readPrepared(dir: string): Promise<PreparedMeta | null | Error> {
  let text: string;
  try {
    text = await fsp.readFile(path.join(dir, META_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return err as Error;
  }
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch {
    return new Error(`${path.join(dir, META_FILE)} is not JSON`);
  }
  if (!isMeta(meta)) return new Error(`${path.join(dir, META_FILE)} is not a prepared state's description`);
  for (const file of [FROZEN_DISK, STATE_FILE]) {
    if (!fs.existsSync(path.join(dir, file))) return new Error(`${path.join(dir, file)} is missing`);
  }
  const size = (await fsp.stat(path.join(dir, STATE_FILE))).size;
  if (size !== meta.stateBytes) {
    return new Error(`${path.join(dir, STATE_FILE)} has ${size} bytes, ${meta.stateBytes} were saved`);
  }
  return meta;
}

function isMeta(value: unknown): value is PreparedMeta {
  const m = value as Partial<PreparedMeta> | null;
  return !!m && m.format === 1 && typeof m.machine === 'string' && Number.isInteger(m.cpus)
    && Number.isInteger(m.memoryMiB) && typeof m.qemuVersion === 'string' && typeof m.master === 'string'
    && typeof m.deviceKey === 'string' && Number.isInteger(m.stateBytes)
    && typeof m.preparedAt === 'number' && typeof m.prepareMs === 'number';
}

/** `qemu-system-… --version`, first line; asked once per binary file (a new install is a new file). */
const versions = new Map<string, Promise<string>>();

export async function qemuVersion(binary: string): Promise<string> {
  let key = binary;
  try {
    // A name on PATH is looked up first: an upgrade of QEMU replaces that file, and the broker must notice.
    const file = findProgram(binary) ?? binary;
    const st = await fsp.stat(file);
    key = `${file}:${st.ino}:${st.mtimeMs}`;
  } catch {
    // Not found: asking it fails, and the failure is not kept.
  }
  let version = versions.get(key);
  if (!version) {
    version = runTool(binary, ['--version'], { timeoutMs: 10000, errorCode: 'QWD_LAUNCH_FAILED' })
      .then((r) => r.stdout.split('\n')[0]!.trim());
    version.catch(() => versions.delete(key));
    versions.set(key, version);
  }
  return version;
}

/** What sessions of this size would get now: the prepared state if it is usable, else why not. */
export async function checkPreparedState(
  config: Config, machine: Machine, size: ResumeSize, accel: 'kvm' | 'tcg',
): Promise<ResumeDecision> {
  const dir = preparedDir(config.machinesDir, machine.name, size);
  const meta = await readPrepared(dir);
  if (meta === null) {
    return { resume: false, reason: `not prepared (qwdctl machines prepare ${machine.name})` };
  }
  if (meta instanceof Error) return { resume: false, reason: `the prepared state is unusable: ${meta.message}` };
  const now: CurrentFacts = {
    qemuVersion: await qemuVersion(config.qemu.binaries[machine.arch]),
    master: await masterStamp(machine.image),
    deviceKey: deviceKey(machine, size, {
      accel, network: config.qemu.network, uefiFirmware: config.qemu.uefi[machine.arch],
    }),
  };
  return decideResume(dir, meta, size, now);
}

/** Why sessions of a resume size boot with the Slurm launcher (its log, machines check, prepare's refusal). */
export const SLURM_BOOTS = 'the Slurm launcher boots every session: a state would load on a compute node, where the ' +
  'broker cannot continue it, plug the clipboard back or set the guest\'s clock (INSTALL.md, Resume)';
