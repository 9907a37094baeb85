// The Slurm job script and sbatch options, as pure functions, plus the script
// run by a real bash against a real QEMU (no Slurm needed for that part).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { buildJobScript, shellQuote, vncListen, probeHost, NAMESPACED_VNC_LISTEN, NODE_DIR_PLACEHOLDER, type JobScriptInput } from '../../src/launcher/slurm-script.js';
import { buildGuestRuleset } from '../../src/guest/network-policy.js';
import { exitInfo, sbatchArgs } from '../../src/launcher/slurm.js';
import { buildQemuArgv } from '../../src/qemu/argv.js';
import { overlayArgv } from '../../src/snapshot/overlay.js';
import { parseConfig } from '../../src/config/schema.js';
import { pidsMentioning, requireProgram, requireQemu, tempDir, waitFor } from '../helpers/env.js';
import { freePorts } from '../helpers/peer-process.js';
import { AUDIO, GPU, makeSysfs } from '../helpers/sysfs.js';

test('shellQuote gives bash back exactly the value', (t) => {
  for (const value of ["plain", "it's", "$(touch /tmp/x) `id` ${HOME} \\ \" ; & | > <", "spaces  and\ttabs", '', "''", 'ünïcödé']) {
    const out = spawnSync('bash', ['-c', `printf %s ${shellQuote(value)}`], { encoding: 'utf8' });
    t.is(out.stdout, value);
  }
  t.throws(() => shellQuote('a\nb'), { message: /control character/ });
});

test('VNC listen and probe addresses', (t) => {
  t.is(vncListen('0.0.0.0'), '0.0.0.0:@QWD_VNC_DISPLAY@');
  t.is(vncListen('::'), '[::]:@QWD_VNC_DISPLAY@');
  t.is(probeHost('0.0.0.0'), '127.0.0.1');
  t.is(probeHost('::'), '::1');
  t.is(probeHost('10.1.2.3'), '10.1.2.3');
});

const config = (slurm: Record<string, unknown> = {}) => {
  const parsed = parseConfig({ launcher: 'slurm', slurm }, null, '/srv/qwd');
  if (!parsed.config) throw new Error(parsed.problems.join('\n'));
  return parsed.config;
};
const machine = { name: 'demo', arch: 'x86_64', format: 'qcow2', image: '/img/demo.qcow2' } as never;

test('sbatch options: job name, time from the life-time, resources, site and per-machine options', (t) => {
  const now = 1_000_000;
  const c = config({ partition: 'desk', account: 'lab', qos: 'short', extraArgs: ['--constraint=avx2'], machines: { demo: { partition: 'gpu', extraArgs: [] } } });
  const args = sbatchArgs(c, { sessionId: 'abc123abc123', machine, cpus: 2, memoryMiB: 1024, expiresAt: now + 3600_000 + 1 }, '/shared/abc123abc123', now);
  t.deepEqual(args, [
    '--job-name=qwd-abc123abc123', '--time=61', '--nodes=1', '--ntasks=1', '--no-requeue', '--export=PATH,HOME,LANG,TMPDIR', '--cpus-per-task=2', '--mem=1280M',
    '--chdir=/shared/abc123abc123', '--output=/shared/abc123abc123/slurm.out', '--partition=gpu', '--account=lab', '--qos=short',
  ]);
  const withGpu = sbatchArgs(config({ gpuGres: 'gpu:a100' }), { sessionId: 'abc123abc123', machine, cpus: 1, memoryMiB: 256, expiresAt: now + 60_000, gpuCount: 2 }, '/s/x', now);
  t.true(withGpu.includes('--gres=gpu:a100:2'));
  t.false(sbatchArgs(c, { sessionId: 'abc123abc123', machine, cpus: 1, memoryMiB: 256, expiresAt: now + 60_000, gpuCount: 1 }, '/s/x', now).some((a) => a.startsWith('--gres')), 'no gres without slurm.gpuGres');
  const other = sbatchArgs(c, { sessionId: 'abc123abc123', machine: { ...(machine as object), name: 'other' } as never, cpus: 1, memoryMiB: 256, expiresAt: now + 10_000 }, '/s/x', now);
  t.true(other.includes('--partition=desk'));
  t.true(other.includes('--constraint=avx2'));
  t.true(other.includes('--time=1'), 'Slurm counts whole minutes; never less than one');
});

test('slurm config: defaults, and every bad key reported at once', (t) => {
  const c = config();
  t.is(c.slurm.sharedDir, '/srv/qwd/var/slurm');
  t.is(c.slurm.vncBind, '0.0.0.0');
  t.deepEqual(c.slurm.binaries, { sbatch: 'sbatch', squeue: 'squeue', scontrol: 'scontrol', scancel: 'scancel' });
  const bad = parseConfig({ launcher: 'slurm', slurm: { partition: 'a b', extraArgs: 'rm -rf /', vncPortMin: 6000, vncPortMax: 5999, env: { 'BAD-NAME': 'x' }, machines: { demo: { colour: 'red' } }, typo: 1 } }, 'c.yml', '/');
  t.is(bad.config, null);
  const text = bad.problems.join('\n');
  for (const key of ['slurm.partition', 'slurm.extraArgs', 'slurm.vncPortMax', 'slurm.env.BAD-NAME', 'slurm.machines.demo.colour', 'slurm.typo']) t.true(text.includes(key), `${key} reported:\n${text}`);
});

test('why a job ended, in words', (t) => {
  const info = (state: string) => ({ state } as never);
  t.regex(exitInfo(info('TIMEOUT'), null).reason!, /time limit/);
  t.regex(exitInfo(info('CANCELLED'), null).reason!, /cancelled/);
  t.regex(exitInfo(info('PREEMPTED'), null).reason!, /preempted/);
  t.regex(exitInfo(info('COMPLETED'), { state: 'exited', code: 0 }).reason!, /shut down/);
  t.regex(exitInfo(info('FAILED'), { state: 'exited', code: 1 }).reason!, /unexpectedly/);
  t.regex(exitInfo(null, null).reason!, /unexpectedly/);
});

function scriptFor(dir: string, bind: string, ports: [number, number], accel: JobScriptInput['accel'] = 'auto', guestNetwork: JobScriptInput['guestNetwork'] = null): string {
  const m = { name: 'blank', arch: 'x86_64', format: 'raw', image: path.join(dir, 'master.raw'), firmware: 'bios', diskInterface: 'virtio', shares: [], bootScripts: { scripts: [], delivery: 'cloud-init' } } as never;
  fs.writeFileSync(path.join(dir, 'master.raw'), Buffer.alloc(1024 * 1024));
  const jobDir = path.join(dir, 'job');
  fs.mkdirSync(jobDir, { mode: 0o700 });
  fs.writeFileSync(path.join(jobDir, 'vnc.secret'), 'pw123456', { mode: 0o600 });
  const paths = { overlay: path.join(jobDir, 'disk.qcow2'), qmpSocket: `${NODE_DIR_PLACEHOLDER}/qmp.sock`, vncSocket: '', serialLog: path.join(jobDir, 'serial.log'), pidFile: `${NODE_DIR_PLACEHOLDER}/qemu.pid`, qgaSocket: `${NODE_DIR_PLACEHOLDER}/qga.sock` };
  const listen = guestNetwork ? NAMESPACED_VNC_LISTEN : vncListen(bind);
  const argv = (a: 'kvm' | 'tcg') => buildQemuArgv(m, { cpus: 1, memoryMiB: 128 }, paths, {
    sessionId: 'feedfeedfeed', accel: a, sandbox: true, runAs: null, network: guestNetwork ? 'user' : 'none', uefiFirmware: '',
    vncTcp: { listen, secretFile: path.join(jobDir, 'vnc.secret') },
  });
  if (guestNetwork) fs.writeFileSync(guestNetwork.rulesFile, buildGuestRuleset({ allow: [], deny: [] }, []), { mode: 0o600 });
  return buildJobScript({
    sessionId: 'feedfeedfeed', jobDir, qemuBinary: 'qemu-system-x86_64', qemuImg: 'qemu-img', overlayArgv: overlayArgv(m, paths.overlay, 1), overlayPath: paths.overlay,
    argvKvm: argv('kvm'), argvTcg: argv('tcg'), accel, guestArch: 'x86_64', vncBind: bind, vncPortMin: ports[0], vncPortMax: ports[1], guestNetwork,
  });
}

const readJson = (file: string) => { try { return JSON.parse(fs.readFileSync(file, 'utf8')); } catch { return null; } };

test('the job script, run by bash: overlay, QEMU behind a VNC password on a port it really holds, SIGTERM → orderly exit', async (t) => {
  requireQemu();
  const dir = tempDir(t);
  const [port] = await freePorts(1);
  const script = scriptFor(dir, '127.0.0.1', [port!, port!]);
  const job = spawn('bash', ['-s'], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
  t.teardown(() => killJobGroup(job.pid!));
  job.stdin.end(script);
  const status = path.join(dir, 'job', 'status.json');
  const ready = await waitFor('the job to report ready', () => readJson(status)?.state === 'ready' ? readJson(status) : false, 15000);
  t.is(ready.port, port);
  t.is(ready.accel, 'tcg', 'kvm-pvm or no KVM here: TCG');
  t.true(fs.existsSync(path.join(dir, 'job', 'disk.qcow2')), 'the overlay was made in the job dir');
  // QEMU asks for VNC authentication (type 2) only.
  t.deepEqual(await rfbSecurityTypes(port!), [2]);
  // The password is in no process's command line.
  const cmdline = fs.readFileSync(`/proc/${ready.pid}/cmdline`, 'utf8');
  t.false(cmdline.includes('pw123456'));
  const exited = new Promise<number | null>((resolve) => job.once('exit', (code) => resolve(code)));
  process.kill(job.pid!, 'SIGTERM');
  t.is(await exited, 0);
  t.deepEqual(readJson(status), { state: 'exited', code: 0 });
  t.false(fs.existsSync(`/proc/${ready.pid}`), 'QEMU is gone');
});

const NODE_TOOLS = { unshare: '/usr/bin/unshare', nsenter: '/usr/bin/nsenter', ip: '/usr/sbin/ip', nft: '/usr/sbin/nft', pasta: '/usr/bin/pasta', socat: '/usr/bin/socat' };

test('with guest network, the job runs QEMU in a namespace of its own holding the node\'s addresses in its rules, serves its VNC on the port, and leaves nothing', async (t) => {
  requireQemu();
  for (const [tool, pkg] of [['ip', 'iproute2'], [NODE_TOOLS.nft, 'nftables'], ['pasta', 'passt'], ['socat', 'socat']] as const) requireProgram(tool, pkg);
  const dir = tempDir(t);
  const [port] = await freePorts(1);
  const script = scriptFor(dir, '127.0.0.1', [port!, port!], 'tcg', { tools: NODE_TOOLS, rulesFile: path.join(dir, 'job', 'guest-net.nft') });
  const job = spawn('bash', ['-s'], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
  t.teardown(() => killJobGroup(job.pid!));
  job.stdin.end(script);
  const status = path.join(dir, 'job', 'status.json');
  const ready = await waitFor('the job to report ready', () => {
    const s = readJson(status);
    if (s?.state === 'failed') throw new Error(s.error);
    return s?.state === 'ready' ? s : false;
  }, 20000);
  t.is(ready.port, port);
  t.not(fs.readlinkSync(`/proc/${ready.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'QEMU is in a network namespace of its own');
  // This host's own addresses are in the namespace's rules (here: an address of the default route's interface).
  const rules = spawnSync('nsenter', [`--net=/proc/${ready.pid}/ns/net`, '--', NODE_TOOLS.nft, 'list', 'set', 'inet', 'qwd_guest', 'host4'], { encoding: 'utf8' }).stdout;
  const hostAddr = JSON.parse(spawnSync('ip', ['-4', '-json', 'route', 'get', '192.0.2.200'], { encoding: 'utf8' }).stdout || '[{}]')[0]?.prefsrc;
  t.regex(rules, /127\.0\.0\.0\/8/);
  if (hostAddr) t.true(rules.includes(hostAddr), `${hostAddr} is in the rules: ${rules}`);
  // The port answers RFB (socat → QEMU's socket in the namespace), behind the password.
  t.deepEqual(await rfbSecurityTypes(port!), [2]);
  const exited = new Promise<number | null>((resolve) => job.once('exit', (code) => resolve(code)));
  process.kill(job.pid!, 'SIGTERM');
  t.is(await exited, 0);
  t.deepEqual(readJson(status), { state: 'exited', code: 0 });
  t.false(fs.existsSync(`/proc/${ready.pid}`), 'QEMU is gone');
  await waitFor('socat to be gone', () => pidsMentioning(`-LISTEN:${port},`).length === 0, 5000);
});

test('with guest network, a job of an unprivileged account makes its namespace in a user namespace of its own (no root on the node)', async (t) => {
  requireQemu();
  for (const [tool, pkg] of [['ip', 'iproute2'], [NODE_TOOLS.nft, 'nftables'], ['pasta', 'passt'], ['socat', 'socat'], ['setpriv', 'util-linux']] as const) requireProgram(tool, pkg);
  if (process.getuid?.() !== 0) return t.fail('this test runs the job as nobody: run the tests as root');
  const dir = tempDir(t);
  fs.chmodSync(dir, 0o755);
  const [port] = await freePorts(1);
  const script = path.join(dir, 'job.sh');
  fs.writeFileSync(script, scriptFor(dir, '127.0.0.1', [port!, port!], 'tcg', { tools: NODE_TOOLS, rulesFile: path.join(dir, 'job', 'guest-net.nft') }), { mode: 0o644 });
  for (const f of ['job', ...fs.readdirSync(path.join(dir, 'job')).map((n) => path.join('job', n)), 'master.raw']) fs.chownSync(path.join(dir, f), 65534, 65534);
  // pasta opens /dev/net/tun, which Debian makes 0666 and this test host may keep 0600: the job
  // gets a 0666 node of its own, bind-mounted in a private mount namespace, then runs as nobody.
  const tun = path.join(dir, 'tun');
  const asNobody = [
    `mknod ${shellQuote(tun)} c 10 200 && chmod 666 ${shellQuote(tun)} && mount --bind ${shellQuote(tun)} /dev/net/tun`,
    `exec setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp TMPDIR=/tmp bash ${shellQuote(script)}`,
  ].join(' && ');
  const job = spawn('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', asNobody], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  t.teardown(() => killJobGroup(job.pid!));
  let stderr = '';
  job.stderr.on('data', (d: Buffer) => (stderr += d));
  const status = path.join(dir, 'job', 'status.json');
  const ready = await waitFor('the job to report ready', () => {
    const s = readJson(status);
    if (s?.state === 'failed') throw new Error(`${s.error} ${stderr}`);
    return s?.state === 'ready' ? s : false;
  }, 20000);
  t.is(fs.statSync(`/proc/${ready.pid}`).uid, 65534, 'QEMU runs as the job\'s account');
  // The account holds every capability in its user namespace; QEMU none (it could otherwise flush the rules).
  t.regex(fs.readFileSync(`/proc/${ready.pid}/status`, 'utf8'), /^CapEff:\s+0+$/m, 'QEMU has no capability');
  t.not(fs.readlinkSync(`/proc/${ready.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'in a network namespace of its own');
  t.not(fs.readlinkSync(`/proc/${ready.pid}/ns/user`), fs.readlinkSync('/proc/self/ns/user'), 'owned by a user namespace of the job\'s');
  const inNs = (...argv: string[]) => spawnSync('nsenter', [`--net=/proc/${ready.pid}/ns/net`, '--', ...argv], { encoding: 'utf8' }).stdout;
  t.regex(inNs(NODE_TOOLS.nft, 'list', 'set', 'inet', 'qwd_guest', 'host4'), /127\.0\.0\.0\/8/, 'the guest rules are loaded');
  t.regex(inNs('ip', 'route', 'show', 'default') + inNs('ip', '-6', 'route', 'show', 'default'), /default/, 'pasta connected it');
  t.deepEqual(await rfbSecurityTypes(port!), [2]);
  const exited = new Promise<number | null>((resolve) => job.once('exit', (code) => resolve(code)));
  process.kill(ready.pid, 'SIGTERM');
  t.is(await exited, 0);
  t.deepEqual(readJson(status), { state: 'exited', code: 0 });
});

test('with guest network, a job that finds no free port fails clearly and leaves no QEMU behind', async (t) => {
  requireQemu();
  const dir = tempDir(t);
  const port = await heldPort(t);
  const script = scriptFor(dir, '127.0.0.1', [port, port], 'tcg', { tools: NODE_TOOLS, rulesFile: path.join(dir, 'job', 'guest-net.nft') });
  const out = spawnSync('bash', ['-s'], { input: script, encoding: 'utf8', timeout: 60000 });
  t.is(out.status, 1);
  t.regex(readJson(path.join(dir, 'job', 'status.json')).error, new RegExp(`no free VNC port in ${port}-${port}`));
  t.deepEqual(pidsMentioning(path.join(dir, 'job')), [], 'the QEMU it had started is gone');
});

test('with guest network, a node without one of the tools fails the job naming it and its Debian package, and starts nothing', (t) => {
  const dir = tempDir(t);
  const script = scriptFor(dir, '127.0.0.1', [5999, 5999], 'tcg', { tools: { ...NODE_TOOLS, socat: '/nonexistent/socat' }, rulesFile: path.join(dir, 'job', 'guest-net.nft') });
  const out = spawnSync('bash', ['-s'], { input: script, encoding: 'utf8', timeout: 30000 });
  t.is(out.status, 1);
  const status = readJson(path.join(dir, 'job', 'status.json'));
  t.is(status.state, 'failed');
  t.regex(status.error, /\/nonexistent\/socat is not installed on node .* \(Debian package socat\); guests with network need it/);
  t.deepEqual(pidsMentioning(path.join(dir, 'job')), [], 'no QEMU was started');
});

/** A free port of 127.0.0.1 that another program (a server of this test) then holds until the test ends. */
async function heldPort(t: ExecutionContext): Promise<number> {
  const [port] = await freePorts(1);
  const holder = net.createServer().listen(port!, '127.0.0.1');
  t.teardown(() => holder.close());
  await new Promise((r) => holder.once('listening', r));
  return port!;
}

/** Security types a VNC server on 127.0.0.1:port offers to a raw RFB 3.8 client. */
function rfbSecurityTypes(port: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length === 12) s.write('RFB 003.008\n');
      if (buf.length >= 13 && buf.length >= 13 + buf[12]!) { s.destroy(); resolve([...buf.subarray(13, 13 + buf[12]!)]); }
    });
    s.on('error', reject);
  });
}

test('the job script skips a port another program holds, and fails clearly when none is left', async (t) => {
  requireQemu();
  const dir = tempDir(t);
  const port = await heldPort(t);
  const out = spawnSync('bash', ['-s'], { input: scriptFor(dir, '127.0.0.1', [port, port]), encoding: 'utf8', timeout: 30000 });
  t.is(out.status, 1);
  const status = readJson(path.join(dir, 'job', 'status.json'));
  t.is(status.state, 'failed');
  t.regex(status.error, new RegExp(`no free VNC port in ${port}-${port}`));
});

test('a QEMU that cannot start is reported with its own words', async (t) => {
  requireQemu();
  const dir = tempDir(t);
  const [port] = await freePorts(1);
  const script = scriptFor(dir, '127.0.0.1', [port!, port!]).replace("ACCEL='auto'", "ACCEL='tcg'").replace(/'-m' '128M'/g, "'-m' 'lots'");
  const out = spawnSync('bash', ['-s'], { input: script, encoding: 'utf8', timeout: 30000 });
  t.is(out.status, 1);
  const status = readJson(path.join(dir, 'job', 'status.json'));
  t.is(status.state, 'failed');
  t.regex(status.error, /qemu failed to start on .*: .*(memory|size)/i);
});

test('the node-local dir reaches QEMU as it is, even with a & in TMPDIR (bash 5.2 patsub_replacement); a comma is refused clearly', async (t) => {
  requireQemu();
  const dir = tempDir(t);
  const amp = path.join(dir, 'tmp&x');
  fs.mkdirSync(amp);
  const [port] = await freePorts(1);
  const job = spawn('bash', ['-s'], { stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, TMPDIR: amp }, detached: true });
  t.teardown(() => killJobGroup(job.pid!));
  job.stdin.end(scriptFor(dir, '127.0.0.1', [port!, port!], 'tcg'));
  const status = path.join(dir, 'job', 'status.json');
  await waitFor('the job to report ready', () => readJson(status)?.state === 'ready', 15000);
  const [nodeDir] = fs.readdirSync(amp);
  t.regex(nodeDir!, /^qwd-feedfeedfeed\./);
  t.true(fs.existsSync(path.join(amp, nodeDir!, 'qmp.sock')), 'QMP listens in the node-local dir under the & path');
  const exited = new Promise<number | null>((resolve) => job.once('exit', (code) => resolve(code)));
  process.kill(job.pid!, 'SIGTERM');
  t.is(await exited, 0);

  const comma = path.join(dir, 'tmp,x');
  fs.mkdirSync(comma);
  const dir2 = tempDir(t);
  const out = spawnSync('bash', ['-s'], { input: scriptFor(dir2, '127.0.0.1', [port!, port!], 'tcg'), encoding: 'utf8', timeout: 30000, env: { ...process.env, TMPDIR: comma } });
  t.is(out.status, 1);
  t.regex(readJson(path.join(dir2, 'job', 'status.json')).error, /contains a comma/);
  t.deepEqual(fs.readdirSync(comma), [], 'nothing left in it');
});

test.serial('a stop that arrives while the job still makes the overlay ends the job there: QEMU never starts', async (t) => {
  requireQemu();
  const dir = tempDir(t);
  const [port] = await freePorts(1);
  // A slow qemu-img (2 s), so the SIGTERM surely comes while it runs.
  const slowImg = path.join(dir, 'slow-qemu-img');
  fs.writeFileSync(slowImg, '#!/bin/bash\nsleep 2\nexec qemu-img "$@"\n', { mode: 0o755 });
  const script = scriptFor(dir, '127.0.0.1', [port!, port!], 'tcg').replace("QEMU_IMG='qemu-img'", `QEMU_IMG=${shellQuote(slowImg)}`);
  const job = spawn('bash', ['-s'], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
  t.teardown(() => killJobGroup(job.pid!));
  const exited = new Promise<number | null>((resolve) => job.once('exit', (code) => resolve(code)));
  job.stdin.end(script);
  await waitFor('qemu-img to run', () => pidsMentioning(slowImg).length > 0, 30_000); // bash's start on a busy host
  process.kill(job.pid!, 'SIGTERM');
  t.is(await exited, 0);
  t.deepEqual(readJson(path.join(dir, 'job', 'status.json')), { state: 'exited', code: 0 });
  t.false(fs.existsSync(path.join(dir, 'job', 'qemu.log')), 'QEMU was never started');
  t.deepEqual(pidsMentioning(dir), [], 'nothing of this job is left running');
});

test('on the node, GPUs get the same guest slots as on a single host: one slot per card of the IOMMU group, its functions together', async (t) => {
  const dir = tempDir(t);
  // Group 4 holds two cards (04:00.0 + its audio 04:00.1, and 05:00.0), as on boards without ACS.
  const group = [GPU('0000:04:00.0', '4'), AUDIO('0000:04:00.1', '4'), GPU('0000:05:00.0', '4')];
  const sysfs = makeSysfs(path.join(dir, 'sysfs'), group);
  // QEMU stand-in: writes down its argv and fails (no VFIO device can exist here); the job then reports why.
  const recorded = path.join(dir, 'argv.txt');
  const fakeQemu = path.join(dir, 'record-qemu');
  fs.writeFileSync(fakeQemu, `#!/bin/bash\nprintf '%s\\n' "$@" > ${shellQuote(recorded)}\necho 'vfio: no such device' >&2\nexit 1\n`, { mode: 0o755 });
  const base = scriptFor(dir, '127.0.0.1', [5999, 5999], 'tcg');
  const script = base.replace("QEMU='qemu-system-x86_64'", `QEMU=${shellQuote(fakeQemu)}`)
    // The same script as with `gpus`: its GPU part goes where buildJobScript puts it, right after ARGV is chosen.
    .replace('GPU_PICKED=()\n', `${gpuPartOf({ count: 1, sysfsRoot: sysfs, lockDir: path.join(dir, 'locks'), exclude: [] })}\n`);
  const out = spawnSync('bash', ['-s'], { input: script, encoding: 'utf8', timeout: 30000 });
  t.is(out.status, 1, out.stderr);
  const argv = fs.readFileSync(recorded, 'utf8').split('\n');
  const nodeSide = argv.filter((a, i) => argv[i - 1] === '-device' && a.startsWith('vfio-pci,'));
  const m = { name: 'g', arch: 'x86_64', format: 'raw', image: '/img', firmware: 'bios', diskInterface: 'virtio', shares: [], bootScripts: { scripts: [], delivery: 'cloud-init' } } as never;
  const paths = { overlay: '/o', qmpSocket: '/q', vncSocket: '/v', serialLog: '/s', pidFile: '/p', qgaSocket: '/g' };
  const local = buildQemuArgv(m, { cpus: 1, memoryMiB: 128 }, paths, { sessionId: 'abcabcabcabc', accel: 'tcg', sandbox: false, runAs: null, network: 'none', uefiFirmware: '' }, { shares: [], seedIso: null, gpus: [group.map((f) => f.address)] });
  const hostSide = local.filter((a, i) => local[i - 1] === '-device' && a.startsWith('vfio-pci,'));
  t.deepEqual(nodeSide, hostSide);
  t.deepEqual(nodeSide, [
    'vfio-pci,host=0000:04:00.0,bus=pci.0,addr=0x10.0,multifunction=on',
    'vfio-pci,host=0000:04:00.1,bus=pci.0,addr=0x10.1',
    'vfio-pci,host=0000:05:00.0,bus=pci.0,addr=0x11.0',
  ]);
});

/** The GPU part of a job script alone (what buildJobScript inserts for `gpus`). */
function gpuPartOf(gpus: NonNullable<JobScriptInput['gpus']>): string {
  const full = buildJobScript({
    sessionId: 'feedfeedfeed', jobDir: '/j', qemuBinary: 'q', qemuImg: 'i', overlayArgv: [], overlayPath: '/j/o', argvKvm: [], argvTcg: [],
    accel: 'tcg', guestArch: 'x86_64', vncBind: '127.0.0.1', vncPortMin: 5900, vncPortMax: 5900, gpus,
  });
  return full.slice(full.indexOf('# ---- GPUs'), full.indexOf('ARGV+=("${GPU_ARGS[@]}")') + 'ARGV+=("${GPU_ARGS[@]}")'.length);
}

/**
 * The job's bash runs in a process group of its own (detached), like a batch
 * step: killing the group also ends the QEMU it started, even when a failed
 * test never got to stop it.
 */
function killJobGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is gone already: the job ended by itself.
  }
}
