// The real qwdctl, spawned as a separate process against a temp state dir and
// real QEMU, next to a running broker that serves what the CLI starts.
import test from 'ava';
import { qwdctl } from '../helpers/cli.js';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import type { AddressInfo } from 'node:net';
import { startTestBroker } from '../helpers/broker.js';
import { ROOT, makeSetup, pidsMentioning, requireProgram, requireQemu, tempDir } from '../helpers/env.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { qwdctlOnTerminal } from '../helpers/pty.js';

test.before(() => requireQemu());


test('start → status → url through the broker → extend → stop leaves nothing', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  // The CLI prints links for the broker that actually listens (port 0 in tests).
  const c = ['--config', setup.configFile];
  const started = await qwdctl([...c, 'sessions', 'start', 'blank', '--cpus', '2', '--memory', '256', '--lifetime', '30m', '--user', 'admin1', '--json']);
  t.is(started.code, 0, started.stderr);
  const session = JSON.parse(started.stdout);
  t.regex(session.id, /^[0-9a-f]{12}$/);
  t.is(session.state, 'running');
  t.is(session.cpus, 2);
  t.is(session.memoryMiB, 256);
  // About 30 min left (the CLI round trips before this read take seconds on a busy host).
  t.true(session.remainingS > 1700 && session.remainingS <= 1800, `remainingS ${session.remainingS}`);
  t.is(pidsMentioning(`qwd-${session.id}`).length, 1, 'the VM outlives the CLI process');

  const status = await qwdctl([...c, 'status']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, new RegExp(`${session.id}\\s+admin1\\s+blank\\s+2\\s+256M\\s+running`));
  t.true(status.stdout.split('\n').every((line) => line.length <= 80 || /^(qemu-web-desktop|host:)/.test(line)), 'table fits 80 columns');
  const statusJson = JSON.parse((await qwdctl([...c, 'status', '--json'])).stdout);
  t.is(statusJson.sessions.length, 1);
  t.deepEqual(Object.keys(statusJson).sort(), ['accelerator', 'config', 'gpus', 'host', 'launcher', 'limits', 'machines', 'reserved', 'sessions', 'stateDir', 'version']);

  const url = (await qwdctl([...c, 'sessions', 'url', session.id])).stdout.trim();
  // The link works exactly as printed: the broker recorded its real port (listen.port is 0).
  t.true(url.startsWith(`${broker.url}/s/`), url);
  t.is((await fetch(url)).status, 200);
  t.deepEqual(JSON.parse((await qwdctl([...c, 'sessions', 'url', session.id, '--json'])).stdout), { id: session.id, url });
  const logs = JSON.parse((await qwdctl([...c, 'sessions', 'logs', session.id, '--json'])).stdout);
  t.is(logs.id, session.id);
  t.deepEqual(logs.logs.map((l: { name: string }) => l.name), ['qemu.log', 'serial.log']);
  t.true(logs.logs.every((l: { file: string; text: string | null; error: string | null }) => l.file.startsWith(session.runDir) && (typeof l.text === 'string') !== (l.error !== null)));
  const token = url.split('/s/')[1]!;
  const rfb = await connectRfb(`${broker.url.replace('http', 'ws')}/ws/${token}`);
  t.is(rfb.name, `QEMU (qwd-${session.id})`);
  t.is((await rfb.update(false)).length, 720 * 400 * 4);
  const shown = JSON.parse((await qwdctl([...c, 'sessions', 'show', session.id, '--json'])).stdout);
  t.is(shown.viewers, 1, 'viewer count recorded by the broker, seen by the CLI');
  rfb.close();

  const extended = await qwdctl([...c, 'sessions', 'extend', session.id.slice(0, 6), '--by', '1h', '--json']);
  t.is(extended.code, 0, extended.stderr);
  t.is(Date.parse(JSON.parse(extended.stdout).expiresAt), Date.parse(session.expiresAt) + 3600_000);
  const capped = await qwdctl([...c, 'sessions', 'extend', session.id, '--by', '30d']);
  t.is(capped.code, 0, 'extension is capped at the maximum life-time');
  const again = await qwdctl([...c, 'sessions', 'extend', session.id, '--by', '1m']);
  t.is(again.code, 4);
  t.regex(again.stderr, /maximum life-time/);

  const stopped = await qwdctl([...c, 'sessions', 'stop', session.id]);
  t.is(stopped.code, 0, stopped.stderr);
  t.deepEqual(pidsMentioning(`qwd-${session.id}`), []);
  t.false(fs.existsSync(session.runDir));
  t.deepEqual((await qwdctl([...c, 'sessions', 'list', '--json'])).stdout.trim(), '[]');
  t.is((await fetch(url)).status, 410);
});

test('DARTS aliases: start, status, stop --yes', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const started = await qwdctl([...c, 'start', 'blank', '--user', 'darts']);
  t.is(started.code, 0, started.stderr);
  t.regex(started.stdout, /^started session [0-9a-f]{12} \(blank, 1 CPU, 128 MiB\)/);
  t.regex((await qwdctl([...c, 'status'])).stdout, /darts\s+blank/);
  const refused = await qwdctl([...c, 'stop']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /without confirmation: add --yes/);
  t.is(pidsMentioning(setup.stateDir).length, 1, 'nothing stopped without confirmation');
  const stopped = await qwdctl([...c, 'stop', '--yes']);
  t.is(stopped.code, 0, stopped.stderr);
  t.deepEqual(pidsMentioning(setup.stateDir), []);
});

test('sessions stop --all on a terminal asks first: "n" stops nothing, "y" stops every session', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  for (const user of ['ada', 'grace']) {
    const started = await qwdctl([...c, 'sessions', 'start', 'blank', '--user', user]);
    t.is(started.code, 0, started.stderr);
  }
  t.is(pidsMentioning(setup.stateDir).length, 2);
  const prompt = /Stop all 2 sessions\? Unsaved work in them is lost\. \[y\/N\] /; // (readline then moves the cursor: ESC [ n G)
  const no = await qwdctlOnTerminal([...c, 'sessions', 'stop', '--all'], { answers: [{ when: prompt, send: 'n\r' }] });
  t.is(no.code, 0, no.output);
  t.regex(no.output, /Stop all 2 sessions\? Unsaved work in them is lost\. \[y\/N\] /);
  t.regex(no.output, /nothing stopped/);
  t.notRegex(no.output, /stopped session/);
  t.is(pidsMentioning(setup.stateDir).length, 2, 'both VMs still run after "n"');
  t.is(JSON.parse((await qwdctl([...c, 'sessions', 'list', '--json'])).stdout).length, 2);

  const yes = await qwdctlOnTerminal([...c, 'sessions', 'stop', '--all'], { answers: [{ when: prompt, send: 'y\r' }] });
  t.is(yes.code, 0, yes.output);
  t.regex(yes.output, /\[y\/N\] /);
  t.is((yes.output.match(/stopped session [0-9a-f]{12} \((ada|grace), blank\)/g) ?? []).length, 2, yes.output);
  t.deepEqual(pidsMentioning(setup.stateDir), [], 'every VM is gone after "y"');
  t.is((await qwdctl([...c, 'sessions', 'list', '--json'])).stdout.trim(), '[]');
});

test('machines import converts a DARTS machines.conf', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const conf = path.join(ROOT, 'test', 'fixtures', 'darts-machines.conf');
  const dry = await qwdctl([...c, 'machines', 'import', conf, '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.is(JSON.parse(dry.stdout).written.length, 4);
  t.false(fs.existsSync(path.join(setup.machinesDir, 'slax.yml')), 'dry run writes nothing');

  const res = await qwdctl([...c, 'machines', 'import', conf]);
  t.is(res.code, 0, res.stderr);
  t.regex(res.stdout, /4 machine\(s\) imported/);
  t.regex(res.stderr, /\[Debian11_DataAnalysis\] renamed to "debian11_dataanalysis"/);
  t.regex(res.stderr, /\[win10\] key "gpu" has no equivalent/);
  t.regex(res.stderr, /\[win10\] boot scripts are not imported/);
  t.regex(res.stderr, /\[broken section without data\] has no usable machine name|has neither url nor file/);
  const slax = parseYaml(fs.readFileSync(path.join(setup.machinesDir, 'slax.yml'), 'utf8'));
  t.deepEqual(slax, { name: 'slax', description: 'Slax 9 (Debian 9), light live system', image: 'images/slax-64bit-9.11.0.iso', format: 'iso', url: 'http://127.0.0.1:1/machines/slax-64bit-9.11.0.iso' });
  const deb = parseYaml(fs.readFileSync(path.join(setup.machinesDir, 'debian11_dataanalysis.yml'), 'utf8'));
  t.deepEqual(deb.cpus, { default: 2, max: 4 });
  t.deepEqual(deb.memoryMiB, { default: 4096, max: 8192 });
  t.is(deb.sha256, '0b5c2a7e8f4ad3a4b1e9f0c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6');
  // A section named like an image file, without url or file: the section name is the image.
  const dsl = parseYaml(fs.readFileSync(path.join(setup.machinesDir, 'dsl-4.4.10.yml'), 'utf8'));
  t.deepEqual(dsl, { name: 'dsl-4.4.10', description: 'Damn Small Linux 4.4.10', image: 'images/DSL-4.4.10.iso', format: 'iso' });
  const win = parseYaml(fs.readFileSync(path.join(setup.machinesDir, 'win10.yml'), 'utf8'));
  t.is(win.image, '/srv/vm/win10.qcow2');
  t.is(win.firmware, 'uefi');
  // Importing again overwrites nothing.
  const twice = await qwdctl([...c, 'machines', 'import', conf]);
  t.regex(twice.stdout, /0 machine\(s\) imported/);
});

test('machines import refuses image file names that would leave the images directory', async (t) => {
  const setup = makeSetup(t);
  const conf = path.join(ROOT, 'test', 'fixtures', 'darts-machines-unsafe.conf');
  const before = fs.readdirSync(path.dirname(setup.machinesDir)).sort();
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'import', conf]);
  t.is(res.code, 0, res.stderr);
  t.regex(res.stdout, /1 machine\(s\) imported/);
  t.deepEqual(fs.readdirSync(setup.machinesDir).sort(), ['blank.qcow2', 'blank.yml', 'fine.yml']);
  t.is(parseYaml(fs.readFileSync(path.join(setup.machinesDir, 'fine.yml'), 'utf8')).image, 'images/fine image.qcow2', 'an ordinary percent-encoded name is still decoded');
  const rejected: Array<[string, RegExp]> = [
    ['escape', /image file name "\.\.\/\.\.\/escape\.qcow2" taken from the url is not a plain file name/],
    ['backslash', /image file name "\.\.\\\\\.\.\\\\win\.qcow2" taken from the url is not a plain file name/],
    ['nul', /image file name "a\\u0000b\.qcow2" taken from the url is not a plain file name/],
    ['hidden', /image file name "\.bashrc" taken from the url is not a plain file name/],
    ['dotdot', /url ".*%2E%2E" names no file/],
    ['../../sectionpath.iso', /image file name "\.\.\/\.\.\/sectionpath\.iso" taken from the section name is not a plain file name/],
    ['relative', /file "\.\.\/\.\.\/etc\/relative\.qcow2" is neither an absolute path nor a plain file name/],
    ['badescape', /url ".*100%\.qcow2" is not a valid URL/],
  ];
  for (const [section, reason] of rejected) {
    const line = res.stderr.split('\n').find((l) => l.includes(`[${section}]`) && l.endsWith('; skipped'));
    t.truthy(line, `a warning names [${section}]: ${res.stderr}`);
    t.regex(line ?? '', reason, section);
  }
  t.deepEqual(fs.readdirSync(path.dirname(setup.machinesDir)).sort(), before, 'nothing written next to the machines directory');
});

interface ImageServerOptions {
  /** Cut the first transfer halfway. */
  cutFirst?: boolean;
  /** The ETag sent (null: none); default: a strong ETag from the body's hash. */
  etag?: string | null;
  /** Honour If-Range (RFC 9110 §13.1.5) as a correct server does; false: ignore it. */
  honourIfRange?: boolean;
  /** Answer range requests with this Content-Range instead of the true one (a broken server). */
  wrongContentRange?: (start: number, total: number) => string;
  /** Send the body in this many pieces, one every `paceMs` (a slow link, so progress is drawn). */
  pieces?: number;
  paceMs?: number;
}

/**
 * A loopback HTTP server for images: honours Range and If-Range like a real
 * file server (Node's http module does neither by itself), can cut the first
 * transfer halfway, and its file can be replaced between requests.
 */
async function imageServer(t: import('ava').ExecutionContext, initialBody: Buffer, opts: ImageServerOptions = {}) {
  // ifRange null: no If-Range header (as etag null: no ETag sent).
  const requests: Array<{ range: string | undefined; ifRange: string | null; status: number }> = [];
  let body = initialBody;
  const strongEtag = (b: Buffer) => `"${crypto.createHash('sha256').update(b).digest('hex').slice(0, 16)}"`;
  let etag = opts.etag === undefined ? strongEtag(body) : opts.etag;
  const server = http.createServer((req, res) => {
    const ifRange = req.headersDistinct['if-range']?.[0] ?? null;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    // If-Range: the range applies only when the validator still matches.
    const ranged = m !== null && (opts.honourIfRange === false || ifRange === null || ifRange === etag);
    const start = ranged ? Number(m[1]) : 0;
    const slice = body.subarray(start);
    const status = ranged ? 206 : 200;
    requests.push({ range: req.headers.range, ifRange, status });
    const contentRange = opts.wrongContentRange ? opts.wrongContentRange(start, body.length) : `bytes ${start}-${body.length - 1}/${body.length}`;
    res.writeHead(status, { 'content-length': slice.length, ...(etag ? { etag } : {}), ...(ranged ? { 'content-range': contentRange } : {}) });
    if (opts.cutFirst && requests.length === 1) {
      res.write(slice.subarray(0, Math.floor(slice.length / 2)), () => res.socket?.destroy());
      return;
    }
    if (opts.pieces && opts.pieces > 1) {
      const size = Math.ceil(slice.length / opts.pieces);
      let at = 0;
      const next = () => {
        if (res.destroyed) return;
        const piece = slice.subarray(at, at + size);
        at += size;
        if (at >= slice.length) res.end(piece);
        else res.write(piece, () => setTimeout(next, opts.paceMs ?? 100));
      };
      next();
      return;
    }
    res.end(slice);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    get etag() {
      return etag;
    },
    /** The remote file changes (a new release under the same URL). */
    replace(next: Buffer, nextEtag: string | null = strongEtag(next)) {
      body = next;
      etag = nextEtag;
    },
  };
}

/** A body that qemu-img sees as qcow2, followed by random bytes. */
function qcow2Body(t: import('ava').ExecutionContext, extraBytes: number): Buffer {
  const source = path.join(tempDir(t), 'src.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', source, '64M']);
  return Buffer.concat([fs.readFileSync(source), crypto.randomBytes(extraBytes)]);
}

function writeDescriptor(dir: string, name: string, url: string, sha256?: string) {
  fs.writeFileSync(path.join(dir, `${name}.yml`), `name: ${name}\nimage: images/${name}.qcow2\nurl: ${url}\n${sha256 ? `sha256: ${sha256}\n` : ''}`);
}

test('machines download: resumes an interrupted download and verifies sha256', async (t) => {
  const setup = makeSetup(t);
  const body = qcow2Body(t, 3 * 1024 * 1024);
  const sha = crypto.createHash('sha256').update(body).digest('hex');
  const server = await imageServer(t, body, { cutFirst: true });
  writeDescriptor(setup.machinesDir, 'remote', `${server.url}/remote.qcow2`, sha);
  const image = path.join(setup.machinesDir, 'images', 'remote.qcow2');

  const first = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'remote']);
  t.is(first.code, 7, first.stderr);
  t.regex(first.stderr, /interrupted after \d+ bytes; run it again to resume|incomplete; run it again to resume/);
  t.false(fs.existsSync(image), 'no half-written image under the final name');
  const partSize = fs.statSync(`${image}.part`).size;
  t.true(partSize > 0 && partSize < body.length);
  t.deepEqual(JSON.parse(fs.readFileSync(`${image}.part.json`, 'utf8')), { url: `${server.url}/remote.qcow2`, etag: server.etag, lastModified: null, totalBytes: body.length }, 'the partial keeps the validator of the file it is part of');

  const second = await qwdctl(['--config', setup.configFile, 'download', 'remote']);
  t.is(second.code, 0, second.stderr);
  t.regex(second.stdout, new RegExp(`resumed at ${partSize}\\).*\\(verified\\)`));
  t.is(server.requests[1]!.range, `bytes=${partSize}-`);
  t.is(server.requests[1]!.ifRange, server.etag, 'the resume is conditional on the same file (If-Range)');
  t.true(fs.readFileSync(image).equals(body));
  t.false(fs.existsSync(`${image}.part`));
  t.false(fs.existsSync(`${image}.part.json`));
  t.regex(second.stderr, /remote: 100%/, 'plain progress lines when not on a terminal');
});

test('machines download on a terminal draws one progress bar that is redrawn in place up to 100%', async (t) => {
  const setup = makeSetup(t);
  const body = qcow2Body(t, 1024 * 1024);
  const server = await imageServer(t, body, { pieces: 16, paceMs: 150 });
  writeDescriptor(setup.machinesDir, 'remote', `${server.url}/remote.qcow2`);
  const res = await qwdctlOnTerminal(['--config', setup.configFile, 'machines', 'download', 'remote']);
  t.is(res.code, 0, res.output);
  t.true(fs.readFileSync(path.join(setup.machinesDir, 'images', 'remote.qcow2')).equals(body));
  // Each redraw starts with a carriage return and rewrites the same line: no line
  // feed between the first bar and the one at 100%.
  const first = res.output.indexOf('\rremote [');
  const full = res.output.indexOf('100%', first);
  t.true(first >= 0 && full > first, res.output);
  const drawing = res.output.slice(first, res.output.indexOf('\r\n', full));
  t.false(drawing.includes('\n'), `the bar stays on one line: ${JSON.stringify(drawing)}`);
  const bars = drawing.split('\r').filter(Boolean);
  t.true(bars.length >= 3, `redrawn ${bars.length} times: ${JSON.stringify(drawing)}`);
  const percents = bars.map((bar) => {
    const m = /^remote \[([#.]{30})\] +(\d+)% \d+\.\d MiB$/.exec(bar);
    t.truthy(m, `a bar: ${JSON.stringify(bar)}`);
    return Number(m?.[2]);
  });
  t.deepEqual(percents, [...percents].sort((a, b) => a - b), 'the percentage only goes up');
  t.is(percents.at(-1), 100);
  t.true(percents.some((p) => p > 0 && p < 100), `intermediate percentages: ${percents.join(' ')}`);
  t.notRegex(res.output, /remote: \d+% \(/, 'no plain progress lines on a terminal');
  t.regex(res.output, /100% [\d.]+ MiB\r\n/, 'the finished bar ends its line');
});

test('machines download: a checksum mismatch keeps nothing', async (t) => {
  const setup = makeSetup(t);
  const server = await imageServer(t, crypto.randomBytes(256 * 1024));
  writeDescriptor(setup.machinesDir, 'tampered', `${server.url}/t.qcow2`, 'a'.repeat(64));
  const res = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'tampered']);
  t.is(res.code, 7);
  t.regex(res.stderr, /does not match its SHA-256 checksum/);
  t.deepEqual(fs.readdirSync(path.join(setup.machinesDir, 'images')), []);
});

test('machines download: a remote file that changed between attempts is fetched whole, not spliced onto the old partial', async (t) => {
  const setup = makeSetup(t);
  const oldBody = qcow2Body(t, 2 * 1024 * 1024);
  const newBody = qcow2Body(t, 2 * 1024 * 1024 + 4096);
  const server = await imageServer(t, oldBody, { cutFirst: true });
  writeDescriptor(setup.machinesDir, 'moving', `${server.url}/moving.qcow2`);
  const image = path.join(setup.machinesDir, 'images', 'moving.qcow2');
  const first = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'moving']);
  t.is(first.code, 7, first.stderr);
  const partSize = fs.statSync(`${image}.part`).size;
  t.true(partSize > 0 && partSize < oldBody.length);

  const oldEtag = server.etag;
  server.replace(newBody);
  const second = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'moving']);
  t.is(second.code, 0, second.stderr);
  t.deepEqual(server.requests[1], { range: `bytes=${partSize}-`, ifRange: oldEtag, status: 200 }, 'the server saw the old validator and sent the whole new file');
  t.true(fs.readFileSync(image).equals(newBody), 'the image is the new file, byte for byte');
  t.notRegex(second.stdout, /resumed at/);
  t.regex(second.stdout, /partial download not continued: the server sent the whole file/);
  t.false(fs.existsSync(`${image}.part`));
  t.false(fs.existsSync(`${image}.part.json`));
});

test('machines download: a server that ignores If-Range and sends a 206 of a different file (ETag) starts over', async (t) => {
  const setup = makeSetup(t);
  const oldBody = qcow2Body(t, 2 * 1024 * 1024);
  // Same length, different content: only the ETag tells them apart.
  const newBody = Buffer.concat([oldBody.subarray(0, 1024 * 1024), crypto.randomBytes(oldBody.length - 1024 * 1024)]);
  const server = await imageServer(t, oldBody, { cutFirst: true, honourIfRange: false });
  writeDescriptor(setup.machinesDir, 'sloppy', `${server.url}/sloppy.qcow2`);
  const image = path.join(setup.machinesDir, 'images', 'sloppy.qcow2');
  t.is((await qwdctl(['--config', setup.configFile, 'machines', 'download', 'sloppy'])).code, 7);
  server.replace(newBody);
  const second = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'sloppy']);
  t.is(second.code, 0, second.stderr);
  t.deepEqual(server.requests.map((r) => r.status), [200, 206, 200], 'the unusable 206 is dropped and the file asked for again without a range');
  t.is(server.requests[2]!.range, undefined);
  t.regex(second.stdout, /partial download not continued: the file changed \(ETag/);
  t.true(fs.readFileSync(image).equals(newBody));
});

test('machines download: without an ETag or Last-Modified a partial is not trusted and the file is fetched from the start', async (t) => {
  const setup = makeSetup(t);
  const body = qcow2Body(t, 1024 * 1024);
  const server = await imageServer(t, body, { cutFirst: true, etag: null });
  writeDescriptor(setup.machinesDir, 'plain', `${server.url}/plain.qcow2`);
  const image = path.join(setup.machinesDir, 'images', 'plain.qcow2');
  t.is((await qwdctl(['--config', setup.configFile, 'machines', 'download', 'plain'])).code, 7);
  const second = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'plain']);
  t.is(second.code, 0, second.stderr);
  t.is(server.requests[1]!.range, undefined, 'no Range without a validator to make it conditional');
  t.regex(second.stdout, /partial download not continued: the server gave no ETag or Last-Modified/);
  t.true(fs.readFileSync(image).equals(body));
});

test('machines download: a 206 whose Content-Range does not continue the partial is a clear error and leaves no image', async (t) => {
  const setup = makeSetup(t);
  const body = qcow2Body(t, 2 * 1024 * 1024);
  // The broken server sends the rest of the file but labels it as starting at 0.
  const server = await imageServer(t, body, { cutFirst: true, wrongContentRange: (start, total) => `bytes 0-${total - 1 - start}/${total}` });
  writeDescriptor(setup.machinesDir, 'broken', `${server.url}/broken.qcow2`);
  const image = path.join(setup.machinesDir, 'images', 'broken.qcow2');
  t.is((await qwdctl(['--config', setup.configFile, 'machines', 'download', 'broken'])).code, 7);
  const partSize = fs.statSync(`${image}.part`).size;
  const second = await qwdctl(['--config', setup.configFile, 'machines', 'download', 'broken']);
  t.is(second.code, 7, second.stderr);
  t.regex(second.stderr, new RegExp(`Cannot resume the download of .*: the server answered 206 with Content-Range "bytes 0-${body.length - 1 - partSize}/${body.length}", expected bytes ${partSize}-…/${body.length}\\. The partial download was deleted`));
  t.false(fs.existsSync(image), 'no image under the final name');
  t.false(fs.existsSync(`${image}.part`), 'the partial is dropped, so the next attempt starts clean');
  t.false(fs.existsSync(`${image}.part.json`));
});

test('machines download --force and machines remove refuse (exit 4) while sessions use the machine\'s image', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const body = qcow2Body(t, 64 * 1024);
  const server = await imageServer(t, body);
  const image = path.join(setup.machinesDir, 'blank.qcow2');
  fs.appendFileSync(path.join(setup.machinesDir, 'blank.yml'), `url: ${server.url}/blank.qcow2\n`);
  // Another machine on the same master image: replacing it breaks blank's sessions too.
  fs.writeFileSync(path.join(setup.machinesDir, 'twin.yml'), `name: twin\nimage: blank.qcow2\nurl: ${server.url}/blank.qcow2\n`);
  const master = fs.readFileSync(image);
  const started = await qwdctl([...c, 'sessions', 'start', 'blank', '--json']);
  t.is(started.code, 0, started.stderr);
  const session = JSON.parse(started.stdout);
  t.teardown(() => qwdctl([...c, 'sessions', 'stop', session.id]).then(() => undefined));

  const forced = await qwdctl([...c, 'machines', 'download', 'blank', '--force']);
  t.is(forced.code, 4, forced.stderr);
  t.regex(forced.stderr, new RegExp(`^qwdctl: machine "blank" is used by 1 running session\\(s\\): ${session.id}; stop them first \\(--force would replace .*blank\\.qcow2, the backing file of their disks\\)\n$`));
  const twin = await qwdctl([...c, 'download', 'twin', '--force']);
  t.is(twin.code, 4, twin.stderr);
  t.regex(twin.stderr, new RegExp(`machine "twin" is used by 1 running session\\(s\\): ${session.id} \\(machine "blank", same image\\); stop them first`));
  const all = await qwdctl([...c, 'machines', 'download', '--force', '--json']);
  t.is(all.code, 4, all.stderr);
  t.deepEqual(JSON.parse(all.stdout).map((r: { name: string; status: string }) => [r.name, r.status.split(':')[0]]), [['blank', 'refused'], ['twin', 'refused']]);
  t.is(server.requests.length, 0, 'nothing was fetched');
  t.true(fs.readFileSync(image).equals(master), 'the master image is untouched');
  t.deepEqual(fs.readdirSync(setup.machinesDir).sort(), ['blank.qcow2', 'blank.yml', 'twin.yml'], 'no partial left behind');

  const removed = await qwdctl([...c, 'machines', 'remove', 'blank', '--image']);
  t.is(removed.code, 4, removed.stderr);
  t.regex(removed.stderr, new RegExp(`^qwdctl: machine "blank" is used by 1 running session\\(s\\): ${session.id}; stop them first \\(remove would delete `));
  t.true(fs.existsSync(path.join(setup.machinesDir, 'blank.yml')));
  t.true(fs.existsSync(image));
  // The twin's descriptor alone is not in use: removing it (without --image) is fine.
  t.is((await qwdctl([...c, 'machines', 'remove', 'twin'])).code, 0);

  t.is((await qwdctl([...c, 'sessions', 'stop', session.id])).code, 0);
  const after = await qwdctl([...c, 'machines', 'download', 'blank', '--force']);
  t.is(after.code, 0, after.stderr);
  t.true(fs.readFileSync(image).equals(body), 'once the sessions are gone, --force replaces the image');
});

test('machines check says exactly what is wrong; list and show', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  fs.writeFileSync(path.join(setup.machinesDir, 'lost.yml'), 'name: lost\nimage: nowhere.qcow2\n');
  execFileSync('qemu-img', ['create', '-q', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(setup.dir, 'gone-base.qcow2'), path.join(setup.machinesDir, 'orphan.qcow2'), '16M']);
  fs.writeFileSync(path.join(setup.machinesDir, 'orphan.yml'), 'name: orphan\nimage: orphan.qcow2\n');
  const check = await qwdctl([...c, 'machines', 'check']);
  t.is(check.code, 6);
  t.regex(check.stdout, /✓ blank/);
  t.regex(check.stdout, /✗ .*lost\.yml: image .*nowhere\.qcow2 is missing or unreadable/);
  t.regex(check.stdout, /✗ .*orphan\.yml: .*(gone-base\.qcow2|backing)/);
  const refresh = await qwdctl([...c, 'refresh', '--json']);
  t.is(refresh.code, 6);
  t.false(JSON.parse(refresh.stdout).ok);
  const list = await qwdctl([...c, 'machines', 'list', '--json']);
  t.deepEqual(JSON.parse(list.stdout).machines.map((m: { name: string }) => m.name), ['blank']);
  const show = JSON.parse((await qwdctl([...c, 'machines', 'show', 'blank', '--json'])).stdout);
  t.is(show.imageInfo.format, 'qcow2');
  t.is((await qwdctl([...c, 'machines', 'show', 'nope'])).code, 3);
});

test('machines add and remove', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const elsewhere = tempDir(t);
  // A master image must live inside the machines directory: one elsewhere is refused.
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path.join(elsewhere, 'outside.img'), '16M']);
  fs.writeFileSync(path.join(elsewhere, 'outside.yml'), 'name: outside\nimage: outside.img\n');
  const outside = await qwdctl([...c, 'machines', 'add', path.join(elsewhere, 'outside.yml')]);
  t.is(outside.code, 6);
  t.regex(outside.stderr, /outside\.img resolves to .*, outside the machines directory/);
  t.false(fs.existsSync(path.join(setup.machinesDir, 'outside.yml')));
  const extraImage = path.join(setup.machinesDir, 'extra.img');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', extraImage, '16M']);
  fs.writeFileSync(path.join(elsewhere, 'extra.yml'), `name: extra\nimage: ${extraImage}\n`);
  const added = await qwdctl([...c, 'machines', 'add', path.join(elsewhere, 'extra.yml')]);
  t.is(added.code, 0, added.stderr);
  t.is(parseYaml(fs.readFileSync(path.join(setup.machinesDir, 'extra.yml'), 'utf8')).image, extraImage);
  t.is((await qwdctl([...c, 'machines', 'add', path.join(elsewhere, 'extra.yml')])).code, 1, 'no duplicate');
  fs.writeFileSync(path.join(elsewhere, 'bad.yml'), 'name: Bad Name\nimage: extra.img\n');
  const bad = await qwdctl([...c, 'machines', 'add', path.join(elsewhere, 'bad.yml')]);
  t.is(bad.code, 6);
  t.false(fs.existsSync(path.join(setup.machinesDir, 'bad.yml')));
  t.is((await qwdctl([...c, 'machines', 'remove', 'extra'])).code, 0);
  t.false(fs.existsSync(path.join(setup.machinesDir, 'extra.yml')));
  t.true(fs.existsSync(extraImage), 'the image stays unless --image');
});

test('config check lists every problem; show masks nothing it should not; path', async (t) => {
  const setup = makeSetup(t);
  const ok = await qwdctl(['--config', setup.configFile, 'config', 'check']);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /config OK/);
  const shown = parseYaml((await qwdctl(['--config', setup.configFile, 'config', 'show'])).stdout);
  t.is(shown.listen.port, 0);
  t.is(shown.qemu.accel, 'auto');
  t.is((await qwdctl(['--config', setup.configFile, 'config', 'path'])).stdout.trim(), setup.configFile);
  t.regex((await qwdctl(['config', 'path'], { env: { QWD_CONFIG: '' } })).stdout, /embedded defaults/);

  fs.writeFileSync(setup.configFile, 'listen: { port: 99999, hots: x }\nlimits: { maxSessions: -1, minLifetimeS: "1h" }\nqemu: { accel: fast }\nnonsense: true\n');
  const bad = await qwdctl(['--config', setup.configFile, 'config', 'check']);
  t.is(bad.code, 6);
  for (const re of [/listen\.hots is not a known key/, /listen\.port must be an integer from 0 to 65535, got 99999/, /limits\.maxSessions must be an integer from 0 to 10000, got -1/, /limits\.minLifetimeS must be an integer .* got "1h"/, /qemu\.accel must be one of auto, kvm, tcg, got "fast"/, /nonsense is not a known key/]) {
    t.regex(bad.stderr, re);
  }
});

test('bad arguments are usage errors (exit 1) and change nothing', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const cases: string[][] = [
    ['sessions', 'start'],
    ['sessions', 'start', 'blank', '--lifetime', 'forever'],
    ['sessions', 'start', 'blank', '--cpus', '1 -display sdl'],
    ['sessions', 'start', '../../etc/passwd'],
    ['sessions', 'stop'],
    ['sessions', 'stop', '--all', 'abc'],
    ['sessions', 'extend', 'abcdef', '--by', 'soon'],
    ['sessions', 'show', '../x'],
    ['machines', 'import', '/nonexistent.conf'],
    ['completion', 'fish'],
    ['edit', 'everything'],
    ['sessions', 'frobnicate'],
    ['--no-such-flag'],
  ];
  for (const args of cases) {
    const res = await qwdctl([...c, ...args]);
    t.is(res.code, 1, `${args.join(' ')} → ${res.code}: ${res.stderr}`);
    t.true(res.stderr.length > 0, `${args.join(' ')} explains itself`);
  }
  t.deepEqual(pidsMentioning(setup.stateDir), []);
  const sessionsDir = path.join(setup.stateDir, 'sessions');
  t.deepEqual(fs.existsSync(sessionsDir) ? fs.readdirSync(sessionsDir) : [], []);
  t.deepEqual(fs.readdirSync(setup.machinesDir).sort(), ['blank.qcow2', 'blank.yml']);
});

test('help on every level, version, and bash completion', async (t) => {
  const help = await qwdctl(['--help']);
  t.is(help.code, 0);
  for (const noun of ['serve', 'status', 'sessions', 'machines', 'purge', 'config', 'version', 'completion']) t.regex(help.stdout, new RegExp(`\\n  ${noun}\\b`));
  const sub = await qwdctl(['machines', '--help']);
  t.regex(sub.stdout, /import \[options\] <machinesConf>/);
  t.regex((await qwdctl(['version'])).stdout, /^\d+\.\d+\.\d+\n$/);
  const completion = await qwdctl(['completion', 'bash']);
  t.regex(completion.stdout, /complete -F _qwdctl qwdctl/);
  t.regex(completion.stdout, /sessions\) words="list show start stop extend balloon url logs"/);
  t.regex(completion.stdout, /machines\) words="list show check prepare add import download build remove"/);
});

test('edit opens $EDITOR (argv, no shell) and validates afterwards', async (t) => {
  const setup = makeSetup(t);
  const c = ['--config', setup.configFile];
  const ok = await qwdctl([...c, 'edit', 'config'], { env: { EDITOR: 'true' } });
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /config OK/);
  const machine = await qwdctl([...c, 'edit', 'machines', 'blank'], { env: { EDITOR: 'true' } });
  t.is(machine.code, 0, machine.stderr);
  t.regex(machine.stdout, /✓ blank/);
  // An "editor" that breaks the file: the validation after it reports the problem.
  const breaker = path.join(tempDir(t), 'breaker.sh');
  fs.writeFileSync(breaker, '#!/bin/sh\necho "qemu: { accel: warp }" >> "$1"\n', { mode: 0o755 });
  const broken = await qwdctl([...c, 'edit', 'config'], { env: { EDITOR: breaker } });
  t.is(broken.code, 6);
  t.regex(broken.stderr, /qemu|accel/);
});

test('sessions url uses publicUrl when set; the broker removes its recorded address when it closes', async (t) => {
  const setup = makeSetup(t, { publicUrl: 'https://desktops.example.org/qwd/' });
  const broker = await startTestBroker(t, setup.config);
  const record = path.join(setup.stateDir, 'broker.json');
  t.is(JSON.parse(fs.readFileSync(record, 'utf8')).url, broker.url);
  const started = await qwdctl(['--config', setup.configFile, 'sessions', 'start', 'blank', '--json']);
  t.is(started.code, 0, started.stderr);
  const session = JSON.parse(started.stdout);
  const url = (await qwdctl(['--config', setup.configFile, 'sessions', 'url', session.id])).stdout.trim();
  t.regex(url, /^https:\/\/desktops\.example\.org\/qwd\/s\/[A-Za-z0-9_-]{20,}$/);
  t.is(url, session.url);
  await qwdctl(['--config', setup.configFile, 'sessions', 'stop', session.id]);
  await broker.close();
  t.false(fs.existsSync(record), 'a closed broker leaves no address behind');
});

test('a stale broker address (its process is gone) is not used for links', async (t) => {
  const setup = makeSetup(t);
  fs.mkdirSync(setup.stateDir, { recursive: true });
  // PID 2^22+1 is above Linux's pid_max ceiling: certainly no such process.
  fs.writeFileSync(path.join(setup.stateDir, 'broker.json'), JSON.stringify({ url: 'http://127.0.0.1:9', pid: 4194305 }));
  const started = await qwdctl(['--config', setup.configFile, 'sessions', 'start', 'blank', '--json']);
  t.is(started.code, 0, started.stderr);
  const session = JSON.parse(started.stdout);
  t.teardown(() => qwdctl(['--config', setup.configFile, 'sessions', 'stop', session.id]).then(() => undefined));
  t.regex(session.url, /^http:\/\/127\.0\.0\.1:0\/s\//, 'the config\'s listen address, not the dead broker\'s');
});

test('config show masks the SMTP password and the LDAP bind password', async (t) => {
  const smtpPassword = 'smtp-S3cret-value';
  const bindPassword = 'ldap-B1nd-value';
  const setup = makeSetup(t, {
    mail: { smtpHost: '127.0.0.1', smtpUser: 'relay', smtpPassword },
    auth: { backends: [{ type: 'ldap', name: 'campus', url: 'ldap://127.0.0.1:1', startTls: true, baseDn: 'dc=example,dc=org', bindDn: 'cn=reader,dc=example,dc=org', bindPassword }] },
  });
  const yaml = await qwdctl(['--config', setup.configFile, 'config', 'show']);
  t.is(yaml.code, 0, yaml.stderr);
  const asJson = await qwdctl(['--config', setup.configFile, 'config', 'show', '--json']);
  t.is(asJson.code, 0, asJson.stderr);
  for (const out of [yaml.stdout, asJson.stdout]) {
    t.false(out.includes(smtpPassword), 'no SMTP password in the output');
    t.false(out.includes(bindPassword), 'no bind password in the output');
  }
  for (const shown of [parseYaml(yaml.stdout), JSON.parse(asJson.stdout)]) {
    t.is(shown.mail.smtpPassword, '********');
    t.is(shown.mail.smtpUser, 'relay', 'what is not secret is shown');
    t.is(shown.auth.backends[0].bindPassword, '********');
    t.is(shown.auth.backends[0].bindDn, 'cn=reader,dc=example,dc=org');
  }
});

test('config check --json and config path --json answer in JSON, also when the config is invalid', async (t) => {
  const setup = makeSetup(t);
  const ok = await qwdctl(['--config', setup.configFile, 'config', 'check', '--json']);
  t.is(ok.code, 0, ok.stderr);
  t.deepEqual(JSON.parse(ok.stdout), { ok: true, source: setup.configFile });
  t.deepEqual(JSON.parse((await qwdctl(['--config', setup.configFile, 'config', 'path', '--json'])).stdout), { path: setup.configFile });
  t.deepEqual(JSON.parse((await qwdctl(['config', 'path', '--json'], { env: { QWD_CONFIG: '' } })).stdout), { path: null });
  fs.writeFileSync(setup.configFile, 'listen: { port: 99999 }\nqemu: { accel: fast }\n');
  const bad = await qwdctl(['--config', setup.configFile, 'config', 'check', '--json']);
  t.is(bad.code, 6);
  const report = JSON.parse(bad.stdout);
  t.false(report.ok);
  t.is(report.problems.length, 2);
  t.regex(report.problems.join('\n'), /listen\.port must be an integer from 0 to 65535, got 99999/);
  t.regex(report.problems.join('\n'), /qemu\.accel must be one of auto, kvm, tcg, got "fast"/);
  t.is(bad.stderr, '', 'the problems are printed once, as JSON');
});

test('a launch failure exits 5 with the user message; --verbose adds the QWD_ code and the cause', async (t) => {
  // A "QEMU" that exits at once: the catalog offers the machine, the launch fails.
  // (A master with a broken backing file no longer gets that far: the catalog refuses it.)
  const setup = makeSetup(t, { qemu: { binaries: { x86_64: '/bin/false' } } });
  const c = ['--config', setup.configFile];
  const plain = await qwdctl([...c, 'sessions', 'start', 'blank']);
  t.is(plain.code, 5, plain.stderr);
  t.is(plain.stderr, 'qwdctl: The desktop could not be started. Please try again; if it keeps failing, tell the administrators.\n', 'only the user message');
  t.is(plain.stdout, '');
  const verbose = await qwdctl([...c, '-v', 'sessions', 'start', 'blank']);
  t.is(verbose.code, 5);
  t.regex(verbose.stderr, /^qwdctl: The desktop could not be started\./m);
  t.regex(verbose.stderr, /^ {2}QWD_LAUNCH_FAILED: qemu for session \w+ exited during start-up \(exit 1\)/m);
  t.deepEqual(pidsMentioning(setup.stateDir), []);
  t.deepEqual(JSON.parse((await qwdctl([...c, 'sessions', 'list', '--json'])).stdout), [], 'the failed sessions are cleaned up');
});

test('sessions start refused by admission exits 4 and starts nothing', async (t) => {
  const setup = makeSetup(t, { limits: { maxSessions: 0 } });
  const refused = await qwdctl(['--config', setup.configFile, 'sessions', 'start', 'blank']);
  t.is(refused.code, 4, refused.stderr);
  t.regex(refused.stderr, /^qwdctl: This server is running its maximum of 0 desktops\. Please try again later\.\n$/);
  t.deepEqual(pidsMentioning(setup.stateDir), []);
  t.deepEqual(JSON.parse((await qwdctl(['--config', setup.configFile, 'sessions', 'list', '--json'])).stdout), []);
});

test('bash completion skips option values, completes verbs, and the arguments of edit and completion', async (t) => {
  requireProgram('bash', 'bash');
  const script = path.join(tempDir(t), 'qwdctl.bash');
  const generated = await qwdctl(['completion', 'bash']);
  t.is(generated.code, 0, generated.stderr);
  fs.writeFileSync(script, generated.stdout);
  /** Runs the real completion function in bash for a command line (a trailing space: a new, empty word). */
  const complete = (line: string) => {
    const words = line.split(' ');
    const out = execFileSync('bash', ['-c', 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _qwdctl; printf "%s\\n" "${COMPREPLY[@]}"', 'bash', script, ...words], { encoding: 'utf8' });
    return out.split('\n').filter(Boolean);
  };
  t.deepEqual(complete('qwdctl --config /etc/qwd/config.yml sessions st'), ['start', 'stop']);
  t.deepEqual(complete('qwdctl -c sessions.yml ses'), ['sessions'], 'an option value is not the noun');
  t.deepEqual(complete('qwdctl --state-dir /var/lib/qwd machines '), ['list', 'show', 'check', 'prepare', 'add', 'import', 'download', 'build', 'remove']);
  t.deepEqual(complete('qwdctl edit '), ['config', 'machines']);
  t.deepEqual(complete('qwdctl completion '), ['bash']);
  t.deepEqual(complete('qwdctl sessions start --cpus 2 '), [], 'no verbs offered after the verb');
  t.true(complete('qwdctl ').includes('status'));
});
