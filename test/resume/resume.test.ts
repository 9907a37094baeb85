// Prepared machines on real QEMU and the demo guest: qwdctl machines prepare's
// work (boot, wait for the guest's ready line, save, freeze the disk, check by
// resuming) and sessions that resume it instead of booting, with the cold boot
// they fall back to whenever the state cannot be used — never a hung session.
// One state is prepared for the file (before); tests that spoil a state work
// on their own copy of it.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { api, startTestBroker } from '../helpers/broker.js';
import { spawn } from 'node:child_process';
import { ROOT, makeSetup, pidsMentioning, requireDemoImage, requireQemu, waitFor } from '../helpers/env.js';
import { connectRfb, typeText } from '../helpers/rfb-client.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { prepareMachine } from '../../src/resume/prepare.js';
import { SLURM_BOOTS, checkPreparedState, preparedDir, readPrepared, STATE_FILE } from '../../src/resume/prepared.js';
import { qwdctl } from '../helpers/cli.js';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { chooseAccelerator, probeHostAccel } from '../../src/qemu/accel.js';
import { silentLogger } from '../../src/log.js';
import { QwdError } from '../../src/errors.js';
import type { LocalHandle } from '../../src/launcher/local.js';
import { parseConfig, type Config } from '../../src/config/schema.js';
import type { Broker } from '../../src/main.js';

const SIZE = { cpus: 1, memoryMiB: 256 };
/** Listed but never prepared: sessions of this size boot. */
const UNPREPARED = { cpus: 1, memoryMiB: 512 };
const RAW = { qemu: { network: 'none' } };

/** A machines dir with its own copy of the demo master (10 MB) and a demo.yml with resume sizes. */
function demoMachinesDir(dir: string): string {
  const machinesDir = path.join(dir, 'machines');
  fs.mkdirSync(path.join(machinesDir, 'images'), { recursive: true });
  fs.copyFileSync(requireDemoImage(), path.join(machinesDir, 'images', 'demo.qcow2'));
  fs.writeFileSync(path.join(machinesDir, 'demo.yml'), stringify({
    name: 'demo', description: 'Demo guest', image: 'images/demo.qcow2', format: 'qcow2',
    cpus: { default: 1, max: 2 }, memoryMiB: { default: 256, max: 1024 },
    resume: { sizes: [SIZE, UNPREPARED], ready: { serial: 'QWD: boot ok' } },
  }));
  return machinesDir;
}

async function demoOf(config: Config) {
  const catalog = await loadCatalog(config.machinesDir, config.qemu.img);
  const machine = catalog.get('demo');
  if (!machine) throw new Error(catalog.problems.join('\n'));
  return machine;
}

const accelOf = (config: Config) => chooseAccelerator(config.qemu.accel, probeHostAccel());

async function prepare(config: Config, size = SIZE, opts: { force?: boolean; onProgress?: (line: string) => void } = {}) {
  return prepareMachine({ config, accel: accelOf(config), log: silentLogger() }, await demoOf(config), size, opts);
}

let shared: { dir: string; machinesDir: string; report: Awaited<ReturnType<typeof prepare>>; progress: string[] };

test.before(async (t) => {
  requireQemu();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-resume-'));
  const machinesDir = demoMachinesDir(dir);
  // (A hook cannot use makeSetup's teardown: this config lives in the file's own temp dir, removed after.)
  const { config, problems } = parseConfig(
    { stateDir: 'var', machinesDir, ...RAW, log: { level: 'silent' } }, path.join(dir, 'config.yml'), dir,
  );
  if (!config) throw new Error(problems.join('\n'));
  const progress: string[] = [];
  shared = { dir, machinesDir, report: await prepare(config, SIZE, { onProgress: (l) => progress.push(l) }), progress };
  t.log(`prepared in ${shared.report.prepareMs} ms (state ${shared.report.stateBytes} bytes); checked by resuming in ` +
    `${shared.report.resumeMs} ms`);
});

test.after.always(() => {
  if (shared) fs.rmSync(shared.dir, { recursive: true, force: true });
});

/** A setup on the shared prepared state, or (copy: true) on a copy of its machines dir that a test may spoil. */
function setupOn(t: ExecutionContext, opts: { copy?: boolean } = {}) {
  if (!opts.copy) return makeSetup(t, { ...RAW, machinesDir: shared.machinesDir }, { machines: () => {} });
  const own = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-resume-own-'));
  t.teardown(() => fs.rmSync(own, { recursive: true, force: true }));
  const machinesDir = path.join(own, 'machines');
  fs.mkdirSync(machinesDir);
  // The same master (a directory link, as a site links machines/images), so the state still matches it.
  fs.symlinkSync(path.join(shared.machinesDir, 'images'), path.join(machinesDir, 'images'));
  fs.copyFileSync(path.join(shared.machinesDir, 'demo.yml'), path.join(machinesDir, 'demo.yml'));
  fs.cpSync(path.join(shared.machinesDir, 'prepared'), path.join(machinesDir, 'prepared'), { recursive: true });
  return makeSetup(t, { ...RAW, machinesDir }, { machines: () => {} });
}

async function createSession(broker: Broker, size: { cpus: number; memoryMiB: number } = SIZE, lifetimeS = 600) {
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'ada', lifetimeS, ...size });
  if (res.status !== 201) throw new Error(res.text);
  const row = broker.services.manager.get(res.json.id)!;
  const serial = () => fs.readFileSync(path.join(row.runDir, 'serial.log'), 'utf8');
  return { json: res.json, row, handle: row.handle as LocalHandle, serial };
}

/** A session that booted (it did not resume) and whose guest came up. */
async function assertBooted(t: ExecutionContext, session: Awaited<ReturnType<typeof createSession>>) {
  t.falsy(session.handle.resumed, 'booted, not resumed');
  await waitFor('the demo guest to boot', () => session.serial().includes('QWD: boot ok'), 90_000);
}

test('prepare leaves a frozen disk, a compressed state and what they were saved from', async (t) => {
  const dir = preparedDir(shared.machinesDir, 'demo', SIZE);
  t.is(shared.report.dir, dir);
  t.deepEqual(fs.readdirSync(dir).sort(), ['disk.qcow2', 'meta.json', 'state.zst']);
  const meta = await readPrepared(dir);
  if (meta === null || meta instanceof Error) return t.fail(String(meta));
  t.like(meta, { machine: 'demo', cpus: 1, memoryMiB: 256, stateBytes: shared.report.stateBytes });
  t.regex(meta.qemuVersion, /^QEMU emulator version/);
  t.deepEqual(fs.readdirSync(path.join(shared.machinesDir, 'prepared', '.work')), [], 'no VM dir is left behind');
  // Saved once the console was drawn and still: its blinking cursor does not count as a change.
  t.deepEqual(shared.progress, [
    'booting demo (1 CPU(s), 256 MiB)', 'waiting for the guest to be ready', 'waiting for its screen to be drawn and still',
    'saving its state', 'checking it: resuming it once',
  ]);
});

test('a session of a prepared size resumes: already booted, typing reaches its shell, and it stops like any other', async (t) => {
  t.timeout(120_000);
  const broker = await startTestBroker(t, setupOn(t).config);
  const session = await createSession(broker);
  t.true(session.handle.resumed, 'resumed, not booted');
  // The guest did not boot in this session: its serial port has printed no kernel banner and no boot line.
  t.notRegex(session.serial(), /Linux version|QWD: boot ok/);
  const viewer = await connectRfb(session.json.wsUrl);
  t.teardown(() => viewer.close());
  t.true((await viewer.update(false)).some((b) => b !== 0), 'the console is drawn at once');
  await typeText(viewer, 'echo resumed-ok > /dev/ttyS0\n');
  await waitFor('the resumed shell to answer', () => session.serial().includes('resumed-ok'), 30_000);
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${session.json.token}`)).status, 204);
  t.false(fs.existsSync(session.row.runDir));
  t.true(fs.existsSync(path.join(shared.report.dir, STATE_FILE)), 'the state stays for the next session');
});

test('a size that was never prepared boots, and machines check says why', async (t) => {
  t.timeout(120_000);
  const setup = setupOn(t);
  const choice = await checkPreparedState(setup.config, await demoOf(setup.config), UNPREPARED, 'tcg');
  t.deepEqual(choice, { resume: false, reason: 'not prepared (qwdctl machines prepare demo)' });
  const broker = await startTestBroker(t, setup.config);
  await assertBooted(t, await createSession(broker, UNPREPARED));
});

test('qwdctl machines check says per size whether sessions resume; with the Slurm launcher it says they boot, and prepare refuses', async (t) => {
  const local = setupOn(t);
  const check = await qwdctl(['--config', local.configFile, 'machines', 'check']);
  t.is(check.code, 0, check.stderr);
  t.regex(check.stdout, /^ {2}1 CPU\(s\), 256 MiB: resumes its prepared state$/m);
  t.regex(check.stdout, /^ {2}1 CPU\(s\), 512 MiB: boots \(not prepared \(qwdctl machines prepare demo\)\)$/m);
  // Folders for every session: none of them resumes, and check says so rather than "resumes".
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-resume-share-'));
  t.teardown(() => fs.rmSync(folder, { recursive: true, force: true }));
  const withShares = makeSetup(t, {
    ...RAW, machinesDir: shared.machinesDir, guest: { shareRoots: [folder], shares: [{ path: folder, tag: 'data' }] },
  }, { machines: () => {} });
  const sharesCheck = await qwdctl(['--config', withShares.configFile, 'machines', 'check']);
  t.regex(sharesCheck.stdout, /^ {2}1 CPU\(s\), 256 MiB: boots \(its sessions get host folders \(guest\.shares or the machine's shares\), which a saved state lacks\)$/m);
  const slurm = makeSetup(t, { ...RAW, launcher: 'slurm', machinesDir: shared.machinesDir }, { machines: () => {} });
  const slurmCheck = await qwdctl(['--config', slurm.configFile, 'machines', 'check']);
  t.is(slurmCheck.code, 0, slurmCheck.stderr);
  t.true(slurmCheck.stdout.split('\n').includes(`  1 CPU(s), 256 MiB: boots (${SLURM_BOOTS})`), slurmCheck.stdout);
  const before = fs.readdirSync(path.join(shared.machinesDir, 'prepared', 'demo')).sort();
  const refused = await qwdctl(['--config', slurm.configFile, 'machines', 'prepare', 'demo', '--force']);
  t.is(refused.code, 1, refused.stdout);
  t.regex(refused.stderr, /the Slurm launcher boots every session.*nothing would use a state prepared here/);
  t.deepEqual(fs.readdirSync(path.join(shared.machinesDir, 'prepared', 'demo')).sort(), before, 'nothing changed');
});

test('Ctrl-C during qwdctl machines prepare stops its VM and leaves nothing: no QEMU, no work dir, the old state as it was', async (t) => {
  t.timeout(120_000);
  const setup = setupOn(t, { copy: true });
  const before = fs.readdirSync(path.join(setup.config.machinesDir, 'prepared', 'demo')).sort();
  const child = spawn(process.execPath, [
    '--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), '--config', setup.configFile,
    'machines', 'prepare', 'demo', '--cpus', '1', '--memory', '256', '--force',
  ], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => child.kill('SIGKILL'));
  const work = path.join(setup.config.machinesDir, 'prepared', '.work');
  // Interrupted while its VM boots.
  await waitFor('the prepare to boot its VM', () => stderr.includes('waiting for the guest to be ready'), 60_000);
  const [vmDir] = fs.readdirSync(work);
  t.truthy(vmDir, 'the VM has its work dir');
  t.true(pidsMentioning(`qwd-${vmDir}`).length > 0, 'its QEMU runs');
  child.kill('SIGINT');
  t.is(await exited, 5, stderr);
  t.regex(stderr, /SIGINT: stopping the VM being prepared…/);
  t.regex(stderr, /qwdctl: machine demo: interrupted; its VM is stopped and nothing of this prepare is kept/);
  t.deepEqual(pidsMentioning(`qwd-${vmDir}`), [], 'its QEMU is gone');
  t.deepEqual(fs.readdirSync(work), [], 'its work dir is gone');
  t.deepEqual(fs.readdirSync(path.join(setup.config.machinesDir, 'prepared')).filter((e) => e.startsWith('.demo-')), [], 'and its temp dir');
  t.deepEqual(fs.readdirSync(path.join(setup.config.machinesDir, 'prepared', 'demo')).sort(), before, 'the old state is as it was');
});

test('qwdctl machines remove takes the machine\'s prepared states with it', async (t) => {
  const setup = setupOn(t, { copy: true });
  const prepared = path.join(setup.config.machinesDir, 'prepared', 'demo');
  t.true(fs.existsSync(prepared));
  const removed = await qwdctl(['--config', setup.configFile, 'machines', 'remove', 'demo']);
  t.is(removed.code, 0, removed.stderr);
  t.true(removed.stdout.split('\n').includes(`removed ${prepared}`), removed.stdout);
  t.false(fs.existsSync(prepared));
});

test('a truncated state is not loaded: the session boots', async (t) => {
  t.timeout(120_000);
  const setup = setupOn(t, { copy: true });
  const state = path.join(preparedDir(setup.config.machinesDir, 'demo', SIZE), STATE_FILE);
  fs.truncateSync(state, 1000);
  const choice = await checkPreparedState(setup.config, await demoOf(setup.config), SIZE, 'tcg');
  t.false(choice.resume);
  t.regex(choice.resume ? '' : choice.reason, /state\.zst has 1000 bytes, \d+ were saved/);
  const broker = await startTestBroker(t, setup.config);
  await assertBooted(t, await createSession(broker));
});

test('a foreign state of the right size makes QEMU fail to load it, and the session boots instead of hanging', async (t) => {
  t.timeout(150_000);
  const setup = setupOn(t, { copy: true });
  const state = path.join(preparedDir(setup.config.machinesDir, 'demo', SIZE), STATE_FILE);
  const size = fs.statSync(state).size;
  fs.writeFileSync(state, Buffer.alloc(size, 0x5a));
  t.true((await checkPreparedState(setup.config, await demoOf(setup.config), SIZE, 'tcg')).resume, 'it looks usable');
  const broker = await startTestBroker(t, setup.config);
  await assertBooted(t, await createSession(broker));
});

test('a master replaced after the state was saved is not resumed over: the session boots', async (t) => {
  t.timeout(150_000);
  const own = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-resume-master-'));
  t.teardown(() => fs.rmSync(own, { recursive: true, force: true }));
  const setup = makeSetup(t, { ...RAW, machinesDir: demoMachinesDir(own) }, { machines: () => {} });
  await prepare(setup.config);
  // An administrator copies a new master over the old one.
  const master = path.join(setup.config.machinesDir, 'images', 'demo.qcow2');
  fs.rmSync(master);
  fs.copyFileSync(requireDemoImage(), master);
  const choice = await checkPreparedState(setup.config, await demoOf(setup.config), SIZE, 'tcg');
  t.deepEqual(choice, { resume: false, reason: 'the master image changed since the state was saved: prepare it again' });
  const broker = await startTestBroker(t, setup.config);
  await assertBooted(t, await createSession(broker));
});

test('a broker restart adopts a resumed session, which keeps running and stops cleanly', async (t) => {
  t.timeout(120_000);
  const setup = setupOn(t);
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const session = await createSession(first);
  t.true(session.handle.resumed);
  await first.close();
  const second = await startTestBroker(t, setup.config);
  const adopted = second.services.manager.get(session.json.id)!;
  t.is(adopted.state, 'running');
  t.true((adopted.handle as LocalHandle).resumed);
  t.is((await api(second, 'DELETE', `/api/v1/sessions/${session.json.token}`)).status, 204);
  t.false(fs.existsSync(session.row.runDir));
});

test('a resumed session whose life-time runs out is stopped and released by the purge job', async (t) => {
  t.timeout(120_000);
  const clock = new FakeClock(Date.now());
  const broker = await startTestBroker(t, setupOn(t).config, { clock });
  const session = await createSession(broker, SIZE, 60);
  t.true(session.handle.resumed);
  await clock.advance(60_000);
  const report = await broker.services.purge.run();
  t.deepEqual(report.actions, [{ id: session.json.id, action: 'stop', reason: 'expired' }]);
  t.is(broker.services.manager.get(session.json.id), undefined);
  t.false(fs.existsSync(session.row.runDir));
  t.is((await api(broker, 'GET', `/api/v1/sessions/${session.json.token}`)).status, 410);
});

test('prepare refuses a size the machine does not list, a size already prepared, and a machine without resume, creating nothing', async (t) => {
  const setup = setupOn(t);
  const machine = await demoOf(setup.config);
  const before = fs.readdirSync(path.join(shared.machinesDir, 'prepared', 'demo')).sort();
  const refusal = async (promise: Promise<unknown>, message: RegExp) => {
    const err = await t.throwsAsync(promise);
    t.true(err instanceof QwdError && err.code === 'QWD_BAD_REQUEST', String(err));
    t.regex(err!.message, message);
  };
  const deps = { config: setup.config, accel: accelOf(setup.config), log: silentLogger() };
  await refusal(prepareMachine(deps, machine, { cpus: 2, memoryMiB: 256 }), /2 CPU\(s\) and 256 MiB is not one of its resume sizes \(1x256, 1x512\)/);
  await refusal(prepareMachine(deps, machine, SIZE), /already prepared at this size .*--force prepares it again/);
  await refusal(prepareMachine(deps, { ...machine, resume: null }, SIZE), /has no resume: profile/);
  t.deepEqual(fs.readdirSync(path.join(shared.machinesDir, 'prepared', 'demo')).sort(), before);
});
