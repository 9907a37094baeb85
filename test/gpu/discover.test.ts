import test from 'ava';
import { discoverGpus } from '../../src/gpu/discover.js';
import { checkVfioHost } from '../../src/gpu/check-host.js';
import { buildQemuArgv } from '../../src/qemu/argv.js';
import { tempDir } from '../helpers/env.js';
import { AUDIO, BRIDGE, GPU, NIC, makeSysfs } from '../helpers/sysfs.js';
import type { Machine } from '../../src/catalog/descriptor.js';

const machine: Machine = {
  name: 'm', description: 'm', image: '/srv/m.qcow2', format: 'qcow2', arch: 'x86_64', firmware: 'bios', diskInterface: 'virtio', cpus: { default: 1, max: 4 },
  memoryMiB: { default: 1024, max: 4096 }, isoDiskGiB: null, maxSessions: null, url: null, sha256: null, shares: [], bootScripts: { delivery: 'cloud-init', allowUserScripts: false, scripts: [] }, file: '/srv/m.yml',
};
const paths = { overlay: '/r/disk.qcow2', qmpSocket: '/r/qmp.sock', vncSocket: '/r/vnc.sock', serialLog: '/r/serial.log', pidFile: '/r/qemu.pid' };
const opts = { sessionId: 'abc', accel: 'kvm' as const, sandbox: true, runAs: null, network: 'user' as const, uefiFirmware: '/x' };
const vfio = (gpus: string[][]) => { const a = buildQemuArgv(machine, { cpus: 1, memoryMiB: 1024 }, paths, opts, { shares: [], seedIso: null, gpus }); return a.flatMap((x, i) => (a[i - 1] === '-device' && x.startsWith('vfio-pci') ? [x] : [])); };

test('a single GPU alone in its group, bound to vfio-pci', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1')]);
  const [gpu] = discoverGpus(root);
  t.is(gpu!.usable, true);
  t.deepEqual(gpu!.functions.map((f) => f.address), ['0000:01:00.0']);
  t.is(gpu!.iommuGroup, '1');
  t.deepEqual(vfio([gpu!.functions.map((f) => f.address)]), ['vfio-pci,host=0000:01:00.0,bus=pci.0,addr=0x10.0']);
});

test('GPU + its audio function in one group: both passed, one multifunction slot; bridges stay', (t) => {
  const root = makeSysfs(tempDir(t), [BRIDGE('0000:00:01.0', '2'), GPU('0000:01:00.0', '2'), AUDIO('0000:01:00.1', '2')]);
  const gpus = discoverGpus(root);
  t.is(gpus.length, 1, 'audio is not a GPU');
  t.true(gpus[0]!.usable);
  t.deepEqual(gpus[0]!.functions.map((f) => f.address), ['0000:01:00.0', '0000:01:00.1']);
  t.deepEqual(vfio([gpus[0]!.functions.map((f) => f.address)]), [
    'vfio-pci,host=0000:01:00.0,bus=pci.0,addr=0x10.0,multifunction=on',
    'vfio-pci,host=0000:01:00.1,bus=pci.0,addr=0x10.1',
  ]);
});

test('a group with a device not bound to vfio-pci is not usable, with the reason', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '3'), AUDIO('0000:01:00.1', '3', 'snd_hda_intel'), NIC('0000:02:00.0', '3')]);
  const [gpu] = discoverGpus(root);
  t.false(gpu!.usable);
  t.regex(gpu!.reason, /IOMMU group 3 has 0000:01:00\.1 bound to snd_hda_intel, 0000:02:00\.0 bound to e1000e; every device of the group must be bound to vfio-pci/);
});

test('a GPU on its host driver is listed as not usable', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1', 'nouveau')]);
  t.regex(discoverGpus(root)[0]!.reason, /0000:01:00\.0 bound to nouveau/);
});

test('no IOMMU: GPUs without a group are not usable, and the host check says what to change', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', null)]);
  const [gpu] = discoverGpus(root);
  t.false(gpu!.usable);
  t.regex(gpu!.reason, /IOMMU is off.*intel_iommu=on/);
  const checks = checkVfioHost(root, 4096, 64 * 1048576);
  const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
  t.false(byName['IOMMU enabled']!.ok);
  t.regex(byName['IOMMU enabled']!.fix, /update-grub/);
  t.false(byName['vfio-pci module loaded']!.ok);
  t.false(byName['memlock limit']!.ok);
  t.regex(byName['memlock limit']!.detail, /64 MiB \(the largest guest needs 4096 MiB locked\)/);
});

test('a prepared host passes every check', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1')], { modules: ['vfio_pci', 'vfio_iommu_type1'], devVfio: true });
  t.true(checkVfioHost(root, 4096, 'unlimited').every((c) => c.ok));
});

test('excluded devices, and hosts without any GPU', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1'), GPU('0000:02:00.0', '4')]);
  const gpus = discoverGpus(root, ['0000:01:00.0']);
  t.deepEqual(gpus.map((g) => [g.address, g.usable]), [['0000:01:00.0', false], ['0000:02:00.0', true]]);
  t.regex(gpus[0]!.reason, /excluded/);
  t.deepEqual(discoverGpus(makeSysfs(tempDir(t), [NIC('0000:03:00.0', '5')])), []);
  t.deepEqual(discoverGpus(tempDir(t)), []);
});

test('two GPUs get two guest slots', (t) => {
  t.deepEqual(vfio([['0000:01:00.0'], ['0000:02:00.0', '0000:02:00.1']]), [
    'vfio-pci,host=0000:01:00.0,bus=pci.0,addr=0x10.0',
    'vfio-pci,host=0000:02:00.0,bus=pci.0,addr=0x11.0,multifunction=on',
    'vfio-pci,host=0000:02:00.1,bus=pci.0,addr=0x11.1',
  ]);
});
