// Fixture sysfs trees for GPU tests: PCI devices with class, ids, a driver
// symlink and an IOMMU group, laid out as the kernel does under /sys.
import fs from 'node:fs';
import path from 'node:path';

export interface FixtureFunction {
  address: string;
  classCode: string;
  driver: string | null;
  group: string | null;
  vendor?: string;
  device?: string;
}

export function makeSysfs(root: string, functions: FixtureFunction[], opts: { modules?: string[]; devVfio?: boolean } = {}): string {
  const devices = path.join(root, 'sys/bus/pci/devices');
  fs.mkdirSync(devices, { recursive: true });
  fs.mkdirSync(path.join(root, 'sys/kernel/iommu_groups'), { recursive: true });
  for (const fn of functions) {
    // The real device directory lives under /sys/devices; /sys/bus/pci/devices links to it.
    const real = path.join(root, 'sys/devices/pci0000:00', fn.address);
    fs.mkdirSync(real, { recursive: true });
    fs.writeFileSync(path.join(real, 'class'), `${fn.classCode}\n`);
    fs.writeFileSync(path.join(real, 'vendor'), `${fn.vendor ?? '0x10de'}\n`);
    fs.writeFileSync(path.join(real, 'device'), `${fn.device ?? '0x1eb8'}\n`);
    if (fn.driver) {
      const driverDir = path.join(root, 'sys/bus/pci/drivers', fn.driver);
      fs.mkdirSync(driverDir, { recursive: true });
      fs.symlinkSync(driverDir, path.join(real, 'driver'));
    }
    if (fn.group) {
      const groupDir = path.join(root, 'sys/kernel/iommu_groups', fn.group, 'devices');
      fs.mkdirSync(groupDir, { recursive: true });
      fs.symlinkSync(real, path.join(groupDir, fn.address));
      fs.symlinkSync(path.join(root, 'sys/kernel/iommu_groups', fn.group), path.join(real, 'iommu_group'));
    }
    fs.symlinkSync(real, path.join(devices, fn.address));
  }
  for (const m of opts.modules ?? []) fs.mkdirSync(path.join(root, 'sys/module', m), { recursive: true });
  if (opts.devVfio) {
    fs.mkdirSync(path.join(root, 'dev/vfio'), { recursive: true });
    fs.writeFileSync(path.join(root, 'dev/vfio/vfio'), '');
  }
  fs.mkdirSync(path.join(root, 'proc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'proc/cmdline'), 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt\n');
  return root;
}

export const GPU = (address: string, group: string | null, driver: string | null = 'vfio-pci'): FixtureFunction => ({ address, classCode: '0x030000', driver, group });
export const AUDIO = (address: string, group: string | null, driver: string | null = 'vfio-pci'): FixtureFunction => ({ address, classCode: '0x040300', driver, group, device: '0x10f8' });
export const BRIDGE = (address: string, group: string): FixtureFunction => ({ address, classCode: '0x060400', driver: 'pcieport', group, vendor: '0x8086', device: '0x1901' });
export const NIC = (address: string, group: string, driver = 'e1000e'): FixtureFunction => ({ address, classCode: '0x020000', driver, group, vendor: '0x8086', device: '0x15b8' });
