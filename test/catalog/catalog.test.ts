import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { parseMachine } from '../../src/catalog/descriptor.js';
import { createOverlay } from '../../src/snapshot/overlay.js';
import { LocalLauncher } from '../../src/launcher/local.js';
import { chooseAccelerator, probeHostAccel } from '../../src/qemu/accel.js';
import { silentLogger } from '../../src/log.js';
import { makeSetup, requireProgram, requireQemu, tempDir } from '../helpers/env.js';

test.before(() => requireQemu());

test('formats are detected with qemu-img info, ISO by its signature', async (t) => {
  requireProgram('genisoimage', 'genisoimage');
  const dir = tempDir(t);
  for (const format of ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'qed']) {
    execFileSync('qemu-img', ['create', '-q', '-f', format, path.join(dir, `m-${format}.img`), '16M']);
    fs.writeFileSync(path.join(dir, `m-${format}.yml`), `name: m-${format}\nimage: m-${format}.img\n`);
  }
  fs.mkdirSync(path.join(dir, 'iso-src'));
  fs.writeFileSync(path.join(dir, 'iso-src', 'README'), 'hello\n');
  execFileSync('genisoimage', ['-quiet', '-o', path.join(dir, 'live.iso'), path.join(dir, 'iso-src')]);
  fs.writeFileSync(path.join(dir, 'live.yml'), 'name: live\nimage: live.iso\n');
  const catalog = await loadCatalog(dir, 'qemu-img');
  t.deepEqual(catalog.problems, []);
  for (const format of ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'qed'] as const) t.is(catalog.get(`m-${format}`)?.format, format);
  t.is(catalog.get('live')?.format, 'iso');
});

test('every format gets a working overlay and the master is never written', async (t) => {
  const dir = tempDir(t);
  for (const format of ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'qed']) {
    const master = path.join(dir, `master.${format}`);
    execFileSync('qemu-img', ['create', '-q', '-f', format, master, '16M']);
    const before = fs.statSync(master).mtimeMs;
    const { machine } = parseMachine({ name: `m-${format}`, image: master, format }, path.join(dir, 'x.yml'));
    const runDir = path.join(dir, `run-${format}`);
    fs.mkdirSync(runDir);
    const { overlay } = await createOverlay('qemu-img', machine!, runDir, 1, dir);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', overlay], { encoding: 'utf8' }));
    t.is(info.format, 'qcow2');
    t.is(info['backing-filename'], master);
    t.is(info['backing-filename-format'], format);
    t.is(fs.statSync(master).mtimeMs, before);
  }
});

test('a broken descriptor is reported and skipped; the rest serve', async (t) => {
  const dir = tempDir(t);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'good.qcow2'), '16M']);
  fs.writeFileSync(path.join(dir, 'good.yml'), 'name: good\nimage: good.qcow2\ncpus: { default: 2, max: 4 }\n');
  fs.writeFileSync(path.join(dir, 'badname.yml'), 'name: ../../etc/passwd\nimage: good.qcow2\n');
  fs.writeFileSync(path.join(dir, 'badmem.yml'), 'name: badmem\nimage: good.qcow2\nmemoryMiB: { default: 8G }\n');
  fs.writeFileSync(path.join(dir, 'noimage.yml'), 'name: noimage\nimage: nothing-here.qcow2\n');
  fs.writeFileSync(path.join(dir, 'notyaml.yml'), 'name: [\n');
  fs.writeFileSync(path.join(dir, 'zz-dup.yml'), 'name: good\nimage: good.qcow2\n');
  fs.writeFileSync(path.join(dir, 'wrongformat.yml'), 'name: wrongformat\nimage: good.qcow2\nformat: raw\n');
  const catalog = await loadCatalog(dir, 'qemu-img');
  t.deepEqual(catalog.list().map((m) => m.name), ['good']);
  t.deepEqual(catalog.get('good')?.cpus, { default: 2, max: 4 });
  const problems = catalog.problems.join('\n');
  t.regex(problems, /badname\.yml: name must be a name of lower-case letters/);
  t.regex(problems, /badmem\.yml: memoryMiB\.default must be an integer from 16 to \d+, got "8G"/);
  t.regex(problems, /noimage\.yml: image .*nothing-here\.qcow2 is missing or unreadable/);
  t.regex(problems, /notyaml\.yml: not valid YAML/);
  t.regex(problems, /zz-dup\.yml: name "good" is already used by .*good\.yml/);
  t.regex(problems, /wrongformat\.yml: format is "raw" but qemu-img reports "qcow2"/);
});

test('the bundled demo descriptor parses', async (t) => {
  const file = path.resolve('machines', 'demo.yml');
  const { machine, problems } = parseMachine((await import('yaml')).parse(fs.readFileSync(file, 'utf8')), file);
  t.deepEqual(problems, []);
  t.is(machine?.name, 'demo');
  t.is(machine?.image, path.resolve('machines', 'images', 'demo.qcow2'));
});

function makeIso(dir: string, name: string): string {
  requireProgram('genisoimage', 'genisoimage');
  const src = path.join(dir, `${name}-src`);
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'README'), 'a live CD\n');
  const iso = path.join(dir, `${name}.iso`);
  execFileSync('genisoimage', ['-quiet', '-V', 'QWDTEST', '-o', iso, src]);
  return iso;
}

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('an ISO machine gets a blank qcow2 disk of qemu.isoDiskGiB, no backing file, and the ISO as a read-only CD-ROM', async (t) => {
  const setup = makeSetup(t, { qemu: { isoDiskGiB: 2 } }, {
    machines: (d) => {
      makeIso(d, 'live');
      fs.writeFileSync(path.join(d, 'live.yml'), 'name: live\nimage: live.iso\n');
    },
  });
  const iso = path.join(setup.machinesDir, 'live.iso');
  const before = { sha: sha256(iso), mtimeMs: fs.statSync(iso).mtimeMs };
  const catalog = await loadCatalog(setup.config.machinesDir, setup.config.qemu.img);
  t.deepEqual(catalog.problems, []);
  const machine = catalog.get('live')!;
  t.is(machine.format, 'iso');
  const launcher = new LocalLauncher({ config: setup.config, accel: chooseAccelerator('tcg', probeHostAccel()), log: silentLogger() });
  const runDir = path.join(setup.config.runDir, 'bbbbbbbbbbb1');
  const handle = await launcher.start({ sessionId: 'bbbbbbbbbbb1', machine, cpus: 1, memoryMiB: 128, runDir, expiresAt: Date.now() + 60_000 });
  t.teardown(async () => {
    await launcher.stop(handle);
    await launcher.cleanup(handle, runDir);
  });

  const disk = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path.join(runDir, 'disk.qcow2')], { encoding: 'utf8' }));
  t.is(disk.format, 'qcow2');
  t.is(disk['virtual-size'], 2 * 1024 ** 3);
  t.false('backing-filename' in disk, 'a blank disk, not an overlay of the ISO');

  // What the running qemu really has attached (QMP query-block).
  const blocks = await launcher.qmp<Array<{ device: string; qdev?: string; removable: boolean; inserted?: { file: string; ro: boolean; drv: string } }>>(handle, 'query-block');
  const cd = blocks.find((b) => b.device === 'cd0');
  t.truthy(cd, `a cd0 drive among ${blocks.map((b) => b.device).join(', ')}`);
  t.is(cd!.inserted?.file, machine.image);
  t.true(cd!.inserted?.ro, 'the ISO is read-only');
  t.true(cd!.removable, 'attached as a CD-ROM');
  const hd = blocks.find((b) => b.inserted?.file === path.join(runDir, 'disk.qcow2'));
  t.truthy(hd, 'the blank disk is attached');
  t.false(hd!.inserted!.ro);

  await launcher.stop(handle);
  t.is(sha256(iso), before.sha, 'the ISO is never written');
  t.is(fs.statSync(iso).mtimeMs, before.mtimeMs);
});

test('an ISO machine\'s own isoDiskGiB wins over the site default', async (t) => {
  const dir = tempDir(t);
  const iso = makeIso(dir, 'own');
  const { machine, problems } = parseMachine({ name: 'own', image: iso, format: 'iso', isoDiskGiB: 3 }, path.join(dir, 'own.yml'));
  t.deepEqual(problems, []);
  const { overlay } = await createOverlay('qemu-img', machine!, dir, 1, dir);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', overlay], { encoding: 'utf8' }));
  t.is(info['virtual-size'], 3 * 1024 ** 3);
  t.false('backing-filename' in info);
});
