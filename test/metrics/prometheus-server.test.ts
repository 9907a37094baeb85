// A real Prometheus server (Debian's prometheus package) scrapes a real broker,
// configured from the example in etc/prometheus/prometheus.yml with the broker's
// metrics listener and token file filled in; values are read back through its
// HTTP query API, and every expression of the Grafana dashboard in etc/grafana/
// must be accepted by it. The desktop runs on the fake launcher (no QEMU; the
// metrics path is the real one).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, tempDir } from '../helpers/env.js';
import { WebClient } from '../helpers/web-client.js';
import { DASHBOARD, startPrometheus } from '../helpers/prometheus.js';

const TOKEN = 'prometheus-test-token-5b0e7d2c91f84a36';

interface Panel { title: string; targets: Array<{ expr: string }> }

/** Grafana's variables as a dashboard user would have them: every job, a range of a minute. */
function asQuery(expr: string): string {
  return expr.replaceAll('$job', '.+').replaceAll('$__rate_interval', '1m').replaceAll('$__range', '5m')
    .replaceAll('$__interval', '15s');
}

test('Prometheus scrapes the broker with the example config and sees sessions, creations and a failed login', async (t) => {
  const dir = tempDir(t);
  const tokenFile = path.join(dir, 'qemu-web-desktop.token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const { config } = makeSetup(t, {
    metrics: { enabled: true, listen: '127.0.0.1:0', bearerTokenFile: tokenFile },
    auth: { backends: [{ type: 'local' }] },
  });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  const prometheus = await startPrometheus(t, new URL(broker.metricsUrl!).host, tokenFile);

  await prometheus.waitForValue('up{job="qemu-web-desktop"}', (v) => v === 1, 'the first scrape to succeed');
  const [target] = await prometheus.targets();
  t.is(target!.health, 'up', target!.lastError);
  t.is(target!.scrapeUrl, broker.metricsUrl!);

  const browser = new WebClient(broker.url);
  await browser.get('/login');
  t.is((await browser.post('/login', { user: 'nobody-here', password: 'wrong-Password-1', next: '/' })).status, 401);
  // The local backend needs a login to create; a desktop is made through the manager instead (the API's own path).
  await broker.services.manager.create({ machine: 'blank', user: 'ada', lifetimeS: 600 });

  t.is(await prometheus.waitForValue(
    'qwd_sessions{state="running", machine="blank"}', (v) => v === 1, 'the running desktop to be scraped',
  ), 1);
  t.is(await prometheus.waitForValue('sum(qwd_session_creations_total)', (v) => v >= 1, 'the creation'), 1);
  t.is(await prometheus.waitForValue(
    'qwd_auth_attempts_total{backend="local", outcome="invalid"}', (v) => v >= 1, 'the failed login',
  ), 1);
  const answer = await prometheus.query('qwd_build_info');
  t.is(answer.status, 'success');
  t.is(answer.data!.result[0]!.metric.launcher, 'fake');
  t.is(answer.data!.result[0]!.metric.job, 'qemu-web-desktop');
});

test('Prometheus marks the target down when the broker wants another token, and up with the right one', async (t) => {
  const dir = tempDir(t);
  const wrong = path.join(dir, 'wrong.token');
  fs.writeFileSync(wrong, 'not-the-broker-token-0123456789\n', { mode: 0o600 });
  const { config } = makeSetup(t, { metrics: { enabled: true, bearerToken: TOKEN } });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  const prometheus = await startPrometheus(t, new URL(broker.url).host, wrong);
  const target = await prometheus.waitForValue('up{job="qemu-web-desktop"}', () => true, 'a first scrape');
  t.is(target, 0);
  const [info] = await prometheus.targets();
  t.regex(info!.lastError, /401 Unauthorized/);
});

test('every expression of the Grafana dashboard is accepted by Prometheus, and the key ones return data', async (t) => {
  const { config } = makeSetup(t, { metrics: { enabled: true, bearerToken: TOKEN } });
  const broker = await startTestBroker(t, config, { launcher: 'fake' });
  const tokenFile = path.join(tempDir(t), 'token');
  fs.writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  const prometheus = await startPrometheus(t, new URL(broker.url).host, tokenFile);
  t.is((await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 })).status, 201);
  await prometheus.waitForValue('sum(qwd_sessions{state="running"})', (v) => v === 1, 'the desktop to be scraped');

  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
    panels: Panel[]; templating: { list: Array<{ name: string; query?: { query: string } | string }> };
  };
  const expressions = dashboard.panels.flatMap((p) => p.targets.map((target) => ({ panel: p.title, expr: target.expr })));
  t.true(expressions.length >= 14, `${expressions.length} expressions`);
  for (const { panel, expr } of expressions) {
    const answer = await prometheus.query(asQuery(expr));
    t.is(answer.status, 'success', `${panel}: ${expr}: ${answer.error ?? ''}`);
  }
  // The job variable's query, as Grafana runs it against the series API.
  const series = await fetch(`${prometheus.url}/api/v1/label/job/values?match[]=qwd_build_info`);
  t.deepEqual(((await series.json()) as { data: string[] }).data, ['qemu-web-desktop']);
  // What the panels show once data is there (rates need two scrapes of a change: not asserted here).
  for (const expr of [
    'sum by (state) (qwd_sessions{job=~"$job"})', 'sum by (access) (qwd_viewers{job=~"$job"})',
    'sum(qwd_admission_reserved_cpus{job=~"$job"})', 'sum(qwd_admission_capacity_memory_bytes{job=~"$job"})',
  ]) {
    t.true(expressions.some((e) => e.expr === expr), `the dashboard has ${expr}`);
    const answer = await prometheus.query(asQuery(expr));
    t.true((answer.data?.result.length ?? 0) > 0, `${expr} returns data`);
  }
});
