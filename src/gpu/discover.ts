// VFIO GPU discovery from sysfs (the root is configurable so tests use fixture
// trees). A GPU is a PCI display-class device (class 0x03xxxx). The unit of
// passthrough is its IOMMU group: the kernel can only isolate the group as a
// whole, so every endpoint of the group (the GPU's HDMI audio function, a
// second GPU that shares the group) goes to one VM, and one entry is made per
// group however many display functions it has. The unit is usable when every
// endpoint is bound to vfio-pci. PCI bridges in the group stay with the host.
// Read-only: claims live in the store (one row per function, see store/db.ts).
import fs from 'node:fs';
import path from 'node:path';

export interface PciFunction {
  address: string;
  classCode: string;
  vendor: string;
  device: string;
  driver: string | null;
}

/** One passable unit: an IOMMU group with at least one display function (the first one describes it). */
export interface GpuDevice extends PciFunction {
  iommuGroup: string | null;
  /** The display functions of the unit (several when GPUs share a group), the first is `address`. */
  displayFunctions: string[];
  /** Every function to pass to the VM, and to claim (display functions first, then their group mates). */
  functions: PciFunction[];
  usable: boolean;
  /** Why not usable (empty when usable). */
  reason: string;
}

const PCI_BRIDGE = /^0x0604/;
const isDisplay = (fn: PciFunction) => fn.classCode.startsWith('0x03');

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null; // absent attribute: the caller uses a neutral default
  }
}

function linkName(file: string): string | null {
  try {
    return path.basename(fs.readlinkSync(file));
  } catch {
    return null; // no link: no driver bound, or no IOMMU group
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
    return []; // no PCI bus under this root: no GPU to offer
  }
  const units: GpuDevice[] = [];
  const byGroup = new Map<string, GpuDevice>();
  for (const address of addresses) {
    const fn = readPciFunction(root, address);
    if (!isDisplay(fn)) continue;
    const group = linkName(path.join(devicesDir, address, 'iommu_group'));
    const seen = group === null ? undefined : byGroup.get(group);
    if (seen) continue; // a second GPU of an already listed group: it is part of that unit
    const base = { ...fn, iommuGroup: group, displayFunctions: [address], functions: [fn] };
    if (!group) {
      if (exclude.includes(address)) {
        units.push({ ...base, usable: false, reason: 'excluded by gpu.exclude in the config' });
      }
      else units.push({
        ...base, usable: false,
        reason: 'no IOMMU group: the IOMMU is off (enable VT-d or AMD-Vi/IOMMU in the firmware; on Intel add ' +
          'intel_iommu=on to the kernel command line)',
      });
      continue;
    }
    let members: string[];
    try {
      members = fs.readdirSync(path.join(root, 'sys/kernel/iommu_groups', group, 'devices')).sort();
    } catch {
      members = [address]; // unreadable group listing: the GPU alone is what we know of
    }
    const endpoints = members.map((m) => (m === address ? fn : readPciFunction(root, m)))
      .filter((m) => !PCI_BRIDGE.test(m.classCode));
    const displays = endpoints.filter(isDisplay);
    if (!displays.some((d) => d.address === address)) displays.unshift(fn);
    const functions = [...displays, ...endpoints.filter((m) => !isDisplay(m))];
    const displayFunctions = displays.map((d) => d.address);
    const excluded = functions.filter((m) => exclude.includes(m.address));
    const notVfio = functions.filter((m) => m.driver !== 'vfio-pci');
    const shared = displayFunctions.length > 1
      ? ` (GPUs ${displayFunctions.join(', ')} share IOMMU group ${group} and are passed together)`
      : '';
    const reason = excluded.length
      ? `excluded by gpu.exclude in the config (${excluded.map((m) => m.address).join(', ')} of IOMMU group ${group})`
      : notVfio.length
        ? `IOMMU group ${group} has ` +
          `${notVfio.map((m) => `${m.address} bound to ${m.driver ?? 'no driver'}`).join(', ')}; every device of the ` +
          `group must be bound to vfio-pci${shared}`
        : '';
    const unit: GpuDevice = { ...base, displayFunctions, functions, usable: reason === '', reason };
    byGroup.set(group, unit);
    units.push(unit);
  }
  return units;
}
