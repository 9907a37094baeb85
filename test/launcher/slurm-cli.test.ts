// SlurmCli against a real private Slurm 22.05 (munged, slurmctld, slurmd
// started per test by test/helpers/slurm.ts on loopback ports), plus
// table-driven tests of its pure parsers with output captured from that Slurm.
//
// Observed here (Slurm 22.05.8, Debian 12): a job goes PD → R within ~1–2 s
// (the scheduler runs about once a second); scancel ends `sleep` jobs within
// ~0.3 s (COMPLETING → CANCELLED); a --time=1 job started at :32 showed
// TIMEOUT (Reason=TimeLimit, ExitCode=0:15) at +87 s — slurmctld checks time
// limits about every 30 s, so 60–90 s after the start (that wait is not
// repeated here). EnforcePartLimits=ALL refuses too many CPUs at submit; with
// Slurm's default (NO) the job stays PENDING with Reason=PartitionConfig.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { QwdError } from '../../src/errors.js';
import {
  describeSbatchFailure, describeTimeLimitFailure, parseExitCode, parseJobInfo, parseKeyValueLine, parseNodeAddress, parseSbatchOutput,
  jobStatesFrom, parseSlurmDuration, parseSlurmTimestamp, queuePositionFrom, slurmMessageOf, SlurmCli, type JobInfo, type SlurmBinaries, type SlurmRefusal,
} from '../../src/launcher/slurm-cli.js';
import { startSlurm, type SlurmCluster } from '../helpers/slurm.js';
import { pidsMentioning, requireProgram, tempDir, waitFor } from '../helpers/env.js';
import { isRunning } from '../helpers/peer-process.js';

const BIN: SlurmBinaries = { sbatch: 'sbatch', squeue: 'squeue', scontrol: 'scontrol', scancel: 'scancel' };
const SLEEP = '#!/bin/sh\nsleep 30\n';

function cliFor(slurm: SlurmCluster, bin: Partial<SlurmBinaries> = {}): SlurmCli {
  return new SlurmCli({ bin: { ...BIN, ...bin }, env: slurm.env, timeoutMs: 15000 });
}

/** sbatch options that keep the job's files in the cluster's temp dir. */
const filesIn = (slurm: SlurmCluster) => [`--chdir=${slurm.dir}`, `--output=${slurm.dir}/slurm-%j.out`];

async function waitForState(cli: SlurmCli, jobId: string, states: string[], timeoutMs = 15000): Promise<JobInfo> {
  return waitFor(`job ${jobId} to be ${states.join(' or ')}`, async () => {
    const info = await cli.jobInfo(jobId);
    return info && states.includes(info.state) ? info : false;
  }, timeoutMs);
}

async function jobsIn(slurm: SlurmCluster): Promise<string[]> {
  return (await slurm.run('squeue', ['--noheader', '--format=%i'])).split('\n').map((s) => s.trim()).filter(Boolean);
}

async function refusal(t: ExecutionContext, promise: Promise<unknown>): Promise<QwdError> {
  const err = await t.throwsAsync(promise);
  t.true(err instanceof QwdError, `a QwdError: ${err}`);
  return err as QwdError;
}

// ---- real cluster ----

test('a submitted job runs: jobInfo shows RUNNING with its node, batch host, name and partition; cancel makes it CANCELLED', async (t) => {
  const slurm = await startSlurm(t);
  const cli = cliFor(slurm);
  const jobId = await cli.submit(SLEEP, [...filesIn(slurm), '--job-name=qwd-run test', '--cpus-per-task=1']);
  t.regex(jobId, /^\d+$/);
  t.true(Number(jobId) >= slurm.firstJobId);
  const first = await cli.jobInfo(jobId);
  t.true(['PENDING', 'RUNNING'].includes(first!.state), first!.state);

  const running = await waitForState(cli, jobId, ['RUNNING']);
  t.like(running, { jobId, name: 'qwd-run test', state: 'RUNNING', reason: null, partition: 'debug', nodes: slurm.nodeName, batchHost: slurm.nodeName, timeLimitS: null, exitCode: 0 });
  t.true(running.startTime! <= Date.now() + 1000 && running.startTime! > Date.now() - 60_000, `startTime ${new Date(running.startTime!).toISOString()}`);

  await cli.cancel(jobId);
  const cancelled = await waitForState(cli, jobId, ['CANCELLED']);
  t.is(cancelled.state, 'CANCELLED');
  t.not(cancelled.endTime, null);
  // Cancelling again, signalling an ended job and cancelling an id Slurm never had are not errors.
  await cli.cancel(jobId);
  await cli.cancel(jobId, { signal: 'TERM', batchOnly: true });
  await cli.cancel('1');
});

test('a signal goes to running jobs only: scancel --signal for a pending job returns at once instead of waiting for it to start', async (t) => {
  const slurm = await startSlurm(t, { cpus: 1 });
  const cli = cliFor(slurm);
  const running = await cli.submit('#!/bin/sh\nexec sleep 30\n', filesIn(slurm));
  await waitForState(cli, running, ['RUNNING']);
  const pending = await cli.submit(SLEEP, filesIn(slurm));
  t.is((await cli.jobInfo(pending))!.state, 'PENDING');
  // The node's one CPU stays taken by `running` (sleep 30) until it is signalled below: a scancel that waited for
  // `pending` to start could not return before then (or would be killed at cliFor's 15 s timeout and throw).
  await cli.cancel(pending, { signal: 'TERM', batchOnly: true });
  t.is((await cli.jobInfo(running))!.state, 'RUNNING', 'returned while the job holding the node still runs');
  t.is((await cli.jobInfo(pending))!.state, 'PENDING', 'and the pending job has not started');
  await cli.cancel(pending);
  t.is((await waitForState(cli, pending, ['CANCELLED'])).state, 'CANCELLED');
  // Only the batch step gets the signal. The script here is sh; a signal to
  // it alone would orphan its `sleep` (proctrack/linuxproc loses reparented
  // processes, and the cluster's teardown reports them), so this job execs sleep.
  await cli.cancel(running, { signal: 'TERM', batchOnly: true });
  // A job whose script dies of a signal it was sent (not a cancel) ends FAILED, not CANCELLED.
  const ended = await waitForState(cli, running, ['FAILED', 'CANCELLED', 'COMPLETED']);
  t.like(ended, { state: 'FAILED', exitSignal: 15 });
});

test('setTimeLimit changes the TimeLimit of a running job (the broker runs as root, a Slurm operator here)', async (t) => {
  const slurm = await startSlurm(t);
  const cli = cliFor(slurm);
  const jobId = await cli.submit(SLEEP, [...filesIn(slurm), '--time=5']);
  t.is((await waitForState(cli, jobId, ['RUNNING'])).timeLimitS, 5 * 60);
  await cli.setTimeLimit(jobId, 90);
  t.is((await cli.jobInfo(jobId))!.timeLimitS, 90 * 60);
  t.regex(await slurm.run('scontrol', ['show', 'job', '-o', jobId]), /TimeLimit=01:30:00/);

  await cli.cancel(jobId);
  await waitForState(cli, jobId, ['CANCELLED']);
  const ended = await refusal(t, cli.setTimeLimit(jobId, 120));
  t.is(ended.code, 'QWD_SESSION_ENDED');
  t.regex(ended.message, /Job has already finished/);
});

test('lengthening a job as a user who is not a Slurm operator is refused with a message saying the broker must be an operator', async (t) => {
  const slurm = await startSlurm(t);
  // The broker as an ordinary user: the commands run as nobody through a wrapper.
  requireProgram('setpriv', 'util-linux');
  const dir = tempDir(t, 'qwd-slurm-bin-');
  const asNobody = (program: string) => {
    const file = path.join(dir, program);
    fs.writeFileSync(file, `#!/bin/sh\nexec setpriv --reuid=nobody --regid=nogroup --clear-groups ${program} "$@"\n`, { mode: 0o755 });
    return file;
  };
  const cli = cliFor(slurm, { sbatch: asNobody('sbatch'), scontrol: asNobody('scontrol'), scancel: asNobody('scancel') });
  const jobId = await cli.submit(SLEEP, ['--chdir=/', '--output=/dev/null', '--time=5']);
  t.is((await waitForState(cli, jobId, ['RUNNING'])).fields.UserId, 'nobody(65534)');
  await cli.setTimeLimit(jobId, 3); // shortening one's own job is allowed
  const err = await refusal(t, cli.setTimeLimit(jobId, 60));
  t.is(err.code, 'QWD_SLURM_REFUSED');
  t.regex(err.message, /Access\/permission denied.*must be a Slurm operator/);
  t.regex(err.userMessage, /not a Slurm operator/);
  t.is((await cli.jobInfo(jobId))!.timeLimitS, 3 * 60);
  await cli.cancel(jobId);
});

test('a bad partition, a GPU on a node without GRES, too much memory, too many CPUs and a time over the partition\'s MaxTime are refused at submit with a message for the user, and leave no job', async (t) => {
  const slurm = await startSlurm(t, { cpus: 2, memoryMiB: 2048 });
  const cli = cliFor(slurm);
  const cases: Array<[string[], string, RegExp, RegExp]> = [
    [['--partition=nope'], 'partition', /Invalid partition name specified/, /no partition "nope"/],
    [['--gres=gpu:1'], 'gres', /Invalid generic resource \(gres\) specification/, /GPU or other resource "gpu:1"/],
    [['--mem=4096'], 'memory', /Memory specification can not be satisfied/, /as much memory .*"4096"/],
    [['--cpus-per-task=3'], 'cpus', /More processors requested than permitted/, /as many CPUs .*"3"/],
    [['--partition=other', '--time=61'], 'time', /Requested time limit is invalid/, /lifetime "61" is longer than the cluster allows/],
  ];
  for (const [args, reason, slurmSays, userSees] of cases) {
    const err = await refusal(t, cli.submit(SLEEP, [...filesIn(slurm), ...args]));
    t.is(err.code, 'QWD_SLURM_REFUSED', args.join(' '));
    t.is(err.details?.reason, reason, args.join(' '));
    t.regex(err.message, slurmSays);
    t.regex(err.userMessage, userSees);
  }
  t.deepEqual(await jobsIn(slurm), []);
  // Slurm kept a record of the memory refusal (FAILED, BadConstraints) but nothing pends or runs.
  t.is((await slurm.run('squeue', ['--noheader', '--states=PENDING,RUNNING'])).trim(), '');
});

test('without EnforcePartLimits a job wanting more CPUs than the node has is accepted and stays PENDING (PartitionConfig)', async (t) => {
  const slurm = await startSlurm(t, { cpus: 2, enforcePartLimits: false });
  const cli = cliFor(slurm);
  const jobId = await cli.submit(SLEEP, [...filesIn(slurm), '--cpus-per-task=3']);
  const info = await waitFor('a scheduling pass to give a reason', async () => {
    const i = await cli.jobInfo(jobId);
    return i?.reason ? i : false;
  });
  t.like(info, { state: 'PENDING', reason: 'PartitionConfig', nodes: null, batchHost: null });
  t.is(await cli.queuePosition(jobId), 1);
});

test('queuePosition counts pending jobs ahead in the same partition while the node is full, and is null for a running job', async (t) => {
  const slurm = await startSlurm(t, { cpus: 2 });
  const cli = cliFor(slurm);
  const all = [...filesIn(slurm), '--cpus-per-task=2'];
  const first = await cli.submit(SLEEP, all);
  await waitForState(cli, first, ['RUNNING']);
  const second = await cli.submit(SLEEP, all);
  const other = await cli.submit(SLEEP, [...all, '--partition=other', '--time=10']);
  const third = await cli.submit(SLEEP, all);
  const pending = await waitForState(cli, second, ['PENDING']);
  t.true(['Resources', 'Priority', null].includes(pending.reason), String(pending.reason));
  t.is(await cli.queuePosition(first), null);
  t.is(await cli.queuePosition(second), 1);
  t.is(await cli.queuePosition(third), 2);
  t.is(await cli.queuePosition(other), 1);
  t.is(await cli.queuePosition(third, 'other'), 2);
  await cli.cancel(second);
  await waitForState(cli, second, ['CANCELLED']);
  t.is(await cli.queuePosition(third), 1);
});

test('jobInfo of an id Slurm does not know is null; nodeAddress gives NodeAddr, or the name for an unknown node', async (t) => {
  const slurm = await startSlurm(t);
  const cli = cliFor(slurm);
  t.is(await cli.jobInfo('1'), null); // ids here start at FirstJobId >= 1000
  t.is(await cli.jobInfo(String(slurm.firstJobId + 5000)), null);
  t.is(await cli.nodeAddress(slurm.nodeName), '127.0.0.1');
  t.is(await cli.nodeAddress('no-such-node'), 'no-such-node');
  t.regex(await cli.version(), /^22\.05\.\d+$/);
  t.true(await cli.isAvailable());
});

test('jobStates: one squeue for many jobs, those Slurm has forgotten absent, a lone unknown id an empty answer', async (t) => {
  const slurm = await startSlurm(t, { cpus: 1 });
  const cli = cliFor(slurm);
  const running = await cli.submit(SLEEP, [...filesIn(slurm), '--job-name=states-a']);
  const pending = await cli.submit(SLEEP, [...filesIn(slurm), '--job-name=states-b']);
  await waitForState(cli, running, ['RUNNING']);
  const unknown = String(slurm.firstJobId + 5000);
  const states = await cli.jobStates([running, pending, unknown]);
  t.deepEqual(Object.fromEntries(states), { [running]: 'RUNNING', [pending]: 'PENDING' });
  t.deepEqual([...(await cli.jobStates([unknown])).entries()], [], 'squeue refuses a lone unknown id: read as gone');
  await cli.cancel(running);
  await waitForState(cli, running, ['CANCELLED']);
  t.is((await cli.jobStates([running, pending])).get(running), 'CANCELLED', 'an ended job Slurm still knows keeps its state');
  await t.throwsAsync(cli.jobStates(['1;rm']), { instanceOf: QwdError }, 'a malformed id never reaches squeue');
  t.deepEqual([...(await cli.jobStates([])).entries()], [], 'nothing asked, nothing run');
});

test('jobStatesFrom reads "id|STATE" lines and skips what is not one', (t) => {
  t.deepEqual([...jobStatesFrom('1001|RUNNING\n1002|PENDING\n\n12_[3-9]|PENDING\nnot a line\n1003|completed\n').entries()],
    [['1001', 'RUNNING'], ['1002', 'PENDING']]);
});

test('two private clusters run side by side on one host with the same node name and do not see each other\'s jobs', async (t) => {
  const [a, b] = await Promise.all([startSlurm(t, { cpus: 1 }), startSlurm(t, { cpus: 1 })]);
  t.is(a!.nodeName, b!.nodeName);
  t.notDeepEqual(a!.pids, b!.pids);
  const [cliA, cliB] = [cliFor(a!), cliFor(b!)];
  const [jobA, jobB] = await Promise.all([cliA.submit(SLEEP, filesIn(a!)), cliB.submit(SLEEP, filesIn(b!))]);
  // Each node has one CPU: both running means neither cluster counts the other's job.
  await Promise.all([waitForState(cliA, jobA, ['RUNNING']), waitForState(cliB, jobB, ['RUNNING'])]);
  t.deepEqual(await jobsIn(a!), [jobA]);
  t.deepEqual(await jobsIn(b!), [jobB]);
  t.is(await cliA.jobInfo(jobB), null);
  const stopping = Date.now();
  await a!.stop();
  t.log(`stop with a running job took ${Date.now() - stopping} ms`);
  t.deepEqual(Object.values(a!.pids).flat().filter(isRunning), [], 'munged, slurmctld and slurmd are gone');
  t.is((await cliB.jobInfo(jobB))!.state, 'RUNNING', 'stopping one cluster leaves the other alone');
});

test('a missing sbatch is reported with the Debian package to install; a command that hangs is killed at the timeout', async (t) => {
  const cli = new SlurmCli({ bin: { ...BIN, sbatch: '/nonexistent/sbatch' } });
  const missing = await refusal(t, cli.version());
  t.is(missing.code, 'QWD_SLURM_FAILED');
  t.regex(missing.message, /not installed.*"slurm-client"/);
  t.false(await cli.isAvailable());

  const dir = tempDir(t, 'qwd-slurm-bin-');
  const hang = path.join(dir, 'squeue');
  const pidFile = path.join(dir, 'squeue.pid');
  fs.writeFileSync(hang, `#!/bin/sh\necho $$ > ${pidFile}\nexec sleep 30\n`, { mode: 0o755 });
  const slow = new SlurmCli({ bin: { ...BIN, squeue: hang }, timeoutMs: 300 });
  const timedOut = await refusal(t, slow.queuePosition('123'));
  t.is(timedOut.code, 'QWD_SLURM_FAILED');
  t.regex(timedOut.message, /no answer within 300 ms/);
  // Killed, not left to run: the hung command (sh, then the sleep it execs in the same PID) is gone long before
  // it would end itself. (Killed before it wrote its PID, sh is found by the script path on its command line.)
  const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : null;
  await waitFor(`the hung squeue (pid ${pid}) to be killed`, () => (pid === null || !isRunning(pid)) && pidsMentioning(hang).length === 0, 5000);
  t.pass();
});

// ---- pure parsers, with output captured from the Slurm above ----

test('parseSbatchOutput reads "id" and "id;cluster", and nothing else', (t) => {
  t.is(parseSbatchOutput('626049\n'), '626049');
  t.is(parseSbatchOutput('626049;qwdf396e60b\n'), '626049');
  t.is(parseSbatchOutput('sbatch: warning: something\n77\n'), '77');
  t.is(parseSbatchOutput(''), null);
  t.is(parseSbatchOutput('Submitted batch job 12\n'), null);
});

const SBATCH_ERRORS: Array<{ stderr: string; args?: string[]; code: SlurmRefusal['code']; reason: string; user: RegExp; source: string }> = [
  { source: 'real', stderr: 'sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid partition name specified\n', code: 'QWD_SLURM_REFUSED', reason: 'partition', user: /no partition "nope"/ },
  { source: 'real', stderr: 'sbatch: error: Invalid generic resource (gres) specification\n', args: ['--gres', 'gpu:a100:1'], code: 'QWD_SLURM_REFUSED', reason: 'gres', user: /"gpu:a100:1"/ },
  { source: 'real', stderr: 'sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job submission failed: Requested node configuration is not available\n', args: ['--mem=100000'], code: 'QWD_SLURM_REFUSED', reason: 'memory', user: /memory .*"100000"/ },
  { source: 'real', stderr: 'sbatch: error: Batch job submission failed: More processors requested than permitted\n', args: ['-c', '8'], code: 'QWD_SLURM_REFUSED', reason: 'cpus', user: /CPUs .*"8"/ },
  { source: 'real', stderr: 'sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)\n', args: ['--time=120'], code: 'QWD_SLURM_REFUSED', reason: 'time', user: /lifetime "120" is longer/ },
  { source: 'real', stderr: 'sbatch: error: Batch job submission failed: Node count specification invalid\n', code: 'QWD_SLURM_REFUSED', reason: 'nodes', user: /as many nodes/ },
  { source: 'real', stderr: 'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n', code: 'QWD_SLURM_FAILED', reason: 'unreachable', user: /cannot be reached/ },
  { source: 'real', stderr: 'sbatch: error: Invalid --time specification\n', code: 'QWD_SLURM_FAILED', reason: 'other', user: /could not take the desktop: Invalid --time specification\./ },
  // No slurmdbd here, so accounts and QOS cannot be refused for real: these are
  // Slurm 22.05's own error strings (libslurmfull's table) in sbatch's framing.
  { source: 'libslurm', stderr: 'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n', args: ['--account=physics'], code: 'QWD_SLURM_REFUSED', reason: 'account', user: /account "physics"/ },
  { source: 'libslurm', stderr: 'sbatch: error: Batch job submission failed: Invalid qos specification\n', args: ['--qos=gold'], code: 'QWD_SLURM_REFUSED', reason: 'qos', user: /\(QOS\) "gold"/ },
  { source: 'libslurm', stderr: 'sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user\'s size and/or time limits)\n', code: 'QWD_SLURM_REFUSED', reason: 'qos-limit', user: /limits for your account/ },
  { source: 'libslurm', stderr: 'sbatch: error: Batch job submission failed: User\'s group not permitted to use this partition\n', code: 'QWD_SLURM_REFUSED', reason: 'permission', user: /does not let the desktop service submit/ },
  { source: 'libslurm', stderr: 'sbatch: error: Batch job submission failed: Requested partition configuration not available now\n', code: 'QWD_SLURM_REFUSED', reason: 'other', user: /^The cluster refused the desktop: Requested partition configuration not available now\.$/ },
];

for (const c of SBATCH_ERRORS) {
  test(`describeSbatchFailure: ${c.reason} (${c.source}) ← ${slurmMessageOf(c.stderr)}`, (t) => {
    const r = describeSbatchFailure(c.stderr, c.args);
    t.is(r.code, c.code);
    t.is(r.reason, c.reason);
    t.regex(r.userMessage, c.user);
    t.is(r.slurmMessage, slurmMessageOf(c.stderr));
    t.notRegex(r.slurmMessage, /sbatch: error:/);
  });
}

test('describeTimeLimitFailure maps permission, an ended job, a refused limit and anything else', (t) => {
  t.like(describeTimeLimitFailure('Access/permission denied for job 12\n', '12', 60), { code: 'QWD_SLURM_REFUSED' });
  t.regex(describeTimeLimitFailure('Access/permission denied for job 12\n', '12', 60).operatorMessage, /must be a Slurm operator/);
  t.like(describeTimeLimitFailure('Job has already finished for job 536330\n', '536330', 30), { code: 'QWD_SESSION_ENDED' });
  t.like(describeTimeLimitFailure('Invalid job id specified for job 1\n', '1', 30), { code: 'QWD_SESSION_ENDED' });
  t.like(describeTimeLimitFailure('Requested time limit is invalid (missing or exceeds some limit) for job 5\n', '5', 9999), { code: 'QWD_SLURM_REFUSED' });
  t.like(describeTimeLimitFailure('scontrol: error: Invalid TimeLimit value\n', '5', 30), { code: 'QWD_SLURM_FAILED', slurmMessage: 'Invalid TimeLimit value' });
});

// Captured with `scontrol show job -o` from the private cluster.
const RUNNING_LINE = 'JobId=1 JobName=one UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T21:21:34 EligibleTime=2026-11-22T21:21:34 AccrueTime=2026-11-22T21:21:34 StartTime=2026-11-22T21:21:35 EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:21:35 Scheduler=Main Partition=debug AllocNode:Sid=localhost:5925 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/qwd-slurm-8YkgbN StdErr=/tmp/qwd-slurm-8YkgbN/slurm-1.out StdIn=/dev/null StdOut=/tmp/qwd-slurm-8YkgbN/slurm-1.out Power= \n';
const PENDING_LINE = 'JobId=536332 JobName=sbatch UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901757 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:30:00 TimeMin=N/A SubmitTime=2026-11-22T21:26:31 EligibleTime=2026-11-22T21:26:31 AccrueTime=2026-11-22T21:26:31 StartTime=2027-11-22T21:26:33 EndTime=2027-11-22T21:56:33 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:27:33 Scheduler=Main Partition=other AllocNode:Sid=localhost:5925 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp StdErr=/dev/null StdIn=/dev/null StdOut=/dev/null Power= \n';
const FAILED_LINE = 'JobId=3 JobName=sbatch UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901757 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=BadConstraints Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:1 RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T21:21:35 EligibleTime=2026-11-22T21:21:35 AccrueTime=Unknown StartTime=2026-11-22T21:21:35 EndTime=2026-11-22T21:21:35 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:21:35 Scheduler=Main Partition=debug AllocNode:Sid=localhost:5925 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=N/A CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100000M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=100000M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/qwd-slurm-8YkgbN StdErr=/tmp/qwd-slurm-8YkgbN/slurm-3.out StdIn=/dev/null StdOut=/tmp/qwd-slurm-8YkgbN/slurm-3.out Power= \n';
const NAMED_RUNNING_LINE = 'JobId=505695 JobName=my desktop X=1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901758 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:01 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T21:34:15 EligibleTime=2026-11-22T21:34:15 AccrueTime=2026-11-22T21:34:15 StartTime=2026-11-22T21:34:17 EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:34:17 Scheduler=Main Partition=debug AllocNode:Sid=localhost:5925 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/qwd-slurm-KxnemB Comment=hello world  StdErr=/tmp/qwd-slurm-KxnemB/slurm-505695.out StdIn=/dev/null StdOut=/tmp/qwd-slurm-KxnemB/slurm-505695.out Power= \n';
const CANCELLED_LINE = 'JobId=505695 JobName=my desktop X=1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901758 Nice=0 Account=(null) QOS=(null) JobState=CANCELLED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:01 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-22T21:34:15 EligibleTime=2026-11-22T21:34:15 AccrueTime=2026-11-22T21:34:15 StartTime=2026-11-22T21:34:17 EndTime=2026-11-22T21:34:18 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:34:17 Scheduler=Main Partition=debug AllocNode:Sid=localhost:5925 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/qwd-slurm-KxnemB Comment=hello world  StdErr=/tmp/qwd-slurm-KxnemB/slurm-505695.out StdIn=/dev/null StdOut=/tmp/qwd-slurm-KxnemB/slurm-505695.out Power= \n';
const TIMEOUT_LINE = 'JobId=505694 JobName=qwd-abc UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:27 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-11-22T21:34:15 EligibleTime=2026-11-22T21:34:15 AccrueTime=2026-11-22T21:34:15 StartTime=2026-11-22T21:34:17 EndTime=2026-11-22T21:35:44 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:34:17 Scheduler=Main Partition=debug AllocNode:Sid=localhost:5925 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/qwd-slurm-KxnemB StdErr=/tmp/qwd-slurm-KxnemB/slurm-505694.out StdIn=/dev/null StdOut=/tmp/qwd-slurm-KxnemB/slurm-505694.out Power= \n';

test('parseJobInfo reads a job name and a comment with spaces, a cancelled job and a job ended by its time limit', (t) => {
  const named = parseJobInfo(NAMED_RUNNING_LINE, '505695')!;
  t.like(named, { name: 'my desktop X=1', state: 'RUNNING', nodes: 'localhost', runTimeS: 1 });
  t.is(named.fields.Comment, 'hello world');
  t.is(named.fields.UserId, 'root(0)');
  t.like(parseJobInfo(CANCELLED_LINE, '505695'), { state: 'CANCELLED', reason: null, exitCode: 0, exitSignal: 15, endTime: new Date(2026, 10, 22, 21, 34, 18).getTime() });
  // Slurm ended it 87 s after its start for a 60 s limit (time limits are checked about every 30 s).
  t.like(parseJobInfo(TIMEOUT_LINE, '505694'), { name: 'qwd-abc', state: 'TIMEOUT', reason: 'TimeLimit', timeLimitS: 60, runTimeS: 87, exitSignal: 15 });
});

test('parseJobInfo reads a running, a pending and a failed job', (t) => {
  t.like(parseJobInfo(RUNNING_LINE, '1'), {
    jobId: '1', name: 'one', state: 'RUNNING', reason: null, partition: 'debug', nodes: 'localhost', batchHost: 'localhost',
    timeLimitS: null, runTimeS: 0, startTime: new Date(2026, 10, 22, 21, 21, 35).getTime(), endTime: null, exitCode: 0, exitSignal: 0,
  });
  t.like(parseJobInfo(PENDING_LINE, '536332'), { state: 'PENDING', partition: 'other', nodes: null, batchHost: null, timeLimitS: 1800 });
  t.like(parseJobInfo(FAILED_LINE, '3'), { state: 'FAILED', reason: 'BadConstraints', exitCode: 0, exitSignal: 1, nodes: null });
  t.is(parseJobInfo(RUNNING_LINE, '2'), null);
  t.is(parseJobInfo('', '1'), null);
  const fields = parseJobInfo(RUNNING_LINE, '1')!.fields;
  t.is(fields['AllocNode:Sid'], 'localhost:5925');
  t.is(fields['CPUs/Task'], '1');
  t.is(fields.TRES, 'cpu=1,mem=256M,node=1,billing=1');
  t.is(fields.Power, '');
});

test('parseKeyValueLine keeps spaces inside JobName and other values, and skips double spaces', (t) => {
  const f = parseKeyValueLine('JobId=7 JobName=my desktop X=1 UserId=root(0) JobState=RUNNING Comment=hello world WorkDir=/tmp/a b Power=');
  t.is(f.JobName, 'my desktop X=1');
  t.is(f.UserId, 'root(0)');
  t.is(f.Comment, 'hello world');
  t.is(f.WorkDir, '/tmp/a b');
  t.is(f.Power, '');
  t.false('X' in f);
  t.deepEqual(parseKeyValueLine('NodeName=n1 CoresPerSocket=1  CPUAlloc=0 OS=Linux 6.1 #1 SMP  RealMemory=2048'), { NodeName: 'n1', CoresPerSocket: '1', CPUAlloc: '0', OS: 'Linux 6.1 #1 SMP', RealMemory: '2048' });
});

test('parseSlurmDuration reads every sbatch --time form and says null for UNLIMITED', (t) => {
  const cases: Array<[string | undefined, number | null]> = [
    ['00:01:00', 60], ['01:30:00', 5400], ['00:01:27', 87], ['1-00:00:00', 86400], ['2-03:04:05', 2 * 86400 + 3 * 3600 + 4 * 60 + 5],
    ['30', 1800], ['5:30', 330], ['1-2', 86400 + 7200], ['1-2:30', 86400 + 9000],
    ['UNLIMITED', null], ['INFINITE', null], ['Partition_Limit', null], ['N/A', null], ['', null], [undefined, null],
  ];
  for (const [text, seconds] of cases) t.is(parseSlurmDuration(text), seconds, String(text));
});

test('parseSlurmTimestamp reads local YYYY-MM-DDTHH:MM:SS and null for Unknown/None', (t) => {
  t.is(parseSlurmTimestamp('2026-11-22T21:21:35'), new Date(2026, 10, 22, 21, 21, 35).getTime());
  for (const text of ['Unknown', 'None', 'N/A', '', undefined, 'Sun 21:21']) t.is(parseSlurmTimestamp(text), null, String(text));
  t.deepEqual(parseExitCode('0:15'), { code: 0, signal: 15 });
  t.deepEqual(parseExitCode('1:0'), { code: 1, signal: 0 });
  t.is(parseExitCode(undefined), null);
});

test('queuePositionFrom counts pending jobs ahead that share a partition', (t) => {
  // Captured: squeue --noheader --states=PENDING --sort=-p,i --format=%i|%P
  const out = '529562|debug\n529563|other\n529564|debug\n529565|debug,other\n';
  t.is(queuePositionFrom(out, '529562'), 1);
  t.is(queuePositionFrom(out, '529563'), 1);
  t.is(queuePositionFrom(out, '529564'), 2);
  t.is(queuePositionFrom(out, '529565'), 4);
  t.is(queuePositionFrom(out, '529565', 'other'), 2);
  t.is(queuePositionFrom(out, '529561'), null);
  t.is(queuePositionFrom('', '1'), null);
});

test('parseNodeAddress reads NodeAddr, and falls back to the name', (t) => {
  const line = 'NodeName=localhost Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.11 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 NodeHostName=localhost Version=22.05.8 OS=Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=2048 AllocMem=0 FreeMem=23693 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,other  BootTime=2026-11-22T20:48:17 SlurmdStartTime=2026-11-22T21:26:30 LastBusyTime=2026-11-22T21:27:41 CfgTRES=cpu=2,mem=2G,billing=2 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n';
  t.is(parseNodeAddress(line, 'localhost'), '127.0.0.1');
  t.is(parseNodeAddress('NodeName=n7 NodeAddr=(null) State=IDLE\n', 'n7'), 'n7');
  t.is(parseNodeAddress('', 'n7'), 'n7');
});
