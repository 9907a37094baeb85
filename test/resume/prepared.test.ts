// The pure half of prepared states: the descriptor's resume: profile, the
// decision whether a state may be loaded into a session, and the device key
// that ties a state to the hardware it was saved with.
import test from 'ava';
import { parseMachine } from '../../src/catalog/descriptor.js';
import { decideResume, deviceKey, type PreparedMeta } from '../../src/resume/prepared.js';

const FILE = '/srv/machines/demo.yml';
const base = { name: 'demo', image: 'images/demo.qcow2', cpus: { default: 1, max: 2 }, memoryMiB: { default: 256, max: 1024 } };
const parse = (resume: unknown, extra: Record<string, unknown> = {}) => parseMachine({ ...base, ...extra, resume }, FILE);

test('resume: sizes and a ready line are read; absent, every session boots', (t) => {
  t.is(parseMachine(base, FILE).machine!.resume, null);
  const { machine, problems } = parse({ sizes: [{ cpus: 1, memoryMiB: 256 }, { cpus: 2, memoryMiB: 512 }], ready: { serial: 'QWD: boot ok' } });
  t.deepEqual(problems, []);
  t.deepEqual(machine!.resume, { sizes: [{ cpus: 1, memoryMiB: 256 }, { cpus: 2, memoryMiB: 512 }], ready: { serial: 'QWD: boot ok' } });
  const agent = parse({ sizes: [{ cpus: 1, memoryMiB: 256 }], ready: { guestAgent: true } }, { guestAgent: true });
  t.deepEqual(agent.problems, []);
  t.deepEqual(agent.machine!.resume!.ready, { guestAgent: true });
});

const refused: Array<[string, unknown, Record<string, unknown>, RegExp]> = [
  ['no sizes', { ready: { serial: 'x' } }, {}, /resume\.sizes must be a list of \{ cpus, memoryMiB \}/],
  ['an empty list', { sizes: [], ready: { serial: 'x' } }, {}, /resume\.sizes must be a list/],
  ['a size above the machine\'s maximum', { sizes: [{ cpus: 4, memoryMiB: 256 }], ready: { serial: 'x' } }, {}, /resume\.sizes\[0\]\.cpus must be/],
  ['a size without memory', { sizes: [{ cpus: 1 }], ready: { serial: 'x' } }, {}, /resume\.sizes\[0\]\.memoryMiB must be present/],
  ['a size listed twice', { sizes: [{ cpus: 1, memoryMiB: 256 }, { cpus: 1, memoryMiB: 256 }], ready: { serial: 'x' } }, {}, /listed twice/],
  ['an unknown key', { sizes: [{ cpus: 1, memoryMiB: 256 }], ready: { serial: 'x' }, when: 'always' }, {}, /resume\.when/],
  ['no ready signal', { sizes: [{ cpus: 1, memoryMiB: 256 }] }, {}, /resume\.ready must be a mapping with serial/],
  ['both ready signals', { sizes: [{ cpus: 1, memoryMiB: 256 }], ready: { serial: 'x', guestAgent: true } }, { guestAgent: true }, /serial or guestAgent, not both/],
  ['the guest agent without guestAgent: true', { sizes: [{ cpus: 1, memoryMiB: 256 }], ready: { guestAgent: true } }, {}, /needs guestAgent: true/],
  ['an ISO machine', { sizes: [{ cpus: 1, memoryMiB: 256 }], ready: { serial: 'x' } }, { format: 'iso' }, /ISO machine/],
  ['a machine with shares', { sizes: [{ cpus: 1, memoryMiB: 256 }], ready: { serial: 'x' } }, { shares: [{ path: '/srv/data', tag: 'data' }] }, /a machine with shares never resumes/],
];
for (const [what, resume, extra, message] of refused) {
  test(`resume: ${what} is refused, naming the key`, (t) => {
    const { machine, problems } = parse(resume, extra);
    t.is(machine, null);
    t.regex(problems.join('\n'), message);
  });
}

const meta: PreparedMeta = {
  format: 1, machine: 'demo', cpus: 1, memoryMiB: 256, qemuVersion: 'QEMU emulator version 7.2.15', master: '/m:1:2',
  deviceKey: 'k1', preparedAt: 0, stateBytes: 10, prepareMs: 1,
};
const facts = { qemuVersion: 'QEMU emulator version 7.2.15', master: '/m:1:2', deviceKey: 'k1' };

test('a state resumes only into the machine it was saved from; anything else boots, saying why', (t) => {
  t.deepEqual(decideResume('/d', meta, { cpus: 1, memoryMiB: 256 }, facts), { resume: true, dir: '/d', meta });
  const reason = (size: { cpus: number; memoryMiB: number }, now: typeof facts) => {
    const d = decideResume('/d', meta, size, now);
    return d.resume ? 'resume' : d.reason;
  };
  t.regex(reason({ cpus: 2, memoryMiB: 256 }, facts), /saved with 1 CPU\(s\) and 256 MiB/);
  t.regex(reason({ cpus: 1, memoryMiB: 512 }, facts), /saved with 1 CPU\(s\) and 256 MiB/);
  t.regex(reason({ cpus: 1, memoryMiB: 256 }, { ...facts, qemuVersion: 'QEMU emulator version 8.0.0' }), /another QEMU \(QEMU emulator version 7\.2\.15; now QEMU emulator version 8\.0\.0\): prepare it again/);
  t.regex(reason({ cpus: 1, memoryMiB: 256 }, { ...facts, master: '/m:1:3' }), /master image changed/);
  t.regex(reason({ cpus: 1, memoryMiB: 256 }, { ...facts, deviceKey: 'k2' }), /devices changed/);
});

test('the device key follows the guest\'s hardware, not the session\'s paths', (t) => {
  const machine = parseMachine(base, FILE).machine!;
  const opts = { accel: 'tcg' as const, network: 'none' as const, uefiFirmware: '/usr/share/OVMF/OVMF_CODE.fd' };
  const key = deviceKey(machine, { cpus: 1, memoryMiB: 256 }, opts);
  t.is(deviceKey({ ...machine, file: '/elsewhere/demo.yml', image: '/elsewhere/demo.qcow2' }, { cpus: 1, memoryMiB: 256 }, opts), key);
  t.not(deviceKey({ ...machine, display: 'virtio' }, { cpus: 1, memoryMiB: 256 }, opts), key);
  t.not(deviceKey(machine, { cpus: 1, memoryMiB: 256 }, { ...opts, network: 'user' }), key);
  t.not(deviceKey(machine, { cpus: 1, memoryMiB: 512 }, opts), key);
  t.not(deviceKey(machine, { cpus: 1, memoryMiB: 256 }, { ...opts, accel: 'kvm' }), key);
});
