import test from 'ava';
import { discoverGpus } from '../../src/gpu/discover.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { checkVfioHost, mayReadWrite, parseProcLimitsMemlock, parseProcStatusIdentity, parseUnitMemlock, readBrokerMemlock } from '../../src/gpu/check-host.js';
import { freeGpus, holderOf } from '../../src/gpu/claims.js';
import { buildQemuArgv } from '../../src/qemu/argv.js';
import { tempDir } from '../helpers/env.js';
import { AUDIO, BRIDGE, GPU, NIC, makeSysfs } from '../helpers/sysfs.js';
import type { Machine } from '../../src/catalog/descriptor.js';

const machine: Machine = {
  name: 'm', description: 'm', image: '/srv/m.qcow2', format: 'qcow2', arch: 'x86_64', firmware: 'bios', diskInterface: 'virtio', cpus: { default: 1, max: 4 },
  memoryMiB: { default: 1024, max: 4096 }, isoDiskGiB: null, maxSessions: null, url: null, sha256: null, shares: [], bootScripts: { delivery: 'cloud-init', allowUserScripts: false, scripts: [] }, file: '/srv/m.yml',
};
const paths = { overlay: '/r/disk.qcow2', qmpSocket: '/r/qmp.sock', vncSocket: '/r/vnc.sock', serialLog: '/r/serial.log', pidFile: '/r/qemu.pid', qgaSocket: '/r/qga.sock' };
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
  const checks = checkVfioHost(root, 4096, { bytes: 64 * 1048576, source: 'the running broker (pid 42)' });
  const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
  t.false(byName['IOMMU enabled']!.ok);
  t.regex(byName['IOMMU enabled']!.fix, /update-grub/);
  t.false(byName['vfio-pci module loaded']!.ok);
  t.false(byName['memlock limit']!.ok);
  t.regex(byName['memlock limit']!.detail, /64 MiB \(the largest guest needs 4096 MiB locked\); checked: the running broker \(pid 42\)/);
  t.regex(byName['memlock limit']!.fix, /LimitMEMLOCK=infinity.*limits\.d\/ applies only to PAM logins/);
  t.notRegex(byName['IOMMU enabled']!.fix, /amd_iommu/);
  t.regex(byName['IOMMU enabled']!.fix, /GRUB_CMDLINE_LINUX_DEFAULT/);
});

test('a prepared host passes every check', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1')], { modules: ['vfio_pci', 'vfio_iommu_type1'], devVfio: true });
  fs.writeFileSync(path.join(root, 'dev/vfio/1'), '');
  fs.chmodSync(path.join(root, 'dev/vfio/1'), 0o660);
  const checks = checkVfioHost(root, 4096, { bytes: 'unlimited', source: 'test' }, { usableGroups: ['1'] });
  t.true(checks.every((c) => c.ok), JSON.stringify(checks.filter((c) => !c.ok)));
  t.true(checks.some((c) => c.name === '/dev/vfio/<group> access'));
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

test('two GPUs sharing one IOMMU group are one passable unit with all four functions', (t) => {
  const root = makeSysfs(tempDir(t), [
    BRIDGE('0000:00:01.0', '2'), GPU('0000:01:00.0', '2'), AUDIO('0000:01:00.1', '2'), GPU('0000:02:00.0', '2'), AUDIO('0000:02:00.1', '2'),
    GPU('0000:03:00.0', '5'),
  ]);
  const gpus = discoverGpus(root);
  t.deepEqual(gpus.map((g) => [g.address, g.iommuGroup, g.usable]), [['0000:01:00.0', '2', true], ['0000:03:00.0', '5', true]], 'one entry per group');
  t.deepEqual(gpus[0]!.displayFunctions, ['0000:01:00.0', '0000:02:00.0']);
  t.deepEqual(gpus[0]!.functions.map((f) => f.address), ['0000:01:00.0', '0000:02:00.0', '0000:01:00.1', '0000:02:00.1']);
  // Each host card keeps its own multifunction guest slot.
  t.deepEqual(vfio([gpus[0]!.functions.map((f) => f.address)]), [
    'vfio-pci,host=0000:01:00.0,bus=pci.0,addr=0x10.0,multifunction=on',
    'vfio-pci,host=0000:01:00.1,bus=pci.0,addr=0x10.1',
    'vfio-pci,host=0000:02:00.0,bus=pci.0,addr=0x11.0,multifunction=on',
    'vfio-pci,host=0000:02:00.1,bus=pci.0,addr=0x11.1',
  ]);
});

test('a shared group is not usable when any of its functions is not on vfio-pci or is excluded', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '2'), GPU('0000:02:00.0', '2', 'nouveau')]);
  const [unit, ...rest] = discoverGpus(root);
  t.is(rest.length, 0);
  t.false(unit!.usable);
  t.regex(unit!.reason, /0000:02:00\.0 bound to nouveau.*GPUs 0000:01:00\.0, 0000:02:00\.0 share IOMMU group 2/);
  const excluded = discoverGpus(makeSysfs(tempDir(t), [GPU('0000:01:00.0', '2'), GPU('0000:02:00.0', '2')]), ['0000:02:00.0']);
  t.is(excluded.length, 1);
  t.false(excluded[0]!.usable);
  t.regex(excluded[0]!.reason, /excluded by gpu\.exclude.*0000:02:00\.0 of IOMMU group 2/);
});

test('a unit is held as soon as any of its functions is claimed', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '2'), GPU('0000:02:00.0', '2'), GPU('0000:03:00.0', '5')]);
  const gpus = discoverGpus(root);
  const held = new Map([['0000:02:00.0', 'sess-a']]);
  t.is(holderOf(gpus[0]!, held), 'sess-a');
  t.deepEqual(freeGpus(gpus, held).map((g) => g.address), ['0000:03:00.0']);
  t.deepEqual(freeGpus(gpus, new Map()).map((g) => g.address), ['0000:01:00.0', '0000:03:00.0']);
});

const PROC_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max locked memory         8388608              16777216             bytes
Max address space         unlimited            unlimited            bytes
`;

test('the memlock parser reads the soft limit of /proc/<pid>/limits', (t) => {
  t.is(parseProcLimitsMemlock(PROC_LIMITS), 8388608);
  t.is(parseProcLimitsMemlock(PROC_LIMITS.replace('8388608 ', 'unlimited')), 'unlimited');
  t.is(parseProcLimitsMemlock('Limit  Soft Limit\n'), null);
});

test('the unit parser follows systemd.exec: suffixes, infinity, soft:hard, last assignment wins', (t) => {
  t.is(parseUnitMemlock('[Service]\nLimitMEMLOCK=infinity\n'), 'unlimited');
  t.is(parseUnitMemlock('[Service]\nLimitMEMLOCK=64M\n'), 64 * 1048576);
  t.is(parseUnitMemlock('LimitMEMLOCK=8G:infinity'), 8 * 1024 ** 3);
  t.is(parseUnitMemlock('LimitMEMLOCK=infinity', '[Service]\nLimitMEMLOCK=\n'), undefined, 'an empty drop-in assignment resets it');
  t.is(parseUnitMemlock('LimitMEMLOCK=infinity', 'LimitMEMLOCK=1024'), 1024);
  t.is(parseUnitMemlock('[Service]\nExecStart=/bin/true\n'), undefined);
  t.is(parseUnitMemlock('LimitMEMLOCK=lots'), null);
});

test('the memlock check reads the running broker\'s limit by pid, else the installed unit, and says which', async (t) => {
  // A real process stands for the broker: its /proc/<pid>/limits is read, not this test's.
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise((resolve) => child.once('spawn', resolve));
  const own = parseProcLimitsMemlock(fs.readFileSync(`/proc/${child.pid}/limits`, 'utf8'));
  const byPid = readBrokerMemlock({ brokerPid: child.pid!, unitFile: '/nonexistent.service' });
  t.deepEqual(byPid, { bytes: own, source: `the running broker (pid ${child.pid}, /proc/${child.pid}/limits)` });
  const dir = tempDir(t);
  const unitFile = path.join(dir, 'qemu-web-desktop.service');
  fs.writeFileSync(unitFile, '[Service]\nLimitMEMLOCK=infinity\n');
  t.deepEqual(readBrokerMemlock({ brokerPid: null, unitFile }), { bytes: 'unlimited', source: `LimitMEMLOCK in ${unitFile} (the broker is not running; restart it after a change)` });
  fs.mkdirSync(`${unitFile}.d`);
  fs.writeFileSync(path.join(`${unitFile}.d`, 'memlock.conf'), '[Service]\nLimitMEMLOCK=2G\n');
  t.like(readBrokerMemlock({ unitFile }), { bytes: 2 * 1024 ** 3, source: `LimitMEMLOCK in ${unitFile} and its drop-ins (the broker is not running; restart it after a change)` });
  t.regex(readBrokerMemlock({ unitFile: path.join(dir, 'none.service') }).source, /this qwdctl process/);
});

test('/dev/vfio/<group> access is checked for the broker\'s user when known', (t) => {
  const root = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1')], { modules: ['vfio_pci', 'vfio_iommu_type1'], devVfio: true });
  const check = (broker: Parameters<typeof checkVfioHost>[3]) => checkVfioHost(root, 0, { bytes: 'unlimited', source: 't' }, broker).find((c) => c.name === '/dev/vfio/<group> access')!;
  t.regex(check({ usableGroups: ['1'] }).detail, /\/dev\/vfio\/1 is missing/);
  fs.writeFileSync(path.join(root, 'dev/vfio/1'), '');
  fs.chmodSync(path.join(root, 'dev/vfio/1'), 0o600);
  const stat = fs.statSync(path.join(root, 'dev/vfio/1'));
  const stranger = { pid: 4242, uid: stat.uid + 1, gids: [stat.gid + 1] };
  const denied = check({ usableGroups: ['1'], broker: stranger });
  t.false(denied.ok);
  t.regex(denied.detail, new RegExp(`/dev/vfio/1 is not read-write for uid ${stranger.uid} \\(checked for the broker \\(pid 4242`));
  t.regex(denied.fix, /udev rule/);
  fs.chmodSync(path.join(root, 'dev/vfio/1'), 0o660);
  t.true(check({ usableGroups: ['1'], broker: { ...stranger, gids: [stat.gid] } }).ok, 'group kvm-style access');
  t.true(mayReadWrite({ mode: 0o600, uid: 5, gid: 5 }, { uid: 0, gids: [] }), 'root');
  t.false(mayReadWrite({ mode: 0o640, uid: 5, gid: 6 }, { uid: 7, gids: [6] }), 'group read-only');
});

test('the broker\'s identity is read from /proc/<pid>/status', (t) => {
  const status = 'Name:\tnode\nUid:\t998\t999\t999\t999\nGid:\t997\t996\t996\t996\nGroups:\t107 996 \n';
  t.deepEqual(parseProcStatusIdentity(status), { uid: 999, gids: [996, 107] });
  t.deepEqual(parseProcStatusIdentity('Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n'), { uid: 0, gids: [0] });
  t.is(parseProcStatusIdentity('Name: x'), null);
});
