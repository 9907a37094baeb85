// Downloads cannot be turned into a copy of a host file or a write outside the
// machines directory: only http(s) URLs, images written 0640 through a partial
// file that follows no symlink, and the downloaded image's backing chain
// checked before it takes the image's name. A tiny HTTP server on 127.0.0.1.
import test from 'ava';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { downloadImage } from '../../src/catalog/download.js';
import { importDartsMachines } from '../../src/catalog/darts-import.js';
import { makeSetup, requireQemu, tempDir } from '../helpers/env.js';
import { qwdctl } from '../helpers/cli.js';
import { umaskEnv } from '../helpers/umask.js';

test.before(() => requireQemu());

async function serveFile(t: import('ava').ExecutionContext, body: Buffer): Promise<string> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function qcow2(t: import('ava').ExecutionContext, extra: string[] = []): Buffer {
  const file = path.join(tempDir(t), 'src.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...extra, file, '1M']);
  return fs.readFileSync(file);
}

test('DARTS import of url = file:///etc/shadow is refused naming file, section and key; nothing is written', async (t) => {
  const pure = importDartsMachines('[shadow]\nurl = file:///etc/shadow\n[ftp]\nurl = ftp://x/a.qcow2\n', 'm.conf');
  t.deepEqual(pure.machines, []);
  t.deepEqual(pure.warnings, [
    'm.conf: [shadow] url "file:///etc/shadow" must be an http:// or https:// URL (file:, ftp:, data: … are refused); skipped',
    'm.conf: [ftp] url "ftp://x/a.qcow2" must be an http:// or https:// URL (file:, ftp:, data: … are refused); skipped',
  ]);
  const setup = makeSetup(t);
  const conf = path.join(setup.dir, 'machines.conf');
  fs.writeFileSync(conf, '[shadow]\nurl = file:///etc/shadow\n');
  const before = fs.readdirSync(setup.machinesDir).sort();
  const imported = await qwdctl(['--config', setup.configFile, 'machines', 'import', conf]);
  t.is(imported.code, 0, imported.stderr);
  t.regex(imported.stderr, /machines\.conf: \[shadow\] url "file:\/\/\/etc\/shadow" must be an http/);
  const download = await qwdctl(['--config', setup.configFile, 'machines', 'download']);
  t.is(download.code, 0, download.stderr);
  t.deepEqual(fs.readdirSync(setup.machinesDir).sort(), before, 'no descriptor, no images/ directory, no copy');
});

test('a descriptor with a file:, ftp: or data: url is refused with file and key; downloadImage refuses them too', async (t) => {
  const setup = makeSetup(t);
  fs.writeFileSync(path.join(setup.machinesDir, 'shadow.yml'), 'name: shadow\nimage: images/shadow.qcow2\nurl: file:///etc/shadow\n');
  const check = await qwdctl(['--config', setup.configFile, 'machines', 'check']);
  t.is(check.code, 6);
  t.regex(check.stdout, /shadow\.yml: url must be an http:\/\/ or https:\/\/ URL \(file:, ftp:, data: … are refused\), got "file:\/\/\/etc\/shadow"/);
  const dir = tempDir(t);
  for (const url of ['file:///etc/shadow', 'ftp://127.0.0.1/x', 'data:,hello']) {
    const err = await t.throwsAsync(downloadImage(url, path.join(dir, 'x.qcow2')));
    t.regex(err!.message, /only http:\/\/ and https:\/\/ URLs are downloaded/);
  }
  t.deepEqual(fs.readdirSync(dir), []);
});

test('a downloaded image is 0640 whatever the umask, and a symlink at its name is replaced, not followed', async (t) => {
  const setup = makeSetup(t);
  const body = qcow2(t);
  const url = await serveFile(t, body);
  const images = path.join(setup.machinesDir, 'images');
  fs.mkdirSync(images);
  const victim = path.join(setup.dir, 'victim');
  fs.writeFileSync(victim, 'keep me');
  // Symlinks planted at the partial and at the image's own name: neither is followed.
  fs.symlinkSync(victim, path.join(images, 'remote.qcow2.part'));
  fs.symlinkSync(victim, path.join(images, 'remote.qcow2'));
  fs.writeFileSync(path.join(setup.machinesDir, 'remote.yml'), `name: remote\nimage: images/remote.qcow2\nurl: ${url}/remote.qcow2\n`);
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'download', '--force', 'remote'], { env: umaskEnv(setup.dir, 0o000) });
  t.is(res.code, 0, res.stderr);
  t.is(fs.readFileSync(victim, 'utf8'), 'keep me');
  const stat = fs.lstatSync(path.join(images, 'remote.qcow2'));
  t.true(stat.isFile());
  t.is(stat.mode & 0o777, 0o640);
  t.true(fs.readFileSync(path.join(images, 'remote.qcow2')).equals(body));
});

test('a downloaded image whose backing file escapes is deleted before it takes the name; an image path outside is not written', async (t) => {
  const setup = makeSetup(t);
  const url = await serveFile(t, qcow2(t, ['-u', '-F', 'raw', '-b', '/etc/shadow']));
  fs.writeFileSync(path.join(setup.machinesDir, 'evil.yml'), `name: evil\nimage: images/evil.qcow2\nurl: ${url}/evil.qcow2\n`);
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'evil']);
  t.is(res.code, 5, res.stderr);
  t.regex(res.stderr, /the downloaded image was deleted: .*"\/etc\/shadow" resolves to \/etc\/shadow, outside/);
  t.deepEqual(fs.readdirSync(path.join(setup.machinesDir, 'images')), []);

  const away = tempDir(t);
  fs.writeFileSync(path.join(setup.machinesDir, 'away.yml'), `name: away\nimage: ${away}/away.qcow2\nurl: ${url}/away.qcow2\n`);
  const outside = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'away']);
  t.not(outside.code, 0);
  t.regex(outside.stderr, /resolves to .*away\.qcow2, outside the machines directory/);
  t.deepEqual(fs.readdirSync(away), []);
});
