// VFIO GPU discovery from sysfs (the root is configurable so tests use fixture
// trees). A GPU is a PCI display-class device (class 0x03xxxx). It can be passed
// through when it and every other endpoint of its IOMMU group (typically its
// HDMI audio function) are bound to vfio-pci: the whole group goes to one VM.
// PCI bridges in the group stay with the host. Read-only: claims live in the store.
import fs from 'node:fs';
import path from 'node:path';

export interface PciFunction {
  address: string;
  classCode: string;
  vendor: string;
  device: string;
  driver: string | null;
}

export interface GpuDevice extends PciFunction {
  iommuGroup: string | null;
  /** Every function to pass to the VM (the GPU first, then its group mates). */
  functions: PciFunction[];
  usable: boolean;
  /** Why not usable (empty when usable). */
  reason: string;
}

const PCI_BRIDGE = /^0x0604/;

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

function linkName(file: string): string | null {
  try {
    return path.basename(fs.readlinkSync(file));
  } catch {
    return null;
  }
}

export function readPciFunction(root: string, address: string): PciFunction {
  const dir = path.join(root, 'sys/bus/pci/devices', address);
  return {
    address,
    classCode: readText(path.join(dir, 'class')) ?? '0x000000',
    vendor: readText(path.join(dir, 'vendor')) ?? '0x0000',
    device: readText(path.join(dir, 'device')) ?? '0x0000',
    driver: linkName(path.join(dir, 'driver')),
  };
}

export function discoverGpus(root = '/', exclude: readonly string[] = []): GpuDevice[] {
  const devicesDir = path.join(root, 'sys/bus/pci/devices');
  let addresses: string[];
  try {
    addresses = fs.readdirSync(devicesDir).sort();
  } catch {
    return [];
  }
  const gpus: GpuDevice[] = [];
  for (const address of addresses) {
    const fn = readPciFunction(root, address);
    if (!fn.classCode.startsWith('0x03')) continue;
    const group = linkName(path.join(devicesDir, address, 'iommu_group'));
    const base = { ...fn, iommuGroup: group, functions: [fn] };
    if (exclude.includes(address)) {
      gpus.push({ ...base, usable: false, reason: 'excluded by gpu.exclude in the config' });
      continue;
    }
    if (!group) {
      gpus.push({ ...base, usable: false, reason: 'no IOMMU group: the IOMMU is off (enable VT-d/AMD-Vi in the firmware and intel_iommu=on or amd_iommu=on on the kernel command line)' });
      continue;
    }
    let members: string[];
    try {
      members = fs.readdirSync(path.join(root, 'sys/kernel/iommu_groups', group, 'devices')).sort();
    } catch {
      members = [address];
    }
    const endpoints = members.map((m) => (m === address ? fn : readPciFunction(root, m))).filter((m) => !PCI_BRIDGE.test(m.classCode));
    const functions = [fn, ...endpoints.filter((m) => m.address !== address)];
    const notVfio = functions.filter((m) => m.driver !== 'vfio-pci');
    const reason = notVfio.length
      ? `IOMMU group ${group} has ${notVfio.map((m) => `${m.address} bound to ${m.driver ?? 'no driver'}`).join(', ')}; every device of the group must be bound to vfio-pci`
      : '';
    gpus.push({ ...base, functions, usable: notVfio.length === 0, reason });
  }
  return gpus;
}
