// qwdctl purge, as a separate process sharing the store with whoever started
// the sessions: the same code the cron job runs.
import test from 'ava';
import { qwdctl } from '../helpers/cli.js';
import fs from 'node:fs';
import path from 'node:path';
import { createServices } from '../../src/main.js';
import { silentLogger } from '../../src/log.js';
import type { LocalHandle } from '../../src/launcher/local.js';
import { makeSetup, pidsMentioning, requireQemu, waitFor } from '../helpers/env.js';

test.before(() => requireQemu());


test('qwdctl purge --dry-run lists, qwdctl purge stops expired sessions and removes orphan dirs', async (t) => {
  const setup = makeSetup(t);
  const services = await createServices(setup.config, silentLogger());
  t.teardown(() => {
    services.load.stop();
    services.db.close();
  });
  const row = await services.manager.create({ machine: 'blank', user: 'ivy', lifetimeS: 1 });
  const pid = (row.handle as LocalHandle).pid;
  services.manager.detach(); // this process no longer watches it: only purge will act
  const orphan = path.join(setup.config.runDir, 'abcdefabcdef');
  fs.mkdirSync(orphan);
  await waitFor('expiry', () => Date.now() > row.expiresAt, 5000);

  const dry = await qwdctl(['--config', setup.configFile, 'purge', '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  const report = JSON.parse(dry.stdout);
  t.deepEqual(report.actions, [{ id: row.id, action: 'stop', reason: 'expired' }]);
  t.deepEqual(report.orphanDirs, ['abcdefabcdef']);
  t.deepEqual(pidsMentioning(`qwd-${row.id}`), [pid], 'dry run changes nothing');
  t.true(fs.existsSync(orphan));

  const real = await qwdctl(['--config', setup.configFile, 'purge']);
  t.is(real.code, 0, real.stderr);
  t.regex(real.stdout, new RegExp(`did stop session ${row.id} \\(expired\\)`));
  t.regex(real.stdout, /did delete orphan run dir abcdefabcdef/);
  t.deepEqual(pidsMentioning(`qwd-${row.id}`), []);
  t.false(fs.existsSync(orphan));
  t.false(fs.existsSync(row.runDir));
  t.is(services.rows.byId(row.id), undefined);
  t.deepEqual(services.rows.ended(row.tokenHash)?.end, { code: 'expired', detail: 'expired' });
});

test('qwdctl reports configuration problems with exit code 6 and usage errors with 1', async (t) => {
  const setup = makeSetup(t);
  fs.writeFileSync(setup.configFile, 'listen: { port: "x" }\nqemu: { accel: warp }\n');
  const bad = await qwdctl(['--config', setup.configFile, 'purge']);
  t.is(bad.code, 6);
  t.regex(bad.stderr, /listen\.port must be an integer/);
  t.regex(bad.stderr, /qemu\.accel must be one of auto, kvm, tcg, got "warp"/);
  const usage = await qwdctl(['no-such-command']);
  t.is(usage.code, 1);
  t.regex(usage.stderr, /unknown command/);
});
