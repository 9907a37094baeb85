// The launcher registry: every name builds its launcher, each declares its
// capabilities, and a config file cannot choose the fake launcher.
import test from 'ava';
import { LAUNCHERS, createLauncher } from '../../src/launcher/registry.js';
import { parseConfig } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';

const { config } = parseConfig({ stateDir: '/tmp/qwd-registry-test' }, '(test)', '/tmp');

test('each registered launcher is built by its name and declares its capabilities', (t) => {
  const accel = { accel: 'tcg', requested: 'auto', reason: 'test' } as const;
  const built = Object.keys(LAUNCHERS).map((name) => {
    const launcher = createLauncher(name as keyof typeof LAUNCHERS, { config: config!, accel, log: silentLogger() });
    return { name, kind: launcher.kind, capabilities: launcher.capabilities };
  });
  t.deepEqual(built, [
    {
      name: 'local', kind: 'local',
      capabilities: { queues: false, ownsCapacity: false, nodeGpusPerSession: 0, onBrokerHost: true, guestControl: true },
    },
    {
      name: 'slurm', kind: 'slurm',
      capabilities: { queues: true, ownsCapacity: true, nodeGpusPerSession: 0, onBrokerHost: false, guestControl: false },
    },
    {
      name: 'fake', kind: 'fake',
      capabilities: { queues: false, ownsCapacity: false, nodeGpusPerSession: 0, onBrokerHost: true, guestControl: true },
    },
  ]);
});

test('a config file cannot choose the fake launcher', (t) => {
  const { config: refused, problems } = parseConfig({ launcher: 'fake' }, '/etc/qwd/config.yml', '/tmp');
  t.is(refused, null);
  t.true(problems.some((p) => p.includes('launcher')), problems.join('\n'));
});
