import test from 'ava';
import { buildQemuArgv, type ArgvOptions, type VmPaths } from '../../src/qemu/argv.js';
import { escapeOptionValue, qemuOpts } from '../../src/qemu/escape.js';
import type { Machine } from '../../src/catalog/descriptor.js';

const paths: VmPaths = { overlay: '/run/q/s1/disk.qcow2', qmpSocket: '/run/q/s1/qmp.sock', vncSocket: '/run/q/s1/vnc.sock', serialLog: '/run/q/s1/serial.log', pidFile: '/run/q/s1/qemu.pid',
  qgaSocket: '/run/q/s1/qga.sock' };
const base: Machine = {
  name: 'm', description: 'm', image: '/srv/images/m.qcow2', format: 'qcow2', arch: 'x86_64', firmware: 'bios', diskInterface: 'virtio',
  cpus: { default: 1, max: 4 }, memoryMiB: { default: 1024, max: 4096 }, isoDiskGiB: null, url: null, sha256: null, file: '/srv/m.yml',
  shares: [], bootScripts: { delivery: 'cloud-init', allowUserScripts: false, scripts: [] }, maxSessions: null,
};
const opts: ArgvOptions = { sessionId: 'abc123', accel: 'tcg', sandbox: true, runAs: null, network: 'user', uefiFirmware: '/usr/share/ovmf/OVMF.fd' };

function after(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
}

test('argv carries session name, resources, balloon, tablet, VNC and QMP on Unix sockets', (t) => {
  const argv = buildQemuArgv(base, { cpus: 2, memoryMiB: 2048 }, paths, opts);
  t.deepEqual(after(argv, '-name'), ['qwd-abc123,process=qwd-abc123']);
  t.deepEqual(after(argv, '-smp'), ['2']);
  t.deepEqual(after(argv, '-m'), ['2048M']);
  t.true(after(argv, '-device').includes('virtio-balloon-pci,id=balloon0'));
  t.true(after(argv, '-device').includes('usb-tablet,bus=xhci.0'));
  t.deepEqual(after(argv, '-vnc'), ['unix:/run/q/s1/vnc.sock,share=force-shared']);
  t.deepEqual(after(argv, '-qmp'), ['unix:/run/q/s1/qmp.sock,server=on,wait=off']);
  t.deepEqual(after(argv, '-display'), ['none']);
  t.deepEqual(after(argv, '-nic'), ['user,model=virtio-net-pci']);
  t.true(argv.includes('-nodefaults'));
  t.false(argv.some((a) => /tcp|:59\d\d/.test(a)), 'never a TCP VNC port');
});

const accelTable: Array<[string, Machine['arch'], 'kvm' | 'tcg', string, string]> = [
  ['x86_64 + tcg', 'x86_64', 'tcg', 'pc,accel=tcg', 'qemu64'],
  ['x86_64 + kvm', 'x86_64', 'kvm', 'pc,accel=kvm', 'host'],
  ['aarch64 + tcg', 'aarch64', 'tcg', 'virt,accel=tcg', 'max'],
  ['aarch64 + kvm', 'aarch64', 'kvm', 'virt,accel=kvm', 'host'],
];
for (const [title, arch, accel, machineOpt, cpu] of accelTable) {
  test(`machine and cpu for ${title}`, (t) => {
    const argv = buildQemuArgv({ ...base, arch }, { cpus: 1, memoryMiB: 512 }, paths, { ...opts, accel });
    t.deepEqual(after(argv, '-machine'), [machineOpt]);
    t.deepEqual(after(argv, '-cpu'), [cpu]);
    if (arch === 'aarch64') {
      t.deepEqual(after(argv, '-bios'), ['/usr/share/ovmf/OVMF.fd'], 'aarch64 always boots UEFI');
      t.true(after(argv, '-device').includes('usb-kbd,bus=xhci.0'));
      t.true(after(argv, '-device').includes('virtio-gpu-pci'));
    } else {
      t.deepEqual(after(argv, '-vga'), ['std']);
    }
  });
}

const formats = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'qed'] as const;
for (const format of formats) {
  test(`a ${format} master is used only through the session's qcow2 overlay`, (t) => {
    const argv = buildQemuArgv({ ...base, format, image: `/srv/images/m.${format}` }, { cpus: 1, memoryMiB: 512 }, paths, opts);
    const drives = after(argv, '-drive');
    t.deepEqual(drives, ['file=/run/q/s1/disk.qcow2,format=qcow2,if=none,id=disk0,discard=unmap']);
    t.false(argv.some((a) => a.includes('/srv/images/')), 'the master never appears on the command line');
  });
}

test('an ISO machine boots the ISO read-only as CD-ROM with a blank disk', (t) => {
  const argv = buildQemuArgv({ ...base, format: 'iso', image: '/srv/iso/live.iso' }, { cpus: 1, memoryMiB: 512 }, paths, opts);
  const drives = after(argv, '-drive');
  t.is(drives.length, 2);
  t.is(drives[0], 'file=/run/q/s1/disk.qcow2,format=qcow2,if=none,id=disk0,discard=unmap');
  t.is(drives[1], 'file=/srv/iso/live.iso,format=raw,if=none,id=cd0,media=cdrom,readonly=on');
  t.true(after(argv, '-device').includes('ide-cd,drive=cd0,bootindex=1'));
  t.true(after(argv, '-device').includes('virtio-blk-pci,drive=disk0,bootindex=2'));
});

test('an aarch64 ISO uses a SCSI CD-ROM (virt has no IDE)', (t) => {
  const argv = buildQemuArgv({ ...base, arch: 'aarch64', format: 'iso', image: '/srv/iso/a.iso' }, { cpus: 1, memoryMiB: 512 }, paths, opts);
  t.true(after(argv, '-device').includes('virtio-scsi-pci,id=scsi0'));
  t.true(after(argv, '-device').includes('scsi-cd,drive=cd0,bus=scsi0.0,bootindex=1'));
});

test('disk interfaces: ide and scsi', (t) => {
  const ide = buildQemuArgv({ ...base, diskInterface: 'ide' }, { cpus: 1, memoryMiB: 512 }, paths, opts);
  t.true(after(ide, '-device').includes('ide-hd,drive=disk0,bootindex=1'));
  const scsi = buildQemuArgv({ ...base, diskInterface: 'scsi' }, { cpus: 1, memoryMiB: 512 }, paths, opts);
  t.true(after(scsi, '-device').includes('scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1'));
});

test('UEFI firmware on x86_64 when the machine asks for it', (t) => {
  const argv = buildQemuArgv({ ...base, firmware: 'uefi' }, { cpus: 1, memoryMiB: 512 }, paths, opts);
  t.deepEqual(after(argv, '-bios'), ['/usr/share/ovmf/OVMF.fd']);
  t.deepEqual(after(buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, opts), '-bios'), []);
});

test('sandbox denies privilege elevation unless QEMU must drop privileges with -runas', (t) => {
  const plain = buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, opts);
  t.deepEqual(after(plain, '-sandbox'), ['on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
  t.deepEqual(after(plain, '-runas'), []);
  const dropping = buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, { ...opts, runAs: 'nobody' });
  t.deepEqual(after(dropping, '-sandbox'), ['on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny']);
  t.deepEqual(after(dropping, '-runas'), ['nobody']);
  t.deepEqual(after(buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, { ...opts, sandbox: false }), '-sandbox'), []);
});

test('network none adds no NIC', (t) => {
  t.deepEqual(after(buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, { ...opts, network: 'none' }), '-nic'), []);
});

test('commas in paths are doubled so they cannot inject QEMU options', (t) => {
  const evil: VmPaths = { ...paths, overlay: '/run/q/a,format=raw,file=/etc/shadow/disk.qcow2', vncSocket: '/run/q/x,share=allow-exclusive/vnc.sock' };
  const argv = buildQemuArgv({ ...base, format: 'iso', image: '/srv/iso/a,b.iso' }, { cpus: 1, memoryMiB: 512 }, evil, opts);
  t.true(after(argv, '-drive')[0]!.startsWith('file=/run/q/a,,format=raw,,file=/etc/shadow/disk.qcow2,format=qcow2'));
  t.true(after(argv, '-drive')[1]!.startsWith('file=/srv/iso/a,,b.iso,'));
  t.deepEqual(after(argv, '-vnc'), ['unix:/run/q/x,,share=allow-exclusive/vnc.sock,share=force-shared']);
});

test('escapeOptionValue doubles commas and refuses control characters', (t) => {
  t.is(escapeOptionValue('a,b,,c'), 'a,,b,,,,c');
  t.is(escapeOptionValue('plain'), 'plain');
  t.throws(() => escapeOptionValue('a\nb'), { message: /control character/ });
  t.is(qemuOpts('file', { id: 'x', path: '/a,b', on: true, off: false, skip: undefined }), 'file,id=x,path=/a,,b,on=on,off=off');
});

test('host folders become virtio-9p devices: read-only with security_model=none, read-write mapped-xattr', (t) => {
  const argv = buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, opts, { shares: [{ path: '/srv/data/ada', tag: 'data', readonly: true }, { path: '/home/ada,x', tag: 'home', readonly: false }], seedIso: null });
  t.deepEqual(after(argv, '-fsdev'), ['local,id=fs0,path=/srv/data/ada,security_model=none,readonly=on', 'local,id=fs1,path=/home/ada,,x,security_model=mapped-xattr']);
  t.true(after(argv, '-device').includes('virtio-9p-pci,fsdev=fs0,mount_tag=data'));
  t.true(after(argv, '-device').includes('virtio-9p-pci,fsdev=fs1,mount_tag=home'));
});

test('the cloud-init seed is attached read-only as a CD-ROM', (t) => {
  const argv = buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, opts, { shares: [], seedIso: '/run/q/s1/seed.iso' });
  t.true(after(argv, '-drive').includes('file=/run/q/s1/seed.iso,format=raw,if=none,id=seed0,media=cdrom,readonly=on'));
  t.true(after(argv, '-device').includes('ide-cd,drive=seed0'));
  const arm = buildQemuArgv({ ...base, arch: 'aarch64' }, { cpus: 1, memoryMiB: 512 }, paths, opts, { shares: [], seedIso: '/run/q/s1/seed.iso' });
  t.true(after(arm, '-device').includes('scsi-cd,drive=seed0,bus=scsi0.0'));
  t.true(after(arm, '-device').includes('virtio-scsi-pci,id=scsi0'));
});

// Today's argv, written out in full: a machine without display/agent/clipboard keys must keep it exactly.
const TODAY_X86 = [
  '-name', 'qwd-abc123,process=qwd-abc123', '-nodefaults', '-no-user-config', '-machine', 'pc,accel=tcg', '-cpu', 'qemu64',
  '-smp', '1', '-m', '512M', '-drive', 'file=/run/q/s1/disk.qcow2,format=qcow2,if=none,id=disk0,discard=unmap',
  '-device', 'virtio-blk-pci,drive=disk0,bootindex=1', '-vga', 'std', '-device', 'qemu-xhci,id=xhci', '-device', 'usb-tablet,bus=xhci.0',
  '-device', 'virtio-balloon-pci,id=balloon0', '-nic', 'user,model=virtio-net-pci', '-display', 'none',
  '-vnc', 'unix:/run/q/s1/vnc.sock,share=force-shared', '-qmp', 'unix:/run/q/s1/qmp.sock,server=on,wait=off',
  '-chardev', 'file,id=serial0,path=/run/q/s1/serial.log', '-serial', 'chardev:serial0', '-monitor', 'none', '-pidfile', '/run/q/s1/qemu.pid',
  '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
];
const VDAGENT = [
  '-device', 'virtio-serial-pci,id=vserial0', '-chardev', 'qemu-vdagent,id=vdagent0,name=vdagent,clipboard=on',
  '-device', 'virtserialport,chardev=vdagent0,name=com.redhat.spice.0,id=vdagentport0,nr=1',
];

const QGA = [
  '-chardev', 'socket,path=/run/q/s1/qga.sock,server=on,wait=off,id=qga0',
  '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0,id=qgaport0,nr=2',
];

test('a machine without display, agent or clipboard keys gets exactly today\'s argv', (t) => {
  t.deepEqual(buildQemuArgv(base, { cpus: 1, memoryMiB: 512 }, paths, opts), TODAY_X86);
  // null (as parseMachine gives for an absent key) and clipboard alone change nothing either.
  t.deepEqual(buildQemuArgv({ ...base, display: null, agent: null, clipboard: 'off' }, { cpus: 1, memoryMiB: 512 }, paths, opts), TODAY_X86);
  t.deepEqual(buildQemuArgv({ ...base, display: 'std' }, { cpus: 1, memoryMiB: 512 }, paths, opts), TODAY_X86, 'display: std is today\'s VGA');
});

/** Today's argv with the VGA replaced by `adapter` and `extra` inserted after the USB input devices. */
function todayWith(adapter: string[], extra: string[] = []): string[] {
  const i = TODAY_X86.indexOf('-vga');
  return [...TODAY_X86.slice(0, i), ...adapter, ...TODAY_X86.slice(i + 2, i + 6), ...extra, ...TODAY_X86.slice(i + 6)];
}

const displayTable: Array<[string, Partial<Machine>, string[]]> = [
  ['display std', { display: 'std' }, TODAY_X86],
  ['display virtio (virtio-vga)', { display: 'virtio' }, todayWith(['-device', 'virtio-vga'])],
  ['display qxl (qxl-vga)', { display: 'qxl' }, todayWith(['-device', 'qxl-vga'])],
  ['agent spice-vdagent with the default display', { agent: 'spice-vdagent' }, todayWith(['-vga', 'std'], VDAGENT)],
  ['virtio display + spice-vdagent', { display: 'virtio', agent: 'spice-vdagent', clipboard: 'to-guest' },
    todayWith(['-device', 'virtio-vga'], VDAGENT)],
  ['guestAgent false (the default)', { guestAgent: false }, TODAY_X86],
  ['guestAgent alone: its own virtio-serial bus and the org.qemu.guest_agent.0 port', { guestAgent: true },
    todayWith(['-vga', 'std'], ['-device', 'virtio-serial-pci,id=vserial0', ...QGA])],
  ['the desktop machine: virtio display, spice-vdagent and the guest agent on one virtio-serial bus',
    { display: 'virtio', agent: 'spice-vdagent', guestAgent: true }, todayWith(['-device', 'virtio-vga'], [...VDAGENT, ...QGA])],
];
for (const [title, keys, expected] of displayTable) {
  test(`x86_64 argv for ${title}`, (t) => {
    t.deepEqual(buildQemuArgv({ ...base, ...keys }, { cpus: 1, memoryMiB: 512 }, paths, opts), expected);
  });
}

test('aarch64: virtio-gpu-pci whether display is absent or virtio; the agent adds the same vdagent devices', (t) => {
  const arm = { ...base, arch: 'aarch64' as const };
  const plain = buildQemuArgv(arm, { cpus: 1, memoryMiB: 512 }, paths, opts);
  t.deepEqual(buildQemuArgv({ ...arm, display: 'virtio' }, { cpus: 1, memoryMiB: 512 }, paths, opts), plain);
  const withAgent = buildQemuArgv({ ...arm, display: 'virtio', agent: 'spice-vdagent' }, { cpus: 1, memoryMiB: 512 }, paths, opts);
  const i = plain.indexOf('usb-kbd,bus=xhci.0') + 1;
  t.deepEqual(withAgent, [...plain.slice(0, i), ...VDAGENT, ...plain.slice(i)]);
});

test('the guest agent socket path has its commas doubled (one QEMU option, not two)', (t) => {
  const argv = buildQemuArgv({ ...base, guestAgent: true }, { cpus: 1, memoryMiB: 512 }, { ...paths, qgaSocket: '/run/q/a,b/qga.sock' }, opts);
  t.true(argv.includes('socket,path=/run/q/a,,b/qga.sock,server=on,wait=off,id=qga0'));
});
