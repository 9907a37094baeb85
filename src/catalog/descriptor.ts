// Machine descriptors (machines/*.yml): one file per machine a user can pick.
// parseMachine is pure; reading files and probing images lives in catalog.ts.
import path from 'node:path';
import { ARCHES, CLIPBOARD_MODES, type Arch, type ClipboardMode } from '../config/schema.js';
import {
  Problems, isObject, rejectUnknownKeys, section, readInt, readString, readOptionalString, readEnum, readBool, type Obj,
} from '../config/check.js';
import type { ShareDecl } from '../guest/shares.js';
import { readBootScripts, readShares, type BootScriptsDecl } from '../config/guest.js';

export const IMAGE_FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'qed', 'iso'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];
export type Firmware = 'bios' | 'uefi';
export type DiskInterface = 'virtio' | 'ide' | 'scsi';
/**
 * The emulated display adapter: `std` (VGA, today's default), `virtio`
 * (virtio-vga on x86_64, virtio-gpu-pci on aarch64: the one QEMU 7.2 can
 * resize from VNC's SetDesktopSize) or `qxl` (qxl-vga, x86_64 only).
 */
export type MachineDisplay = 'std' | 'virtio' | 'qxl';
export const MACHINE_DISPLAYS: readonly MachineDisplay[] = ['std', 'virtio', 'qxl'];
/** A guest agent QEMU talks to: spice-vdagent gets QEMU's qemu-vdagent chardev (clipboard over VNC). */
export type MachineAgent = 'spice-vdagent';
export const MACHINE_AGENTS: readonly MachineAgent[] = ['spice-vdagent'];

/** A size a saved state can be resumed into (a state loads only into an identical machine). */
export interface ResumeSize {
  readonly cpus: number;
  readonly memoryMiB: number;
}

/**
 * What says a machine being prepared is ready to be saved: a line its serial port prints (the demo: "QWD: boot
 * ok"), or its qemu-guest-agent answering guest-ping (guestAgent: true) and, with `process`, that program running
 * in the guest (pgrep -x through the agent; the desktop: xfdesktop, drawn once the XFCE session is up).
 */
export type ReadySignal = { readonly serial: string } | { readonly guestAgent: true; readonly process?: string };

/** Sessions of these sizes resume a saved, booted machine (qwdctl machines prepare) instead of booting it. */
export interface ResumeProfile {
  readonly sizes: readonly ResumeSize[];
  readonly ready: ReadySignal;
}

/** Machine names are used in paths and QEMU -name: keep them boring. */
export const MACHINE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface Machine {
  readonly name: string;
  readonly description: string;
  /** Absolute path to the master image; never written. */
  readonly image: string;
  /** null until detected with qemu-img info (catalog.ts fills it in). */
  readonly format: ImageFormat | null;
  readonly arch: Arch;
  readonly firmware: Firmware;
  readonly diskInterface: DiskInterface;
  readonly cpus: { readonly default: number; readonly max: number };
  readonly memoryMiB: { readonly default: number; readonly max: number };
  /** Size of the blank disk given to ISO machines. */
  readonly isoDiskGiB: number | null;
  /** Most sessions of this machine at once (null: no per-machine limit). */
  readonly maxSessions: number | null;
  readonly url: string | null;
  readonly sha256: string | null;
  /** Host folders shared into the guest (virtio-9p). */
  readonly shares: readonly ShareDecl[];
  readonly bootScripts: BootScriptsDecl;
  /** Display adapter; absent or null: the architecture's default (VGA on x86_64, virtio-gpu-pci on aarch64). */
  readonly display?: MachineDisplay | null;
  /** Guest agent the machine's image runs; absent or null: none (no clipboard device). */
  readonly agent?: MachineAgent | null;
  /**
   * The image runs qemu-guest-agent: the session gets its virtio-serial port
   * (org.qemu.guest_agent.0) on <runDir>/qga.sock. Absent: false (no port).
   */
  readonly guestAgent?: boolean;
  /** The machine's clipboard policy (the site's bridge.clipboard may make it stricter); absent: both. */
  readonly clipboard?: ClipboardMode;
  /** Sizes whose sessions resume a prepared state; absent or null: every session boots. */
  readonly resume?: ResumeProfile | null;
  /** The descriptor file it came from. */
  readonly file: string;
}

const KEYS = [
  'name', 'description', 'image', 'format', 'arch', 'firmware', 'diskInterface', 'cpus', 'memoryMiB', 'isoDiskGiB',
  'url', 'sha256', 'shares', 'bootScripts', 'maxSessions', 'display', 'agent', 'guestAgent', 'clipboard', 'resume',
] as const;

export function parseMachine(raw: unknown, file: string): { machine: Machine | null; problems: string[] } {
  const p = new Problems(file);
  if (!isObject(raw)) {
    p.note('a machine descriptor must be a YAML mapping');
    return { machine: null, problems: p.list };
  }
  rejectUnknownKeys(p, raw, '', KEYS);
  const name = readString(
    p, raw, 'name', '',
    {
      pattern: MACHINE_NAME,
      expectation: 'a name of lower-case letters, digits, ".", "_" or "-" (at most 64, not starting with "." or "-")',
    },
  );
  if (raw.name === undefined) p.add('name', 'present', undefined);
  const imageRaw = readString(p, raw, 'image', '');
  if (raw.image === undefined) p.add('image', 'a path to the master image', undefined);
  const format = raw.format === undefined || raw.format === null ? null : readEnum<ImageFormat>(
    p, raw, 'format', IMAGE_FORMATS, 'qcow2',
  );
  const cpus = readRange(p, raw, 'cpus', { def: 1, max: 2 }, 1, 1024);
  const memoryMiB = readRange(p, raw, 'memoryMiB', { def: 1024, max: 4096 }, 16, 16 * 1024 * 1024);
  const arch = readEnum<Arch>(p, raw, 'arch', ARCHES, 'x86_64');
  const display = raw.display === undefined || raw.display === null
    ? null : readEnum<MachineDisplay>(p, raw, 'display', MACHINE_DISPLAYS, 'std');
  // Measured with QEMU 7.2 (Debian 12): qemu-system-aarch64's virt machine has no qxl-vga, and
  // VGA there needs an x86 VGA BIOS (vgabios-stdvga.bin) that UEFI on Arm never runs.
  if (arch === 'aarch64' && display !== null && display !== 'virtio') {
    const missing = display === 'qxl' ? 'no qxl-vga' : 'no usable VGA';
    p.note(
      `display "${display}" is not available on aarch64 (QEMU's virt machine has ${missing}); use display: virtio ` +
        `(virtio-gpu-pci) or leave display out`
    );
  }
  const machine: Machine = {
    name,
    description: readString(p, raw, 'description', name),
    image: path.resolve(path.dirname(file), imageRaw),
    format,
    arch,
    firmware: readEnum<Firmware>(p, raw, 'firmware', ['bios', 'uefi'], 'bios'),
    diskInterface: readEnum<DiskInterface>(p, raw, 'diskInterface', ['virtio', 'ide', 'scsi'], 'virtio'),
    cpus,
    memoryMiB,
    isoDiskGiB: raw.isoDiskGiB === undefined ? null : readInt(p, raw, 'isoDiskGiB', 10, { min: 1, max: 65536 }),
    maxSessions: raw.maxSessions === undefined || raw.maxSessions === null ? null : readInt(
      p, raw, 'maxSessions', 1, { min: 0, max: 10000 },
    ),
    // Only http(s): a file: URL would copy any host file into the images directory.
    url: readOptionalString(p, raw, 'url', {
      pattern: /^https?:\/\/\S+$/i, expectation: 'an http:// or https:// URL (file:, ftp:, data: … are refused)',
    }),
    sha256: readOptionalString(
      p, raw, 'sha256', { pattern: /^[0-9a-f]{64}$/i, expectation: 'a SHA-256 digest in hex (64 characters)' },
    ),
    shares: readShares(p, raw, 'shares'),
    bootScripts: readBootScripts(p, raw, path.dirname(file), file),
    display,
    agent: raw.agent === undefined || raw.agent === null
      ? null : readEnum<MachineAgent>(p, raw, 'agent', MACHINE_AGENTS, 'spice-vdagent'),
    guestAgent: readBool(p, raw, 'guestAgent', false),
    clipboard: readEnum<ClipboardMode>(p, raw, 'clipboard', CLIPBOARD_MODES, 'both'),
    resume: readResume(p, raw, { cpus, memoryMiB }, raw.guestAgent === true, format),
    file,
  };
  return p.ok ? { machine, problems: [] } : { machine: null, problems: p.list };
}

/** resume: { sizes: [{ cpus, memoryMiB }], ready: { serial: "…" } | { guestAgent: true } } */
function readResume(
  p: Problems, raw: Obj, limits: { cpus: { max: number }; memoryMiB: { max: number } }, guestAgent: boolean,
  format: ImageFormat | null,
): ResumeProfile | null {
  if (raw.resume === undefined || raw.resume === null) return null;
  const r = section(p, raw, 'resume');
  rejectUnknownKeys(p, r, 'resume.', ['sizes', 'ready']);
  if (format === 'iso') p.note('resume: an ISO machine installs from its CD-ROM; there is no booted desktop to save');
  if (Array.isArray(raw.shares) && raw.shares.length > 0) {
    p.note('resume: a machine with shares never resumes (a saved state lacks host folders): drop one of the two');
  }
  const sizes: ResumeSize[] = [];
  if (!Array.isArray(r.sizes) || r.sizes.length === 0) {
    p.add('resume.sizes', 'a list of { cpus, memoryMiB } (at least one)', r.sizes);
  } else {
    r.sizes.forEach((entry: unknown, i: number) => {
      const key = `resume.sizes[${i}]`;
      if (!isObject(entry)) return p.add(key, 'a mapping { cpus, memoryMiB }', entry);
      rejectUnknownKeys(p, entry, `${key}.`, ['cpus', 'memoryMiB']);
      if (entry.cpus === undefined) p.add(`${key}.cpus`, 'present', undefined);
      if (entry.memoryMiB === undefined) p.add(`${key}.memoryMiB`, 'present', undefined);
      const size = {
        cpus: readInt(p, entry, 'cpus', 1, { min: 1, max: limits.cpus.max, prefix: `${key}.` }),
        memoryMiB: readInt(p, entry, 'memoryMiB', 16, { min: 16, max: limits.memoryMiB.max, prefix: `${key}.` }),
      };
      if (sizes.some((s) => s.cpus === size.cpus && s.memoryMiB === size.memoryMiB)) {
        p.note(`${key}: ${size.cpus} CPU(s) and ${size.memoryMiB} MiB are listed twice`);
      }
      sizes.push(size);
    });
  }
  const ready = section(p, r, 'ready', 'resume.');
  rejectUnknownKeys(p, ready, 'resume.ready.', ['serial', 'guestAgent', 'process']);
  let signal: ReadySignal = { serial: 'QWD: boot ok' };
  if (ready.serial !== undefined && ready.guestAgent !== undefined) {
    p.note('resume.ready: give serial or guestAgent, not both');
  } else if (ready.guestAgent !== undefined) {
    if (ready.guestAgent !== true) p.add('resume.ready.guestAgent', 'true', ready.guestAgent);
    if (!guestAgent) p.note('resume.ready.guestAgent: true needs guestAgent: true (the image runs qemu-guest-agent)');
    signal = ready.process === undefined ? { guestAgent: true } : {
      guestAgent: true,
      process: readString(p, ready, 'process', 'x', {
        prefix: 'resume.ready.', pattern: /^[A-Za-z0-9._+-]{1,15}$/, expectation: 'a program name as pgrep -x sees it',
      }),
    };
  } else if (ready.process !== undefined) {
    p.note('resume.ready.process needs resume.ready.guestAgent: true (the agent looks for it)');
  } else if (ready.serial !== undefined) {
    signal = { serial: readString(p, ready, 'serial', '', { prefix: 'resume.ready.' }) };
  } else {
    p.add('resume.ready', 'a mapping with serial: "a line the guest prints" or guestAgent: true', r.ready);
  }
  return { sizes, ready: signal };
}

function readRange(
  p: Problems, raw: Obj, key: string, fallback: { def: number; max: number }, min: number, max: number,
): { default: number; max: number } {
  const r = section(p, raw, key);
  rejectUnknownKeys(p, r, `${key}.`, ['default', 'max']);
  const def = readInt(p, r, 'default', fallback.def, { min, max, prefix: `${key}.` });
  const top = readInt(p, r, 'max', Math.max(def, fallback.max), { min, max, prefix: `${key}.` });
  if (def > top) p.note(`${key}.default (${def}) must not exceed ${key}.max (${top})`);
  return { default: def, max: top };
}

