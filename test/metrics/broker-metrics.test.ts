// BrokerMetrics on its own (src/metrics/broker-metrics.ts): label values stay in
// fixed sets whatever a caller passes (a machine gone from the catalog, an odd
// backend name, an admission limit nobody knows, a foreign error), reservations
// are counted as admission counts them, and each registry is a broker's own.
// The catalog is a real one (a blank machine); the session counts are given as
// the store's query would give them.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { BrokerMetrics, OTHER_MACHINE, REFUSAL_REASONS } from '../../src/metrics/broker-metrics.js';
import { reservedOf, type SessionGroup } from '../../src/metrics/session-counts.js';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { createLogger } from '../../src/log.js';
import { AdmissionError, QwdError, ValidationError } from '../../src/errors.js';
import { ROOT, makeSetup, requireQemu } from '../helpers/env.js';
import { parseSamples, promtoolCheckMetrics, sampleValue } from '../helpers/prometheus.js';
import type { Config } from '../../src/config/schema.js';
import { memoryFreeMiB } from '../../src/admission/policy.js';
import { END_CODES } from '../../src/store/end-reason.js';

const group = (state: SessionGroup['state'], sessions: number, cpus: number, memoryMiB: number, gpus = 0): SessionGroup => ({
  state, machine: 'blank', sessions, cpus, memoryMiB, gpus, gpuMemoryMiB: gpus > 0 ? memoryMiB : 0,
});

test('reservations are counted as admission counts them: queued desktops count toward limits, not host resources', (t) => {
  const table: Array<[SessionGroup[], ReturnType<typeof reservedOf>]> = [
    [[], { sessions: 0, cpus: 0, memoryMiB: 0, gpus: 0, gpuMemoryMiB: 0 }],
    [[group('running', 2, 4, 1024, 1)], { sessions: 2, cpus: 4, memoryMiB: 1024, gpus: 1, gpuMemoryMiB: 1024 }],
    [[group('queued', 3, 6, 3072, 2)], { sessions: 3, cpus: 0, memoryMiB: 0, gpus: 0, gpuMemoryMiB: 0 }],
    [
      [group('starting', 1, 1, 128), group('stopping', 1, 2, 256)],
      { sessions: 2, cpus: 3, memoryMiB: 384, gpus: 0, gpuMemoryMiB: 0 },
    ],
    [
      [group('stopped', 1, 1, 128), group('failed', 1, 1, 128)],
      { sessions: 0, cpus: 0, memoryMiB: 0, gpus: 0, gpuMemoryMiB: 0 },
    ],
  ];
  for (const [groups, expected] of table) t.deepEqual(reservedOf(groups), expected, JSON.stringify(groups));
});

async function metricsFor(config: Config, groups: SessionGroup[] = []) {
  const catalog = await loadCatalog(config.machinesDir, config.qemu.img, createLogger('silent'));
  const metrics = new BrokerMetrics(config, '9.9.9', 'local');
  metrics.observe({
    catalog, capabilities: { queues: false, ownsCapacity: false, nodeGpusPerSession: 0, onBrokerHost: true, guestControl: true },
    sessionCounts: () => ({ groups, reserved: reservedOf(groups) }),
    hostLoad: () => ({ cpus: 8, totalMemoryMiB: 16384, availableMemoryMiB: 8000, load1: 0.5, sampledAt: Date.now() }),
    gpusUsable: () => 2,
  });
  return metrics;
}

test('label values stay in fixed sets whatever the callers pass', async (t) => {
  requireQemu(); // the blank machine's image is made with qemu-img
  const { config } = makeSetup(t, { auth: { backends: [{ type: 'local', name: 'site-accounts' }] } });
  const metrics = await metricsFor(config, [{ ...group('running', 1, 1, 128), machine: 'removed-machine' }]);
  metrics.sessionCreated('blank');
  metrics.sessionCreated('removed-machine');
  metrics.sessionRefused(new AdmissionError('QWD_ADMISSION_CAPACITY', 'All CPUs are in use.', { limit: 'cpu' }));
  metrics.sessionRefused(new AdmissionError('QWD_ADMISSION_LIMIT', 'x', { limit: 'alice@example.org' }));
  metrics.sessionRefused(new ValidationError('cpus must be a whole number, got "lots"'));
  metrics.sessionRefused(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }));
  metrics.sessionRefused(new Error('a bug'));
  metrics.sessionStartFailed(new QwdError('QWD_LAUNCH_TIMEOUT', 'no VNC'));
  metrics.sessionStartFailed('not even an error');
  metrics.vmStopped('killed');
  metrics.vmStopped('exploded' as never);
  metrics.recordAuthAttempt('site-accounts', 'success');
  metrics.recordAuthAttempt('Alice Smith <alice@example.org>', 'invalid');
  metrics.recordAuthAttempt('oidc', 'weird' as never);
  metrics.sessionReady('removed-machine', -3);
  const body = await metrics.scrape();
  const check = await promtoolCheckMetrics(body);
  t.is(check.code, 0, check.output);
  const samples = parseSamples(body);
  t.is(sampleValue(samples, 'qwd_session_creations_total', { machine: 'blank' }), 1);
  t.is(sampleValue(samples, 'qwd_session_creations_total', { machine: OTHER_MACHINE }), 1);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: OTHER_MACHINE }), 1);
  t.is(sampleValue(samples, 'qwd_sessions', { state: 'running', machine: 'blank' }), 0, 'every catalog machine shows');
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_ADMISSION_CAPACITY', reason: 'cpu' }), 1);
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_ADMISSION_LIMIT', reason: 'other' }), 1);
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_BAD_REQUEST', reason: 'invalid-request' }), 1);
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_STORE_BUSY', reason: 'store' }), 1);
  t.is(sampleValue(samples, 'qwd_session_refusals_total', { code: 'QWD_INTERNAL', reason: 'other' }), 1);
  t.is(sampleValue(samples, 'qwd_session_start_failures_total', { code: 'QWD_LAUNCH_TIMEOUT' }), 1);
  t.is(sampleValue(samples, 'qwd_session_start_failures_total', { code: 'QWD_INTERNAL' }), 1);
  t.is(sampleValue(samples, 'qwd_vm_stops_total', { outcome: 'killed' }), 1);
  t.is(sampleValue(samples, 'qwd_vm_stops_total', { outcome: 'failed' }), 1);
  t.is(sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'site-accounts', outcome: 'success' }), 1);
  t.is(sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'other', outcome: 'invalid' }), 2, 'names not configured');
  t.is(sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'oidc', outcome: 'invalid' }), undefined);
  t.is(sampleValue(samples, 'qwd_session_start_duration_seconds_bucket', { machine: OTHER_MACHINE, le: '1' }), 1);
  t.false(/alice|exploded|weird|lots|a bug/i.test(body.split('\n').filter((l) => !l.startsWith('#')).join('\n')));
  t.is(sampleValue(samples, 'qwd_admission_capacity_cpus'), 8 * config.limits.cpuOvercommit);
  t.is(sampleValue(samples, 'qwd_admission_capacity_memory_bytes'),
    Math.floor((16384 - config.limits.hostReserveMemoryMiB) * config.limits.memoryOvercommit) * 1048576);
  t.is(sampleValue(samples, 'qwd_admission_capacity_gpus'), 2);
  t.is(sampleValue(samples, 'qwd_build_info', { version: '9.9.9', launcher: 'local' }), 1);
});

test('memory capacity minus reserved is what admission lets a desktop without a GPU have (GPU guests at 1×)', async (t) => {
  requireQemu();
  const { config } = makeSetup(t, { limits: { memoryOvercommit: 2, hostReserveMemoryMiB: 1024 } });
  // 4096 MiB pinned by a GPU guest, 2048 MiB of ordinary guests; the host has plenty available (no other bound).
  const groups = [{ ...group('running', 1, 2, 4096, 1) }, { ...group('running', 2, 2, 2048), machine: 'other' }];
  const metrics = await metricsFor(config, groups);
  const samples = parseSamples(await metrics.scrape());
  const capacityMiB = sampleValue(samples, 'qwd_admission_capacity_memory_bytes')! / 1048576;
  const reservedMiB = sampleValue(samples, 'qwd_admission_reserved_memory_bytes')! / 1048576;
  t.is(capacityMiB, (16384 - 1024 - 4096) * 2 + 4096);
  t.is(reservedMiB, 6144);
  const host = { cpus: 8, totalMemoryMiB: 16384, availableMemoryMiB: 1_000_000, load1: 0, sampledAt: Date.now() };
  t.is(capacityMiB - reservedMiB, memoryFreeMiB(reservedOf(groups), config.limits, host, false));
});

test('every desktop end is counted by its end code, from the fixed list; revoked links and stops under way are not', async (t) => {
  requireQemu();
  const { config } = makeSetup(t);
  const metrics = await metricsFor(config);
  metrics.sessionEnded('vm-exited');
  metrics.sessionEnded('expired');
  const samples = parseSamples(await metrics.scrape());
  const reasons = samples.filter((s) => s.name === 'qwd_session_ends_total').map((s) => s.labels.reason);
  t.deepEqual(reasons.sort(), END_CODES.filter((c) => c !== 'revoked' && c !== 'stopping').sort());
  t.is(sampleValue(samples, 'qwd_session_ends_total', { reason: 'vm-exited' }), 1);
  t.is(sampleValue(samples, 'qwd_session_ends_total', { reason: 'expired' }), 1);
  t.is(sampleValue(samples, 'qwd_session_ends_total', { reason: 'stopped' }), 0);
});

test('a purge run counts its actions by result and only the orphan directories it removed', async (t) => {
  requireQemu();
  const { config } = makeSetup(t);
  const metrics = await metricsFor(config);
  const expired = { id: 'aaaaaaaaaaaa', action: 'stop', reason: 'expired' } as const;
  const gone = { id: 'bbbbbbbbbbbb', action: 'cleanup', reason: 'vm-exited' } as const;
  metrics.purgeRan({
    actions: [expired, gone], failedActions: [gone], warnings: [], orphanDirs: ['cccccccccccc', 'dddddddddddd'],
    orphanDirsRemoved: 1, forgottenTombstones: 0, auditRowsDeleted: 0, dryRun: false,
  }, 0.2, 1_800_000_000_000);
  const samples = parseSamples(await metrics.scrape());
  t.is(sampleValue(samples, 'qwd_purge_actions_total', { action: 'stop', reason: 'expired', result: 'applied' }), 1);
  t.is(sampleValue(samples, 'qwd_purge_actions_total', { action: 'cleanup', reason: 'vm-exited', result: 'failed' }), 1);
  t.is(sampleValue(samples, 'qwd_purge_actions_total', { action: 'cleanup', reason: 'vm-exited', result: 'applied' }),
    undefined);
  t.is(sampleValue(samples, 'qwd_purge_orphan_dirs_total'), 1, 'the one removed, not the two listed');
  t.is(sampleValue(samples, 'qwd_purge_runs_total', { result: 'ok' }), 1);
  t.is(sampleValue(samples, 'qwd_purge_last_run_timestamp_seconds'), 1_800_000_000, 'the end the purge job gave');
});

test('two brokers\' metrics in one process do not collide, and the global registry stays empty', async (t) => {
  requireQemu();
  const { config } = makeSetup(t);
  const a = await metricsFor(config);
  const b = await metricsFor(config);
  a.sessionCreated('blank');
  t.is(sampleValue(parseSamples(await a.scrape()), 'qwd_session_creations_total', { machine: 'blank' }), 1);
  t.is(sampleValue(parseSamples(await b.scrape()), 'qwd_session_creations_total', { machine: 'blank' }), undefined);
  const { register } = await import('prom-client');
  t.false((await register.metrics()).includes('qwd_'));
  t.throws(() => a.observe({} as never), { message: /already observing/ });
});

test('every limit admission refuses with has its own reason label (a new limit must be added to REFUSAL_REASONS)', (t) => {
  const policy = fs.readFileSync(path.join(ROOT, 'src', 'admission', 'policy.ts'), 'utf8');
  const limits = [...policy.matchAll(/refuse\(\s*\d{3},\s*'([^']+)'/g)].map((m) => m[1]!);
  t.true(limits.length >= 10, `found ${limits.join(', ')}`);
  t.deepEqual([...new Set(limits)].sort(), [...REFUSAL_REASONS].sort());
});
