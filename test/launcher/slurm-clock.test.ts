// The Slurm launcher's time is its injected clock (src/clock.ts): it asks the
// scheduler about a job only when that clock says a poll is due. Proved on a
// real private Slurm (test/helpers/slurm.ts) with a fake clock: a job that has
// ended is not reported until the clock reaches the next poll, then at once.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { SlurmLauncher, type SlurmHandle } from '../../src/launcher/slurm.js';
import type { ExitInfo } from '../../src/launcher/types.js';
import { silentLogger } from '../../src/log.js';
import { startSlurm } from '../helpers/slurm.js';
import { makeSetup, waitFor } from '../helpers/env.js';
import { FakeClock } from '../helpers/fake-clock.js';

test('watchExit asks Slurm only when the launcher\'s clock says a poll is due', async (t) => {
  t.timeout(120_000);
  const slurm = await startSlurm(t, { cpus: 1 });
  const pollIntervalMs = 5000;
  const setup = makeSetup(t, { launcher: 'slurm', slurm: { env: slurm.env, pollIntervalMs } }, { machines: () => {} });
  const clock = new FakeClock(Date.now());
  const launcher = new SlurmLauncher({ config: setup.config, log: silentLogger(), clock });
  const jobDir = path.join(setup.config.slurm.sharedDir, 'abcdefabcdef');
  fs.mkdirSync(jobDir, { recursive: true });
  const jobId = (await slurm.run('sbatch', [
    '--parsable', `--chdir=${slurm.dir}`, `--output=${slurm.dir}/slurm-%j.out`, '--wrap=exit 0',
  ])).trim().split(';')[0]!;
  const handle: SlurmHandle = { kind: 'slurm', jobId, jobDir, node: null, host: null, port: null, accel: null };
  const exits: ExitInfo[] = [];
  t.teardown(launcher.watchExit(handle, (info) => exits.push(info)));
  await waitFor(`job ${jobId} to end`, async () => !(await launcher.isAlive(handle)), 30_000);
  await clock.advance(pollIntervalMs - 1);
  t.deepEqual(exits, [], 'no poll before the interval has passed on the launcher\'s clock');
  await clock.advance(1);
  await waitFor('the exit to be reported', () => exits.length === 1, 15_000);
  t.is(clock.pending, 0, 'no poll is scheduled after the end');
});
