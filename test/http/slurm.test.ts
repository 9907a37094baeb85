// Desktops as Slurm jobs, end to end against a real private Slurm (munged,
// slurmctld, slurmd started by the test on loopback ports): the form's API
// submits a job, the session waits "queued" while the node is full, the job's
// QEMU listens on TCP behind a VNC password, and the bridge authenticates to
// it while the browser side sees security None. Stop, Slurm's time limit,
// scancel from outside and a broker restart are all followed.
import anyTest from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import http from 'node:http';
import { execFileSync, spawn } from 'node:child_process';
import { AUDIO, GPU, makeSysfs } from '../helpers/sysfs.js';
import type { ExecutionContext } from 'ava';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, pidsMentioning, requireQemu, waitFor, writeDemoMachine } from '../helpers/env.js';
import { freePortRange, runProgram } from '../helpers/peer-process.js';
import { connectRfb, waitForGuestText } from '../helpers/rfb-client.js';
import { startSlurm, type SlurmCluster } from '../helpers/slurm.js';
import type { SlurmHandle } from '../../src/launcher/slurm.js';
import type { Broker } from '../../src/main.js';

anyTest.before(() => requireQemu());

// One test at a time: each brings up its own Slurm and boots guests under TCG,
// and on two cores eight of them at once starve the other test files' QEMUs.
const test = anyTest.serial;

async function cluster(t: ExecutionContext, raw: Record<string, unknown> = {}, opts: { cpus?: number; gpuFiles?: string[]; netnsNodes?: number; machines?: (dir: string) => void } = {}) {
  t.timeout(240_000);
  const slurm = await startSlurm(t, { cpus: opts.cpus ?? 2, memoryMiB: 4096, gpuFiles: opts.gpuFiles, netnsNodes: opts.netnsNodes });
  // A private VNC port range per test, below the kernel's ephemeral range
  // (32768-60999) where every other test's listeners and clients get theirs.
  const portMin = await freePortRange(20000, 32000, 41);
  const setup = makeSetup(t, {
    launcher: 'slurm',
    // Guests have network (qemu.network: user), so every job here runs QEMU in a namespace of its own on its node.
    slurm: { env: slurm.env, vncBind: '127.0.0.1', vncPortMin: portMin, vncPortMax: portMin + 40, pollIntervalMs: 300, ...(raw.slurm as object | undefined) },
    purge: { schedule: '* * * * * *' },
    ...Object.fromEntries(Object.entries(raw).filter(([k]) => k !== 'slurm')),
  }, { machines: opts.machines });
  const broker = await startTestBroker(t, setup.config);
  return { slurm, setup, broker };
}

const handleOf = (broker: Broker, id: string) => broker.services.manager.get(id)?.handle as SlurmHandle | undefined;
const jobState = async (slurm: SlurmCluster, jobId: string) => (await slurm.run('scontrol', ['show', 'job', '-o', jobId]).catch((e: Error) => e.message)).match(/JobState=(\S+)/)?.[1] ?? 'GONE';

async function createRunning(broker: Broker, body: Record<string, unknown> = {}) {
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'alice', cpus: 1, memoryMiB: 128, lifetimeS: 600, ...body });
  if (res.status !== 201) throw new Error(`create: ${res.status} ${res.text}`);
  await waitFor('the job to run and QEMU to be ready', async () => (await api(broker, 'GET', `/api/v1/sessions/${res.json.token}`)).json.state === 'running', 60_000);
  return res.json;
}

test('a session lands as a Slurm job; its screen comes through /ws with security None while QEMU demands a password; stop ends the job and leaves nothing', async (t) => {
  const { slurm, broker } = await cluster(t);
  const s = await createRunning(broker);
  const handle = handleOf(broker, s.id)!;
  t.is(handle.kind, 'slurm');
  t.regex(handle.jobId, /^\d+$/);
  t.is(await jobState(slurm, handle.jobId), 'RUNNING');
  t.regex(await slurm.run('scontrol', ['show', 'job', '-o', handle.jobId]), new RegExp(`JobName=qwd-${s.id} `));
  t.is(handle.host, '127.0.0.1');
  t.true(handle.port! >= 20000);

  // The browser side: security None only; the screen is the VM's.
  const rfb = await connectRfb(s.wsUrl);
  t.teardown(() => rfb.close());
  t.deepEqual(rfb.securityTypes, [1]);
  t.is(rfb.name, `QEMU (qwd-${s.id})`);
  await waitForGuestText(rfb);
  // QEMU itself refuses anyone without the password (only VNC authentication is offered).
  const direct = await rawRfbSecurityTypes('127.0.0.1', handle.port!);
  t.deepEqual(direct, [2]);
  // The password is on no command line.
  const secret = fs.readFileSync(path.join(handle.jobDir, 'vnc.secret'), 'utf8');
  const qemuPids = pidsMentioning(`qwd-${s.id}`);
  t.true(qemuPids.length >= 1);
  for (const pid of qemuPids) t.false(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(secret));

  // qwdctl status shows job id, node and job state.
  const status = await broker.services.manager.schedulerInfo(broker.services.manager.get(s.id)!);
  t.like(status, { slurmJobId: handle.jobId, node: 'localhost', jobState: 'RUNNING' });

  // The guest has network: QEMU runs in a namespace of its own, its VNC socket served on the port by socat.
  t.true(forwarderFor(handle.port!).length >= 1, 'socat serves the VNC port (and forks one child per connection)');
  // socat's command line names the node dir (qwd-<session>.XXXXXX) too: QEMU is the process named qwd-<session>.
  const qemu = qemuPids.find((pid) => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qwd-'));
  t.not(fs.readlinkSync(`/proc/${qemu}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'QEMU is not in the node\'s network namespace');

  const closed = new Promise<number>((resolve) => rfb.ws.once('close', (code) => resolve(code)));
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${s.token}`)).status, 204);
  t.is(await closed, 4000);
  t.not(await jobState(slurm, handle.jobId), 'RUNNING');
  t.deepEqual(pidsMentioning(`qwd-${s.id}`), [], 'QEMU is gone');
  await waitFor('the job\'s socat to end with it', () => forwarderFor(handle.port!).length === 0, 10_000);
  t.false(fs.existsSync(handle.jobDir), 'the job dir (overlay, secret, logs) is gone');
  t.is(broker.services.rows.byId(s.id), undefined);
});

test('a full node: the next session is queued ("waiting for a node") and starts when capacity frees', async (t) => {
  const { slurm, broker } = await cluster(t, {}, { cpus: 2 });
  const first = await createRunning(broker, { cpus: 2 });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bob', cpus: 2, memoryMiB: 128, lifetimeS: 600 });
  t.is(res.status, 201, res.text);
  // The first session holds both CPUs until it is deleted below: answered now, the job cannot have had a node yet.
  t.is(await jobState(slurm, handleOf(broker, res.json.id)!.jobId), 'PENDING', 'the answer does not wait for a node');
  t.is(await jobState(slurm, handleOf(broker, first.id)!.jobId), 'RUNNING', 'while the first session still holds it');
  t.is(res.json.state, 'queued');
  const info = await waitFor('Slurm to say why it waits', async () => {
    const r = await api(broker, 'GET', `/api/v1/sessions/${res.json.token}`);
    return r.json.queue?.reason ? r.json : false;
  }, 20_000);
  t.is(info.state, 'queued');
  t.is(info.queue.state, 'PENDING');
  t.is(info.queue.position, 1);
  t.regex(info.queue.reason, /Resources|Priority/);
  const page = await (await fetch(res.json.url)).text();
  t.regex(page, /waiting for a node, number 1 in the queue/);
  t.notRegex(page, />Connect</, 'no Connect button while queued');
  // The bridge refuses while there is no VM yet.
  await t.throwsAsync(connectRfb(res.json.wsUrl), { message: /409/ });

  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${first.token}`)).status, 204);
  await waitFor('the queued session to run', async () => (await api(broker, 'GET', `/api/v1/sessions/${res.json.token}`)).json.state === 'running', 60_000);
  const rfb = await connectRfb(res.json.wsUrl);
  t.teardown(() => rfb.close());
  await waitForGuestText(rfb);
  t.is(await jobState(slurm, handleOf(broker, res.json.id)!.jobId), 'RUNNING');
});

test('stopping a queued session cancels its job', async (t) => {
  const { slurm, broker } = await cluster(t, {}, { cpus: 2 });
  await createRunning(broker, { cpus: 2 });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bob', cpus: 2, memoryMiB: 128, lifetimeS: 600 });
  t.is(res.json.state, 'queued');
  const jobId = handleOf(broker, res.json.id)!.jobId;
  t.is(await jobState(slurm, jobId), 'PENDING');
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${res.json.token}`)).status, 204);
  t.is(await jobState(slurm, jobId), 'CANCELLED');
  t.is(broker.services.rows.byId(res.json.id), undefined);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${res.json.token}`)).status, 410);
});

test('scancel from outside is noticed: the session ends and says why (a site that accepts unisolated guests: QEMU in the node\'s own network)', async (t) => {
  const { slurm, broker } = await cluster(t, { slurm: { unisolatedGuestNetwork: true } });
  const s = await createRunning(broker);
  const { jobId, jobDir, port } = handleOf(broker, s.id)!;
  const [qemu] = pidsMentioning(`qwd-${s.id}`).filter((pid) => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qwd-'));
  t.is(fs.readlinkSync(`/proc/${qemu}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'QEMU shares the node\'s network namespace');
  t.deepEqual(forwarderFor(port!), [], 'and listens on the port itself');
  await slurm.run('scancel', [jobId]);
  const gone = await waitFor('the session to end', async () => {
    const r = await api(broker, 'GET', `/api/v1/sessions/${s.token}`);
    return r.status === 410 && !/being stopped/.test(r.json.error.message) ? r : false;
  }, 20_000);
  t.regex(gone.json.error.message, /cancelled/);
  t.false(fs.existsSync(jobDir));
  t.deepEqual(pidsMentioning(`qwd-${s.id}`), []);
});

test('Slurm\'s time limit ends the session even when the broker does not (purge off)', async (t) => {
  const { slurm, broker } = await cluster(t, { purge: { schedule: '0 0 1 1 *' } });
  const s = await createRunning(broker, { lifetimeS: 60 });
  const { jobId } = handleOf(broker, s.id)!;
  t.regex(await slurm.run('scontrol', ['show', 'job', '-o', jobId]), /TimeLimit=00:01:00/);
  // Past expiresAt the API already answers 410 ("life-time ran out"); the row
  // stays until Slurm itself ends the job, which is what this test is about.
  await waitFor('Slurm to end the job at its time limit', () => broker.services.rows.byId(s.id) === undefined, 150_000);
  const gone = await api(broker, 'GET', `/api/v1/sessions/${s.token}`);
  t.is(gone.status, 410);
  t.regex(gone.json.error.message, /time limit/);
  t.is(await jobState(slurm, jobId), 'TIMEOUT');
});

test('extend raises the job\'s time limit; a broker restart re-adopts the running job', async (t) => {
  const { slurm, setup, broker } = await cluster(t, { limits: { defaultLifetimeS: 3600, maxLifetimeS: 7200 } });
  const s = await createRunning(broker, { lifetimeS: 600 });
  const { jobId } = handleOf(broker, s.id)!;
  const extended = await api(broker, 'POST', `/api/v1/sessions/${s.token}/extend`, { byS: 1200 });
  t.is(extended.status, 200, extended.text);
  const limit = (await slurm.run('scontrol', ['show', 'job', '-o', jobId])).match(/TimeLimit=(\S+)/)![1]!;
  const [h, m] = limit.split(':').map(Number);
  t.true(h! * 60 + m! >= 30 && h! * 60 + m! <= 31, `TimeLimit ${limit} covers the new end`);

  await broker.close();
  t.is(await jobState(slurm, jobId), 'RUNNING', 'the job outlives the broker');
  const second = await startTestBroker(t, setup.config);
  t.is(second.services.manager.get(s.id)?.state, 'running');
  const rfb = await connectRfb(`${second.url.replace('http', 'ws')}/ws/${s.token}`);
  t.teardown(() => rfb.close());
  await waitForGuestText(rfb);
  t.is((await api(second, 'DELETE', `/api/v1/sessions/${s.token}`)).status, 204);
  t.not(await jobState(slurm, jobId), 'RUNNING');
});

test('a broker restart re-adopts a queued job, which then starts', async (t) => {
  const { slurm, setup, broker } = await cluster(t, {}, { cpus: 2 });
  const first = await createRunning(broker, { cpus: 2 });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bob', cpus: 2, memoryMiB: 128, lifetimeS: 600 });
  t.is(res.json.state, 'queued');
  await broker.close();
  const second = await startTestBroker(t, setup.config);
  t.is(second.services.manager.get(res.json.id)?.state, 'queued');
  await slurm.run('scancel', [handleOf(second, first.id)!.jobId]);
  await waitFor('the queued session to run under the new broker', async () => second.services.manager.get(res.json.id)?.state === 'running', 60_000);
  const rfb = await connectRfb(`${second.url.replace('http', 'ws')}/ws/${res.json.token}`);
  t.teardown(() => rfb.close());
  await waitForGuestText(rfb);
});

test('Slurm refusals become clear messages and leave nothing behind', async (t) => {
  const { setup, broker } = await cluster(t, { slurm: { partition: 'nosuchpartition' } });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'alice', cpus: 1, memoryMiB: 128, lifetimeS: 600 });
  t.true(res.status >= 400, res.text);
  t.regex(res.json.error.message, /partition/i);
  t.deepEqual(broker.services.rows.all(), []);
  t.deepEqual(fs.existsSync(setup.config.slurm.sharedDir) ? fs.readdirSync(setup.config.slurm.sharedDir) : [], []);
});

test('two nodes, each in its own network namespace: a desktop\'s VNC is on its node\'s address, and the bridge crosses that network', async (t) => {
  // VNC on every interface of the node (its namespace has only lo and its veth), as on a real cluster.
  const { slurm, broker } = await cluster(t, { slurm: { vncBind: '0.0.0.0' } }, { cpus: 2, netnsNodes: 2 });
  // Two desktops that take a whole node each.
  const sessions = [await createRunning(broker, { user: 'ada', cpus: 2 }), await createRunning(broker, { user: 'ben', cpus: 2 })];
  const handles = sessions.map((s) => handleOf(broker, s.id)!);
  t.deepEqual(handles.map((h) => h.node).sort(), ['n1', 'n2'], 'one desktop per node');
  for (const [i, h] of handles.entries()) {
    const node = slurm.nodes.find((n) => n.name === h.node)!;
    t.is(h.host, node.addr, 'the broker reaches the node by its NodeAddr');
    t.regex(h.host!, /^10\./);
    t.deepEqual(await rawRfbSecurityTypes(h.host!, h.port!), [2], 'QEMU listens on the node\'s address, behind its VNC password');
    await t.throwsAsync(rawRfbSecurityTypes('127.0.0.1', h.port!), { code: 'ECONNREFUSED' }, 'and not on this host\'s loopback');
    const rfb = await connectRfb(sessions[i]!.wsUrl);
    t.teardown(() => rfb.close());
    t.deepEqual(rfb.securityTypes, [1]);
    await waitForGuestText(rfb);
  }
  for (const s of sessions) t.is((await api(broker, 'DELETE', `/api/v1/sessions/${s.token}`)).status, 204);
  t.is((await slurm.run('squeue', ['--noheader'])).trim(), '');
});

/** The socat processes that serve a job's VNC socket on `port` (the job starts one with TCP4-LISTEN:PORT,…). */
function forwarderFor(port: number): number[] {
  return pidsMentioning(`-LISTEN:${port},`);
}

test('a guest on a node reaches the cluster network but never the node itself: not its loopback through 10.0.2.2, not its own address, not a denied destination', async (t) => {
  const probeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-netprobe-'));
  t.teardown(() => fs.rmSync(probeRoot, { recursive: true, force: true }));
  fs.chmodSync(probeRoot, 0o755);
  // One namespaced node, whose way out is the bridge on this host: its side (10.a.b.1) stands for the site
  // network, and a second address there (this host answers for it too) for a destination the site denies.
  const denied = `10.212.${1 + crypto.randomInt(250)}.3`;
  const { slurm, broker } = await cluster(t, {
    slurm: { vncBind: '0.0.0.0' },
    guest: { shareRoots: [probeRoot], shares: [{ path: probeRoot, tag: 'probe', readonly: true }] },
    guestNetwork: { deny: [`${denied}/32`, '169.254.0.0/16'] },
  }, { cpus: 2, netnsNodes: 1, machines: (d) => writeDemoMachine(d) });
  const node = slurm.nodes[0]!;
  const site = `${node.addr.split('.').slice(0, 3).join('.')}.1`;
  // An address of the node that pasta does not copy into the guest's namespace (its own
  // copy of the node's main address is local there): only the rules keep the guest from it.
  const nodeOther = `10.211.${1 + crypto.randomInt(250)}.5`;
  await runProgram('ip', ['-n', node.netns!, 'addr', 'add', `${nodeOther}/32`, 'dev', 'lo']);
  await runProgram('ip', ['addr', 'add', `${denied}/32`, 'dev', slurm.bridge!]);
  // Services on the node itself (its loopback and its address), and on the site network.
  const nodeServer = 'for (const a of ["127.0.0.1", ...process.argv.slice(1)]) '
    + 'require("http").createServer((q, s) => s.end("node-private")).listen(8081, a)';
  const inNode = spawn('nsenter', [`--net=/run/netns/${node.netns}`, '--', process.execPath, '-e', nodeServer, node.addr, nodeOther], { stdio: 'ignore' });
  t.teardown(() => inNode.kill('SIGKILL'));
  const siteServers = [site, denied].map((addr) => http.createServer((_q, res) => res.end(`site ${addr}`)).listen(8082, addr));
  t.teardown(() => siteServers.forEach((server) => server.close()));
  await Promise.all(siteServers.map((server) => new Promise((resolve) => server.once('listening', resolve))));
  const nodeListens = () => runProgram('nsenter', [`--net=/run/netns/${node.netns}`, '--', 'ss', '-Htln', 'sport = :8081']).catch(() => '');
  await waitFor('the node\'s own services', async () => (await nodeListens()).trim().split('\n').length === 3, 10_000);
  const urls = ['http://10.0.2.2:8081/', `http://${node.addr}:8081/`, `http://${denied}:8082/`, `http://${site}:8082/`, `http://${nodeOther}:8081/`];
  fs.writeFileSync(path.join(probeRoot, 'qwd-net-probe'), urls.join('\n') + '\n', { mode: 0o644 });

  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'alice', cpus: 1, memoryMiB: 256, lifetimeS: 600 });
  t.is(res.status, 201, res.text);
  const handle = await waitFor('the job to report its node', () => handleOf(broker, res.json.id)?.port ? handleOf(broker, res.json.id) : false, 60_000);
  // What the job dir last held: a session that ends takes its job dir with it.
  const seen: Record<string, string> = {};
  const read = (name: string) => {
    try {
      seen[name] = fs.readFileSync(path.join(handle!.jobDir, name), 'utf8');
    } catch {
      // Not written yet, or gone with the session.
    }
    return seen[name] ?? '';
  };
  const serial = () => read('serial.log');
  await waitFor('the guest to finish its network probe', () => serial().includes('QWD: net probe done'), 120_000).catch((err: Error) => {
    t.log(`serial.log: ${serial()}\nqemu.log: ${read('qemu.log')}\npasta.log: ${read('pasta.log')}\nslurm.out: ${read('slurm.out')}`);
    throw err;
  });
  t.log(serial().split('\n').filter((l) => l.includes('QWD: net')).join('\n'));
  const outcome = (url: string) => new RegExp(`QWD: net probe ${url.replace(/[.?]/g, '\\$&')} (ok|failed)`).exec(serial())?.[1];
  t.is(outcome(urls[0]!), 'failed', 'the node\'s loopback is out of reach through the gateway');
  t.is(outcome(urls[1]!), 'failed', 'the node\'s own address is out of reach');
  t.is(outcome(urls[2]!), 'failed', 'a denied destination is out of reach');
  t.is(outcome(urls[3]!), 'ok', 'the site network is reachable');
  t.is(outcome(urls[4]!), 'failed', 'another address of the node is out of reach (the node\'s addresses are in the rules)');
  t.regex(serial(), new RegExp(`net probe http://${site.replace(/\./g, '\\.')}:8082/ ok: HTTP/1.1 200 OK \\| site ${site.replace(/\./g, '\\.')}`));
  t.notRegex(serial(), /node-private/, 'nothing of the node reached the guest');
  // And the desktop still shows through the bridge (its VNC port forwarded into the namespace).
  const rfb = await connectRfb(res.json.wsUrl);
  t.teardown(() => rfb.close());
  await waitForGuestText(rfb);
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${res.json.token}`)).status, 204);
  await waitFor('the job\'s socat to end with it', () => forwarderFor(handle!.port!).length === 0, 10_000);
});

test('an sbatch that does not answer in time: the request fails clearly and the job it queued anyway is cancelled by name', async (t) => {
  // sbatch as a slow scheduler would be: it submits, prints the id, then hangs (exec: the PID the broker kills is the sleep).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-slow-sbatch-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const real = execFileSync('bash', ['-c', 'command -v sbatch'], { encoding: 'utf8' }).trim();
  const sbatch = path.join(dir, 'sbatch');
  fs.writeFileSync(sbatch, `#!/bin/bash\nout=$(${JSON.stringify(real)} "$@") || exit $?\nprintf '%s\\n' "$out"\nexec sleep 30\n`, { mode: 0o755 });
  const { slurm, setup, broker } = await cluster(t, { slurm: { commandTimeoutMs: 2000, binaries: { sbatch } } });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', cpus: 1, memoryMiB: 128, lifetimeS: 600 });
  t.true(res.status >= 500, res.text);
  t.regex(res.json.error.message, /did not answer in time/);
  const left = await waitFor('the job to be cancelled', async () => {
    const jobs = (await slurm.run('squeue', ['--noheader', '--states=all', '--format=%j %T'])).trim().split('\n').filter(Boolean);
    return jobs.length === 1 && /^qwd-\w+ CANCELLED$/.test(jobs[0]!.trim()) ? jobs : false;
  }, 15_000);
  t.is(left.length, 1, 'the job was queued, then cancelled');
  t.deepEqual(broker.services.rows.all(), []);
  t.deepEqual(fs.existsSync(setup.config.slurm.sharedDir) ? fs.readdirSync(setup.config.slurm.sharedDir) : [], []);
});


/** Security types a VNC server offers to a raw RFB 3.8 client. */
async function rawRfbSecurityTypes(host: string, port: number): Promise<number[]> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createConnection(port, host);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length === 12) s.write('RFB 003.008\n');
      if (buf.length >= 13 && buf.length >= 13 + buf[12]!) {
        s.destroy();
        resolve([...buf.subarray(13, 13 + buf[12]!)]);
      }
    });
    s.on('error', reject);
  });
}

// ---- GPUs on the cluster ----
// This machine has no VFIO device, so QEMU cannot really be given one. The
// node's sysfs is a fixture tree (slurm.nodeSysfsRoot), and QEMU is reached
// through a recorder: a script that writes down the argv the job built, then
// runs the real QEMU without the vfio-pci devices. Everything else is real:
// Slurm counts the GPUs (gres), the job picks and locks them on the node.
function qemuRecorder(t: ExecutionContext): { binary: string; argvOf: (sessionId: string) => string[][] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-qemu-rec-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const real = execFileSync('bash', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).trim();
  const binary = path.join(dir, 'qemu-system-x86_64');
  fs.writeFileSync(binary, `#!/bin/bash
# Test stand-in for VFIO hardware (see test/http/slurm.test.ts): record, then run QEMU without vfio-pci.
printf '%s\\n' "$@" > ${JSON.stringify(dir)}/argv.$$
args=()
prev=
for a in "$@"; do
  if [ "$prev" = -device ] && [[ "$a" == vfio-pci,* ]]; then unset 'args[\${#args[@]}-1]'; prev=; continue; fi
  args+=("$a")
  prev=$a
done
exec ${JSON.stringify(real)} "\${args[@]}"
`, { mode: 0o755 });
  const argvOf = (sessionId: string) => fs.readdirSync(dir).filter((f) => f.startsWith('argv.'))
    .map((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n'))
    .filter((argv) => argv.includes(`qwd-${sessionId}`) || argv.some((a) => a.startsWith(`qwd-${sessionId},`)));
  return { binary, argvOf };
}

const vfioDevices = (argv: string[]) => argv.filter((a, i) => argv[i - 1] === '-device' && a.startsWith('vfio-pci,'));

test('GPU desktops on the cluster: Slurm counts the GPUs, the node passes whole free IOMMU groups, and a third waits for one', async (t) => {
  const sysfs = makeSysfs(fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-node-sysfs-')), [GPU('0000:01:00.0', '1'), AUDIO('0000:01:00.1', '1'), GPU('0000:02:00.0', '2'), GPU('0000:03:00.0', '3', 'nouveau')]);
  t.teardown(() => fs.rmSync(sysfs, { recursive: true, force: true }));
  const lockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-gpu-locks-'));
  t.teardown(() => fs.rmSync(lockDir, { recursive: true, force: true }));
  const recorder = qemuRecorder(t);
  // The node's /dev/vfio/<group> files, as a site lists them in gres.conf: character devices (here 1:3, like /dev/null).
  fs.mkdirSync(path.join(sysfs, 'dev/vfio'), { recursive: true });
  const gpuFiles = ['1', '2'].map((group) => path.join(sysfs, 'dev/vfio', group));
  for (const f of gpuFiles) execFileSync('mknod', [f, 'c', '1', '3']);
  const { slurm, broker } = await cluster(t, {
    slurm: { gpuGres: 'gpu', nodeSysfsRoot: sysfs, gpuLockDir: lockDir },
    qemu: { binaries: { x86_64: recorder.binary } },
  }, { cpus: 4, gpuFiles });

  // The form offers a GPU on the cluster.
  const form = await (await fetch(broker.url + '/')).text();
  t.regex(form, /name="gpus"/);

  const first = await createRunning(broker, { user: 'ada', gpus: 1 });
  const firstJob = handleOf(broker, first.id)!.jobId;
  t.regex(await slurm.run('scontrol', ['show', 'job', '-o', firstJob]), /TresPerNode=gres:gpu:1/);
  const [argv1] = recorder.argvOf(first.id);
  t.deepEqual(vfioDevices(argv1!), ['vfio-pci,host=0000:01:00.0,bus=pci.0,addr=0x10.0,multifunction=on', 'vfio-pci,host=0000:01:00.1,bus=pci.0,addr=0x10.1']);
  const rfb = await connectRfb(first.wsUrl);
  t.teardown(() => rfb.close());
  await waitForGuestText(rfb);

  const second = await createRunning(broker, { user: 'ben', gpus: 1 });
  t.deepEqual(vfioDevices(recorder.argvOf(second.id)[0]!), ['vfio-pci,host=0000:02:00.0,bus=pci.0,addr=0x10.0'], 'the next free group; the nouveau-bound GPU is never taken');

  // Both GPUs are held: Slurm keeps the third job waiting, CPUs are free.
  const third = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'cy', cpus: 1, memoryMiB: 128, lifetimeS: 600, gpus: 1 });
  t.is(third.status, 201, third.text);
  t.is(third.json.state, 'queued');
  await waitFor('Slurm to say the job waits for resources', async () => /Resources|Priority/.test((await api(broker, 'GET', `/api/v1/sessions/${third.json.token}`)).json.queue?.reason ?? ''), 20_000);

  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${first.token}`)).status, 204);
  await waitFor('the third to run once a GPU is free', async () => (await api(broker, 'GET', `/api/v1/sessions/${third.json.token}`)).json.state === 'running', 60_000);
  t.deepEqual(vfioDevices(recorder.argvOf(third.json.id)[0]!).map((d) => d.split(',')[1]), ['host=0000:01:00.0', 'host=0000:01:00.1'], 'the released group, whole');
});

test('without slurm.gpuGres a cluster desktop cannot have a GPU, and nothing is submitted', async (t) => {
  const { slurm, broker } = await cluster(t);
  const form = await (await fetch(broker.url + '/')).text();
  t.notRegex(form, /name="gpus"/);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', cpus: 1, memoryMiB: 128, lifetimeS: 600, gpus: 1 });
  t.is(res.status, 503, res.text);
  t.regex(res.json.error.message, /GPU/);
  t.deepEqual(broker.services.rows.all(), []);
  t.is((await slurm.run('squeue', ['--noheader'])).trim(), '');
});
