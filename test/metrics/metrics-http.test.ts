// GET /metrics on a real broker: off by default, the bearer token, a listener of
// its own, a scrape while 100 requests are in flight, what the counters say
// after creations, refusals, logins and a purge, and label values that never
// carry a token, a user name or a session id. Each body is checked by promtool
// (Debian's prometheus package). Sessions run on the fake launcher
// (src/launcher/fake.ts: no QEMU, everything else real) except where a real
// QEMU desktop (the blank machine) is needed: the label check after a login,
// and the viewer watched through the bridge.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startBroker, type Broker } from '../../src/main.js';
import { createLogger } from '../../src/log.js';
import { hashPassword } from '../../src/auth/password-hash.js';
import { QwdError } from '../../src/errors.js';
import { hashToken, newSessionId, newToken } from '../../src/sessions/tokens.js';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu, tempDir, waitFor } from '../helpers/env.js';
import { WebClient } from '../helpers/web-client.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { freePorts } from '../helpers/peer-process.js';
import { assertNoTokenInLog, startLoggingBroker } from '../helpers/log-secrets.js';
import { qwdctl } from '../helpers/cli.js';
import { parseSamples, promtoolCheckMetrics, sampleSum, sampleValue, type Sample } from '../helpers/prometheus.js';

const TOKEN = 'qwd-metrics-7f1c9e2ab04d4c55b8e3a1f2d6c07e93';
/** A purge schedule that does not fire during a test (1 January, 00:00): the test runs the purge itself. */
const NO_SCHEDULED_PURGE = { schedule: '0 0 1 1 *' };

function tokenFile(dir: string, token = TOKEN): string {
  const file = path.join(dir, 'metrics.token');
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return file;
}

async function scrape(url: string, token: string | null = TOKEN): Promise<{ status: number; body: string; res: Response }> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: await res.text(), res };
}

/** A scrape that must succeed and be clean for promtool; its samples. */
async function scrapeClean(t: ExecutionContext, broker: Broker, token: string | null = TOKEN): Promise<Sample[]> {
  const { status, body } = await scrape(broker.metricsUrl!, token);
  t.is(status, 200);
  const check = await promtoolCheckMetrics(body);
  t.is(check.code, 0, `promtool check metrics: ${check.output}`);
  t.is(check.output, '', 'promtool has nothing to say');
  return parseSamples(body);
}

test('metrics are off by default: /metrics is 404 and the broker reports no metrics address', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config, { launcher: 'fake' });
  t.is(broker.metricsUrl, null);
  const { status } = await scrape(`${broker.url}/metrics`, null);
  t.is(status, 404);
});

test('a scrape without the bearer token or with a wrong one gets 401; with it, metrics promtool finds clean', async (t) => {
  const file = tokenFile(tempDir(t));
  const { config } = makeSetup(t, { metrics: { enabled: true, bearerTokenFile: file } });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  t.is(broker.metricsUrl, `${broker.url}/metrics`, 'on the broker\'s own listener');
  for (const authorization of [null, 'Bearer wrong-token-0123456789abcdef', `Basic ${TOKEN}`, `Bearer ${TOKEN}x`, 'Bearer ']) {
    const res = await fetch(broker.metricsUrl!, { headers: authorization ? { authorization } : {} });
    t.is(res.status, 401, String(authorization));
    t.is(res.headers.get('www-authenticate'), 'Bearer realm="qemu-web-desktop metrics"');
    t.false((await res.text()).includes('qwd_'), 'nothing of the metrics');
  }
  t.is((await fetch(broker.metricsUrl!, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status, 405);
  const { status, res, body } = await scrape(broker.metricsUrl!);
  t.is(status, 200);
  t.is(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  t.is(res.headers.get('cache-control'), 'no-store');
  t.regex(body, /^# HELP qwd_sessions /m);
  const samples = await scrapeClean(t, broker);
  t.is(sampleValue(samples, 'qwd_build_info', { launcher: 'fake' }), 1);
  t.true((sampleValue(samples, 'process_resident_memory_bytes') ?? 0) > 0, 'Node\'s default process metrics');
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 0);
  // The token is the scrape's, not an API token: the same header on the API is refused as one.
  t.is((await fetch(`${broker.url}/api/v1/sessions`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 401);
});

test('a broker whose token file became unreadable or malformed refuses to start, and changes nothing', async (t) => {
  const file = tokenFile(tempDir(t));
  const { config } = makeSetup(t, { metrics: { enabled: true, bearerTokenFile: file } });
  fs.writeFileSync(file, 'too short\n');
  const err = await t.throwsAsync(startBroker(config, createLogger('silent'), { launcher: 'fake' }));
  t.true(err instanceof QwdError && err.code === 'QWD_CONFIG_INVALID');
  t.regex(err!.message, /metrics\.bearerTokenFile: the first line of .* must be at least 16 printable/);
  t.false(err!.message.includes('too short'));
  t.false(fs.existsSync(config.stateDir), 'no state dir, no store, no lock');
});

test('metrics on a listener of their own are served there only, not on the public listener', async (t) => {
  const { config } = makeSetup(t, { metrics: { enabled: true, listen: '127.0.0.1:0', bearerToken: TOKEN } });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  const own = new URL(broker.metricsUrl!);
  t.not(own.port, new URL(broker.url).port);
  t.is(own.pathname, '/metrics');
  t.is((await scrape(`${broker.url}/metrics`, null)).status, 404, 'the public listener has no /metrics');
  t.is((await scrape(`${own.origin}/`)).status, 404, 'the metrics listener serves nothing else');
  t.is((await scrape(broker.metricsUrl!, null)).status, 401);
  await scrapeClean(t, broker);
  await broker.close();
  await t.throwsAsync(fetch(broker.metricsUrl!), undefined, 'closed with the broker');
});

test('a metrics listener whose port is taken stops the start with a clear error and closes what it had opened', async (t) => {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  const [publicPort] = await freePorts(1);
  const { config } = makeSetup(t, {
    metrics: { enabled: true, listen: `127.0.0.1:${port}` }, listen: { host: '127.0.0.1', port: publicPort },
  });
  const err = await t.throwsAsync(startBroker(config, createLogger('silent'), { launcher: 'fake' }));
  t.true(err instanceof QwdError && err.code === 'QWD_CONFIG_INVALID');
  t.is(err!.message, `metrics.listen 127.0.0.1:${port}: cannot listen there (EADDRINUSE)`);
  await t.throwsAsync(fetch(`http://127.0.0.1:${publicPort}/healthz`), undefined, 'its public listener was closed again');
  // The store's writer lock was released: a broker with a free port starts on the same state dir.
  const freed = { ...config.metrics, listen: { host: '127.0.0.1', port: 0 } };
  const again = await startTestBroker(t, { ...config, metrics: freed }, { launcher: 'fake' });
  t.truthy(again.metricsUrl);
});

test('scrapes while 100 create requests are in flight answer 200, and the counts add up afterwards', async (t) => {
  const { config } = makeSetup(t, { metrics: { enabled: true, bearerToken: TOKEN }, limits: { maxSessionsPerUser: 5, cpuOvercommit: 64 } });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  const creates = Array.from({ length: 100 }, () => api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 }));
  const scrapes = Array.from({ length: 5 }, () => scrape(broker.metricsUrl!));
  const scraped = await Promise.all(scrapes);
  const answers = await Promise.all(creates);
  for (const s of scraped) {
    t.is(s.status, 200);
    t.is((await promtoolCheckMetrics(s.body)).code, 0);
  }
  const statuses = answers.map((a) => a.status);
  t.is(statuses.filter((s) => s >= 500).length, 0, `no 5xx: ${statuses.join(' ')}`);
  t.is(statuses.filter((s) => s === 201).length, 5);
  t.is(statuses.filter((s) => s === 429).length, 95);
  const samples = await scrapeClean(t, broker);
  t.is(sampleValue(samples, 'qwd_session_creations_total', { machine: 'blank' }), 5);
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_ADMISSION_LIMIT', reason: 'maxSessionsPerUser' }), 95);
  t.is(sampleSum(samples, 'qwd_session_refusals_total'), 95);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 5);
  t.is(sampleValue(samples, 'qwd_admission_reserved_sessions'), 5);
  t.is(sampleValue(samples, 'qwd_admission_reserved_cpus'), 5);
  t.is(sampleValue(samples, 'qwd_admission_reserved_memory_bytes'), 5 * 128 * 1048576);
  t.is(sampleValue(samples, 'qwd_admission_capacity_sessions'), config.limits.maxSessions);
  t.true((sampleValue(samples, 'qwd_admission_capacity_cpus') ?? 0) >= 1);
  t.is(sampleValue(samples, 'qwd_session_start_duration_seconds_count', { machine: 'blank' }), 5);
});

test('an expired desktop purged and stopped, and a refused unknown machine, are counted as such', async (t) => {
  const { config } = makeSetup(t, { metrics: { enabled: true }, purge: NO_SCHEDULED_PURGE });
  let aheadMs = 0;
  const broker = await startTestBroker(t, config, { launcher: 'fake', now: () => Date.now() + aheadMs });
  t.is((await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 60 })).status, 201);
  t.is((await api(broker, 'POST', '/api/v1/sessions', { machine: 'no-such-machine', user: 'ada' })).status, 404);
  aheadMs = 120_000;
  const report = await broker.services.purge.run();
  t.deepEqual(report.actions.map((a) => [a.action, a.reason]), [['stop', 'expired']]);
  const samples = await scrapeClean(t, broker, null);
  t.is(sampleValue(samples, 'qwd_purge_runs_total', { result: 'ok' }), 1);
  t.is(sampleValue(samples, 'qwd_purge_actions_total', { action: 'stop', reason: 'expired' }), 1);
  t.is(sampleValue(samples, 'qwd_purge_duration_seconds_count'), 1);
  t.true((sampleValue(samples, 'qwd_purge_last_run_timestamp_seconds') ?? 0) > Date.now() / 1000 - 60);
  t.is(sampleValue(samples, 'qwd_vm_stops_total', { outcome: 'quit' }), 1);
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_UNKNOWN_MACHINE', reason: 'invalid-request' }), 1);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 0);
  await broker.services.purge.run({ dryRun: true });
  t.is(sampleValue(await scrapeClean(t, broker, null), 'qwd_purge_runs_total', { result: 'ok' }), 1, 'dry runs not counted');
});

test('label values carry no user name, password, token or session id after logins and a real desktop', async (t) => {
  requireQemu();
  const { config } = makeSetup(t, {
    metrics: { enabled: true, bearerToken: TOKEN }, auth: { backends: [{ type: 'local' }] }, qemu: { network: 'none' },
  });
  const broker = await startTestBroker(t, config);
  const password = 'alice-Secret-4711-zq';
  broker.services.users.add({
    name: 'alice-metrics-zq', hash: await hashPassword(password), email: 'alice-zq@example.org', admin: false,
    createdAt: Date.now(),
  });
  const mallory = new WebClient(broker.url);
  await mallory.get('/login');
  t.is((await mallory.post('/login', { user: 'mallory-metrics-xy', password: 'guessed-Password-1', next: '/' })).status, 401);
  t.is((await mallory.post('/login', { user: 'bad name!', password: 'x', next: '/' })).status, 401);
  const alice = new WebClient(broker.url);
  await alice.get('/login');
  t.is((await alice.post('/login', { user: 'alice-metrics-zq', password, next: '/' })).status, 303);
  await alice.get('/');
  const created = await alice.api('POST', '/api/v1/sessions', { machine: 'blank', lifetimeS: 600 }, { withCsrf: true });
  t.is(created.status, 201);
  const s = broker.services.manager.list()[0]!;
  const { body } = await scrape(broker.metricsUrl!);
  const samples = await scrapeClean(t, broker);
  t.is(sampleValue(samples, 'qwd_build_info', { launcher: 'local' }), 1, 'a real QEMU desktop');
  t.is(sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'local', outcome: 'success' }), 1);
  t.is(sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'local', outcome: 'invalid' }), 1);
  t.is(sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'chain', outcome: 'invalid' }), 1, 'the malformed name');
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 1);
  const secrets = [
    'alice-metrics-zq', 'alice-zq@example.org', 'mallory-metrics-xy', password, 'guessed-Password-1', TOKEN,
    s.id, s.token, s.viewToken, 'bad name!',
  ];
  for (const secret of secrets) t.false(body.includes(secret), `the body does not contain ${secret.slice(0, 6)}…`);
  const labelValues = new Set(samples.flatMap((x) => Object.values(x.labels)));
  for (const value of labelValues) t.false(/alice|mallory|@/.test(value), `label value ${value}`);
});

test('a real desktop: start latency, a viewer and its bytes through the bridge, and how its VM stopped', async (t) => {
  requireQemu();
  const { config } = makeSetup(t, { metrics: { enabled: true, bearerToken: TOKEN }, qemu: { network: 'none' } });
  const broker = await startTestBroker(t, config);
  const { status, json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 });
  t.is(status, 201);
  let samples = await scrapeClean(t, broker);
  t.is(sampleValue(samples, 'qwd_session_start_duration_seconds_count', { machine: 'blank' }), 1);
  const startS = sampleValue(samples, 'qwd_session_start_duration_seconds_sum', { machine: 'blank' })!;
  t.true(startS > 0 && startS < 60, `started in ${startS} s`);
  t.is(sampleValue(samples, 'qwd_build_info', { launcher: 'local' }), 1);
  const rfb = await connectRfb(`${broker.url.replace(/^http/, 'ws')}/ws/${s.token}`);
  t.teardown(() => rfb.close());
  await rfb.update(false);
  samples = await scrapeClean(t, broker);
  t.is(sampleValue(samples, 'qwd_viewers', { access: 'control' }), 1);
  t.is(sampleValue(samples, 'qwd_viewers', { access: 'view' }), 0);
  const toViewer = sampleValue(samples, 'qwd_bridge_bytes_total', { direction: 'desktop_to_viewer' })!;
  const fromViewer = sampleValue(samples, 'qwd_bridge_bytes_total', { direction: 'viewer_to_desktop' })!;
  t.true(toViewer >= 720 * 400 * 4, `a whole 720×400 screen went to the viewer (${toViewer} bytes)`);
  t.true(fromViewer > 0 && fromViewer < 1000, `the handshake and requests came from it (${fromViewer} bytes)`);
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${s.token}`)).status, 204);
  samples = await waitFor('the viewer to be gone from the metrics', async () => {
    const now = await scrapeClean(t, broker);
    return sampleValue(now, 'qwd_viewers', { access: 'control' }) === 0 ? now : false;
  });
  t.is(sampleValue(samples, 'qwd_vm_stops_total', { outcome: 'quit' }), 1, 'QMP quit was enough');
  t.is(sampleSum(samples, 'qwd_vm_stops_total'), 1);
  t.is(sampleSum(samples, 'qwd_sessions'), 0);
});

test('a scrape with 1000 desktops in the store counts them right and stays quick', async (t) => {
  // No purge meanwhile: it would find the fake VMs of the rows written below gone, and release them.
  const { config } = makeSetup(t, { metrics: { enabled: true }, purge: NO_SCHEDULED_PURGE });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  const { rows, manager } = broker.services;
  const first = await manager.create({ machine: 'blank', user: 'ada', lifetimeS: 3600 });
  // The other 999 are rows as the manager writes them (the store's own insert), queued ones among them.
  for (let i = 1; i < 1000; i++) {
    const token = newToken();
    const viewToken = newToken();
    rows.insert({
      ...first, id: newSessionId(), token, tokenHash: hashToken(token), viewToken, viewTokenHash: hashToken(viewToken),
      owner: `user${i % 40}`, state: i % 10 === 0 ? 'queued' : 'running',
    });
  }
  const times: number[] = [];
  let samples: Sample[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    samples = parseSamples(await broker.services.metrics!.scrape());
    times.push(performance.now() - started);
  }
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 901, 'the first and 900 more');
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'queued', machine: 'blank' }), 99);
  t.is(sampleValue(samples, 'qwd_admission_reserved_sessions'), 1000);
  t.is(sampleValue(samples, 'qwd_admission_reserved_cpus'), 901, 'queued ones hold no CPU of this host');
  const median = times.sort((a, b) => a - b)[2]!;
  t.log(`scrape of 1000 desktops: median ${median.toFixed(1)} ms (${times.map((x) => x.toFixed(1)).join(', ')})`);
  // ≈ 6 ms measured on two busy CPUs; the bound only catches a scrape that reads every row (≈ 20× more) or worse.
  t.true(median < 250, `median scrape ${median.toFixed(1)} ms`);
  // The purge job would find these rows' fake VMs gone: they are removed before teardown stops "every VM".
  for (const row of rows.all()) if (row.id !== first.id) rows.db.prepare('DELETE FROM sessions WHERE id = ?').run(row.id);
});

test('neither the broker\'s log (at trace) nor qwdctl config show ever holds the metrics token, wrong ones neither', async (t) => {
  const dir = tempDir(t);
  const { config, configFile } = makeSetup(t, { metrics: { enabled: true, bearerToken: TOKEN } });
  const { broker, logFile, flushed } = await startLoggingBroker(t, config, dir);
  const wrong = 'wrong-token-but-long-9f8e7d6c5b4a';
  t.is((await scrape(broker.metricsUrl!, wrong)).status, 401);
  t.is((await scrape(broker.metricsUrl!)).status, 200);
  await flushed();
  t.regex(fs.readFileSync(logFile, 'utf8'), /serving Prometheus metrics/);
  assertNoTokenInLog(t, logFile, [TOKEN, wrong], 200);
  const shown = await qwdctl(['--config', configFile, 'config', 'show']);
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /bearerToken: "\*+"/);
  t.false(shown.stdout.includes(TOKEN));
});
