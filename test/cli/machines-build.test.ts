// qwdctl machines build debian-desktop: the paths that end before (or early in) the
// long build, run through the real qwdctl. A missing tool (hidden with PATH), an
// unreachable mirror (a closed port on 127.0.0.1, so mmdebstrap really fails), too little
// free space (small tmpfs mounts, as root), --force semantics and the refusal while
// sessions use the master. Nothing may be left in
// machinesDir, and the old master stays when a rebuild fails. The full build is in
// test/catalog/desktop-image.test.ts (npm run test:desktop).
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { stringify } from 'yaml';
import { qwdctl } from '../helpers/cli.js';
import { makeSetup, mountTmpfs, requireProgram, requireQemu, tempDir, type TestSetup } from '../helpers/env.js';
import { DESKTOP_BUILD_TOOLS, IMAGE_SPACE_BYTES, WORK_SPACE_BYTES, desktopDescriptorText } from '../../src/catalog/desktop-build.js';

test.before(() => requireQemu());

function listTree(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** A PATH holding every build tool except `without` (symlinks to the real ones). */
function pathWithout(t: Parameters<typeof tempDir>[0], without: string): string {
  const bin = tempDir(t, 'qwd-path-');
  for (const tool of [...DESKTOP_BUILD_TOOLS, { program: 'qemu-img', debianPackage: 'qemu-utils' }]) {
    if (tool.program === without) continue;
    requireProgram(tool.program, tool.debianPackage);
    const real = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', tool.program], { encoding: 'utf8' }).stdout.trim();
    fs.symlinkSync(real, path.join(bin, tool.program));
  }
  return bin;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** An existing desktop machine: its descriptor and a small stand-in master image. */
function writeBuiltDesktop(setup: TestSetup): { descriptor: string; image: string; imageBytes: Buffer; descriptorText: string } {
  const images = path.join(setup.machinesDir, 'images');
  fs.mkdirSync(images, { recursive: true });
  const image = path.join(images, 'debian-desktop.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  const descriptor = path.join(setup.machinesDir, 'debian-desktop.yml');
  const descriptorText = desktopDescriptorText(new Date('2026-01-01T00:00:00Z'));
  fs.writeFileSync(descriptor, descriptorText);
  return { descriptor, image, imageBytes: fs.readFileSync(image), descriptorText };
}

test('machines build knows only debian-desktop and checks --mirror', async (t) => {
  const setup = makeSetup(t);
  const other = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'ubuntu']);
  t.is(other.code, 1, other.stderr);
  t.is(other.stderr, 'qwdctl: qwdctl machines build knows one machine, "debian-desktop"; got "ubuntu"\n');
  const mirror = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop', '--mirror', 'file:///srv/debian']);
  t.is(mirror.code, 1, mirror.stderr);
  t.regex(mirror.stderr, /--mirror must be an http:\/\/ or https:\/\/ URL of a Debian mirror/);
});

test('a missing build tool is named with its Debian package, and nothing is written', async (t) => {
  const setup = makeSetup(t);
  const before = listTree(setup.machinesDir);
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop'], { env: { PATH: pathWithout(t, 'mkfs.vfat') } });
  t.is(res.code, 6, res.stderr);
  t.regex(res.stderr, /^qwdctl: building debian-desktop needs mkfs\.vfat, which is missing: install the Debian package dosfstools \(apt-get install dosfstools, or run bin\/setup --desktop\)\n$/);
  t.deepEqual(listTree(setup.machinesDir), before);
  t.false(fs.existsSync(path.join(setup.stateDir, 'build')), 'no work dir was made');
});

test('an unreachable mirror fails with a clear message and leaves nothing in machinesDir or the state dir', async (t) => {
  t.timeout(120_000);
  requireProgram('mmdebstrap', 'mmdebstrap');
  const setup = makeSetup(t);
  const before = listTree(setup.machinesDir);
  const port = await closedPort();
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop', '--mirror', `http://127.0.0.1:${port}/debian`]);
  t.is(res.code, 7, res.stderr);
  t.regex(res.stderr, new RegExp(`qwdctl: cannot download Debian packages: the mirror is unreachable or incomplete \\(http://127\\.0\\.0\\.1:${port}/debian\\): .*127\\.0\\.0\\.1:${port}.*\\(exit \\d+; full output in .*debian-desktop\\.log\\)\n$`));
  t.regex(res.stderr, /\[1\/4\] packages \(mmdebstrap/, 'progress was shown');
  // machinesDir gains at most the (empty) images directory the image would go into.
  t.deepEqual(listTree(setup.machinesDir).filter((f) => f !== 'images'), before);
  t.deepEqual(fs.existsSync(path.join(setup.machinesDir, 'images')) ? fs.readdirSync(path.join(setup.machinesDir, 'images')) : [], []);
  t.deepEqual(fs.readdirSync(path.join(setup.stateDir, 'build')), ['debian-desktop.log'], 'the work dir is gone; the log stays for the operator');
  t.regex(fs.readFileSync(path.join(setup.stateDir, 'build', 'debian-desktop.log'), 'utf8'), /Connection refused/);
});

/** Every build tool, so a build gets past the tool check to the free-space check. */
function requireBuildTools(): void {
  for (const tool of DESKTOP_BUILD_TOOLS) requireProgram(tool.program, tool.debianPackage);
}

const MiB = 1024 * 1024;

test('too little free space for the work directory: exit 5 with a clear message before any work, nothing in machinesDir', async (t) => {
  requireBuildTools();
  const setup = makeSetup(t);
  const before = listTree(setup.machinesDir);
  const buildRoot = path.join(setup.stateDir, 'build');
  mountTmpfs(t, buildRoot, '1m');
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop']);
  t.is(res.code, 5, res.stderr);
  t.is(res.stderr, `qwdctl: not enough free space for the build work directory ${buildRoot}: 1 MiB free, the build needs ${WORK_SPACE_BYTES / MiB} MiB\n`);
  // machinesDir gains at most the (empty) images directory the image would go into.
  t.deepEqual(listTree(setup.machinesDir).filter((f) => f !== 'images'), before);
  t.deepEqual(fs.readdirSync(path.join(setup.machinesDir, 'images')), []);
  t.deepEqual(fs.readdirSync(buildRoot), [], 'no work dir, no log: the build never started');
});

test('too little free space for the image in machinesDir: exit 5 with a clear message before any work, nothing written there', async (t) => {
  requireBuildTools();
  const setup = makeSetup(t);
  const before = listTree(setup.machinesDir);
  const images = path.join(setup.machinesDir, 'images');
  mountTmpfs(t, images, '1m');
  // The work dir on a tmpfs that is large enough (a size limit, nothing is allocated), whatever the disk has free.
  const buildRoot = path.join(setup.stateDir, 'build');
  mountTmpfs(t, buildRoot, `${(WORK_SPACE_BYTES + IMAGE_SPACE_BYTES) / MiB}m`);
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop']);
  t.is(res.code, 5, res.stderr);
  t.is(res.stderr, `qwdctl: not enough free space for the machines images directory ${images}: 1 MiB free, the build needs ${IMAGE_SPACE_BYTES / MiB} MiB\n`);
  t.deepEqual(listTree(setup.machinesDir).filter((f) => f !== 'images'), before);
  t.deepEqual(fs.readdirSync(images), []);
  t.deepEqual(fs.readdirSync(buildRoot), [], 'no work dir, no log: the build never started');
});

test('an existing desktop machine is kept unless --force; nothing runs to find that out', async (t) => {
  const setup = makeSetup(t);
  const built = writeBuiltDesktop(setup);
  const emptyPath = tempDir(t, 'qwd-path-');
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop'], { env: { PATH: emptyPath } });
  t.is(res.code, 0, res.stderr);
  t.is(res.stdout, `debian-desktop: already built (${built.descriptor}, ${built.image}); --force rebuilds it\n`);
  const asJson = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop', '--json'], { env: { PATH: emptyPath } });
  t.deepEqual(JSON.parse(asJson.stdout), { name: 'debian-desktop', status: 'present', descriptor: built.descriptor, image: built.image });
  // With --force the build is attempted (and here stops at the missing tools).
  const forced = await qwdctl(['--config', setup.configFile, 'machines', 'build', 'debian-desktop', '--force'], { env: { PATH: emptyPath } });
  t.is(forced.code, 6, forced.stderr);
  t.regex(forced.stderr, /needs bash, mmdebstrap, sfdisk, mkfs\.vfat, mcopy, mdir, syslinux, mkfs\.ext4, dpkg, qemu-img, which are missing/);
  t.true(fs.readFileSync(built.image).equals(built.imageBytes));
  t.is(fs.readFileSync(built.descriptor, 'utf8'), built.descriptorText);
});

test('--force refuses (exit 4) while sessions use the master, and a failed rebuild keeps the old master', async (t) => {
  t.timeout(120_000);
  requireProgram('mmdebstrap', 'mmdebstrap');
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const built = writeBuiltDesktop(setup);
  // A machine this catalog can start, on the desktop's master image: its sessions' disks are
  // overlays backed by that file, so replacing it would corrupt them.
  fs.writeFileSync(path.join(setup.machinesDir, 'twin.yml'), stringify({ name: 'twin', image: 'images/debian-desktop.qcow2', cpus: { default: 1, max: 1 }, memoryMiB: { default: 128, max: 256 } }));
  const started = await qwdctl([...c, 'sessions', 'start', 'twin', '--json']);
  t.is(started.code, 0, started.stderr);
  const session = JSON.parse(started.stdout) as { id: string };
  t.teardown(() => qwdctl([...c, 'sessions', 'stop', session.id]).then(() => undefined));

  const refused = await qwdctl([...c, 'machines', 'build', 'debian-desktop', '--force']);
  t.is(refused.code, 4, refused.stderr);
  t.regex(refused.stderr, new RegExp(`^qwdctl: machine "debian-desktop" is used by 1 running session\\(s\\): ${session.id} \\(machine "twin", same image\\); stop them first \\(--force would replace .*debian-desktop\\.qcow2, the backing file of their disks\\)\n$`));
  t.false(fs.existsSync(path.join(setup.stateDir, 'build')), 'refused before any work');

  t.is((await qwdctl([...c, 'sessions', 'stop', session.id])).code, 0);
  const port = await closedPort();
  const failed = await qwdctl([...c, 'machines', 'build', 'debian-desktop', '--force', '--mirror', `http://127.0.0.1:${port}/debian`]);
  t.is(failed.code, 7, failed.stderr);
  t.true(fs.readFileSync(built.image).equals(built.imageBytes), 'the old master is untouched');
  t.is(fs.readFileSync(built.descriptor, 'utf8'), built.descriptorText);
  t.deepEqual(fs.readdirSync(path.join(setup.machinesDir, 'images')), ['debian-desktop.qcow2'], 'no partial image');
  t.deepEqual(fs.readdirSync(setup.machinesDir).sort(), ['blank.qcow2', 'blank.yml', 'debian-desktop.yml', 'images', 'twin.yml']);
});
