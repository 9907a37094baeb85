// Metrics of desktops run as Slurm jobs, against a real private Slurm (munged,
// slurmctld, slurmd started by the test on loopback ports, test/helpers/slurm.ts):
// a queued desktop shows as queued and counts toward the service's limits but
// not this host's CPUs; the queue wait is Slurm's own (SubmitTime → StartTime)
// and lands in qwd_slurm_queue_wait_seconds once the job runs; a stop through
// scancel -s TERM is a 'quit'. The host's capacity gauges are absent: Slurm
// owns capacity. A job that becomes ready between two polls (none saw it
// RUNNING) has its wait read from Slurm once, on the ready path.
import anyTest, { type ExecutionContext } from 'ava';
import { api, startTestBroker, type ApiJson } from '../helpers/broker.js';
import { makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { startSlurm } from '../helpers/slurm.js';
import { freePortRange } from '../helpers/peer-process.js';
import { parseSamples, promtoolCheckMetrics, sampleValue, type Sample } from '../helpers/prometheus.js';
import type { Broker } from '../../src/main.js';

anyTest.before(() => requireQemu());
// Its own Slurm and QEMUs under TCG: one at a time on two cores.
const test = anyTest.serial;

async function scrape(t: ExecutionContext, broker: Broker): Promise<Sample[]> {
  const res = await fetch(broker.metricsUrl!);
  t.is(res.status, 200);
  const body = await res.text();
  const check = await promtoolCheckMetrics(body);
  t.is(check.code, 0, check.output);
  return parseSamples(body);
}

const stateOf = async (broker: Broker, s: ApiJson) => (await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state;

test('a desktop that waited in the Slurm queue: counted queued, then its queue wait observed when it runs', async (t) => {
  t.timeout(240_000);
  const slurm = await startSlurm(t, { cpus: 2, memoryMiB: 4096 });
  const portMin = await freePortRange(20000, 32000, 11);
  const { config } = makeSetup(t, {
    launcher: 'slurm',
    slurm: { env: slurm.env, vncBind: '127.0.0.1', vncPortMin: portMin, vncPortMax: portMin + 10, pollIntervalMs: 300 },
    metrics: { enabled: true },
  });
  const broker = await startTestBroker(t, config);
  const body = { machine: 'blank', user: 'alice', cpus: 2, memoryMiB: 128, lifetimeS: 600 };
  const first = (await api(broker, 'POST', '/api/v1/sessions', body)).json;
  await waitFor('the first desktop to run', async () => (await stateOf(broker, first)) === 'running', 60_000);
  const jobIdOf = (id: string) => (broker.services.manager.get(id)!.handle as { jobId: string }).jobId;
  const jobIds = [jobIdOf(first.id)];
  const second = await api(broker, 'POST', '/api/v1/sessions', { ...body, user: 'bob' });
  t.is(second.status, 201, second.text);
  t.is(second.json.state, 'queued', 'the node is full');
  jobIds.push(jobIdOf(second.json.id));

  let samples = await scrape(t, broker);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'queued', machine: 'blank' }), 1);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 1);
  t.is(sampleValue(samples, 'qwd_admission_reserved_sessions'), 2, 'a queued desktop counts toward limits.maxSessions');
  t.is(sampleValue(samples, 'qwd_admission_reserved_cpus'), 2, 'but holds no CPU yet');
  t.is(sampleValue(samples, 'qwd_admission_capacity_cpus'), undefined, 'Slurm owns capacity: no host capacity');
  t.is(sampleValue(samples, 'qwd_build_info', { launcher: 'slurm' }), 1);
  t.is(sampleValue(samples, 'qwd_slurm_queue_wait_seconds_count'), 1, 'the first job\'s wait');

  // Waits on the queue's answer, not on time: Slurm says why the job waits once it has looked.
  await waitFor('Slurm to say why the second job waits', async () => (
    (await api(broker, 'GET', `/api/v1/sessions/${second.json.token}`)).json.queue?.reason ?? false
  ), 20_000);
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${first.token}`)).status, 204);
  await waitFor('the queued desktop to run', async () => (await stateOf(broker, second.json)) === 'running', 90_000);
  samples = await scrape(t, broker);
  t.is(sampleValue(samples, 'qwd_slurm_queue_wait_seconds_count'), 2);
  // Exactly Slurm's own account of both jobs (SubmitTime → StartTime, to the second).
  let slurmS = 0;
  for (const jobId of jobIds) {
    const line = await slurm.run('scontrol', ['show', 'job', '-o', jobId]);
    const at = (key: string) => Date.parse(line.match(new RegExp(`${key}=(\\S+)`))![1]!);
    slurmS += (at('StartTime') - at('SubmitTime')) / 1000;
  }
  t.is(sampleValue(samples, 'qwd_slurm_queue_wait_seconds_sum'), slurmS);
  t.true(slurmS >= 0 && slurmS < 120, `waited ${slurmS} s in all`);
  t.is(sampleValue(samples, 'qwd_vm_stops_total', { outcome: 'quit' }), 1, 'scancel -s TERM was enough');
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 1);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'queued', machine: 'blank' }), 0);
  t.is(sampleValue(samples, 'qwd_session_start_duration_seconds_count', { machine: 'blank' }), 2);
});

test('a job ready between two polls of Slurm still has its queue wait observed, as Slurm counts it', async (t) => {
  t.timeout(180_000);
  const slurm = await startSlurm(t, { cpus: 2, memoryMiB: 4096 });
  const portMin = await freePortRange(20000, 32000, 11);
  // The start loop asks Slurm at once (the job is then pending) and next only after 15 s: the desktop is ready
  // well before that, so only the ready path can observe the queue wait.
  const { config } = makeSetup(t, {
    launcher: 'slurm',
    slurm: { env: slurm.env, vncBind: '127.0.0.1', vncPortMin: portMin, vncPortMax: portMin + 10, pollIntervalMs: 15_000 },
    metrics: { enabled: true },
  });
  const broker = await startTestBroker(t, config);
  const created = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'alice', cpus: 1, lifetimeS: 600 });
  t.is(created.status, 201, created.text);
  await waitFor('the desktop to run', async () => (await stateOf(broker, created.json)) === 'running', 60_000);
  const samples = await scrape(t, broker);
  const startS = sampleValue(samples, 'qwd_session_start_duration_seconds_sum', { machine: 'blank' })!;
  t.true(startS < 15, `ready after ${startS} s, before the second poll`);
  t.is(sampleValue(samples, 'qwd_slurm_queue_wait_seconds_count'), 1);
  const jobId = (broker.services.manager.get(created.json.id)!.handle as { jobId: string }).jobId;
  const line = await slurm.run('scontrol', ['show', 'job', '-o', jobId]);
  const at = (key: string) => Date.parse(line.match(new RegExp(`${key}=(\\S+)`))![1]!);
  t.is(sampleValue(samples, 'qwd_slurm_queue_wait_seconds_sum'), (at('StartTime') - at('SubmitTime')) / 1000);
});

