import test from 'ava';
import { parseMachine } from '../../src/catalog/descriptor.js';

const FILE = '/srv/machines/desk.yml';
const minimal = { name: 'desk', image: 'images/desk.qcow2' };

test('display, agent and clipboard are absent by default: today\'s display, no agent, clipboard both', (t) => {
  const { machine, problems } = parseMachine(minimal, FILE);
  t.deepEqual(problems, []);
  t.is(machine!.display, null);
  t.is(machine!.agent, null);
  t.is(machine!.guestAgent, false);
  t.is(machine!.clipboard, 'both');
});

test('guestAgent: true declares that the image runs qemu-guest-agent', (t) => {
  const { machine, problems } = parseMachine({ ...minimal, agent: 'spice-vdagent', guestAgent: true }, FILE);
  t.deepEqual(problems, []);
  t.true(machine!.guestAgent);
});

test('a desktop machine declares its display, agent and clipboard policy', (t) => {
  const { machine, problems } = parseMachine({ ...minimal, display: 'virtio', agent: 'spice-vdagent', clipboard: 'to-guest' }, FILE);
  t.deepEqual(problems, []);
  t.is(machine!.display, 'virtio');
  t.is(machine!.agent, 'spice-vdagent');
  t.is(machine!.clipboard, 'to-guest');
});

const bad: Array<[string, Record<string, unknown>, RegExp]> = [
  ['an unknown display', { display: 'cirrus' }, /desk\.yml.*display must be one of std, virtio, qxl, got "cirrus"/],
  ['an unknown agent', { agent: 'qemu-ga' }, /desk\.yml.*agent must be one of spice-vdagent, got "qemu-ga"/],
  ['a guestAgent that is not true or false', { guestAgent: 'qemu-guest-agent' },
    /desk\.yml.*guestAgent must be true or false, got "qemu-guest-agent"/],
  ['an unknown clipboard policy', { clipboard: 'yes' }, /desk\.yml.*clipboard must be one of both, to-guest, from-guest, off, got "yes"/],
  ['a clipboard policy that is not a string', { clipboard: true }, /clipboard must be one of/],
  ['qxl on aarch64', { arch: 'aarch64', display: 'qxl' }, /display "qxl" is not available on aarch64 .*no qxl-vga.*use display: virtio/],
  ['std on aarch64', { arch: 'aarch64', display: 'std' }, /display "std" is not available on aarch64/],
];
for (const [title, keys, message] of bad) {
  test(`a descriptor with ${title} is refused with a clear problem`, (t) => {
    const { machine, problems } = parseMachine({ ...minimal, ...keys }, FILE);
    t.is(machine, null);
    t.regex(problems.join('\n'), message);
  });
}

test('aarch64 takes display: virtio', (t) => {
  const { machine, problems } = parseMachine({ ...minimal, arch: 'aarch64', display: 'virtio', agent: 'spice-vdagent' }, FILE);
  t.deepEqual(problems, []);
  t.is(machine!.display, 'virtio');
});
