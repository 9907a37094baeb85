// A master image may only make QEMU open files inside the machines directory:
// real qemu-img images whose backing chain, data file or extents point outside
// are refused at catalog load, by `qwdctl machines check` and before each
// overlay; a legit chain inside still gives a running session.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { stringify } from 'yaml';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { checkBackingChain, combineLikeQemu, hasProtocol, parseQcow2Header, vmdkDescriptorFiles } from '../../src/catalog/backing-chain.js';
import { createOverlay, overlayArgv } from '../../src/snapshot/overlay.js';
import { makeSetup, requireQemu, tempDir, writeBlankMachine } from '../helpers/env.js';
import { api, startTestBroker } from '../helpers/broker.js';
import { qwdctl } from '../helpers/cli.js';

test.before(() => requireQemu());

function img(args: string[]): void {
  execFileSync('qemu-img', ['create', '-q', ...args]);
}

/** A machines directory with the blank machine, and a root-only "secret" outside it. */
function layout(t: import('ava').ExecutionContext) {
  const dir = tempDir(t);
  const machinesDir = path.join(dir, 'machines');
  writeBlankMachine(machinesDir);
  const secret = path.join(dir, 'secret.raw');
  fs.writeFileSync(secret, Buffer.alloc(1024 * 1024, 's'), { mode: 0o600 });
  const describe = (name: string, image: string, extra: Record<string, unknown> = {}) =>
    fs.writeFileSync(path.join(machinesDir, `${name}.yml`), stringify({ name, image, ...extra }));
  return { dir, machinesDir, secret, describe };
}

test('pure: protocol names, QEMU-style joining, qcow2 header bits, VMDK extents', (t) => {
  for (const name of ['json:{"driver":"file"}', 'nbd:127.0.0.1:10809', 'http://x/y', 'file:/etc/shadow', 'x:y']) t.true(hasProtocol(name), name);
  for (const name of ['base.qcow2', '../base.qcow2', '/abs/a:b', './a:b']) t.false(hasProtocol(name), name);
  t.is(combineLikeQemu('/m/images/top.qcow2', '../x'), '/m/images/../x', 'joined by string; the OS resolves ".." after following symlinks');
  t.is(combineLikeQemu('/m/top.qcow2', '/etc/shadow'), '/etc/shadow');
  const head = Buffer.alloc(104);
  head.writeUInt32BE(0x514649fb, 0);
  head.writeUInt32BE(3, 4);
  head.writeBigUInt64BE(4n, 72);
  t.deepEqual(parseQcow2Header(head), { version: 3, hasBacking: false, externalDataFile: true });
  t.is(parseQcow2Header(Buffer.alloc(104)), null);
  t.deepEqual(vmdkDescriptorFiles('# Disk DescriptorFile\nRW 2048 FLAT "/etc/shadow" 0\nRW 8 ZERO\nparentFileNameHint="p.vmdk"\n'), { extents: ['/etc/shadow'], parent: 'p.vmdk' });
  t.deepEqual(overlayArgv({ name: 'm', image: '/m/a.qcow2', format: 'qcow2' } as never, '/r/disk.qcow2', 1, 1048576),
    ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', '/m/a.qcow2', '-u', '/r/disk.qcow2', '1048576']);
});

test('a qcow2 backed by a file outside the machines directory is left out; the others keep working', async (t) => {
  const { machinesDir, secret, describe } = layout(t);
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', secret, path.join(machinesDir, 'evil.qcow2'), '1M']);
  describe('evil', 'evil.qcow2');
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  t.deepEqual(catalog.list().map((m) => m.name), ['blank']);
  t.true(catalog.problems.some((p) => p.includes('evil.yml') && p.includes(`resolves to ${secret}, outside the machines directory`)), catalog.problems.join('\n'));
});

test('a chain of three whose last layer escapes is refused, naming the layer', async (t) => {
  const { machinesDir, secret, describe } = layout(t);
  const images = path.join(machinesDir, 'images');
  fs.mkdirSync(images);
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', secret, path.join(images, 'base.qcow2'), '1M']);
  img(['-u', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', path.join(images, 'mid.qcow2'), '1M']);
  img(['-u', '-f', 'qcow2', '-F', 'qcow2', '-b', 'mid.qcow2', path.join(images, 'top.qcow2'), '1M']);
  describe('three', 'images/top.qcow2');
  const check = await checkBackingChain('qemu-img', path.join(images, 'top.qcow2'), machinesDir);
  t.deepEqual(check.layers.map((l) => path.basename(l.realPath)), ['top.qcow2', 'mid.qcow2', 'base.qcow2']);
  t.is(check.violations.length, 1);
  t.regex(check.violations[0]!, /base\.qcow2: backing file ".*secret\.raw" resolves to .*secret\.raw, outside the machines directory/);
  t.false((await loadCatalog(machinesDir, 'qemu-img')).machines.has('three'));
});

test('a relative "../" backing name is resolved against the image directory as QEMU does, and refused', async (t) => {
  const { machinesDir, secret, describe } = layout(t);
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', `../${path.basename(secret)}`, path.join(machinesDir, 'up.qcow2'), '1M']);
  describe('up', 'up.qcow2');
  const check = await checkBackingChain('qemu-img', path.join(machinesDir, 'up.qcow2'), machinesDir);
  t.regex(check.violations.join('\n'), new RegExp(`"\\.\\./secret\\.raw" resolves to ${secret}, outside`));
});

test('a master that is a symlink to a host file is refused; a directory symlink placed by the admin is allowed', async (t) => {
  const { dir, machinesDir, describe } = layout(t);
  fs.symlinkSync('/etc/shadow', path.join(machinesDir, 'shadow.qcow2'));
  describe('shadow', 'shadow.qcow2');
  const store = path.join(dir, 'store');
  fs.mkdirSync(store);
  img(['-f', 'qcow2', path.join(store, 'linked.qcow2'), '1M']);
  fs.symlinkSync(store, path.join(machinesDir, 'images'));
  describe('linked', 'images/linked.qcow2');
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  t.deepEqual(catalog.list().map((m) => m.name).sort(), ['blank', 'linked']);
  t.true(catalog.problems.some((p) => /shadow\.yml: image .*shadow\.qcow2 resolves to \/etc\/shadow, outside/.test(p)), catalog.problems.join('\n'));
});

test('a directory symlink an image author made (not root\'s), or one to "/", lets no image out', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('this test changes a symlink\'s owner: run it as root (as CI does)');
  const { machinesDir, describe } = layout(t);
  const authored = path.join(machinesDir, 'x');
  fs.symlinkSync('/etc', authored);
  fs.lchownSync(authored, 65534, 65534); // made by someone else than root or the service
  describe('escape', 'x/shadow');
  fs.symlinkSync('/', path.join(machinesDir, 'all'));
  describe('everything', 'all/etc/shadow');
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  t.deepEqual(catalog.list().map((m) => m.name), ['blank']);
  t.true(catalog.problems.some((p) => /escape\.yml: .*\/etc\/shadow, outside/.test(p)), catalog.problems.join('\n'));
  t.true(catalog.problems.some((p) => /everything\.yml: .*\/etc\/shadow, outside/.test(p)), catalog.problems.join('\n'));
});

test('json:, nbd: and other protocol backing names are refused before qemu-img opens them', async (t) => {
  const { machinesDir, secret, describe } = layout(t);
  const json = `json:{"driver":"raw","file":{"driver":"file","filename":"${secret}"}}`;
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', json, path.join(machinesDir, 'json.qcow2'), '1M']);
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', 'nbd:127.0.0.1:9', path.join(machinesDir, 'nbd.qcow2'), '1M']);
  describe('json', 'json.qcow2');
  describe('nbd', 'nbd.qcow2');
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  t.deepEqual(catalog.list().map((m) => m.name), ['blank']);
  t.is(catalog.problems.filter((p) => p.includes('uses a protocol prefix')).length, 2, catalog.problems.join('\n'));
});

test('an external data file or a VMDK extent outside is refused', async (t) => {
  const { machinesDir, secret, describe } = layout(t);
  img(['-f', 'qcow2', '-o', `data_file=${path.join(path.dirname(machinesDir), 'data.raw')}`, path.join(machinesDir, 'data.qcow2'), '1M']);
  describe('data', 'data.qcow2');
  fs.writeFileSync(path.join(machinesDir, 'flat.vmdk'), `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "${secret}" 0\nddb.adapterType = "ide"\n`);
  describe('flat', 'flat.vmdk');
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  t.deepEqual(catalog.list().map((m) => m.name), ['blank']);
  t.true(catalog.problems.some((p) => p.includes('data.qcow2 uses an external data file')), catalog.problems.join('\n'));
  t.true(catalog.problems.some((p) => p.includes(`VMDK extent "${secret}" resolves to ${secret}, outside`)), catalog.problems.join('\n'));
});

test('a raw image named .qcow2 is raw: refused if declared qcow2, else used as raw with -F raw', async (t) => {
  const { machinesDir, describe } = layout(t);
  fs.writeFileSync(path.join(machinesDir, 'fake.qcow2'), Buffer.alloc(1024 * 1024));
  describe('declared', 'fake.qcow2', { format: 'qcow2' });
  describe('detected', 'fake.qcow2');
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  t.true(catalog.problems.some((p) => p.includes('format is "qcow2" but qemu-img reports "raw"')), catalog.problems.join('\n'));
  const machine = catalog.get('detected')!;
  t.is(machine.format, 'raw');
  const runDir = path.join(path.dirname(machinesDir), 'run');
  fs.mkdirSync(runDir);
  const { overlay } = await createOverlay('qemu-img', machine, runDir, 1, machinesDir);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', overlay], { encoding: 'utf8' }));
  t.is(info['backing-filename-format'], 'raw');
});

test('a backing file without a recorded format is refused (QEMU would guess it from its content)', async (t) => {
  const { machinesDir } = layout(t);
  img(['-f', 'raw', path.join(machinesDir, 'base.raw'), '1M']);
  // An old-style qcow2 (v2) naming its backing file without a format, as old
  // qemu-img versions wrote them (today's qemu-img refuses to): the name is
  // put in the header cluster by hand (qcow2 spec: backing_file_offset/size).
  const top = path.join(machinesDir, 'top.qcow2');
  img(['-f', 'qcow2', '-o', 'compat=0.10', top, '1M']);
  const fd = fs.openSync(top, 'r+');
  const header = Buffer.alloc(12);
  header.writeBigUInt64BE(512n, 0);
  header.writeUInt32BE('base.raw'.length, 8);
  fs.writeSync(fd, header, 0, 12, 8);
  fs.writeSync(fd, Buffer.from('base.raw'), 0, 8, 512);
  fs.closeSync(fd);
  const check = await checkBackingChain('qemu-img', path.join(machinesDir, 'top.qcow2'), machinesDir);
  t.regex(check.violations.join('\n'), /has no recorded format.*qemu-img rebase -u -F <format>/);
});

test('an image replaced after the catalog was loaded is checked again before the overlay: no overlay is made', async (t) => {
  const { dir, machinesDir, secret } = layout(t);
  const catalog = await loadCatalog(machinesDir, 'qemu-img');
  const blank = catalog.get('blank')!;
  const evil = path.join(dir, 'evil.qcow2');
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', secret, evil, '64M']);
  fs.renameSync(evil, blank.image);
  const runDir = path.join(dir, 'run');
  fs.mkdirSync(runDir);
  const err = await t.throwsAsync(createOverlay('qemu-img', blank, runDir, 1, machinesDir));
  t.is((err as { code?: string }).code, 'QWD_IMAGE_UNSAFE');
  t.regex(err!.message, /outside the machines directory/);
  t.deepEqual(fs.readdirSync(runDir), []);
});

test('machines check reports each violation and exits non-zero', async (t) => {
  const setup = makeSetup(t);
  const outside = path.join(setup.dir, 'outside.raw');
  fs.writeFileSync(outside, Buffer.alloc(65536));
  img(['-u', '-f', 'qcow2', '-F', 'raw', '-b', outside, path.join(setup.machinesDir, 'a.qcow2'), '1M']);
  fs.symlinkSync('/etc/shadow', path.join(setup.machinesDir, 'b.qcow2'));
  fs.writeFileSync(path.join(setup.machinesDir, 'a.yml'), 'name: a\nimage: a.qcow2\n');
  fs.writeFileSync(path.join(setup.machinesDir, 'b.yml'), 'name: b\nimage: b.qcow2\n');
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'check', '--json']);
  t.is(res.code, 6, res.stderr);
  const report = JSON.parse(res.stdout);
  const byName = Object.fromEntries(report.machines.map((m: { name: string; problems: string[] }) => [m.name, m.problems]));
  t.deepEqual(byName.blank, []);
  t.regex(byName.a.join('\n'), /outside\.raw" resolves to .*outside\.raw, outside the machines directory/);
  t.regex(byName.b.join('\n'), /resolves to \/etc\/shadow, outside/);
});

test('a legit chain inside the machines directory still works end to end: a session starts on it', async (t) => {
  t.timeout(60_000);
  const setup = makeSetup(t, {}, {
    machines: (d) => {
      writeBlankMachine(d, 'base');
      fs.mkdirSync(path.join(d, 'layers'));
      img(['-f', 'qcow2', '-F', 'qcow2', '-b', '../base.qcow2', path.join(d, 'layers', 'top.qcow2')]);
      fs.writeFileSync(path.join(d, 'chained.yml'), stringify({ name: 'chained', image: 'layers/top.qcow2', memoryMiB: { default: 128, max: 256 } }));
    },
  });
  const broker = await startTestBroker(t, setup.config);
  t.deepEqual(broker.services.catalog.problems, []);
  const { status, json } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'chained', user: 'cara', lifetimeS: 600 });
  t.is(status, 201, JSON.stringify(json));
  const row = broker.services.rows.all()[0]!;
  const chain = JSON.parse(execFileSync('qemu-img', ['info', '--backing-chain', '--force-share', '--output=json', path.join(row.runDir, 'disk.qcow2')], { encoding: 'utf8' }));
  t.deepEqual(chain.map((l: { filename: string }) => path.basename(l.filename)), ['disk.qcow2', 'top.qcow2', 'base.qcow2']);
  t.is(chain[1].filename, fs.realpathSync(path.join(setup.machinesDir, 'layers', 'top.qcow2')), 'the overlay names the master by its real path');
});
