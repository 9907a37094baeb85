// The desktop machine builder's pure parts: the descriptor it writes, which tool
// is missing (and its Debian package), how a failed run is explained, and the
// mount guard that keeps the work dir's removal out of mmdebstrap's mounts.
import test from 'ava';
import { parseMachine } from '../../src/catalog/descriptor.js';
import { DESKTOP_BUILD_TOOLS, DESKTOP_MACHINE, desktopDescriptor, desktopDescriptorText, explainBuildFailure, findMissingTool, mountsUnder } from '../../src/catalog/desktop-build.js';
import { parse } from 'yaml';

test('the descriptor names the machine, its image inside machinesDir, a virtio display and the spice-vdagent agent', (t) => {
  const d = desktopDescriptor();
  t.like(d, { name: DESKTOP_MACHINE, image: 'images/debian-desktop.qcow2', format: 'qcow2', arch: 'x86_64', firmware: 'bios', diskInterface: 'virtio', display: 'virtio', agent: 'spice-vdagent',
    guestAgent: true });
  t.deepEqual(d.cpus, { default: 2, max: 4 });
  t.deepEqual(d.memoryMiB, { default: 2048, max: 8192 });
  const text = desktopDescriptorText(new Date('2026-12-04T20:00:00Z'));
  t.regex(text, /^# Written by "qwdctl machines build debian-desktop" on 2026-12-04T20:00:00\.000Z; rebuild with --force\./);
  t.deepEqual(parse(text), d, 'the comment header does not change the YAML');
});

test('the descriptor passes the catalog\'s validation as it is', (t) => {
  const { machine, problems } = parseMachine(desktopDescriptor(), '/srv/machines/debian-desktop.yml');
  t.deepEqual(problems, []);
  t.like(machine, {
    name: 'debian-desktop', image: '/srv/machines/images/debian-desktop.qcow2', display: 'virtio', agent: 'spice-vdagent',
    cpus: { default: 2, max: 4 }, memoryMiB: { default: 2048, max: 8192 },
  });
});

test('a missing tool is named with the Debian package that provides it', (t) => {
  const all = () => true;
  t.is(findMissingTool(all, all, 'qemu-img'), null);
  t.is(findMissingTool((p) => p !== 'mkfs.vfat', all, 'qemu-img'),
    'building debian-desktop needs mkfs.vfat, which is missing: install the Debian package dosfstools (apt-get install dosfstools, or run bin/setup --desktop)');
  t.regex(findMissingTool((p) => p !== 'mmdebstrap' && p !== 'qemu-img', all, 'qemu-img')!, /needs mmdebstrap, qemu-img, which are missing: install the Debian packages mmdebstrap qemu-utils \(apt-get install mmdebstrap qemu-utils/);
  t.regex(findMissingTool(all, (f) => !f.endsWith('mbr.bin'), 'qemu-img')!, /needs \/usr\/lib\/syslinux\/mbr\/mbr\.bin, which is missing: install the Debian package syslinux-common/);
  // Every tool maps to a package, and the packages are those bin/setup --desktop installs.
  for (const tool of DESKTOP_BUILD_TOOLS) t.truthy(tool.debianPackage, tool.program);
});

test('a failed run is explained: unreachable mirror, full disk, or the last lines', (t) => {
  const refused = 'I: running apt-get update...\nE: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\nE: Some index files failed to download.\nE: mmdebstrap failed to run\n';
  const mirror = explainBuildFailure(refused, 'http://127.0.0.1:9/debian');
  t.is(mirror.code, 'QWD_DOWNLOAD_FAILED');
  t.regex(mirror.message, /^cannot download Debian packages: the mirror is unreachable or incomplete \(http:\/\/127\.0\.0\.1:9\/debian\): .*Connection refused/);
  t.regex(explainBuildFailure(refused, null).message, /this host's apt sources/);
  const full = explainBuildFailure('mkfs.ext4: Could not allocate block in ext2 filesystem\nwrite: No space left on device\n', null);
  t.is(full.code, 'QWD_BUILD_FAILED');
  t.regex(full.message, /^the disk filled up while building debian-desktop \(no space left on device\): free some space/);
  const other = explainBuildFailure('a\nb\nbuild-desktop-image: error: no /boot/initrd.img-6.1 in the guest\n', null);
  t.deepEqual(other, { code: 'QWD_BUILD_FAILED', message: 'building debian-desktop failed: a | b | build-desktop-image: error: no /boot/initrd.img-6.1 in the guest' });
});

test('mounts under the work dir are found in mountinfo, with octal escapes undone', (t) => {
  const info = [
    '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '80 22 0:5 / /var/qwd/build/debian-desktop-x/rootfs/proc rw - proc proc rw',
    '81 22 0:6 / /var/qwd/build/debian-desktop-x/root\\040fs/dev rw - devtmpfs udev rw',
    '82 22 0:7 / /var/qwd/build/debian-desktop-xy rw - tmpfs tmpfs rw',
  ].join('\n');
  t.deepEqual(mountsUnder('/var/qwd/build/debian-desktop-x', info), ['/var/qwd/build/debian-desktop-x/rootfs/proc', '/var/qwd/build/debian-desktop-x/root fs/dev']);
  t.deepEqual(mountsUnder('/elsewhere', info), []);
});
