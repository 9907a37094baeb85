// buildQemuArgv: pure translation of (machine, request, paths, options) into the
// argv of qemu-system-<arch>. No I/O, no defaults read from elsewhere: what goes
// in is what comes out, so every combination is tested in a table.
import type { Machine, MachineDisplay } from '../catalog/descriptor.js';
import type { Arch } from '../config/schema.js';
import { qemuOpts } from './escape.js';

export type ResolvedAccel = 'kvm' | 'tcg';

export interface VmRequest {
  readonly cpus: number;
  readonly memoryMiB: number;
}

export interface VmPaths {
  readonly overlay: string;
  readonly qmpSocket: string;
  readonly vncSocket: string;
  readonly serialLog: string;
  readonly pidFile: string;
  /** The qemu-guest-agent port's socket (used only for machines with guestAgent: true). */
  readonly qgaSocket: string;
}

export interface ArgvOptions {
  readonly sessionId: string;
  readonly accel: ResolvedAccel;
  readonly sandbox: boolean;
  /** Drop privileges to this user after start-up (only when the broker runs as root). */
  readonly runAs: string | null;
  readonly network: 'user' | 'none';
  /** Firmware file for machines with firmware: uefi (or any aarch64 machine). */
  readonly uefiFirmware: string;
  /**
   * VNC on TCP with a password instead of the Unix socket (Slurm jobs, where
   * the broker is on another host): `listen` is "host:display", the password
   * is read by QEMU from `secretFile` (a secret object, never on the command line).
   */
  readonly vncTcp?: { readonly listen: string; readonly secretFile: string };
  /**
   * The session disk handed over as two open fds (read-write and read-only, QEMU -add-fd into fd set 1) instead of
   * its path: a VM whose state is saved or loaded reopens its disk when the migration switches it between
   * read-only and read-write, and after -runas it could not open the path in the 0700 run dir.
   */
  readonly overlayFds?: { readonly readWrite: number; readonly readOnly: number };
  /**
   * A VM resumed from a saved state: no clipboard agent port on the command line (QEMU 7.2's qemu-vdagent chardev
   * cannot be migrated, so it was unplugged before the save); it is plugged in after the resume (VDAGENT_PLUG).
   */
  readonly vdagentLater?: boolean;
}

/** The clipboard agent's chardev and port as plugged into a resumed VM (QMP chardev-add, device_add). */
export const VDAGENT_PLUG = {
  chardev: { id: 'vdagent0', backend: { type: 'qemu-vdagent', data: { clipboard: true } } },
  device: { driver: 'virtserialport', chardev: 'vdagent0', name: 'com.redhat.spice.0', id: 'vdagentport0', nr: 1 },
} as const;

/** Per-session guest devices beyond the disk: host folders and the cloud-init seed. */
export interface GuestDevices {
  readonly shares: readonly { path: string; tag: string; readonly: boolean }[];
  readonly seedIso: string | null;
  /** Per passed-through GPU, the host PCI functions of its IOMMU group (GPU first). */
  readonly gpus?: readonly (readonly string[])[];
}

export const NO_GUEST_DEVICES: GuestDevices = { shares: [], seedIso: null, gpus: [] };

/** The QEMU -name of a session; also how a running qemu is recognised as ours. */
export function qemuProcessName(sessionId: string): string {
  return `qwd-${sessionId}`;
}

export function buildQemuArgv(
  machine: Machine, request: VmRequest, paths: VmPaths, opts: ArgvOptions, guest: GuestDevices = NO_GUEST_DEVICES,
): string[] {
  const arch: Arch = machine.arch;
  const argv: string[] = [
    '-name', qemuOpts(qemuProcessName(opts.sessionId), { process: qemuProcessName(opts.sessionId) }),
    '-nodefaults', '-no-user-config',
    ...machineArgs(arch, opts.accel),
    '-smp', String(request.cpus),
    '-m', `${request.memoryMiB}M`,
    ...firmwareArgs(machine, opts),
    ...overlayFdArgs(opts.overlayFds),
    ...diskArgs(machine, opts.overlayFds ? '/dev/fdset/1' : paths.overlay),
    ...seedArgs(machine, guest.seedIso),
    ...shareArgs(guest.shares),
    ...vfioArgs(arch, guest.gpus ?? []),
    ...displayArgs(arch, machine.display ?? null),
    ...agentArgs(machine, paths.qgaSocket, opts.vdagentLater ?? false),
    '-device', qemuOpts('virtio-balloon-pci', { id: 'balloon0' }),
    ...networkArgs(opts.network),
    // The display is QEMU's own VNC on a Unix socket in the 0700 run dir; only a
    // Slurm job, reached from another host, listens on TCP, and then with a password.
    // force-shared: a viewer cannot kick the others off by asking for exclusive access.
    '-display', 'none',
    ...vncArgs(paths, opts),
    '-qmp', qemuOpts(`unix:${escapeInline(paths.qmpSocket)}`, { server: true, wait: false }),
    '-chardev', qemuOpts('file', { id: 'serial0', path: paths.serialLog }),
    '-serial', 'chardev:serial0',
    '-monitor', 'none',
    '-pidfile', paths.pidFile,
  ];
  if (opts.sandbox) {
    // -runas needs setuid/setgid after the filter is installed, so privilege
    // elevation can only be denied when QEMU is not dropping privileges itself.
    argv.push('-sandbox', qemuOpts('on', {
      obsolete: 'deny',
      elevateprivileges: opts.runAs ? 'allow' : 'deny',
      spawn: 'deny',
      resourcecontrol: 'deny',
    }));
  }
  if (opts.runAs) argv.push('-runas', opts.runAs);
  return argv;
}

function vncArgs(paths: VmPaths, opts: ArgvOptions): string[] {
  if (!opts.vncTcp) return ['-vnc', qemuOpts(`unix:${escapeInline(paths.vncSocket)}`, { share: 'force-shared' })];
  return [
    '-object', qemuOpts('secret', { id: 'vncpw', file: opts.vncTcp.secretFile, format: 'raw' }),
    '-vnc', qemuOpts(escapeInline(opts.vncTcp.listen), { 'password-secret': 'vncpw', share: 'force-shared' }),
  ];
}

function escapeInline(value: string): string {
  return value.replaceAll(',', ',,');
}

function overlayFdArgs(fds: ArgvOptions['overlayFds']): string[] {
  if (!fds) return [];
  return [
    '-add-fd', qemuOpts(`fd=${fds.readWrite}`, { set: 1, opaque: 'overlay-rw' }),
    '-add-fd', qemuOpts(`fd=${fds.readOnly}`, { set: 1, opaque: 'overlay-ro' }),
  ];
}

function machineArgs(arch: Arch, accel: ResolvedAccel): string[] {
  const cpu = accel === 'kvm' ? 'host' : arch === 'aarch64' ? 'max' : 'qemu64';
  const type = arch === 'aarch64' ? 'virt' : 'pc';
  return ['-machine', qemuOpts(type, { accel }), '-cpu', cpu];
}

function firmwareArgs(machine: Machine, opts: ArgvOptions): string[] {
  if (machine.arch === 'aarch64' || machine.firmware === 'uefi') return ['-bios', opts.uefiFirmware];
  return [];
}

function diskArgs(machine: Machine, overlay: string): string[] {
  const args: string[] = [];
  const needsScsi = machine.diskInterface === 'scsi' || (machine.format === 'iso' && machine.arch === 'aarch64');
  if (needsScsi) args.push('-device', qemuOpts('virtio-scsi-pci', { id: 'scsi0' }));
  if (machine.diskInterface === 'scsi') {
    args.push(
      '-drive',
      qemuOpts(`file=${escapeInline(overlay)}`, { format: 'qcow2', if: 'none', id: 'disk0', discard: 'unmap' }),
    );
    args.push(
      '-device', qemuOpts('scsi-hd', { drive: 'disk0', bus: 'scsi0.0', bootindex: machine.format === 'iso' ? 2 : 1 }),
    );
  } else {
    args.push(
      '-drive',
      qemuOpts(`file=${escapeInline(overlay)}`, { format: 'qcow2', if: 'none', id: 'disk0', discard: 'unmap' }),
    );
    const device = machine.diskInterface === 'ide' ? 'ide-hd' : 'virtio-blk-pci';
    args.push('-device', qemuOpts(device, { drive: 'disk0', bootindex: machine.format === 'iso' ? 2 : 1 }));
  }
  if (machine.format === 'iso') {
    // The ISO is the master: attached read-only, the session writes to the blank disk.
    args.push(
      '-drive',
      qemuOpts(
        `file=${escapeInline(machine.image)}`, { format: 'raw', if: 'none', id: 'cd0', media: 'cdrom', readonly: true },
      ),
    );
    const cd = needsScsi ? qemuOpts(
      'scsi-cd', { drive: 'cd0', bus: 'scsi0.0', bootindex: 1 },
    ) : qemuOpts('ide-cd', { drive: 'cd0', bootindex: 1 });
    args.push('-device', cd);
  }
  return args;
}

/** The cloud-init NoCloud seed, read-only, as a second CD-ROM. */
function seedArgs(machine: Machine, seedIso: string | null): string[] {
  if (!seedIso) return [];
  const args = [
    '-drive',
    qemuOpts(
      `file=${escapeInline(seedIso)}`, { format: 'raw', if: 'none', id: 'seed0', media: 'cdrom', readonly: true },
    ),
  ];
  if (machine.arch === 'aarch64') {
    if (!(machine.diskInterface === 'scsi' || machine.format === 'iso')) {
      args.push('-device', qemuOpts('virtio-scsi-pci', { id: 'scsi0' }));
    }
    args.push('-device', qemuOpts('scsi-cd', { drive: 'seed0', bus: 'scsi0.0' }));
  } else {
    args.push('-device', qemuOpts('ide-cd', { drive: 'seed0' }));
  }
  return args;
}

/**
 * Host folders over virtio-9p. Read-only folders use security_model=none (the
 * guest sees host ownership and cannot write); read-write folders use
 * mapped-xattr (files are created as QEMU's user, guest owners and modes are
 * kept in extended attributes, never applied to the host).
 */
function shareArgs(shares: GuestDevices['shares']): string[] {
  return shares.flatMap((share, i) => [
    '-fsdev',
    qemuOpts(
      'local',
      {
        id: `fs${i}`, path: share.path, security_model: share.readonly ? 'none' : 'mapped-xattr',
        readonly: share.readonly ? true : undefined,
      },
    ),
    '-device', qemuOpts('virtio-9p-pci', { fsdev: `fs${i}`, mount_tag: share.tag }),
  ]);
}

/**
 * VFIO passthrough: each host PCI device (domain:bus:slot) of a GPU unit keeps
 * its functions together in one guest slot (function 0 multifunction=on, the
 * others .1, .2 …); slots from 0x10 on. An IOMMU group with two cards thus
 * gives two guest slots. The emulated VGA stays the primary display that VNC shows.
 */
function vfioArgs(arch: Arch, gpus: readonly (readonly string[])[]): string[] {
  const bus = arch === 'aarch64' ? 'pcie.0' : 'pci.0';
  const slots = gpus.flatMap((functions) => {
    const byDevice = new Map<string, string[]>();
    for (const host of functions) {
      const device = host.replace(/\.[0-7]$/, '');
      byDevice.set(device, [...(byDevice.get(device) ?? []), host]);
    }
    return [...byDevice.values()];
  });
  return slots.flatMap((functions, g) => functions.flatMap((host, f) => [
    '-device',
    qemuOpts(
      'vfio-pci',
      {
        host, bus, addr: `0x${(0x10 + g).toString(16)}.${f}`,
        multifunction: f === 0 && functions.length > 1 ? true : undefined,
      },
    ),
  ]));
}

/**
 * The display adapter and input devices. display null (absent from the
 * descriptor) is the architecture's default, exactly as before the key existed.
 * With -nodefaults there is no implicit VGA, so a -device adapter is the only one.
 * Device names checked against QEMU 7.2 (`-device help` and a start with each):
 * x86_64 pc has VGA, virtio-vga, qxl-vga; aarch64 virt has virtio-gpu-pci only
 * (the descriptor refuses std and qxl there, so this never sees them).
 */
function displayArgs(arch: Arch, display: MachineDisplay | null): string[] {
  const usb = ['-device', qemuOpts('qemu-xhci', { id: 'xhci' }), '-device', qemuOpts('usb-tablet', { bus: 'xhci.0' })];
  // x86 'pc' has a PS/2 keyboard built in; aarch64 'virt' needs a USB one.
  if (arch === 'aarch64') {
    return ['-device', 'virtio-gpu-pci', ...usb, '-device', qemuOpts('usb-kbd', { bus: 'xhci.0' })];
  }
  if (display === 'virtio') return ['-device', 'virtio-vga', ...usb];
  if (display === 'qxl') return ['-device', 'qxl-vga', ...usb];
  return ['-vga', 'std', ...usb];
}

/**
 * The guest agents' ports, on one virtio-serial bus.
 * spice-vdagent in the guest talks over the virtio-serial port
 * com.redhat.spice.0; QEMU's qemu-vdagent chardev answers it and, with
 * clipboard=on, joins the guest's clipboard to QEMU's, which QEMU's VNC server
 * offers to viewers through the Extended Clipboard pseudo-encoding. Whether a
 * viewer may use it is the bridge's decision (src/bridge/clipboard-policy.ts).
 * qemu-guest-agent (guestAgent: true) listens on the port named
 * org.qemu.guest_agent.0, which QEMU joins to a Unix socket in the 0700 run dir
 * (QGA's JSON protocol: the broker and tests reach the guest without a network).
 */
function agentArgs(machine: Machine, qgaSocket: string, vdagentLater: boolean): string[] {
  const vdagent = machine.agent === 'spice-vdagent';
  const qga = machine.guestAgent === true;
  if (!vdagent && !qga) return [];
  // Fixed port numbers (nr): a saved state and the VM that loads it must number the ports alike, whether the
  // clipboard port is there or plugged in later.
  const { chardev, device } = VDAGENT_PLUG;
  return [
    '-device', qemuOpts('virtio-serial-pci', { id: 'vserial0' }),
    ...(vdagent && !vdagentLater ? [
      '-chardev', qemuOpts(chardev.backend.type, { id: chardev.id, name: 'vdagent', clipboard: true }),
      '-device', qemuOpts(device.driver, { chardev: device.chardev, name: device.name, id: device.id, nr: device.nr }),
    ] : []),
    ...(qga ? [
      '-chardev', qemuOpts('socket', { path: qgaSocket, server: true, wait: false, id: 'qga0' }),
      '-device', qemuOpts('virtserialport', { chardev: 'qga0', name: 'org.qemu.guest_agent.0', id: 'qgaport0', nr: 2 }),
    ] : []),
  ];
}

function networkArgs(network: 'user' | 'none'): string[] {
  if (network === 'none') return [];
  return ['-nic', qemuOpts('user', { model: 'virtio-net-pci' })];
}
