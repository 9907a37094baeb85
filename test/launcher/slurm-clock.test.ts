// The Slurm launcher's time is its injected clock (src/clock.ts): it asks the
// scheduler about a job only when that clock says a poll is due. Proved on a
// real private Slurm (test/helpers/slurm.ts) with a fake clock: a job that has
// ended is not reported until the clock reaches the next poll, then at once;
// and one poll asks about every watched job with one squeue.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { SlurmLauncher, type SlurmHandle } from '../../src/launcher/slurm.js';
import { SlurmCli, type JobInfo } from '../../src/launcher/slurm-cli.js';
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

/** The launcher's Slurm commands, counted: one `squeue` per poll, `scontrol show job` per job asked about. */
class CountingCli extends SlurmCli {
  squeues = 0;
  asked: string[] = [];
  override async jobStates(jobIds: readonly string[]): Promise<Map<string, string>> {
    this.squeues++;
    return super.jobStates(jobIds);
  }
  override async jobInfo(jobId: string): Promise<JobInfo | null> {
    this.asked.push(jobId);
    return super.jobInfo(jobId);
  }
}

test('the ends of many jobs are watched with one squeue per poll; scontrol is asked only about the jobs that ended', async (t) => {
  t.timeout(120_000);
  const slurm = await startSlurm(t, { cpus: 1 });
  const pollIntervalMs = 5000;
  const setup = makeSetup(t, { launcher: 'slurm', slurm: { env: slurm.env, pollIntervalMs } }, { machines: () => {} });
  const clock = new FakeClock(Date.now());
  const { slurm: conf } = setup.config;
  const cli = new CountingCli({ bin: conf.binaries, env: conf.env, timeoutMs: conf.commandTimeoutMs });
  const asker = new SlurmCli({ bin: conf.binaries, env: conf.env, timeoutMs: conf.commandTimeoutMs });
  const launcher = new SlurmLauncher({ config: setup.config, log: silentLogger(), clock, cli });
  const submit = async (wrap: string) => (await slurm.run('sbatch', [
    '--parsable', `--chdir=${slurm.dir}`, `--output=${slurm.dir}/slurm-%j.out`, `--wrap=${wrap}`,
  ])).trim().split(';')[0]!;
  // One CPU: the quick job runs first and ends at once, then one sleeper runs and the others wait (PENDING is alive).
  const quick = await submit('exit 0');
  const sleepers: string[] = [];
  for (let i = 0; i < 5; i++) sleepers.push(await submit('sleep 600'));
  const exits = new Map<string, ExitInfo>();
  const unwatch = new Map<string, () => void>();
  for (const jobId of [quick, ...sleepers]) {
    const jobDir = path.join(conf.sharedDir, `job${jobId}`);
    fs.mkdirSync(jobDir, { recursive: true });
    const handle: SlurmHandle = { kind: 'slurm', jobId, jobDir, node: null, host: null, port: null, accel: null };
    unwatch.set(jobId, launcher.watchExit(handle, (info) => exits.set(jobId, info)));
  }
  t.teardown(() => { for (const stop of unwatch.values()) stop(); });
  const ended = async (ids: string[]) => {
    const states = await asker.jobStates(ids);
    return ids.every((id) => !['PENDING', 'RUNNING', 'COMPLETING', 'CONFIGURING'].includes(states.get(id) ?? 'GONE'));
  };
  await slurm.run('scancel', [sleepers[0]!]);
  await waitFor('the cancelled sleeper and the quick job to end', () => ended([sleepers[0]!, quick]), 30_000);
  t.is(cli.squeues, 0, 'no poll before the clock says one is due');

  await clock.advance(pollIntervalMs);
  await waitFor('both ends to be reported', () => exits.size === 2, 15_000);
  t.is(cli.squeues, 1, 'one squeue for the six jobs');
  t.deepEqual(cli.asked.sort(), [sleepers[0]!, quick].sort(), 'scontrol only about the two that ended');
  t.is(exits.get(sleepers[0]!)?.reason, 'its Slurm job was cancelled');
  t.is(exits.get(quick)?.reason, 'its Slurm job ended');

  // Another poll: nothing ended, still one squeue and no scontrol.
  await waitFor('the next poll to be scheduled', () => clock.pending === 1, 15_000);
  await clock.advance(pollIntervalMs);
  await waitFor('the second poll', () => cli.squeues === 2, 15_000);
  await waitFor('the poll after it to be scheduled', () => clock.pending === 1, 15_000);
  t.is(cli.asked.length, 2, 'no scontrol for the four jobs still alive');
  t.is(exits.size, 2);

  // Nothing watched: no poll scheduled.
  for (const stop of unwatch.values()) stop();
  t.is(clock.pending, 0, 'no poll is scheduled once no job is watched');
});
