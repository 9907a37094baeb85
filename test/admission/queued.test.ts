// Sessions waiting in a scheduler's queue count toward the service's limits,
// through the session manager. The queued row is written as the Slurm
// launcher leaves it while its job waits (state 'queued'); the broker here
// uses the local launcher because the accounting under test does not depend
// on which launcher queued the session, and it needs no cluster.
import test from 'ava';
import path from 'node:path';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu } from '../helpers/env.js';
import type { Broker } from '../../src/main.js';

test.before(() => requireQemu());

function addQueued(broker: Broker, id: string, owner: string, cpus = 1, memoryMiB = 512): void {
  const now = Date.now();
  broker.services.rows.insert({
    id, token: `tok-${id}-${'x'.repeat(32)}`, tokenHash: `th-${id}`, viewToken: `vt-${id}-${'x'.repeat(32)}`, viewTokenHash: `vh-${id}`,
    owner, machine: 'blank', cpus, memoryMiB, createdAt: now, expiresAt: now + 600_000, state: 'queued', handle: null,
    runDir: path.join(broker.services.config.runDir, id), updatedAt: now, viewers: 0, oneShot: false, email: null, warnedBeforeS: null,
    gpus: 0, idleSince: now, balloonTargetMiB: null, hadViewer: false,
  });
}

test('a queued session takes a place under maxSessions, and the user\'s session, CPU and memory limits', async (t) => {
  const setup = makeSetup(t, { limits: { maxSessions: 3, maxSessionsPerUser: 1, maxCpusPerUser: 3, maxMemoryMiBPerUser: 1024, cpuOvercommit: 64 } });
  const broker = await startTestBroker(t, setup.config);
  const create = (user: string, cpus: number) => api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user, cpus, memoryMiB: 64 });
  addQueued(broker, 'queued-a', 'alice', 2, 512);
  const sessions = await create('alice', 1);
  t.is(sessions.status, 429);
  t.regex(sessions.json.error.message, /You already have 1 desktop/);
  t.like(broker.services.manager.reserved('alice', 'blank'), { sessionsOfUser: 1, cpusOfUser: 2, memoryMiBOfUser: 512, cpus: 0, memoryMiB: 0 }, 'counted for alice, not on this host');

  const relaxed = makeSetup(t, { limits: { maxSessions: 3, maxSessionsPerUser: 5, maxCpusPerUser: 3, maxMemoryMiBPerUser: 1024, cpuOvercommit: 64 } });
  const second = await startTestBroker(t, relaxed.config);
  addQueued(second, 'queued-b', 'bob', 2, 1000);
  const cpus = await api(second, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bob', cpus: 2, memoryMiB: 64 });
  t.is(cpus.status, 429);
  t.regex(cpus.json.error.message, /already use 2 CPUs of the 3 allowed per person; ask for 1 or fewer/);
  const memory = await api(second, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bob', cpus: 1, memoryMiB: 64 });
  t.is(memory.status, 429);
  t.regex(memory.json.error.message, /memory allowed per person/);
  addQueued(second, 'queued-c', 'carol');
  addQueued(second, 'queued-d', 'dave');
  const global = await api(second, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'erin', memoryMiB: 64 });
  t.is(global.status, 503);
  t.regex(global.json.error.message, /maximum of 3 desktops/);
  t.is(broker.services.rows.all().length + second.services.rows.all().length, 4, 'the refusals left no row');
});
