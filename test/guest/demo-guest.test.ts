// The bundled demo guest (a real Linux under TCG): view-only enforcement on a
// live screen, power-off from inside (also of a VM adopted after a broker
// restart), host folders over 9p, and the balloon.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { parse, stringify } from 'yaml';
import type { ExecutionContext } from 'ava';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireDemoImage, requireQemu, waitFor, writeDemoMachine } from '../helpers/env.js';
import { connectRfb, typeText, type RfbSession } from '../helpers/rfb-client.js';
import type { Broker } from '../../src/main.js';
import type { LocalHandle } from '../../src/launcher/local.js';
import { isRunning } from '../../src/qemu/process.js';

test.before(() => {
  requireQemu();
  requireDemoImage();
});

const BOOT_TIMEOUT_MS = 60_000;

async function bootDemo(t: ExecutionContext, raw: Record<string, unknown> = {}, body: Record<string, unknown> = {}, machine: Record<string, unknown> = {}) {
  t.timeout(150_000);
  const setup = makeSetup(t, raw, {
    machines: (d) => {
      writeDemoMachine(d);
      const file = path.join(d, 'demo.yml');
      fs.writeFileSync(file, stringify({ ...parse(fs.readFileSync(file, 'utf8')), ...machine }));
    },
  });
  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'tester', lifetimeS: 3600, ...body });
  t.is(res.status, 201, res.text);
  const serial = path.join(broker.services.manager.get(res.json.id)!.runDir, 'serial.log');
  await waitFor('the demo guest to boot', () => fs.existsSync(serial) && fs.readFileSync(serial, 'utf8').includes('QWD: boot ok'), BOOT_TIMEOUT_MS);
  return { setup, broker, session: res.json, serial: () => fs.readFileSync(serial, 'utf8') };
}

const type = (rfb: RfbSession, text: string) => typeText(rfb, text, 20);

const digest = (fb: Buffer) => crypto.createHash('sha256').update(fb).digest('hex');

/**
 * The screen once it has stopped changing, as a digest. The text-mode cursor
 * blinks (QEMU toggles it every 500 ms) wherever the prompt is, so each sample
 * is a window of frames over more than a blink period, with the pixels that
 * changed inside the window blanked; the screen is settled when two windows
 * in a row agree. Typed text, command output or scrolling are stable pixels
 * and so change the digest.
 */
async function settledScreen(rfb: RfbSession): Promise<string> {
  let last = '';
  for (let i = 0; i < 10; i++) {
    const frames: Buffer[] = [];
    for (let k = 0; k < 6; k++) {
      if (k) await new Promise((r) => setTimeout(r, 200));
      frames.push(await rfb.update(false));
    }
    const first = frames[0]!;
    const masked = Buffer.from(first);
    for (const frame of frames.slice(1)) {
      if (frame.length !== first.length) continue; // a mode change: the next window settles it
      for (let p = 0; p < first.length; p += 4) if (frame.readUInt32LE(p) !== first.readUInt32LE(p)) masked.writeUInt32LE(0, p);
    }
    const now = digest(masked);
    if (now === last) return now;
    last = now;
  }
  return last;
}

test('view-only viewers cannot type into the guest; the control link can; framing stays intact', async (t) => {
  const { session, serial } = await bootDemo(t);
  const control = await connectRfb(session.wsUrl);
  const viewer = await connectRfb(session.viewWsUrl);
  t.teardown(() => { control.close(); viewer.close(); });
  const initial = await settledScreen(viewer);
  // Commands with a side effect the test can read: a line on the guest's serial port.
  // Had they reached the guest, Enter would run them and scroll the console up.
  await type(viewer, 'echo viewonly-typed > /dev/ttyS0\n');
  viewer.pointerEvent(100, 100, 1);
  viewer.pointerEvent(100, 100, 0);
  const afterViewOnly = await settledScreen(viewer);
  t.is(afterViewOnly, initial, 'the screen is unchanged by the view-only typing');
  t.is(await settledScreen(control), initial, 'the control link sees the same unchanged screen');
  await type(control, 'echo control-typed > /dev/ttyS0\n');
  await waitFor('the control link\'s command to run in the guest', () => serial().includes('control-typed'), 20_000);
  t.false(serial().includes('viewonly-typed'), 'the view-only input never reached the guest');
  t.not(await settledScreen(viewer), afterViewOnly, 'the control link\'s typing changes the screen, as the view-only viewer sees');
  // The view-only stream is still framed correctly: more updates arrive.
  t.is((await viewer.update(false)).length, viewer.width * viewer.height * 4);
  t.is((await viewer.update(true)).length, viewer.width * viewer.height * 4);
});

test('a power-off from inside the guest ends the session promptly and says so', async (t) => {
  const { broker, session } = await bootDemo(t);
  const control = await connectRfb(session.wsUrl);
  const closed = new Promise<number>((resolve) => control.ws.once('close', (code) => resolve(code)));
  await type(control, 'poweroff -f\n');
  await waitFor('the session to end', async () => (await api(broker, 'GET', `/api/v1/sessions/${session.token}`)).status === 410, 20_000);
  const gone = await api(broker, 'GET', `/api/v1/sessions/${session.token}`);
  t.regex(gone.json.error.message, /shut down/);
  await closed;
  t.is(broker.services.rows.byId(session.id), undefined);
});

test('a power-off from inside a guest adopted after a broker restart ends its session promptly and says so', async (t) => {
  t.timeout(150_000);
  const setup = makeSetup(t, {}, { machines: (d) => writeDemoMachine(d) });
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const res = await api(first, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'tester', lifetimeS: 3600 });
  t.is(res.status, 201, res.text);
  const session = res.json;
  const row = first.services.manager.get(session.id)!;
  const pid = (row.handle as LocalHandle).pid;
  const serial = path.join(row.runDir, 'serial.log');
  await waitFor('the demo guest to boot', () => fs.existsSync(serial) && fs.readFileSync(serial, 'utf8').includes('QWD: boot ok'), BOOT_TIMEOUT_MS);
  await first.close();
  // The second broker is not qemu's parent: no exit code will tell it how qemu ended.
  const second = await startTestBroker(t, setup.config);
  t.is(second.services.manager.get(session.id)!.state, 'running');
  const control = await connectRfb(`${second.url.replace('http', 'ws')}/ws/${session.token}`);
  const closed = new Promise<number>((resolve) => control.ws.once('close', (code) => resolve(code)));
  await type(control, 'poweroff -f\n');
  const typedAt = Date.now();
  await waitFor('the adopted session to end', async () => (await api(second, 'GET', `/api/v1/sessions/${session.token}`)).status === 410, 20_000);
  const gone = await api(second, 'GET', `/api/v1/sessions/${session.token}`);
  t.regex(gone.json.error.message, /shut down from inside/);
  t.notRegex(gone.json.error.message, /unexpectedly/);
  t.true(Date.now() - typedAt < 10_000, `ended ${Date.now() - typedAt} ms after the power-off`);
  await closed;
  t.is(second.services.rows.byId(session.id), undefined);
  t.false(fs.existsSync(row.runDir));
  t.false(isRunning(pid) && (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(session.id)), 'qemu is gone');
});

test('a host folder shared over 9p is seen by the guest', async (t) => {
  const root = fs.mkdtempSync(path.join('/tmp', 'qwd-share-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.chmodSync(root, 0o755); // QEMU runs as qemu.runAs (nobody) once started
  const folder = path.join(root, 'tester');
  fs.mkdirSync(folder, { mode: 0o755 });
  fs.writeFileSync(path.join(folder, 'hello.txt'), 'greetings from the host\n', { mode: 0o644 });
  fs.writeFileSync(path.join(folder, 'data.csv'), '1,2,3\n', { mode: 0o644 });
  const { serial } = await bootDemo(t, { guest: { shareRoots: [root], shares: [{ path: `${root}/@USER@`, tag: 'data', readonly: true }] } });
  await waitFor('the 9p report', () => serial().includes('QWD: 9p hello:'), 10_000);
  t.regex(serial(), /QWD: 9p data mounted at \/mnt\/data/);
  t.regex(serial(), /QWD: 9p data ls: data\.csv hello\.txt/);
  t.regex(serial(), /QWD: 9p hello: greetings from the host/);
});

/** uid and gid of a local user, from /etc/passwd (QEMU drops to qemu.runAs when started as root). */
function localUser(name: string): { uid: number; gid: number } {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no user ${name} in /etc/passwd (qemu.runAs)`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** A user.* extended attribute of a file (Node has no xattr API; python3's os.getxattr does). */
function userXattr(file: string, name: string): string | null {
  const r = spawnSync('python3', ['-c', 'import os,sys\ntry: print(os.getxattr(sys.argv[1], sys.argv[2]).hex())\nexcept OSError: print("none")', file, name], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`python3 is needed to read extended attributes (apt-get install python3): ${r.error?.message ?? r.stderr}`);
  return r.stdout.trim() === 'none' ? null : r.stdout.trim();
}

test('the guest writes into a read-write host folder and the host reads it back; a read-only folder refuses the write', async (t) => {
  const root = fs.mkdtempSync(path.join('/tmp', 'qwd-share-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.chmodSync(root, 0o755);
  const asRoot = process.getuid?.() === 0;
  const qemuUser = asRoot ? localUser('nobody') : null; // qemu.runAs (default nobody) when the broker runs as root
  const rw = path.join(root, 'work-tester');
  const ro = path.join(root, 'ref-tester');
  const nonce = crypto.randomBytes(8).toString('hex');
  for (const dir of [rw, ro]) {
    fs.mkdirSync(dir, { mode: 0o755 });
    // The demo guest's write probe: it writes "guest demo wrote: <first line>" to qwd-written-by-guest.
    fs.writeFileSync(path.join(dir, 'qwd-write-request'), `${nonce}\n`, { mode: 0o644 });
  }
  if (qemuUser) fs.chownSync(rw, qemuUser.uid, qemuUser.gid); // the QEMU user must be able to write there
  // The machine declares the read-write folder, the site the read-only one.
  const { serial } = await bootDemo(t,
    { guest: { shareRoots: [root], shares: [{ path: `${root}/ref-@USER@`, tag: 'ref', readonly: true }] } },
    {},
    { shares: [{ path: `${root}/work-@USER@`, tag: 'work', readonly: false }] });
  t.regex(serial(), /QWD: 9p work mounted at \/mnt\/work/);
  t.regex(serial(), /QWD: 9p ref mounted at \/mnt\/ref/);
  t.regex(serial(), /QWD: 9p work write ok/);
  t.regex(serial(), /QWD: 9p ref write refused: .*Read-only file system/);
  const written = path.join(rw, 'qwd-written-by-guest');
  t.is(fs.readFileSync(written, 'utf8'), `guest demo wrote: ${nonce}\n`, 'the host sees what the guest wrote');
  t.false(fs.existsSync(path.join(ro, 'qwd-written-by-guest')), 'nothing was written into the read-only folder');
  // security_model=mapped-xattr: the file belongs to QEMU's user on the host; the guest's
  // view of it (root, its mode) is kept in user.virtfs.* attributes, never applied to the host.
  const st = fs.statSync(written);
  if (qemuUser) t.is(st.uid, qemuUser.uid, 'created by qemu.runAs, not by the guest\'s root');
  t.is(userXattr(written, 'user.virtfs.uid'), '00000000', 'the guest\'s owner (uid 0) is stored in an extended attribute');
  t.not(userXattr(written, 'user.virtfs.mode'), null);
});

test('the balloon: query-balloon answers and a new target is reached by the guest', async (t) => {
  const { broker, session, serial } = await bootDemo(t, {}, { memoryMiB: 512 });
  t.regex(serial(), /QWD: balloon ok/);
  const manager = (broker as Broker).services.manager;
  t.is((await manager.balloonInfo(session.id)).actualMiB, 512);
  await manager.setBalloon(session.id, 256);
  await waitFor('the guest to give memory back', async () => (await manager.balloonInfo(session.id)).actualMiB <= 260, 20_000);
  const info = await manager.balloonInfo(session.id);
  t.true(info.actualMiB <= 260 && info.actualMiB >= 250, `actual ${info.actualMiB} MiB`);
  t.is(info.targetMiB, 256);
  await manager.setBalloon(session.id, 512);
  await waitFor('the memory to come back', async () => (await manager.balloonInfo(session.id)).actualMiB >= 500, 20_000);
  t.pass();
});

test('idle guests give memory back and get it again when a viewer connects', async (t) => {
  const { broker, session } = await bootDemo(t, { purge: { schedule: '* * * * * *' }, balloon: { idleAfterS: 1, idleTargetPercent: 50 } }, { memoryMiB: 512 });
  const manager = broker.services.manager;
  await waitFor('the idle reclaim', async () => (await manager.balloonInfo(session.id)).actualMiB <= 260, 30_000);
  const viewer = await connectRfb(session.wsUrl);
  t.teardown(() => viewer.close());
  await waitFor('the memory to return with a viewer', async () => (await manager.balloonInfo(session.id)).actualMiB >= 500, 30_000);
  t.is(manager.get(session.id)!.balloonTargetMiB, null);
});
