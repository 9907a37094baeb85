import test from 'ava';
import { availability, decideAdmission, memoryFreeMiB, reservedBy, type AdmissionRequest, type HeldSession, type HostLoad, type Reserved } from '../../src/admission/policy.js';
import { selectIdleReclaims, type ReclaimCandidate } from '../../src/admission/idle-reclaim.js';
import { parseConfig } from '../../src/config/schema.js';

const limits = {
  ...parseConfig({}, null, '/').config!.limits,
  maxSessions: 3, maxSessionsPerUser: 2, hostReserveMemoryMiB: 1000, cpuOvercommit: 1, maxLoadPerCpu: 2,
  memoryOvercommit: 1, maxCpusPerUser: 3, maxMemoryMiBPerUser: 5000, maxGpusPerSession: 2, maxGpusPerUser: 1,
};
const host: HostLoad = { cpus: 4, totalMemoryMiB: 9000, availableMemoryMiB: 8000, load1: 0.5, sampledAt: 0 };
const none: Reserved = { sessions: 0, cpus: 0, memoryMiB: 0, gpuMemoryMiB: 0, sessionsOfUser: 0, cpusOfUser: 0, memoryMiBOfUser: 0, gpusOfUser: 0, sessionsOfMachine: 0 };
const req: AdmissionRequest = { user: 'u', cpus: 1, memoryMiB: 1000, gpus: 0, machine: { name: 'demo', maxSessions: null } };

type Row = [string, Partial<Reserved>, Partial<AdmissionRequest>, Partial<HostLoad> & { gpusFree?: number; gpusUsable?: number; memoryOvercommit?: number }, null | { status: 429 | 503; limit: string; message: RegExp }];
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
  // GPU guests: VFIO pins their memory, so it counts 1x whatever the overcommit (capacity 8000 physical)
  ['GPU guest: overcommit does not stretch its memory (one above the physical free refuses)', { memoryMiB: 7000 }, { memoryMiB: 4501, gpus: 1 }, { memoryOvercommit: 2, availableMemoryMiB: 9000, gpusFree: 1 }, { status: 503, limit: 'memory', message: /Only 4500 MiB/ }],
  ['GPU guest: exactly the physical free memory admits', { memoryMiB: 7000 }, { memoryMiB: 4500, gpus: 1 }, { memoryOvercommit: 2, availableMemoryMiB: 9000, gpusFree: 1 }, null],
  ['the same request without a GPU is overcommitted', { memoryMiB: 7000 }, { memoryMiB: 4501 }, { memoryOvercommit: 2, availableMemoryMiB: 9000 }, null],
  ['running GPU guests are not overcommitted for the others either', { memoryMiB: 6000, gpuMemoryMiB: 6000 }, { memoryMiB: 4001 }, { memoryOvercommit: 2, availableMemoryMiB: 9000 }, { status: 503, limit: 'memory', message: /Only 4000 MiB/ }],
  ['running GPU guests: the rest of the host is still overcommitted', { memoryMiB: 6000, gpuMemoryMiB: 6000 }, { memoryMiB: 4000 }, { memoryOvercommit: 2, availableMemoryMiB: 9000 }, null],
  // GPUs free
  // GPUs free (gpusUsable: 2 usable on this host unless a row says otherwise)
  ['GPUs: one free of two admits', {}, { gpus: 1 }, { gpusFree: 1 }, null],
  ['GPUs: none free of two (all held) refuses for now', {}, { gpus: 1 }, { gpusFree: 0 }, { status: 503, limit: 'gpu', message: /^No GPU is free right now\. Start the desktop without a GPU, or try again later\.$/ }],
  ['GPUs: none free of one (held) refuses for now', {}, { gpus: 1 }, { gpusFree: 0, gpusUsable: 1 }, { status: 503, limit: 'gpu', message: /^No GPU is free right now/ }],
  ['GPUs: no usable GPU at all says GPUs are not offered, not "try again later"', {}, { gpus: 1 }, { gpusFree: 0, gpusUsable: 0 }, { status: 503, limit: 'gpu', message: /^GPUs are not offered on this server: it has no GPU ready for passthrough\. Start the desktop without a GPU\.$/ }],
  ['GPUs: no usable GPU does not matter without a GPU request', {}, {}, { gpusFree: 0, gpusUsable: 0 }, null],
  ['GPUs: asking two with one free', {}, { gpus: 2 }, { gpusFree: 1 }, { status: 429, limit: 'maxGpusPerUser', message: /GPU/ }],
  // load
  ['load: at the limit admits', {}, {}, { load1: 8 }, null],
  ['load: above the limit refuses', {}, {}, { load1: 8.1 }, { status: 503, limit: 'load', message: /too busy/ }],
];

for (const [title, reserved, request, env, expected] of table) {
  test(`admission: ${title}`, (t) => {
    const { gpusFree = 0, gpusUsable = 2, memoryOvercommit, ...load } = env;
    const decision = decideAdmission({
      request: { ...req, ...request }, reserved: { ...none, ...reserved },
      limits: { ...limits, ...(memoryOvercommit ? { memoryOvercommit } : {}) }, host: { ...host, ...load }, gpusFree, gpusUsable,
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
  t.true(decideAdmission({ request: { ...req, gpus: 2 }, reserved: none, limits: { ...limits, maxGpusPerUser: 2 }, host, gpusFree: 2, gpusUsable: 2 }).admit);
  const one = decideAdmission({ request: { ...req, gpus: 2 }, reserved: none, limits: { ...limits, maxGpusPerUser: 2 }, host, gpusFree: 1, gpusUsable: 2 });
  t.false(one.admit);
  if (!one.admit) t.regex(one.message, /Only 1 GPU is free; ask for 1 or fewer/);
});

test('cpu overcommit multiplies the host CPUs', (t) => {
  const decision = decideAdmission({ request: { ...req, cpus: 8 }, reserved: none, limits: { ...limits, cpuOvercommit: 2, maxCpusPerUser: 8 }, host, gpusFree: 0, gpusUsable: 0 });
  t.true(decision.admit);
});

test('availability for the form', (t) => {
  t.deepEqual(availability({ sessions: 1, cpus: 3, memoryMiB: 2000 }, limits, host, 1), { sessions: 2, cpus: 1, memoryMiB: 6000, gpus: 1, gpusUsable: 1 });
  // All GPUs held: 0 free of 2 (the form shows the option disabled), not "no GPU here".
  t.like(availability({ sessions: 1, cpus: 3, memoryMiB: 2000 }, limits, host, 0, 2), { gpus: 0, gpusUsable: 2 });
});

test('under a cluster scheduler (host null) this host\'s size and load do not refuse; the service\'s own limits still do', (t) => {
  const busy = { request: { ...req, cpus: 64, memoryMiB: 1000 }, reserved: { ...none, cpus: 500, memoryMiB: 100000 }, limits: { ...limits, maxCpusPerUser: 100 }, gpusFree: 0, gpusUsable: 0 };
  t.deepEqual(decideAdmission({ ...busy, host: null }), { admit: true });
  t.like(decideAdmission({ ...busy, host: { ...host, load1: 100 } }), { admit: false, limit: 'cpu' });
  t.like(decideAdmission({ ...busy, host: null, reserved: { ...busy.reserved, sessions: 3 } }), { admit: false, limit: 'maxSessions' });
  t.like(decideAdmission({ ...busy, host: null, request: { ...busy.request, gpus: 1 } }), { admit: false, limit: 'gpu' });
  t.deepEqual(availability({ sessions: 1, cpus: 9, memoryMiB: 9 }, limits, null, 0), { sessions: 2, cpus: null, memoryMiB: null, gpus: 0, gpusUsable: 0 });
});

const row = (state: HeldSession['state'], owner = 'u', machine = 'demo', extra: Partial<HeldSession> = {}): HeldSession => ({ state, owner, machine, cpus: 2, memoryMiB: 1000, gpus: 0, ...extra });

test('reserved: queued sessions count toward the service\'s limits but not this host\'s capacity; ended ones not at all', (t) => {
  const sessions = [row('running'), row('queued'), row('queued', 'v', 'other'), row('starting', 'v'), row('stopping', 'u', 'demo', { gpus: 1 }), row('stopped'), row('failed')];
  t.deepEqual(reservedBy(sessions, 'u', 'demo'), {
    sessions: 5, cpus: 6, memoryMiB: 3000, gpuMemoryMiB: 1000,
    sessionsOfUser: 3, cpusOfUser: 6, memoryMiBOfUser: 3000, gpusOfUser: 1, sessionsOfMachine: 4,
  });
});

// Slurm: host null, so only the service's own limits apply; the queued sessions must count for them.
type QueuedRow = [string, HeldSession[], Partial<AdmissionRequest>, string | null];
const queuedTable: QueuedRow[] = [
  ['maxSessions (3): two running and one queued refuse a fourth', [row('running', 'a'), row('running', 'b'), row('queued', 'c')], { user: 'd' }, 'maxSessions'],
  ['maxSessions (3): two queued admit a third', [row('queued', 'a'), row('queued', 'b')], { user: 'd' }, null],
  ['maxSessionsPerUser (2): two queued of the user refuse a third', [row('queued'), row('queued')], {}, 'maxSessionsPerUser'],
  ['maxCpusPerUser (3): a queued 2-CPU desktop leaves 1', [row('queued')], { cpus: 2 }, 'maxCpusPerUser'],
  ['maxCpusPerUser (3): a queued 2-CPU desktop, asking 1 admits', [row('queued')], { cpus: 1 }, null],
  ['maxMemoryMiBPerUser (5000): a queued 1000 MiB desktop leaves 4000', [row('queued')], { memoryMiB: 4001 }, 'maxMemoryMiBPerUser'],
  ['machine.maxSessions (1): a queued desktop of the machine refuses another', [row('queued', 'a')], { user: 'd', machine: { name: 'demo', maxSessions: 1 } }, 'machine.maxSessions'],
  ['machine.maxSessions (1): a queued desktop of another machine does not count', [row('queued', 'a', 'other')], { user: 'd', machine: { name: 'demo', maxSessions: 1 } }, null],
];
for (const [title, sessions, request, limit] of queuedTable) {
  test(`queued: ${title}`, (t) => {
    const r = { ...req, ...request };
    const decision = decideAdmission({ request: r, reserved: reservedBy(sessions, r.user, r.machine.name), limits, host: null, gpusFree: 0, gpusUsable: 0 });
    if (limit === null) return t.deepEqual(decision, { admit: true });
    t.like(decision, { admit: false, limit });
  });
}

test('queued sessions do not take this host\'s CPUs or memory', (t) => {
  const sessions = [row('queued', 'a', 'demo', { cpus: 4, memoryMiB: 8000 })];
  t.deepEqual(decideAdmission({ request: { ...req, cpus: 3 }, reserved: reservedBy(sessions, 'u', 'demo'), limits, host, gpusFree: 0, gpusUsable: 0 }), { admit: true });
});

test('memory free: GPU guests count at 1x, other guests at 1/overcommit', (t) => {
  const l = { ...limits, memoryOvercommit: 2 };
  const big: HostLoad = { ...host, availableMemoryMiB: 100000 };
  // physical 8000; 2000 pinned + 4000 ballooned (2000 physical) leave 4000 physical.
  const r = { memoryMiB: 6000, gpuMemoryMiB: 2000 };
  t.is(memoryFreeMiB(r, l, big, true), 4000);
  t.is(memoryFreeMiB(r, l, big, false), 8000);
  t.is(memoryFreeMiB({ memoryMiB: 0 }, l, big, false), 16000);
  t.is(memoryFreeMiB({ memoryMiB: 0 }, l, big, true), 8000);
  t.is(memoryFreeMiB({ memoryMiB: 20000, gpuMemoryMiB: 0 }, l, big, true), 0, 'never negative');
  t.is(memoryFreeMiB({ memoryMiB: 0 }, l, host, false), 7000, 'bounded by what the host measures as available');
  t.deepEqual(availability({ sessions: 1, cpus: 0, memoryMiB: 6000, gpuMemoryMiB: 2000 }, l, big, 0).memoryMiB, 8000);
});

const idle = (id: string, extra: Partial<ReclaimCandidate> = {}): ReclaimCandidate => ({ id, state: 'running', viewers: 0, idleSince: 0, memoryMiB: 4096, balloonTargetMiB: null, gpus: 0, ...extra });
const balloon = { idleAfterS: 600, idleTargetPercent: 50 };
type ReclaimRow = [string, ReclaimCandidate, number | null];
const reclaimTable: ReclaimRow[] = [
  ['an idle guest past idleAfterS is ballooned to the target', idle('a'), 2048],
  ['a GPU guest is never ballooned: VFIO pins its memory', idle('a', { gpus: 1 }), null],
  ['a guest with a viewer is not', idle('a', { viewers: 1 }), null],
  ['a guest idle for less than idleAfterS is not', idle('a', { idleSince: 1 }), null],
  ['a guest already at the target is not asked again', idle('a', { balloonTargetMiB: 2048 }), null],
  ['a guest ballooned above the target is shrunk further', idle('a', { balloonTargetMiB: 3000 }), 2048],
  ['a queued or starting guest is not', idle('a', { state: 'queued' }), null],
  ['the target never goes below 64 MiB', idle('a', { memoryMiB: 100 }), 64],
];
for (const [title, candidate, target] of reclaimTable) {
  test(`idle reclaim: ${title}`, (t) => {
    t.deepEqual(selectIdleReclaims([candidate], new Set(), 600_000, balloon), target === null ? [] : [{ id: 'a', targetMiB: target }]);
  });
}

test('idle reclaim: sessions about to be purged are skipped, and idleAfterS 0 turns it off', (t) => {
  t.deepEqual(selectIdleReclaims([idle('a'), idle('b')], new Set(['a']), 600_000, balloon), [{ id: 'b', targetMiB: 2048 }]);
  t.deepEqual(selectIdleReclaims([idle('a')], new Set(), 600_000, { ...balloon, idleAfterS: 0 }), []);
});
