// A thin, typed wrapper over Slurm's commands (sbatch, squeue, scontrol,
// scancel) for the Slurm launcher. Each call spawns one command with an
// argument array (never a shell), a timeout, and the configured environment
// (e.g. SLURM_CONF); the job script goes on sbatch's stdin. What the commands
// print is parsed by the pure, exported functions below (unit-tested against
// output of a real Slurm 22.05), and Slurm's refusals are translated into
// QwdErrors whose userMessage a scientist can act on. It is not a scheduler
// client library: no REST, no sacct (accounting may be off), no state of its own.
//
// References: sbatch(1) (--parsable: "jobid[;cluster_name]"), scontrol(1)
// (`show job -o`: one line of Key=Value; `update JobId= TimeLimit=`),
// squeue(1) (--states, --sort, --format %i %P), scancel(1) (--signal,
// --batch, --state), and Slurm's error strings (slurm_errno.c).
import { spawn } from 'node:child_process';
import { QwdError, type ErrorCode } from '../errors.js';

export interface SlurmBinaries {
  readonly sbatch: string;
  readonly squeue: string;
  readonly scontrol: string;
  readonly scancel: string;
}

export interface SlurmCliOptions {
  /** Program names (looked up on PATH) or absolute paths. */
  readonly bin: SlurmBinaries;
  /** Added to the broker's environment for every command (e.g. SLURM_CONF). */
  readonly env?: Readonly<Record<string, string>>;
  /** Per command; the command is killed (SIGKILL) when it runs longer. Default 30 s. */
  readonly timeoutMs?: number;
}

/** Slurm's job states (squeue(1) "JOB STATE CODES"); other strings may come from newer versions. */
export type JobState =
  | 'PENDING' | 'CONFIGURING' | 'RUNNING' | 'SUSPENDED' | 'COMPLETING' | 'COMPLETED' | 'CANCELLED' | 'FAILED'
  | 'TIMEOUT' | 'PREEMPTED' | 'NODE_FAIL' | 'BOOT_FAIL' | 'DEADLINE' | 'OUT_OF_MEMORY' | 'REQUEUED' | 'REQUEUE_HOLD'
  | 'REQUEUE_FED' | 'RESIZING' | 'REVOKED' | 'SIGNALING' | 'SPECIAL_EXIT' | 'STAGE_OUT' | 'STOPPED'
  | (string & {});

export interface JobInfo {
  jobId: string;
  name: string;
  state: JobState;
  /** Why the job waits or why it ended (Resources, Priority, TimeLimit, …); null when Slurm says None. */
  reason: string | null;
  partition: string | null;
  /** NodeList: the node(s) the job was given; null while pending. */
  nodes: string | null;
  /** The node that runs the batch script; null while pending. */
  batchHost: string | null;
  /** null when UNLIMITED (or not known). */
  timeLimitS: number | null;
  runTimeS: number | null;
  /** Milliseconds since the epoch. For a pending job StartTime is Slurm's estimate (possibly far ahead), or null. */
  submitTime: number | null;
  startTime: number | null;
  endTime: number | null;
  /** ExitCode=code:signal of the batch script; null while unknown. */
  exitCode: number | null;
  exitSignal: number | null;
  /** Every Key=Value of scontrol's line, as Slurm wrote it. */
  fields: Readonly<Record<string, string>>;
}

export interface CancelOptions {
  /** Send this signal (TERM, KILL, USR1, …) instead of cancelling. Only running jobs are signalled. */
  signal?: string;
  /** Only the batch step (the job script), not the job's other steps. */
  batchOnly?: boolean;
}

interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 30000;
const MAX_OUTPUT_CHARS = 8 * 1024 * 1024;
const MAX_SLURM_MESSAGE_CHARS = 300;
const JOB_ID = /^\d+(?:[_+]\d+)?$/;
const SIGNAL = /^(?:SIG)?[A-Z][A-Z0-9]*$|^\d{1,2}$/;
/** Job ids per `squeue --jobs=` in jobStates: well under any command-line limit (ids are at most ~12 characters). */
const JOB_STATES_BATCH = 500;
/** Slurm's words for "this job no longer exists or has already ended" (slurm_errno.c). */
const JOB_GONE = new RegExp([
  'Invalid job id specified', 'Job has already finished', 'Job/step already completing or completed',
  'already completing or completed',
].join('|'), 'i');
/** Slurm's words for "the controller cannot be reached". */
const CONTROLLER_UNREACHABLE = new RegExp([
  'Unable to contact slurm controller', 'Socket timed out', 'Connection refused', 'Zero Bytes were transmitted',
].join('|'), 'i');
/** Slurm's words for "this user or account may not use the partition". */
const PARTITION_DENIED = new RegExp([
  'Access/permission denied', "User's group not permitted to use this partition", 'not permitted to use this partition',
].join('|'), 'i');
/** All four commands are in Debian's slurm-client (bin/setup installs the slurm-wlm bundle). */
const INSTALL_HINT = 'install the Debian package "slurm-client" (bin/setup installs "slurm-wlm"), or set ' +
  'slurm.binaries';

export class SlurmCli {
  private readonly env: NodeJS.ProcessEnv;
  private readonly timeoutMs: number;

  constructor(private readonly opts: SlurmCliOptions) {
    // SLURM_TIME_FORMAT=standard: timestamps as YYYY-MM-DDTHH:MM:SS whatever
    // the broker's environment says (parseSlurmTimestamp reads only that).
    this.env = { ...process.env, ...opts.env, SLURM_TIME_FORMAT: 'standard' };
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Slurm's version from `sbatch --version` ("22.05.8"); a QwdError saying what to install when sbatch is missing. */
  async version(): Promise<string> {
    const result = await this.exec('sbatch', ['--version']);
    const version = /(\d+\.\d+(?:\.\d+)?)/.exec(result.stdout)?.[1];
    if (result.code !== 0 || !version) throw this.failure('sbatch', ['--version'], result);
    return version;
  }

  /** True when sbatch runs (the other commands come in the same package). */
  async isAvailable(): Promise<boolean> {
    try {
      await this.version();
      return true;
    } catch {
      return false; // version() says why; here only the answer is wanted.
    }
  }

  /**
   * Submits `script` (sbatch reads it on stdin) with sbatch options `args`
   * (one argv element each) and returns the job id. A refusal is a
   * QWD_SLURM_REFUSED whose userMessage says what to change. If sbatch times
   * out the job may still have been queued: the error says so.
   */
  async submit(script: string, args: readonly string[]): Promise<string> {
    const argv = ['--parsable', ...args];
    const result = await this.exec('sbatch', argv, script);
    if (result.code === 0) {
      const jobId = parseSbatchOutput(result.stdout);
      if (jobId) return jobId;
      throw new QwdError('QWD_SLURM_FAILED', `sbatch ${argv.join(' ')} printed no job id: ` +
        `${JSON.stringify(tail(result.stdout))}`, {
        userMessage: 'The cluster did not confirm the desktop\'s job; an administrator has been told.',
      });
    }
    const refusal = describeSbatchFailure(result.stderr || result.stdout, args);
    throw new QwdError(refusal.code, `sbatch ${argv.join(' ')} failed (${exitText(result)}): ${refusal.slurmMessage}`, {
      userMessage: refusal.userMessage,
      details: { slurmMessage: refusal.slurmMessage, reason: refusal.reason },
    });
  }

  /**
   * The job as `scontrol show job` sees it; null once Slurm no longer knows it (ended more than MinJobAge ago, or never
   * existed).
   */
  async jobInfo(jobId: string): Promise<JobInfo | null> {
    checkJobId(jobId);
    const args = ['show', 'job', '--oneliner', jobId];
    const result = await this.exec('scontrol', args);
    if (result.code !== 0) {
      if (JOB_GONE.test(result.stderr + result.stdout)) return null;
      throw this.failure('scontrol', args, result);
    }
    const info = parseJobInfo(result.stdout, jobId);
    if (!info) {
      throw new QwdError(
        'QWD_SLURM_FAILED',
        `scontrol ${args.join(' ')}: no line for job ${jobId} in ${JSON.stringify(tail(result.stdout))}`,
      );
    }
    return info;
  }

  /**
   * The states of many jobs with one `squeue` (`--jobs=a,b,… --states=all`): job id → state, for the jobs Slurm
   * still knows. A job it has forgotten (ended more than MinJobAge ago) is simply absent. Asked in batches of
   * JOB_STATES_BATCH ids so the command line stays short.
   */
  async jobStates(jobIds: readonly string[]): Promise<Map<string, string>> {
    const states = new Map<string, string>();
    for (let i = 0; i < jobIds.length; i += JOB_STATES_BATCH) {
      const batch = jobIds.slice(i, i + JOB_STATES_BATCH);
      for (const id of batch) checkJobId(id);
      const args = ['--noheader', '--states=all', `--jobs=${batch.join(',')}`, '--format=%i|%T'];
      const result = await this.exec('squeue', args);
      if (result.code !== 0) {
        // squeue asks slurmctld for one job by itself, and then an unknown id is an error; for several it lists.
        if (batch.length === 1 && JOB_GONE.test(result.stderr + result.stdout)) continue;
        throw this.failure('squeue', args, result);
      }
      for (const [id, state] of jobStatesFrom(result.stdout)) states.set(id, state);
    }
    return states;
  }

  /**
   * The job's place among pending jobs (1 = next), or null when it is not
   * pending. See queuePositionFrom for the heuristic: an estimate, since
   * backfill may start a smaller job earlier.
   */
  async queuePosition(jobId: string, partition?: string): Promise<number | null> {
    checkJobId(jobId);
    const args = ['--noheader', '--states=PENDING', '--sort=-p,i', '--format=%i|%P'];
    const result = await this.exec('squeue', args);
    if (result.code !== 0) throw this.failure('squeue', args, result);
    return queuePositionFrom(result.stdout, jobId, partition);
  }

  /**
   * Cancels the job, or with `signal` signals it. An ended or unknown job is
   * not an error. A signal goes to running jobs only (`--state=RUNNING`):
   * scancel with a signal for a pending job otherwise retries until the job
   * starts (measured: 68 s on 22.05) — cancel a pending job without a signal.
   */
  async cancel(jobId: string, opts: CancelOptions = {}): Promise<void> {
    checkJobId(jobId);
    if (opts.signal !== undefined && !SIGNAL.test(opts.signal)) {
      throw new QwdError('QWD_INTERNAL', `scancel: not a signal name: ${JSON.stringify(opts.signal)}`);
    }
    const args = [
      ...(opts.signal === undefined ? [] : ['--state=RUNNING', `--signal=${opts.signal}`]),
      ...(opts.batchOnly ? ['--batch'] : []),
      jobId,
    ];
    const result = await this.exec('scancel', args);
    if (result.code === 0 || JOB_GONE.test(result.stderr)) return;
    throw this.failure('scancel', args, result);
  }

  /** Cancels every job of this name (the broker's names carry the session id, so at most one). */
  async cancelByName(name: string): Promise<void> {
    if (!/^qwd-[A-Za-z0-9_-]{1,64}$/.test(name)) {
      throw new QwdError('QWD_INTERNAL', `scancel --name: not a job name of ours: ${JSON.stringify(name)}`);
    }
    const args = [`--name=${name}`];
    const result = await this.exec('scancel', args);
    if (result.code !== 0) throw this.failure('scancel', args, result);
  }

  /** Sets the job's time limit (whole minutes from its start); lengthening needs a Slurm operator or admin. */
  async setTimeLimit(jobId: string, minutes: number): Promise<void> {
    checkJobId(jobId);
    if (!Number.isInteger(minutes) || minutes < 1) {
      throw new QwdError('QWD_INTERNAL', `setTimeLimit: minutes must be a positive integer, got ${minutes}`);
    }
    const args = ['update', `JobId=${jobId}`, `TimeLimit=${minutes}`];
    const result = await this.exec('scontrol', args);
    if (result.code === 0) return;
    const refusal = describeTimeLimitFailure(result.stderr || result.stdout, jobId, minutes);
    throw new QwdError(refusal.code, `scontrol ${args.join(' ')} failed (${exitText(result)}): ` +
      `${refusal.operatorMessage}`, {
      userMessage: refusal.userMessage,
      details: { slurmMessage: refusal.slurmMessage },
    });
  }

  /**
   * The node's NodeAddr (what the broker connects to); the name itself when Slurm has none or does not know the node.
   */
  async nodeAddress(nodeName: string): Promise<string> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(nodeName)) {
      throw new QwdError('QWD_INTERNAL', `not a Slurm node name: ${JSON.stringify(nodeName)}`);
    }
    const args = ['show', 'node', '--oneliner', nodeName];
    const result = await this.exec('scontrol', args);
    if (result.code !== 0) {
      // scontrol prints "Node X not found" on stdout.
      if (/not found/i.test(result.stdout + result.stderr)) return nodeName;
      throw this.failure('scontrol', args, result);
    }
    return parseNodeAddress(result.stdout, nodeName);
  }

  // ---- running the commands ----

  private exec(which: keyof SlurmBinaries, args: readonly string[], input?: string): Promise<CommandResult> {
    const file = this.opts.bin[which];
    return new Promise((resolve, reject) => {
      const child = spawn(file, args, { env: this.env, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        const mayHaveQueued = which === 'sbatch' && args[0] !== '--version'
          ? ' (the job may have been queued all the same)'
          : '';
        settle(() => reject(new QwdError('QWD_SLURM_FAILED', `${file} ${args.join(' ')}: no answer within ` +
          `${this.timeoutMs} ms${mayHaveQueued}`, {
          userMessage: 'The cluster\'s scheduler did not answer in time. Please try again in a few minutes.',
          details: mayHaveQueued ? { mayHaveQueued: true } : undefined,
        })));
      }, this.timeoutMs);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-MAX_OUTPUT_CHARS)));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-MAX_OUTPUT_CHARS)));
      child.on('error', (err: NodeJS.ErrnoException) => settle(() => reject(new QwdError('QWD_SLURM_FAILED',
        err.code === 'ENOENT' ? `${which} (${JSON.stringify(file)}) is not installed or not on PATH: ${INSTALL_HINT}` +
          `` : `cannot run ${file}: ${err.message}`, {
          cause: err,
          userMessage: 'Cluster desktops are not available: the server cannot run the Slurm commands. An ' +
            'administrator has been told.',
        }))));
      child.on('close', (code, signal) => settle(() => resolve({ code, signal, stdout, stderr })));
      child.stdin.on('error', () => {
        // The command may exit before reading its input; its exit status says what happened.
      });
      child.stdin.end(input ?? '');
    });
  }

  private failure(which: keyof SlurmBinaries, args: readonly string[], result: CommandResult): QwdError {
    const unreachable = CONTROLLER_UNREACHABLE.test(result.stderr + result.stdout);
    return new QwdError('QWD_SLURM_FAILED', `${this.opts.bin[which]} ${args.join(' ')} failed (${exitText(result)}): ` +
      `${slurmMessageOf(result.stderr || result.stdout) || '(no output)'}`, {
      userMessage: unreachable
        ? 'The cluster\'s scheduler cannot be reached right now. Please try again in a few minutes.'
        : 'The cluster\'s scheduler answered with an error; an administrator has been told.',
    });
  }
}

// ---- pure parsing (exported for tests) ----

/** The job id from `sbatch --parsable` ("123" or "123;cluster"); null when there is none. */
export function parseSbatchOutput(stdout: string): string | null {
  const last = stdout.trim().split('\n').at(-1)?.trim() ?? '';
  const jobId = last.split(';')[0]!;
  return /^\d+$/.test(jobId) ? jobId : null;
}

export interface SlurmRefusal {
  code: Extract<ErrorCode, 'QWD_SLURM_REFUSED' | 'QWD_SLURM_FAILED'>;
  /**
   * A short word for logs and tests: 'partition', 'account', 'qos', 'qos-limit', 'gres', 'time', 'memory', 'cpus',
   * 'nodes', 'node-config', 'permission', 'unreachable', 'other'.
   */
  reason: string;
  userMessage: string;
  /** Slurm's own words (the "sbatch: error: " prefixes removed). */
  slurmMessage: string;
}

/**
 * Maps sbatch's stderr (and the options it was given, to name the value) to
 * a refusal a user can act on. Order matters: a memory refusal also says
 * "Requested node configuration is not available", so memory is checked first.
 */
export function describeSbatchFailure(stderr: string, args: readonly string[] = []): SlurmRefusal {
  const slurmMessage = slurmMessageOf(stderr);
  const refused = (
    reason: string, userMessage: string
  ): SlurmRefusal => ({ code: 'QWD_SLURM_REFUSED', reason, userMessage, slurmMessage });
  const opt = (long: string, short?: string) => optionValue(args, long, short);
  const quoted = (value: string | null) => (value ? ` "${value}"` : '');

  if (/invalid partition|Invalid partition name specified/i.test(stderr)) {
    const name = /invalid partition specified: (\S+)/i.exec(stderr)?.[1] ?? opt('partition', 'p');
    return refused(
      'partition',
      `The cluster has no partition${quoted(name)}, which this desktop is set to use. An administrator has to ` +
        `correct the configuration.`,
    );
  }
  if (/Invalid account or account\/partition combination/i.test(stderr)) {
    return refused(
      'account',
      `The cluster does not accept the Slurm account${quoted(opt('account', 'A'))} for this desktop (unknown, or not ` +
        `allowed on its partition). An administrator has to correct the configuration.`,
    );
  }
  if (/Invalid qos specification/i.test(stderr)) {
    return refused(
      'qos',
      `The cluster does not accept the quality of service (QOS)${quoted(opt('qos', 'q'))} for this desktop. An ` +
        `administrator has to correct the configuration.`,
    );
  }
  if (/Job violates accounting\/QOS policy|QOSMax|AssocMax|QOSGrp|AssocGrp/i.test(stderr)) {
    return refused(
      'qos-limit',
      'The cluster\'s limits for your account do not allow this desktop now (too many jobs, CPUs, memory or time). ' +
        'End another desktop, or ask for a smaller or shorter one.',
    );
  }
  if (/Invalid generic resource \(gres\) specification|Invalid GRES/i.test(stderr)) {
    return refused(
      'gres',
      `No node of the cluster has the GPU or other resource${quoted(opt('gres'))} this desktop asks for. Choose a ` +
        `machine without it, or ask an administrator.`,
    );
  }
  if (/Requested time limit is invalid|time limit exceeds/i.test(stderr)) {
    return refused(
      'time',
      `The desktop's lifetime${quoted(opt('time', 't'))} is longer than the cluster allows on its partition. Choose ` +
        `a shorter lifetime.`,
    );
  }
  if (/Memory specification can not be satisfied|Memory required by task is not available/i.test(stderr)) {
    return refused(
      'memory',
      `No node of the cluster has as much memory as this desktop asks for${quoted(opt('mem'))}. Choose less memory.`,
    );
  }
  if (/More processors requested than permitted|CPU count per node can not be satisfied/i.test(stderr)) {
    return refused(
      'cpus',
      `No node of the cluster has as many CPUs as this desktop asks for${quoted(opt('cpus-per-task', 'c'))}. Choose ` +
        `fewer CPUs.`,
    );
  }
  if (/Node count specification invalid/i.test(stderr)) {
    return refused(
      'nodes',
      'The cluster partition does not have as many nodes as this desktop asks for. An administrator has to correct ' +
        'the configuration.',
    );
  }
  if (/Requested node configuration is not available/i.test(stderr)) {
    return refused(
      'node-config',
      'No node of the cluster can give this desktop what it asks for (CPUs, memory, GPUs or features together). ' +
        'Choose a smaller desktop.',
    );
  }
  if (PARTITION_DENIED.test(stderr)) {
    return refused(
      'permission',
      'The cluster does not let the desktop service submit to this desktop\'s partition. An administrator has to ' +
        'correct the configuration.',
    );
  }
  if (CONTROLLER_UNREACHABLE.test(stderr)) {
    return {
      code: 'QWD_SLURM_FAILED', reason: 'unreachable',
      userMessage: 'The cluster\'s scheduler cannot be reached right now. Please try again in a few minutes.',
      slurmMessage,
    };
  }
  const shown = slurmMessage.replace(/^.*Batch job submission failed:\s*/s, '') || 'no reason given';
  if (/Batch job submission failed/i.test(stderr)) {
    return refused('other', `The cluster refused the desktop: ${shown}.`);
  }
  return {
    code: 'QWD_SLURM_FAILED', reason: 'other', userMessage: `The cluster could not take the desktop: ${shown}.`,
    slurmMessage,
  };
}

/**
 * Maps `scontrol update JobId= TimeLimit=` failures: an ended job, a refusal, or permission (operators only may
 * lengthen).
 */
export function describeTimeLimitFailure(stderr: string, jobId: string, minutes: number): {
  code: ErrorCode; userMessage: string; operatorMessage: string; slurmMessage: string;
} {
  const slurmMessage = slurmMessageOf(stderr);
  if (/Access\/permission denied/i.test(stderr)) {
    return {
      code: 'QWD_SLURM_REFUSED',
      slurmMessage,
      operatorMessage: `${slurmMessage}: the broker's Slurm account must be a Slurm operator (or administrator) to ` +
        `extend a job's time limit (sacctmgr modify user <broker user> set adminlevel=Operator)`,
      userMessage: 'The cluster does not let this desktop be extended: the desktop service is not a Slurm operator. ' +
        'An administrator has been told.',
    };
  }
  if (JOB_GONE.test(stderr)) {
    return {
      code: 'QWD_SESSION_ENDED', slurmMessage, operatorMessage: `job ${jobId} has ended: ${slurmMessage}`,
      userMessage: 'This desktop has ended and cannot be extended.',
    };
  }
  if (/Requested time limit is invalid|time limit exceeds/i.test(stderr)) {
    return {
      code: 'QWD_SLURM_REFUSED', slurmMessage, operatorMessage: `${minutes} minutes refused: ${slurmMessage}`,
      userMessage: 'The cluster does not allow this desktop to run that long. Choose a shorter extension.',
    };
  }
  if (/Job violates accounting\/QOS policy|QOSMax|AssocMax/i.test(stderr)) {
    return {
      code: 'QWD_SLURM_REFUSED', slurmMessage, operatorMessage: `${minutes} minutes refused: ${slurmMessage}`,
      userMessage: 'The cluster\'s limits for your account do not allow this desktop to run that long.',
    };
  }
  return {
    code: 'QWD_SLURM_FAILED', slurmMessage, operatorMessage: slurmMessage || '(no output)',
    userMessage: 'The cluster did not accept the new end time; an administrator has been told.',
  };
}

/**
 * Splits one line of `scontrol show … --oneliner` into its Key=Value pairs.
 * Pairs are separated by spaces, but a few values may themselves hold spaces
 * (JobName, Command, WorkDir, StdOut, Comment, Reason details): a word only
 * starts a new pair when it looks like a key (a letter, then letters, digits,
 * _ : / and then "="); any other word continues the previous value. JobName
 * is taken whole up to " UserId=", which follows it in every Slurm version.
 */
export function parseKeyValueLine(line: string): Record<string, string> {
  const fields: Record<string, string> = {};
  let key: string | null = null;
  const jobName = /(?:^|\s)JobName=(.*?) UserId=/.exec(line);
  const text = jobName ? line.replace(`JobName=${jobName[1]} `, 'JobName= ') : line;
  for (const word of text.split(' ')) {
    const m = /^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$/.exec(word);
    if (m && !(m[1]! in fields)) {
      key = m[1]!;
      fields[key] = m[2]!;
    } else if (key !== null && word !== '') {
      fields[key] = fields[key] === '' ? word : `${fields[key]} ${word}`;
    }
  }
  if (jobName) fields.JobName = jobName[1]!;
  return fields;
}

/**
 * The JobInfo of `jobId` from `scontrol show job --oneliner` (several lines for array or het jobs: the one whose JobId
 * matches).
 */
export function parseJobInfo(stdout: string, jobId: string): JobInfo | null {
  for (const line of stdout.split('\n')) {
    if (!line.trim()) continue;
    const f = parseKeyValueLine(line.trim());
    if (f.JobId !== jobId) continue;
    const exit = parseExitCode(f.ExitCode);
    return {
      jobId,
      name: f.JobName ?? '',
      state: (f.JobState ?? 'UNKNOWN') as JobState,
      reason: nullIfUnset(f.Reason),
      partition: nullIfUnset(f.Partition),
      nodes: nullIfUnset(f.NodeList),
      batchHost: nullIfUnset(f.BatchHost),
      timeLimitS: parseSlurmDuration(f.TimeLimit),
      runTimeS: parseSlurmDuration(f.RunTime),
      submitTime: parseSlurmTimestamp(f.SubmitTime),
      startTime: parseSlurmTimestamp(f.StartTime),
      endTime: parseSlurmTimestamp(f.EndTime),
      exitCode: exit?.code ?? null,
      exitSignal: exit?.signal ?? null,
      fields: f,
    };
  }
  return null;
}

/**
 * Seconds from a Slurm duration: "MM", "MM:SS", "HH:MM:SS", "D-HH",
 * "D-HH:MM", "D-HH:MM:SS" (sbatch(1) --time); null for UNLIMITED, INFINITE,
 * Partition_Limit, N/A or anything else.
 */
export function parseSlurmDuration(text: string | undefined): number | null {
  if (!text) return null;
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(text.trim());
  if (!m) return null;
  const [, days, a, b, c] = m;
  const n = (s: string | undefined) => (s === undefined ? 0 : Number(s));
  if (days !== undefined) return n(days) * 86400 + n(a) * 3600 + n(b) * 60 + n(c);
  if (c !== undefined) return n(a) * 3600 + n(b) * 60 + n(c);
  if (b !== undefined) return n(a) * 60 + n(b);
  return n(a) * 60;
}

/**
 * Milliseconds since the epoch from Slurm's standard time format (YYYY-MM-DDTHH:MM:SS, the client's local time); null
 * for Unknown, None, N/A.
 */
export function parseSlurmTimestamp(text: string | undefined): number | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$/.exec(text?.trim() ?? '');
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  return new Date(y, mo - 1, d, h, mi, s).getTime();
}

/** "0:15" → { code: 0, signal: 15 }. */
export function parseExitCode(text: string | undefined): { code: number; signal: number } | null {
  const m = /^(\d+):(\d+)$/.exec(text?.trim() ?? '');
  return m ? { code: Number(m[1]), signal: Number(m[2]) } : null;
}

/**
 * The job's position among pending jobs from `squeue --states=PENDING
 * --sort=-p,i --format=%i|%P` (highest priority first, then oldest id).
 * Heuristic: 1 + the pending jobs before it that share a partition with it
 * (`partition` when given, else the job's own partitions; a pending job may
 * list several, comma-separated). Slurm's main scheduler tries pending jobs in
 * that order, but partition priority tiers, reservations and backfill (a
 * smaller job starting in a gap) can reorder them: an estimate for users, not
 * a promise. null when the job is not in the list (not pending).
 */
export function queuePositionFrom(squeueOutput: string, jobId: string, partition?: string): number | null {
  const rows = squeueOutput.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const [id = '', partitions = ''] = l.split('|');
    return { id: id.trim(), partitions: partitions.split(',').map((p) => p.trim()).filter(Boolean) };
  });
  const index = rows.findIndex((r) => r.id === jobId);
  if (index < 0) return null;
  const wanted = new Set(partition ? [partition] : rows[index]!.partitions);
  return 1 + rows.slice(0, index).filter((r) => r.partitions.some((p) => wanted.has(p))).length;
}

/**
 * `squeue --format=%i|%T` lines → job id → state. An array job's pending remainder ("12_[3-9]") and lines that are
 * not "id|STATE" are skipped.
 */
export function jobStatesFrom(squeueOutput: string): Map<string, string> {
  const states = new Map<string, string>();
  for (const line of squeueOutput.split('\n')) {
    const [id, state] = line.trim().split('|');
    if (id && state && JOB_ID.test(id) && /^[A-Z_]+$/.test(state)) states.set(id, state);
  }
  return states;
}

/** NodeAddr from `scontrol show node --oneliner`; the node name when it is missing or unset. */
export function parseNodeAddress(stdout: string, nodeName: string): string {
  const line = stdout.split('\n')
    .find((l) => l.includes(`NodeName=${nodeName} `) || l.trim() === `NodeName=${nodeName}`) ?? stdout;
  return nullIfUnset(parseKeyValueLine(line.trim()).NodeAddr) ?? nodeName;
}

/** Slurm's own words from a command's stderr: "sbatch: error: " and similar prefixes removed, lines joined, bounded. */
export function slurmMessageOf(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean)
    .filter((l) => !/^\w+: (?:warning|debug\d?|info):/i.test(l))
    .map((l) => l.replace(/^\w+: error: /, '').replace(/^error: /, ''));
  const text = [...new Set(lines)].join('; ');
  return text.length > MAX_SLURM_MESSAGE_CHARS ? `${text.slice(0, MAX_SLURM_MESSAGE_CHARS - 1)}…` : text;
}

function nullIfUnset(value: string | undefined): string | null {
  if (value === undefined) return null;
  const v = value.trim();
  return v === '' || v === 'None' || v === '(null)' || v === 'N/A' || v === 'Unknown' ? null : v;
}

/** The value of an sbatch option in argv: --name=value, --name value, -x value or -xvalue. */
function optionValue(args: readonly string[], long: string, short?: string): string | null {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith(`--${long}=`)) return a.slice(long.length + 3);
    if (a === `--${long}` || (short && a === `-${short}`)) return args[i + 1] ?? null;
    if (short && a.startsWith(`-${short}`) && !a.startsWith('--') && a.length > 2) return a.slice(2);
  }
  return null;
}

function checkJobId(jobId: string): void {
  if (!JOB_ID.test(jobId)) throw new QwdError('QWD_INTERNAL', `not a Slurm job id: ${JSON.stringify(jobId)}`);
}

function exitText(result: CommandResult): string {
  return result.signal ? `signal ${result.signal}` : `exit ${result.code}`;
}

function tail(text: string): string {
  return text.trim().slice(-200);
}
