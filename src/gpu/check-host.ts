// The host-side prerequisites of VFIO passthrough, each with what to change
// when it is missing (qwdctl gpu check). Reads a configurable root.
import fs from 'node:fs';
import path from 'node:path';

export interface HostCheck {
  name: string;
  ok: boolean;
  detail: string;
  fix: string;
}

export function checkVfioHost(root = '/', largestGuestMiB = 0, memlockBytes: number | 'unlimited' | null = readMemlock()): HostCheck[] {
  const at = (p: string) => path.join(root, p);
  const groups = (() => {
    try {
      return fs.readdirSync(at('sys/kernel/iommu_groups')).length;
    } catch {
      return 0;
    }
  })();
  const cmdline = (() => {
    try {
      return fs.readFileSync(at('proc/cmdline'), 'utf8');
    } catch {
      return '';
    }
  })();
  const checks: HostCheck[] = [
    {
      name: 'IOMMU enabled',
      ok: groups > 0,
      detail: groups > 0 ? `${groups} IOMMU groups${/(intel|amd)_iommu=on/.test(cmdline) ? '' : ' (no intel_iommu=on / amd_iommu=on on the command line: enabled by default on this kernel)'}` : 'no IOMMU groups in /sys/kernel/iommu_groups',
      fix: 'enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup, add intel_iommu=on iommu=pt (or amd_iommu=on iommu=pt) to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub and reboot',
    },
    {
      name: 'vfio-pci module loaded',
      ok: fs.existsSync(at('sys/module/vfio_pci')),
      detail: fs.existsSync(at('sys/module/vfio_pci')) ? 'vfio_pci is loaded' : 'vfio_pci is not loaded',
      fix: 'echo vfio-pci >> /etc/modules-load.d/vfio.conf and modprobe vfio-pci (see GPU.md for binding the GPU at boot)',
    },
    {
      name: 'VFIO IOMMU driver',
      ok: fs.existsSync(at('sys/module/vfio_iommu_type1')),
      detail: fs.existsSync(at('sys/module/vfio_iommu_type1')) ? 'vfio_iommu_type1 is loaded' : 'vfio_iommu_type1 is not loaded',
      fix: 'modprobe vfio_iommu_type1 (loaded automatically with vfio-pci on Debian 12)',
    },
    {
      name: '/dev/vfio/vfio',
      ok: fs.existsSync(at('dev/vfio/vfio')),
      detail: fs.existsSync(at('dev/vfio/vfio')) ? 'present' : 'missing',
      fix: 'load vfio-pci; the device node appears with the vfio module',
    },
  ];
  const needBytes = largestGuestMiB * 1048576;
  const memlockOk = memlockBytes === 'unlimited' || (memlockBytes !== null && memlockBytes >= needBytes);
  checks.push({
    name: 'memlock limit',
    ok: memlockOk,
    detail: memlockBytes === null ? 'unknown' : memlockBytes === 'unlimited' ? 'unlimited' : `${Math.floor(memlockBytes / 1048576)} MiB (the largest guest needs ${largestGuestMiB} MiB locked)`,
    fix: 'VFIO pins all guest memory: set LimitMEMLOCK=infinity in the systemd unit (etc/systemd/qemu-web-desktop.service does) or a memlock line in /etc/security/limits.d/ for the service user',
  });
  return checks;
}

/** Max locked memory of this process (inherited by the QEMU it spawns). */
export function readMemlock(): number | 'unlimited' | null {
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max locked memory'));
    const soft = line?.split(/\s{2,}/)[1]?.trim();
    if (!soft) return null;
    return soft === 'unlimited' ? 'unlimited' : Number(soft);
  } catch {
    return null;
  }
}
