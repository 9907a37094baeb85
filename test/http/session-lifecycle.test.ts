// End to end on real QEMU: the JSON API and the form create sessions, the
// bridge shows their screens, stop/expiry/crash leave nothing behind, a
// restarted broker adopts what still runs (and never signals a recycled PID),
// and the machine list carries the site's limits.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, pidsMentioning, requireQemu, waitFor, writeBlankMachine } from '../helpers/env.js';
import { openDb } from '../../src/store/db.js';
import { isRunning, readProcStat } from '../../src/qemu/process.js';
import { connectRfb, nonBlackPixels, waitForGuestText } from '../helpers/rfb-client.js';
import { WebClient } from '../helpers/web-client.js';
import type { LocalHandle } from '../../src/launcher/local.js';

test.before(() => requireQemu());

function runDirEntries(stateDir: string): string[] {
  try {
    return fs.readdirSync(path.join(stateDir, 'sessions'));
  } catch {
    return [];
  }
}

test('a session created through the API shows its screen through /ws/<token>', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const before = Date.now();
  const created = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', cpus: 1, memoryMiB: 128, lifetimeS: 600, user: 'alice' });
  const after = Date.now();
  t.is(created.status, 201, created.text);
  t.regex(created.json.token, /^[A-Za-z0-9_-]{43}$/);
  t.is(created.json.url, `${broker.url}/s/${created.json.token}`);
  t.is(created.json.wsUrl, `${broker.url.replace('http', 'ws')}/ws/${created.json.token}`);
  // 600 s from when the broker took the request (however long the create took on a busy host).
  const expiresAt = Date.parse(created.json.expiresAt);
  t.true(expiresAt >= before + 600_000 - 1000 && expiresAt <= after + 600_000, created.json.expiresAt);
  // The view-only link is given as a URL (viewUrl, viewWsUrl; see test/http/sharing.test.ts), never as a bare token field.
  t.false('viewToken' in created.json, 'no bare viewToken field');
  t.regex(created.json.viewUrl, /\/s\/[A-Za-z0-9_-]{43}$/);

  const rfb = await connectRfb(created.json.wsUrl);
  t.teardown(() => rfb.close());
  t.is(rfb.name, `QEMU (qwd-${created.json.id})`);
  // SeaBIOS writes text within ~0.1 s, switching the screen to 720x400 text mode (then iPXE, and its lines scroll).
  const fb = await waitForGuestText(rfb);
  t.is(rfb.width, 720);
  t.is(rfb.height, 400);
  t.true(nonBlackPixels(fb) > 20, 'text on the screen');

  const info = await api(broker, 'GET', `/api/v1/sessions/${created.json.token}`);
  t.is(info.status, 200);
  t.is(info.json.state, 'running');
  t.is(info.json.owner, 'alice');
  t.is(info.json.viewers, 1);
});

test('two viewers see the same session at once', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bob', lifetimeS: 600 });
  const a = await connectRfb(json.wsUrl);
  const b = await connectRfb(json.wsUrl);
  t.teardown(() => { a.close(); b.close(); });
  const [fa, fb] = await Promise.all([waitForGuestText(a), waitForGuestText(b)]);
  t.is(fa.length, 720 * 400 * 4);
  t.is(fb.length, 720 * 400 * 4);
  t.is(broker.bridge.viewerCount(json.id), 2);
  // Still both alive after the other one asked for an update (force-shared).
  await a.update(false);
  await b.update(false);
  t.is(broker.bridge.viewerCount(json.id), 2);
});

test('stop leaves no process, socket, overlay or row, closes viewers, and the token answers 410', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'carol', lifetimeS: 600 });
  const row = broker.services.manager.get(json.id)!;
  const pid = (row.handle as LocalHandle).pid;
  t.true(fs.existsSync(path.join(row.runDir, 'disk.qcow2')));
  t.true(fs.existsSync(path.join(row.runDir, 'vnc.sock')));
  t.deepEqual(pidsMentioning(`qwd-${json.id}`), [pid]);
  const viewer = await connectRfb(json.wsUrl);
  const closed = new Promise<number>((resolve) => viewer.ws.once('close', (code) => resolve(code)));

  const del = await api(broker, 'DELETE', `/api/v1/sessions/${json.token}`);
  t.is(del.status, 204);
  t.is(await closed, 4000);
  t.deepEqual(pidsMentioning(`qwd-${json.id}`), []);
  t.false(fs.existsSync(row.runDir));
  t.is(broker.services.rows.byId(json.id), undefined);
  t.deepEqual(runDirEntries(setup.stateDir), []);

  t.is((await api(broker, 'GET', `/api/v1/sessions/${json.token}`)).status, 410);
  t.is((await fetch(`${broker.url}/s/${json.token}`)).status, 410);
  await t.throwsAsync(connectRfb(json.wsUrl), { message: 'HTTP 410' });
  // Stopping again is a no-op answered with 410.
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${json.token}`)).status, 410);
});

test('a short life-time session is stopped and deleted by the cron job', async (t) => {
  const setup = makeSetup(t, { purge: { schedule: '* * * * * *' } });
  const broker = await startTestBroker(t, setup.config);
  const { json, status } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'dave', lifetimeS: 2 });
  t.is(status, 201);
  const pid = (broker.services.manager.get(json.id)!.handle as LocalHandle).pid;
  await waitFor('the expired session to be purged', () => broker.services.rows.byId(json.id) === undefined, 15000);
  t.deepEqual(pidsMentioning(`qwd-${json.id}`), []);
  t.false(fs.existsSync(`/proc/${pid}/cmdline`) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(json.id));
  t.deepEqual(runDirEntries(setup.stateDir), []);
  const page = await fetch(`${broker.url}/s/${json.token}`);
  t.is(page.status, 410);
  t.regex(await page.text(), /life-time ran out/);
});

test('a restarted broker adopts a running session and its token still works', async (t) => {
  const setup = makeSetup(t);
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const { json } = await api(first, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'erin', lifetimeS: 600 });
  const pid = (first.services.manager.get(json.id)!.handle as LocalHandle).pid;
  await first.close();
  t.deepEqual(pidsMentioning(`qwd-${json.id}`), [pid], 'qemu survives the broker');

  const second = await startTestBroker(t, setup.config);
  const wsUrl = `${second.url.replace('http', 'ws')}/ws/${json.token}`;
  const rfb = await connectRfb(wsUrl);
  t.teardown(() => rfb.close());
  t.is(rfb.name, `QEMU (qwd-${json.id})`);
  t.is((await waitForGuestText(rfb)).length, 720 * 400 * 4);
  t.is(second.services.manager.get(json.id)!.state, 'running');

  // The adopted VM is not the new broker's child: it is still watched and stoppable.
  t.is((await api(second, 'DELETE', `/api/v1/sessions/${json.token}`)).status, 204);
  t.deepEqual(pidsMentioning(`qwd-${json.id}`), []);
});

test('qemu killed with SIGKILL and found dead by a purge before its exit is delivered: the tombstone still says it stopped unexpectedly', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'frank', lifetimeS: 600 });
  const { pid } = broker.services.manager.get(json.id)!.handle as LocalHandle;
  process.kill(pid, 'SIGKILL');
  // The watcher waits up to 500 ms for QEMU's last monitor events; a purge running meanwhile ends the session first.
  await broker.services.purge.run();
  await waitFor('the dead session to be cleaned up', () => broker.services.rows.byId(json.id) === undefined, 10000);
  const gone = await api(broker, 'GET', `/api/v1/sessions/${json.token}`);
  t.is(gone.status, 410);
  t.regex(gone.json.error.message, /stopped unexpectedly/);
});

test('qemu killed with SIGKILL is noticed and cleaned up', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'frank', lifetimeS: 600 });
  const row = broker.services.manager.get(json.id)!;
  process.kill((row.handle as LocalHandle).pid, 'SIGKILL');
  await waitFor('the dead session to be cleaned up', () => broker.services.rows.byId(json.id) === undefined, 10000);
  t.false(fs.existsSync(row.runDir));
  const gone = await api(broker, 'GET', `/api/v1/sessions/${json.token}`);
  t.is(gone.status, 410);
  t.regex(gone.json.error.message, /stopped unexpectedly/);
});

test('a VM that died while the broker was down is cleaned up at start', async (t) => {
  const setup = makeSetup(t);
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const { json } = await api(first, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'gina', lifetimeS: 600 });
  const row = first.services.manager.get(json.id)!;
  await first.close();
  process.kill((row.handle as LocalHandle).pid, 'SIGKILL');
  await waitFor('qemu to die', () => pidsMentioning(`qwd-${json.id}`).length === 0);
  const second = await startTestBroker(t, setup.config);
  t.is(second.services.rows.byId(json.id), undefined);
  t.false(fs.existsSync(row.runDir));
  t.is((await api(second, 'GET', `/api/v1/sessions/${json.token}`)).status, 410);
});

test('a store row whose PID now belongs to another process is cleaned up at start without signalling that process', async (t) => {
  const setup = makeSetup(t);
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const { json } = await api(first, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ivan', lifetimeS: 600 });
  const row = first.services.manager.get(json.id)!;
  const qemuPid = (row.handle as LocalHandle).pid;
  await first.close();
  process.kill(qemuPid, 'SIGKILL');
  await waitFor('qemu to die', () => pidsMentioning(`qwd-${json.id}`).length === 0);
  // The PID is recycled: a process of ours that is not qemu now has it. The
  // row points at it, with that process's own start time, so only the -name
  // check in /proc tells it apart from the session's qemu.
  const other = spawn('sleep', ['60'], { stdio: 'ignore', detached: true });
  t.teardown(() => {
    if (other.exitCode === null && other.signalCode === null) process.kill(other.pid!, 'SIGKILL');
  });
  await new Promise((resolve) => other.once('spawn', resolve));
  const recycled = { ...(row.handle as LocalHandle), pid: other.pid!, startTime: readProcStat(other.pid!)!.startTime };
  const db = openDb(setup.stateDir);
  db.prepare('UPDATE sessions SET handle = ? WHERE id = ?').run(JSON.stringify(recycled), json.id);
  db.close();

  const second = await startTestBroker(t, setup.config);
  t.is(second.services.rows.byId(json.id), undefined, 'the row is gone');
  t.false(fs.existsSync(row.runDir));
  t.is((await api(second, 'GET', `/api/v1/sessions/${json.token}`)).status, 410);
  await new Promise((r) => setTimeout(r, 200)); // a signal, had one been sent, has landed by now
  t.true(isRunning(other.pid!), 'the process that has the PID now still runs');
  t.is(other.exitCode, null);
  t.is(other.signalCode, null, 'and was never signalled');
  const exited = new Promise((resolve) => other.once('exit', resolve));
  process.kill(other.pid!, 'SIGKILL');
  await exited;
  t.false(isRunning(other.pid!));
});

test('GET /api/v1/machines lists the machines with their limits clamped to the site limits', async (t) => {
  const setup = makeSetup(t, { limits: { maxCpusPerSession: 4, maxMemoryMiBPerSession: 256 } }, {
    machines: (d) => { writeBlankMachine(d, 'blank'); writeBlankMachine(d, 'second'); },
  });
  const broker = await startTestBroker(t, setup.config);
  const { status, json } = await api(broker, 'GET', '/api/v1/machines');
  t.is(status, 200);
  t.deepEqual(json.map((m: { name: string }) => m.name).sort(), ['blank', 'second']);
  const blank = json.find((m: { name: string }) => m.name === 'blank');
  t.like(blank, { arch: 'x86_64', format: 'qcow2', description: 'Blank disk: SeaBIOS only' });
  // The machine allows 2 CPUs (below the site's 4) and 512 MiB (above the site's 256).
  t.deepEqual(blank.cpus, { default: 1, max: 2 });
  t.deepEqual(blank.memoryMiB, { default: 128, max: 256 });
  t.false('image' in blank, 'host paths are not published');
  // A site limit below a machine's default lowers the default too, as a request without cpus/memoryMiB gets.
  const tight = makeSetup(t, { limits: { maxMemoryMiBPerSession: 64 } });
  const small = await startTestBroker(t, tight.config);
  const [only] = (await api(small, 'GET', '/api/v1/machines')).json;
  t.deepEqual(only.memoryMiB, { default: 64, max: 64 });
  const form = await (await fetch(small.url + '/')).text();
  t.regex(form, /data-memory="64" data-memory-default="64"/, 'the form offers the same');
});

test('API answers carry the broker\'s own clock to the millisecond, for the pages\' countdowns', async (t) => {
  const setup = makeSetup(t);
  const aheadMs = 3_600_000; // the broker's expiry clock, as a test (or a skewed host) may have it
  const broker = await startTestBroker(t, setup.config, { now: () => Date.now() + aheadMs });
  const before = Date.now();
  const res = await fetch(`${broker.url}/api/v1/machines`);
  const after = Date.now();
  const stamped = Date.parse(res.headers.get('x-server-time') ?? '');
  t.true(stamped >= before + aheadMs && stamped <= after + aheadMs, `X-Server-Time ${res.headers.get('x-server-time')}`);
  const missing = await fetch(`${broker.url}/api/v1/sessions/${'x'.repeat(32)}`);
  t.is(missing.status, 404);
  t.truthy(missing.headers.get('x-server-time'), 'error answers carry it too');
  t.is((await fetch(`${broker.url}/`)).headers.get('x-server-time'), null, 'pages carry it in their markup instead');
});

test('the web form creates a session and redirects to its page with a QR code', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const browser = new WebClient(broker.url);
  const form = await browser.get('/');
  t.is(form.status, 200);
  t.regex(form.text, /name="machine" value="blank"/);
  const res = await browser.post('/sessions', { machine: 'blank', cpus: '1', memoryMiB: '128', lifetimeS: '3600', user: 'hana' });
  t.is(res.status, 303);
  const location = res.location!;
  t.regex(location, /^\/s\/[A-Za-z0-9_-]{43}$/);
  const page = await browser.get(location);
  t.is(page.status, 200);
  t.regex(page.text, /<svg[^>]*>.*<\/svg>/s, 'QR code rendered server-side');
  t.true(page.text.includes(`${broker.url}${location}`), 'share link shown');
  t.regex(page.text, />Connect</);
  t.regex(page.text, />Stop</);
  const viewer = await browser.get(`${location}/view`);
  t.regex(viewer.text, /viewer\.js/);
  const manage = await browser.get('/manage');
  t.true(manage.text.includes(location), '/manage lists the session created from this browser');
  const stop = await browser.post(`${location}/stop`, {});
  t.is(stop.status, 303);
  t.is((await browser.get(location)).status, 410);
});

test('/healthz reports the accelerator and why it was chosen', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'GET', '/healthz');
  t.is(json.status, 'ok');
  t.true(['kvm', 'tcg'].includes(json.accelerator.accel));
  t.is(json.accelerator.requested, 'auto');
  t.is(typeof json.accelerator.reason, 'string');
  if (!fs.existsSync('/dev/kvm')) {
    t.is(json.accelerator.accel, 'tcg');
    t.regex(json.accelerator.reason, /\/dev\/kvm does not exist/);
  } else if (fs.existsSync('/sys/module/kvm_pvm')) {
    t.is(json.accelerator.accel, 'tcg');
    t.regex(json.accelerator.reason, /kvm-pvm/);
  }
  t.is(json.machines, 1);
});

test('/healthz reports how late the event loop ran: a 300 ms block shows in eventLoopDelay', async (t) => {
  const setup = makeSetup(t);
  // In this process: the test's own busy loop is the broker's event loop being late.
  const broker = await startTestBroker(t, setup.config);
  const first = (await api(broker, 'GET', '/healthz')).json.eventLoopDelay;
  // The first 10 s window is still running: it is reported so far, with no end yet.
  t.is(first.endedAt, null);
  t.true(first.windowS >= 0 && first.windowS <= 10, JSON.stringify(first));
  for (const key of ['samples', 'p50Ms', 'p99Ms', 'maxMs']) t.is(typeof first[key], 'number', key);
  const busyUntil = Date.now() + 300;
  while (Date.now() < busyUntil); // blocks the event loop, as a long synchronous task in the broker would
  // The monitor's next timer records the late interval.
  let after = first;
  await waitFor('the block in eventLoopDelay', async () => {
    after = (await api(broker, 'GET', '/healthz')).json.eventLoopDelay;
    return after.maxMs >= 250;
  }, 5000).catch(() => {});
  t.true(after.maxMs >= 250, JSON.stringify(after));
  t.true(after.samples > first.samples, JSON.stringify(after));
});

test('closing the broker while a viewer is connected ends the viewer cleanly; the VM is left for the next start', async (t) => {
  const setup = makeSetup(t);
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const { json } = await api(first, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ivan', lifetimeS: 600 });
  const rfb = await connectRfb(json.wsUrl);
  const closed = new Promise<void>((resolve) => rfb.ws.once('close', () => resolve()));
  // No waiting for the viewer to go first: the bridge's teardown must not touch the store closed right after it.
  await first.close();
  await closed;
  await new Promise((r) => setTimeout(r, 300)); // an uncaught error here would fail this file
  const second = await startTestBroker(t, setup.config);
  t.is(second.services.manager.get(json.id)?.state, 'running');
  t.is(second.services.manager.get(json.id)?.viewers, 0, 'viewer counts start again from zero');
});
