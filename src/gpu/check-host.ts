// The host-side prerequisites of VFIO passthrough, each with what to change
// when it is missing (qwdctl gpu check). Reads a configurable root for sysfs,
// /proc/cmdline and /dev/vfio (tests use fixture trees); the memlock limit is
// read from a live process (/proc/<pid>/limits of the broker when its pid is
// known) or from the installed systemd unit, and the check says which.
// The parsers are pure and exported for tests.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface HostCheck {
  name: string;
  ok: boolean;
  detail: string;
  fix: string;
}

export type MemlockBytes = number | 'unlimited';

/** A memlock limit and where it was read from (shown to the admin: it is the broker's that matters). */
export interface MemlockReading {
  bytes: MemlockBytes | null;
  source: string;
}

/** Who the broker runs as, to check /dev/vfio/<group> access for it rather than for qwdctl. */
export interface ProcessIdentity {
  pid: number | null;
  uid: number;
  gids: number[];
}

export const SYSTEMD_UNIT = 'qemu-web-desktop.service';
export const INSTALLED_UNIT = `/etc/systemd/system/${SYSTEMD_UNIT}`;

/** The soft "Max locked memory" of a /proc/<pid>/limits text (bytes), or null. */
export function parseProcLimitsMemlock(text: string): MemlockBytes | null {
  const m = /^Max locked memory\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return null;
  return m[1] === 'unlimited' ? 'unlimited' : /^\d+$/.test(m[1]!) ? Number(m[1]) : null;
}

const SUFFIX: Record<string, number> = {
  '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4, P: 1024 ** 5, E: 1024 ** 6,
};

/**
 * LimitMEMLOCK= of systemd unit texts given in the order systemd reads them
 * (unit, then drop-ins): the last assignment wins, an empty one resets it.
 * Values per systemd.exec(5): "infinity", bytes with an optional 1024-based
 * K/M/G/T/P/E suffix, or "soft:hard" (the soft limit is what applies).
 * undefined: not set (systemd's DefaultLimitMEMLOCK applies); null: unparsable.
 */
export function parseUnitMemlock(...texts: string[]): MemlockBytes | null | undefined {
  let value: string | undefined;
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const m = /^\s*LimitMEMLOCK\s*=\s*(.*?)\s*$/.exec(line);
      if (m) value = m[1] === '' ? undefined : m[1];
    }
  }
  if (value === undefined) return undefined;
  const soft = value.split(':')[0]!.trim();
  if (soft === 'infinity') return 'unlimited';
  const n = /^(\d+)\s*([BKMGTPE]?)$/i.exec(soft);
  return n ? Number(n[1]) * SUFFIX[n[2]!.toUpperCase()]! : null;
}

/** Uid and supplementary/primary groups of a /proc/<pid>/status text. */
export function parseProcStatusIdentity(text: string): { uid: number; gids: number[] } | null {
  const uid = /^Uid:\s+\d+\s+(\d+)/m.exec(text); // effective uid
  const gid = /^Gid:\s+\d+\s+(\d+)/m.exec(text);
  const groups = /^Groups:[ \t]*([\d \t]*)$/m.exec(text);
  if (!uid || !gid) return null;
  const extra = (groups?.[1] ?? '').split(/\s+/).filter(Boolean).map(Number);
  return { uid: Number(uid[1]), gids: [...new Set([Number(gid[1]), ...extra])] };
}

/** Whether uid/gids may open a device node read-write (classic Unix permission bits; root always may). */
export function mayReadWrite(
  stat: { mode: number; uid: number; gid: number }, who: { uid: number; gids: readonly number[] },
): boolean {
  if (who.uid === 0) return true;
  const bits = who.uid === stat.uid
    ? (stat.mode >> 6) & 7
    : who.gids.includes(stat.gid) ? (stat.mode >> 3) & 7 : stat.mode & 7;
  return (bits & 6) === 6;
}

/** The main pid of the broker's systemd unit, or null (not installed, not running, no systemd). */
export function systemdMainPid(unit = SYSTEMD_UNIT): number | null {
  const out = spawnSync(
    'systemctl', ['show', '--property=MainPID', '--value', unit], { encoding: 'utf8', timeout: 3000 },
  );
  // No systemctl (ENOENT), or not running: there is no broker pid to read.
  if (out.error || out.status !== 0) return null;
  const pid = Number(out.stdout.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null; // absent or unreadable: the caller falls back to the next source
  }
}

/**
 * The memlock limit QEMU will get: it inherits the broker's. In order: the
 * broker process (brokerPid), the installed systemd unit and its drop-ins,
 * and last this qwdctl process (right only when the broker is started from
 * the same login shell).
 */
export function readBrokerMemlock(
  opts: { brokerPid?: number | null; unitFile?: string; procRoot?: string } = {}
): MemlockReading {
  const procRoot = opts.procRoot ?? '/proc';
  if (opts.brokerPid) {
    const file = path.join(procRoot, String(opts.brokerPid), 'limits');
    const text = readOrNull(file);
    if (text !== null) {
      return { bytes: parseProcLimitsMemlock(text), source: `the running broker (pid ${opts.brokerPid}, ${file})` };
    }
  }
  const unitFile = opts.unitFile ?? INSTALLED_UNIT;
  const unit = readOrNull(unitFile);
  if (unit !== null) {
    const dropInDir = `${unitFile}.d`;
    const dropIns = (() => {
      try {
        return fs.readdirSync(dropInDir).filter((f) => f.endsWith('.conf')).sort()
          .map((f) => readOrNull(path.join(dropInDir, f)) ?? '');
      } catch {
        return []; // no drop-in directory
      }
    })();
    const bytes = parseUnitMemlock(unit, ...dropIns);
    if (bytes === undefined) {
      return {
        bytes: null,
        source: `LimitMEMLOCK in ${unitFile} (not set there: systemd's DefaultLimitMEMLOCK applies, usually 8 MiB)`,
      };
    }
    return {
      bytes,
      source: `LimitMEMLOCK in ${unitFile}${dropIns.length ? ' and its drop-ins' : ''} (the broker is not running; ` +
        `restart it after a change)`,
    };
  }
  const self = readOrNull(path.join(procRoot, 'self/limits'));
  return {
    bytes: self === null ? null : parseProcLimitsMemlock(self),
    source: `this qwdctl process (no running broker and no ${unitFile}; a broker started from this shell gets the ` +
      `same)`,
  };
}

const MiB = 1048576;
const IOMMU_PT_NOTE = ' (iommu=pt is not on the kernel command line: optional, it spares host devices the DMA ' +
  'translation)';
const showBytes = (b: MemlockBytes) => (b === 'unlimited' ? 'unlimited' : `${Math.floor(b / MiB)} MiB`);

export function checkVfioHost(
  root: string, largestGuestMiB: number, memlock: MemlockReading,
  opts: { usableGroups?: readonly string[]; broker?: ProcessIdentity | null } = {},
): HostCheck[] {
  const at = (p: string) => path.join(root, p);
  const groups = (() => {
    try {
      return fs.readdirSync(at('sys/kernel/iommu_groups')).length;
    } catch {
      return 0; // no such directory: no IOMMU
    }
  })();
  const cmdline = readOrNull(at('proc/cmdline')) ?? '';
  const checks: HostCheck[] = [
    {
      name: 'IOMMU enabled',
      ok: groups > 0,
      detail: groups > 0
        ? `${groups} IOMMU groups${/(^|\s)iommu=pt(\s|$)/.test(cmdline) ? '' : IOMMU_PT_NOTE}`
        : 'no IOMMU groups in /sys/kernel/iommu_groups',
      fix: 'enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup; on Intel add intel_iommu=on iommu=pt to ' +
        'GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub (on AMD the IOMMU is on once the firmware enables it: add ' +
        'iommu=pt only), run update-grub and reboot',
    },
    {
      name: 'vfio-pci module loaded',
      ok: fs.existsSync(at('sys/module/vfio_pci')),
      detail: fs.existsSync(at('sys/module/vfio_pci')) ? 'vfio_pci is loaded' : 'vfio_pci is not loaded',
      fix: 'grep -qx vfio-pci /etc/modules-load.d/vfio.conf || echo vfio-pci >> /etc/modules-load.d/vfio.conf; ' +
        'modprobe vfio-pci (see GPU.md for binding the GPU at boot)',
    },
    {
      name: 'VFIO IOMMU driver',
      ok: fs.existsSync(at('sys/module/vfio_iommu_type1')),
      detail: fs.existsSync(
        at('sys/module/vfio_iommu_type1')
      ) ? 'vfio_iommu_type1 is loaded' : 'vfio_iommu_type1 is not loaded',
      fix: 'modprobe vfio_iommu_type1 (loaded automatically with vfio-pci on Debian 12)',
    },
    {
      name: '/dev/vfio/vfio',
      ok: fs.existsSync(at('dev/vfio/vfio')),
      detail: fs.existsSync(at('dev/vfio/vfio')) ? 'present' : 'missing',
      fix: 'load vfio-pci; the device node appears with the vfio module',
    },
  ];
  const usableGroups = opts.usableGroups ?? [];
  if (usableGroups.length) {
    const who = opts.broker ?? null;
    const whoText = who?.pid
      ? `the broker (pid ${who.pid}, uid ${who.uid})`
      : `this qwdctl process (uid ${process.getuid?.() ?? '?'}; the broker's user needs the same)`;
    const problems = usableGroups.flatMap((g) => {
      const node = at(`dev/vfio/${g}`);
      let stat: fs.Stats;
      try {
        stat = fs.statSync(node);
      } catch {
        return [`/dev/vfio/${g} is missing`];
      }
      if (who) return mayReadWrite(stat, who) ? [] : [`/dev/vfio/${g} is not read-write for uid ${who.uid}`];
      try {
        fs.accessSync(node, fs.constants.R_OK | fs.constants.W_OK);
        return [];
      } catch {
        return [`/dev/vfio/${g} is not read-write`];
      }
    });
    checks.push({
      name: '/dev/vfio/<group> access',
      ok: problems.length === 0,
      detail: `${problems.length
        ? problems.join(', ')
        : usableGroups.map((g) => `/dev/vfio/${g}`).join(', ') + ' read-write'} (checked for ${whoText})`,
      fix: 'a group node appears when all of the group is bound to vfio-pci; give the service user access with a ' +
        'udev rule (SUBSYSTEM=="vfio", GROUP="kvm", MODE="0660") and add the user to that group (GPU.md, "Device ' +
        'access")',
    });
  }
  const needBytes = largestGuestMiB * MiB;
  const memlockOk = memlock.bytes === 'unlimited' || (memlock.bytes !== null && memlock.bytes >= needBytes);
  checks.push({
    name: 'memlock limit',
    ok: memlockOk,
    detail: `${memlock.bytes === null ? 'unknown' : showBytes(memlock.bytes)} (the largest guest needs ` +
      `${largestGuestMiB} MiB locked); checked: ${memlock.source}`,
    fix: 'VFIO pins all guest memory and QEMU inherits the broker\'s limit: set LimitMEMLOCK=infinity in the ' +
      '[Service] section of the broker\'s systemd unit (etc/systemd/qemu-web-desktop.service has it), then systemctl ' +
      'daemon-reload and restart it. /etc/security/limits.d/ applies only to PAM logins (a broker started from a ' +
      'login shell), not to services',
  });
  return checks;
}

/** The broker's uid and groups from /proc/<pid>/status, or null when it cannot be read. */
export function readProcessIdentity(pid: number, procRoot = '/proc'): ProcessIdentity | null {
  const text = readOrNull(path.join(procRoot, String(pid), 'status'));
  const id = text === null ? null : parseProcStatusIdentity(text);
  return id && { pid, ...id };
}
