import test from 'ava';
import { availability, decideAdmission, type AdmissionRequest, type HostLoad, type Reserved } from '../../src/admission/policy.js';
import { parseConfig } from '../../src/config/schema.js';

const limits = {
  ...parseConfig({}, null, '/').config!.limits,
  maxSessions: 3, maxSessionsPerUser: 2, hostReserveMemoryMiB: 1000, cpuOvercommit: 1, maxLoadPerCpu: 2,
  memoryOvercommit: 1, maxCpusPerUser: 3, maxMemoryMiBPerUser: 5000, maxGpusPerSession: 2, maxGpusPerUser: 1,
};
const host: HostLoad = { cpus: 4, totalMemoryMiB: 9000, availableMemoryMiB: 8000, load1: 0.5, sampledAt: 0 };
const none: Reserved = { sessions: 0, cpus: 0, memoryMiB: 0, sessionsOfUser: 0, cpusOfUser: 0, memoryMiBOfUser: 0, gpusOfUser: 0, sessionsOfMachine: 0 };
const req: AdmissionRequest = { user: 'u', cpus: 1, memoryMiB: 1000, gpus: 0, machine: { name: 'demo', maxSessions: null } };

type Row = [string, Partial<Reserved>, Partial<AdmissionRequest>, Partial<HostLoad> & { gpusFree?: number; memoryOvercommit?: number }, null | { status: number; limit: string; message: RegExp }];
const table: Row[] = [
  ['an empty host admits', {}, {}, {}, null],
  // sessions per user: limit 2
  ['sessions per user: one below admits', { sessions: 1, sessionsOfUser: 1 }, {}, {}, null],
  ['sessions per user: at the limit refuses with 429', { sessions: 2, sessionsOfUser: 2 }, {}, {}, { status: 429, limit: 'maxSessionsPerUser', message: /already have 2 desktops.*most allowed per person \(2\)/ }],
  // CPUs per user: limit 3
  ['CPUs per user: reaching the limit exactly admits', { cpusOfUser: 1, cpus: 1 }, { cpus: 2 }, {}, null],
  ['CPUs per user: one above refuses and says how many', { cpusOfUser: 1, cpus: 1 }, { cpus: 3 }, {}, { status: 429, limit: 'maxCpusPerUser', message: /already use 1 CPU of the 3 allowed per person; ask for 2 or fewer/ }],
  // memory per user: limit 5000
  ['memory per user: reaching the limit exactly admits', { memoryMiBOfUser: 2000, memoryMiB: 2000 }, { memoryMiB: 3000 }, {}, null],
  ['memory per user: above refuses', { memoryMiBOfUser: 2000, memoryMiB: 2000 }, { memoryMiB: 3001 }, {}, { status: 429, limit: 'maxMemoryMiBPerUser', message: /ask for 3000 MiB or less/ }],
  // GPUs per user: limit 1
  ['GPUs per user: the first GPU admits', {}, { gpus: 1 }, { gpusFree: 1 }, null],
  ['GPUs per user: a second GPU refuses', { gpusOfUser: 1, sessionsOfUser: 1, sessions: 1 }, { gpus: 1 }, { gpusFree: 1 }, { status: 429, limit: 'maxGpusPerUser', message: /already have 1 GPU.*without a GPU/ }],
  ['GPUs per user: a session without GPU is still fine', { gpusOfUser: 1, sessionsOfUser: 1, sessions: 1 }, {}, {}, null],
  // server cap: 3
  ['server cap: one below admits', { sessions: 2 }, {}, {}, null],
  ['server cap: at the cap refuses with 503', { sessions: 3 }, {}, {}, { status: 503, limit: 'maxSessions', message: /maximum of 3 desktops/ }],
  // per machine
  ['machine cap: one below admits', { sessionsOfMachine: 1 }, { machine: { name: 'demo', maxSessions: 2 } }, {}, null],
  ['machine cap: at the cap refuses', { sessionsOfMachine: 2 }, { machine: { name: 'demo', maxSessions: 2 } }, {}, { status: 503, limit: 'machine.maxSessions', message: /All 2 "demo" desktops/ }],
  // host CPUs: 4 × overcommit 1
  ['CPUs: exactly the free ones admits', { cpus: 2 }, { cpus: 2 }, {}, null],
  ['CPUs: one more than free refuses and says how many', { cpus: 2 }, { cpus: 3 }, {}, { status: 503, limit: 'cpu', message: /Only 2 CPUs are free on this server; ask for 2 or fewer/ }],
  ['CPUs: host full', { cpus: 4 }, {}, {}, { status: 503, limit: 'cpu', message: /All CPUs/ }],
  ['CPUs: one free', { cpus: 3 }, { cpus: 2 }, {}, { status: 503, limit: 'cpu', message: /Only 1 CPU is free.*ask for 1 or fewer/ }],
  // memory: (9000-1000)×1 = 8000 capacity; available-reserve = 7000
  ['memory: exactly the measured free memory admits', {}, { memoryMiB: 5000 }, { availableMemoryMiB: 6000 }, null],
  ['memory: above the measured free memory refuses', {}, { memoryMiB: 4001 }, { availableMemoryMiB: 5000 }, { status: 503, limit: 'memory', message: /Only 4000 MiB.*4000 MiB or less/ }],
  ['memory: reservations count even when the host looks free', { memoryMiB: 7500 }, { memoryMiB: 600 }, {}, { status: 503, limit: 'memory', message: /Only 500 MiB/ }],
  ['memory overcommit 2 doubles the reservable memory', { memoryMiB: 7500 }, { memoryMiB: 600 }, { memoryOvercommit: 2 }, null],
  // GPUs free
  ['GPUs: none free refuses', {}, { gpus: 1 }, { gpusFree: 0 }, { status: 503, limit: 'gpu', message: /No GPU is free/ }],
  ['GPUs: asking two with one free', {}, { gpus: 2 }, { gpusFree: 1 }, { status: 429, limit: 'maxGpusPerUser', message: /GPU/ }],
  // load
  ['load: at the limit admits', {}, {}, { load1: 8 }, null],
  ['load: above the limit refuses', {}, {}, { load1: 8.1 }, { status: 503, limit: 'load', message: /too busy/ }],
];

for (const [title, reserved, request, env, expected] of table) {
  test(`admission: ${title}`, (t) => {
    const { gpusFree = 0, memoryOvercommit, ...load } = env;
    const decision = decideAdmission({
      request: { ...req, ...request }, reserved: { ...none, ...reserved },
      limits: { ...limits, ...(memoryOvercommit ? { memoryOvercommit } : {}) }, host: { ...host, ...load }, gpusFree,
    });
    if (!expected) return t.deepEqual(decision, { admit: true });
    t.false(decision.admit);
    if (decision.admit) return;
    t.is(decision.status, expected.status);
    t.is(decision.limit, expected.limit);
    t.regex(decision.message, expected.message);
  });
}

test('GPUs: two free, two asked, within the per-user limit', (t) => {
  t.true(decideAdmission({ request: { ...req, gpus: 2 }, reserved: none, limits: { ...limits, maxGpusPerUser: 2 }, host, gpusFree: 2 }).admit);
  const one = decideAdmission({ request: { ...req, gpus: 2 }, reserved: none, limits: { ...limits, maxGpusPerUser: 2 }, host, gpusFree: 1 });
  t.false(one.admit);
  if (!one.admit) t.regex(one.message, /Only 1 GPU is free; ask for 1 or fewer/);
});

test('cpu overcommit multiplies the host CPUs', (t) => {
  const decision = decideAdmission({ request: { ...req, cpus: 8 }, reserved: none, limits: { ...limits, cpuOvercommit: 2, maxCpusPerUser: 8 }, host, gpusFree: 0 });
  t.true(decision.admit);
});

test('availability for the form', (t) => {
  t.deepEqual(availability({ sessions: 1, cpus: 3, memoryMiB: 2000 }, limits, host, 1), { sessions: 2, cpus: 1, memoryMiB: 6000, gpus: 1 });
});

test('under a cluster scheduler (host null) this host\'s size and load do not refuse; the service\'s own limits still do', (t) => {
  const busy = { request: { ...req, cpus: 64, memoryMiB: 1000 }, reserved: { ...none, cpus: 500, memoryMiB: 100000 }, limits: { ...limits, maxCpusPerUser: 100 }, gpusFree: 0 };
  t.deepEqual(decideAdmission({ ...busy, host: null }), { admit: true });
  t.like(decideAdmission({ ...busy, host: { ...host, load1: 100 } }), { admit: false, limit: 'cpu' });
  t.like(decideAdmission({ ...busy, host: null, reserved: { ...busy.reserved, sessions: 3 } }), { admit: false, limit: 'maxSessions' });
  t.like(decideAdmission({ ...busy, host: null, request: { ...busy.request, gpus: 1 } }), { admit: false, limit: 'gpu' });
  t.deepEqual(availability({ sessions: 1, cpus: 9, memoryMiB: 9 }, limits, null, 0), { sessions: 2, cpus: null, memoryMiB: null, gpus: 0 });
});
