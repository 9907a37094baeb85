// What a real guest can reach over QEMU user networking, tried from inside the
// demo guest: it fetches the URLs of a probe file from a host folder at boot
// ("QWD: net probe <url> ok|failed" on its serial port). A "lab" network
// namespace made by the test, joined to the host by a veth pair, stands for the
// site's network: the guest must reach the lab, and never the host itself (the
// broker on 127.0.0.1 through the gateway 10.0.2.2, a service on the host's own
// address on that veth) nor a destination the site denies.
import test from 'ava';
import { netnsDir } from '../../src/launcher/guest-netns.js';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import http from 'node:http';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { ExecutionContext } from 'ava';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireDemoImage, requireProgram, requireQemu, waitFor, writeDemoMachine } from '../helpers/env.js';
import { startBroker } from '../../src/main.js';
import { silentLogger } from '../../src/log.js';
import { parse, stringify } from 'yaml';
import { connectRfb, typeText } from '../helpers/rfb-client.js';
import { prepareMachine } from '../../src/resume/prepare.js';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { chooseAccelerator, probeHostAccel } from '../../src/qemu/accel.js';
import type { LocalHandle } from '../../src/launcher/local.js';

test.before(() => {
  requireQemu();
  requireDemoImage();
  requireProgram('ip', 'iproute2');
  requireProgram('nft', 'nftables');
  requireProgram('pasta', 'passt');
});

interface Lab {
  /** The host's own address on the veth (a host address the guest must not reach). */
  hostAddr: string;
  /** Two addresses of the lab namespace, each serving "lab <address>" on port 8081. */
  labAddrs: [string, string];
  /** A server on the host's veth address. */
  hostPort: number;
}

function ip(...argv: string[]): void {
  const r = spawnSync('ip', argv, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${argv.join(' ')}: ${r.stderr}`);
}

/** A lab namespace on its own /24 of 10.213.0.0/16, with an HTTP server; all removed in teardown. */
async function makeLab(t: ExecutionContext): Promise<Lab> {
  const tag = crypto.randomBytes(3).toString('hex');
  const octet = 1 + crypto.randomInt(250);
  const [hostAddr, a, b] = [`10.213.${octet}.1`, `10.213.${octet}.2`, `10.213.${octet}.3`];
  const ns = `qwdlab-${tag}`;
  const [hostIf, labIf] = [`qwl${tag}a`, `qwl${tag}b`];
  ip('netns', 'add', ns);
  t.teardown(() => spawnSync('ip', ['netns', 'delete', ns]));
  ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', labIf, 'netns', ns);
  t.teardown(() => spawnSync('ip', ['link', 'delete', hostIf]));
  ip('addr', 'add', `${hostAddr}/24`, 'dev', hostIf);
  ip('link', 'set', hostIf, 'up');
  for (const addr of [a, b]) ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', labIf);
  ip('-n', ns, 'link', 'set', labIf, 'up');
  ip('-n', ns, 'link', 'set', 'lo', 'up');
  ip('-n', ns, 'route', 'add', 'default', 'via', hostAddr);
  const server = 'require("http").createServer((q, s) => s.end("lab " + q.socket.localAddress)).listen(8081, "0.0.0.0")';
  const lab: ChildProcess = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', server], { stdio: 'ignore' });
  t.teardown(() => lab.kill('SIGKILL'));
  await waitFor('the lab server', () => fetch(`http://${a}:8081/`).then((r) => r.ok, () => false), 10_000);
  const host = http.createServer((_q, s) => s.end('host-private'));
  await new Promise<void>((resolve) => host.listen(0, hostAddr, resolve));
  t.teardown(() => host.close());
  return { hostAddr, labAddrs: [a, b], hostPort: (host.address() as AddressInfo).port };
}

async function bootWithProbe(t: ExecutionContext, guestNetwork: Record<string, unknown>, urls: (brokerPort: number) => string[]) {
  t.timeout(180_000);
  const root = fs.mkdtempSync(path.join('/tmp', 'qwd-netprobe-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.chmodSync(root, 0o755);
  const setup = makeSetup(t, { guestNetwork, guest: { shareRoots: [root], shares: [{ path: root, tag: 'probe', readonly: true }] } }, { machines: (d) => writeDemoMachine(d) });
  const broker = await startTestBroker(t, setup.config);
  const brokerPort = Number(new URL(broker.url).port);
  fs.writeFileSync(path.join(root, 'qwd-net-probe'), urls(brokerPort).join('\n') + '\n', { mode: 0o644 });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'tester', lifetimeS: 3600 });
  t.is(res.status, 201, res.text);
  const serialFile = path.join(broker.services.manager.get(res.json.id)!.runDir, 'serial.log');
  const serial = () => (fs.existsSync(serialFile) ? fs.readFileSync(serialFile, 'utf8') : '');
  await waitFor('the guest to finish its network probe', () => serial().includes('QWD: net probe done'), 120_000)
    .catch((err: Error) => {
      t.log(serial());
      throw err;
    });
  t.log(serial().split('\n').filter((l) => l.includes('QWD: net')).join('\n'));
  const outcome = (url: string) => new RegExp(`QWD: net probe ${url.replace(/[.?]/g, '\\$&')} (ok|failed)`).exec(serial())?.[1];
  return { broker, serial, outcome, brokerPort, session: res.json as { id: string; token: string } };
}

test.serial('a guest reaches the site network but never the host: not the broker through 10.0.2.2, not the host\'s own address, not a denied destination', async (t) => {
  const lab = await makeLab(t);
  const [allowed, denied] = lab.labAddrs;
  const urls = (brokerPort: number) => [
    `http://10.0.2.2:${brokerPort}/healthz`,
    `http://${lab.hostAddr}:${lab.hostPort}/`,
    `http://${denied}:8081/`,
    `http://${allowed}:8081/`,
  ];
  const { serial, outcome, brokerPort, broker, session } = await bootWithProbe(t, { deny: [`${denied}/32`, '169.254.0.0/16'] }, urls);
  const runDir = broker.services.manager.get(session.id)!.runDir;
  const pasta = Number(fs.readFileSync(path.join(runDir, 'pasta.pid'), 'utf8').split(' ')[0]);
  t.regex(serial(), /QWD: net eth0 up/);
  // The broker answers on the host (so a "failed" below is the isolation, not a dead broker).
  t.is((await api(broker, 'GET', '/healthz')).status, 200);
  t.is(outcome(`http://10.0.2.2:${brokerPort}/healthz`), 'failed', 'the broker on the host\'s loopback is out of reach');
  t.is(outcome(`http://${lab.hostAddr}:${lab.hostPort}/`), 'failed', 'a service on the host\'s own address is out of reach');
  t.is(outcome(`http://${denied}:8081/`), 'failed', 'a denied destination is out of reach');
  t.is(outcome(`http://${allowed}:8081/`), 'ok', 'the site network is reachable');
  t.regex(serial(), new RegExp(`net probe http://${allowed.replace(/\./g, '\\.')}:8081/ ok: HTTP/1.1 200 OK \\| lab ${allowed.replace(/\./g, '\\.')}`));
  t.notRegex(serial(), /host-private|"status"/, 'nothing of the host reached the guest');
  await broker.services.manager.stop(session.id, 'test done');
  t.false(fs.existsSync(`${netnsDir()}/qwdnet-${session.id}`), 'the session\'s namespace is gone with it');
  t.false(fs.existsSync(`/proc/${pasta}/cmdline`) && fs.readFileSync(`/proc/${pasta}/cmdline`, 'utf8').includes(session.id), 'and so is its pasta');
});

test.serial('with an allow list, a guest reaches only what it names (and never the host, even when named)', async (t) => {
  const lab = await makeLab(t);
  const [other, named] = lab.labAddrs;
  const urls = () => [`http://${other}:8081/`, `http://${named}:8081/`, `http://${lab.hostAddr}:${lab.hostPort}/`];
  const { outcome } = await bootWithProbe(t, { allow: [`${named}/32`, `${lab.hostAddr}/32`] }, urls);
  t.is(outcome(`http://${named}:8081/`), 'ok');
  t.is(outcome(`http://${other}:8081/`), 'failed', 'outside the allow list');
  t.is(outcome(`http://${lab.hostAddr}:${lab.hostPort}/`), 'failed', 'a host address stays refused even when the allow list names it');
});

test.serial('a resumed guest\'s network comes back, as isolated as a booted one: the site reachable, the host not', async (t) => {
  t.timeout(240_000);
  const lab = await makeLab(t);
  const [allowed, denied] = lab.labAddrs;
  const size = { cpus: 1, memoryMiB: 256 };
  const setup = makeSetup(t, { guestNetwork: { deny: [`${denied}/32`] } }, {
    machines: (d) => {
      writeDemoMachine(d);
      const descriptor = parse(fs.readFileSync(path.join(d, 'demo.yml'), 'utf8')) as Record<string, unknown>;
      descriptor.resume = { sizes: [size], ready: { serial: 'QWD: boot ok' } };
      fs.writeFileSync(path.join(d, 'demo.yml'), stringify(descriptor));
    },
  });
  // Saved with its network up (the demo brings eth0 up at boot), in a namespace that goes with the prepare's VM.
  const machine = (await loadCatalog(setup.machinesDir, setup.config.qemu.img)).get('demo')!;
  const accel = chooseAccelerator(setup.config.qemu.accel, probeHostAccel());
  await prepareMachine({ config: setup.config, accel, log: silentLogger() }, machine, size);
  const broker = await startTestBroker(t, setup.config);
  const brokerPort = Number(new URL(broker.url).port);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'tester', lifetimeS: 3600, ...size });
  t.is(res.status, 201, res.text);
  const row = broker.services.manager.get(res.json.id)!;
  t.true((row.handle as LocalHandle).resumed, 'resumed, not booted');
  const serialFile = path.join(row.runDir, 'serial.log');
  const viewer = await connectRfb(res.json.wsUrl);
  t.teardown(() => viewer.close());
  // What nc prints (an HTTP status line from a server it reached, or its error), then a marker.
  const fetchFromGuest = async (host: string, port: number, marker: string) => {
    const before = fs.readFileSync(serialFile, 'utf8').length;
    await typeText(viewer, `echo x | nc -w 5 ${host} ${port} >/dev/ttyS0 2>&1; echo ${marker} >/dev/ttyS0\n`);
    const out = await waitFor(`the guest's nc to ${host}:${port}`, () => {
      const text = fs.readFileSync(serialFile, 'utf8').slice(before);
      return text.includes(marker) && text;
    }, 60_000);
    return out.slice(0, out.indexOf(marker));
  };
  t.regex(await fetchFromGuest(allowed, 8081, 'net-lab'), /HTTP\/1\.1 400/, 'the site network answers');
  for (const [host, port, marker] of [
    ['10.0.2.2', brokerPort, 'net-broker'], [lab.hostAddr, lab.hostPort, 'net-host'], [denied, 8081, 'net-denied'],
  ] as const) {
    t.notRegex(await fetchFromGuest(host, port, marker), /HTTP\//, `${host}:${port} stays out of reach`);
  }
  t.true(fs.existsSync(path.join(row.runDir, 'pasta.pid')), 'the session has its own namespace and pasta');
});

test('a broker that cannot isolate its guests\' network refuses to start, saying what to install; qemu.network: none starts', async (t) => {
  const setup = makeSetup(t, { guestNetwork: { pasta: '/nonexistent/pasta' } });
  const err = await t.throwsAsync(startBroker(setup.config, silentLogger()));
  t.is((err as { code?: string }).code, 'QWD_CONFIG_INVALID');
  t.regex(err!.message, /\/nonexistent\/pasta \(Debian package passt\)/);
  t.regex(err!.message, /qemu\.network: none/);
  t.false(fs.existsSync(path.join(setup.stateDir, 'qwd.sqlite')), 'nothing was created');
  const none = makeSetup(t, { guestNetwork: { pasta: '/nonexistent/pasta' }, qemu: { network: 'none' } });
  const broker = await startTestBroker(t, none.config);
  t.is((await api(broker, 'GET', '/healthz')).status, 200);
});

test('with the Slurm launcher the broker starts whatever this host has: each job isolates its guest on its node (test/http/slurm.test.ts)', async (t) => {
  for (const raw of [
    { launcher: 'slurm', guestNetwork: { pasta: '/nonexistent/pasta' } },
    { launcher: 'slurm', qemu: { network: 'none' } },
    { launcher: 'slurm', slurm: { unisolatedGuestNetwork: true } },
  ]) {
    const broker = await startTestBroker(t, makeSetup(t, raw).config);
    t.is((await api(broker, 'GET', '/healthz')).status, 200, JSON.stringify(raw));
  }
});
