// The Slurm launcher: each desktop is a batch job on a compute node. The
// broker writes the session's VNC secret into the shared job dir, submits the
// generated job script on sbatch's stdin, and answers the user at once (state
// "queued"); the job creates the overlay, starts QEMU with VNC on TCP behind
// that password, and reports node and port in status.json. The bridge then
// authenticates to QEMU itself (the password never reaches a browser).
// Slurm enforces the end (--time) even when the broker is down; liveness,
// expiry by Slurm, scancel from outside and preemption are read from
// `squeue` (one for all watched jobs, slurm-watch.ts) and `scontrol show job`.
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import { submitOptionsFor } from '../config/slurm.js';
import { buildQemuArgv, type ArgvOptions, type VmPaths } from '../qemu/argv.js';
import { readRfbBanner, type VncAddress } from '../qemu/rfb-probe.js';
import { overlayArgv, pinMaster, OVERLAY_NAME } from '../snapshot/overlay.js';
import { buildSeedIso } from '../guest/seed-iso.js';
import { buildGuestRuleset } from '../guest/network-policy.js';
import {
  buildJobScript, NAMESPACED_VNC_LISTEN, NODE_DIR_PLACEHOLDER, probeHost, SECRET_FILE, STATUS_FILE, vncListen,
} from './slurm-script.js';
import { SlurmCli, type JobInfo } from './slurm-cli.js';
import { JobWatch } from './slurm-watch.js';
import { StopOnce } from './stop-once.js';
import { sessionDirIn } from './session-dir.js';
import { systemClock, type Clock } from '../clock.js';
import { SLURM_BOOTS, resumeSizeListed } from '../resume/prepared.js';
import type {
  ExitInfo, Launcher, LauncherCapabilities, LaunchSpec, QueueInfo, StartHooks, StopOutcome, VmHandle,
} from './types.js';
import type { MetricsRecorder } from '../metrics/recorder.js';

/** A VM running as a Slurm job on a compute node (stored as JSON in the session row, as it always was). */
export interface SlurmHandle extends VmHandle {
  kind: 'slurm';
  jobId: string;
  /** The session's directory on storage both the broker and the nodes see. */
  jobDir: string;
  /** Filled in once the job reports QEMU ready (connection file). */
  node: string | null;
  host: string | null;
  port: number | null;
  accel: 'kvm' | 'tcg' | null;
}

export interface SlurmLauncherOptions {
  config: Config;
  log: Logger;
  /** The Slurm commands (injected in tests only to count calls; real ones otherwise). */
  cli?: SlurmCli;
  /** Polls, deadlines and time limits; the system clock by default. */
  clock?: Clock;
  /** Queue waits (absent: not counted). */
  metrics?: MetricsRecorder;
}

/**
 * Job states in which the VM exists or may still come. COMPLETING too: a job
 * being cancelled or timed out passes through it before its final state, and
 * only the final state (CANCELLED, TIMEOUT, …) says why it ended; it also
 * means the node has not given back the job's resources yet.
 */
const ALIVE = new Set([
  'PENDING', 'CONFIGURING', 'RUNNING', 'SUSPENDED', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESIZING', 'SIGNALING',
  'STAGE_OUT', 'COMPLETING',
]);
/** Memory QEMU itself needs beyond the guest's RAM (its own code, VGA, buffers). */
const QEMU_OVERHEAD_MIB = 256;
const PASSWORD_CHARS = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

interface ReadyStatus { state: 'ready'; node: string; bind: string; port: number; accel: 'kvm' | 'tcg'; pid: number }
type JobStatus = ReadyStatus | { state: 'failed'; error: string } | { state: 'exited'; code: number };

export class SlurmLauncher implements Launcher {
  readonly kind = 'slurm';
  private readonly cli: SlurmCli;
  private readonly stopping = new StopOnce();
  /** VNC passwords of running jobs, by job id (read from the job dir once). */
  private readonly secrets = new Map<string, string>();

  private readonly clock: Clock;
  /** One poll for the ends of all watched jobs (watchExit). */
  private readonly jobWatch: JobWatch;

  constructor(private readonly opts: SlurmLauncherOptions) {
    const { slurm } = opts.config;
    this.clock = opts.clock ?? systemClock;
    this.cli = opts.cli ?? new SlurmCli({ bin: slurm.binaries, env: slurm.env, timeoutMs: slurm.commandTimeoutMs });
    this.jobWatch = new JobWatch({
      cli: this.cli, clock: this.clock, intervalMs: slurm.pollIntervalMs, log: opts.log,
      alive: (state) => ALIVE.has(state),
    });
  }

  get runRoot(): string {
    return this.opts.config.slurm.sharedDir;
  }

  /**
   * Jobs queue and Slurm decides where they fit; it counts GPUs (gres) and the node picks the devices; QMP stays on
   * the node.
   */
  get capabilities(): LauncherCapabilities {
    const { slurm, limits } = this.opts.config;
    return {
      queues: true, ownsCapacity: true, nodeGpusPerSession: slurm.gpuGres ? limits.maxGpusPerSession : 0,
      onBrokerHost: false, guestControl: false,
    };
  }

  async start(spec: LaunchSpec, hooks: StartHooks = {}): Promise<VmHandle> {
    const { config, log } = this.opts;
    const jobDir = this.jobDirOf(spec.runDir);
    if (resumeSizeListed(spec.machine, { cpus: spec.cpus, memoryMiB: spec.memoryMiB })) {
      log.info(
        { sessionId: spec.sessionId, machine: spec.machine.name },
        `booting: ${SLURM_BOOTS}`,
      );
    }
    if (spec.bootScripts?.scripts.length && spec.bootScripts.delivery !== 'cloud-init') {
      throw new QwdError(
        'QWD_LAUNCH_FAILED',
        `machine ${spec.machine.name}: boot scripts delivered by ${spec.bootScripts.delivery} ` +
          'cannot run on a cluster node',
        {
          userMessage: 'This machine\'s boot scripts need virt-customize, which cluster desktops cannot use; ' +
            'an administrator can switch it to cloud-init delivery.',
        },
      );
    }
    if (spec.gpus?.length || (spec.gpuCount && !config.slurm.gpuGres)) {
      // Admission offers cluster GPUs only with slurm.gpuGres, and the broker's own GPUs never go to a node.
      throw new QwdError(
        'QWD_LAUNCH_FAILED', 'a GPU was asked for a Slurm session but slurm.gpuGres is not set',
        { userMessage: 'GPUs cannot be given to cluster desktops on this service.' },
      );
    }
    await fsp.mkdir(this.runRoot, { recursive: true, mode: 0o711 });
    await fsp.mkdir(jobDir, { mode: 0o700 });
    let jobId: string | null = null;
    try {
      // The VNC password: random, in a 0600 file QEMU reads as a secret object.
      // VNC authentication uses its first 8 characters.
      await fsp.writeFile(path.join(jobDir, SECRET_FILE), randomPassword(8), { mode: 0o600, flag: 'wx' });
      const scripts = spec.bootScripts?.scripts ?? [];
      const seedIso = scripts.length
        ? await buildSeedIso(config.guest.genisoimage, jobDir, spec.sessionId, spec.machine.name, scripts)
        : null;
      // The job names the master by the real path checked here (its chain stays inside machinesDir).
      const { machine } = await pinMaster(config.qemu.img, spec.machine, config.machinesDir);
      const overlay = path.join(jobDir, OVERLAY_NAME);
      const paths: VmPaths = {
        overlay,
        qmpSocket: `${NODE_DIR_PLACEHOLDER}/qmp.sock`,
        vncSocket: '',
        serialLog: path.join(jobDir, 'serial.log'),
        pidFile: `${NODE_DIR_PLACEHOLDER}/qemu.pid`,
        qgaSocket: `${NODE_DIR_PLACEHOLDER}/qga.sock`,
      };
      // Guests with network get a namespace of their own on the node (slurm-script.ts), unless the site
      // accepts them without.
      const isolated = config.qemu.network === 'user' && !config.slurm.unisolatedGuestNetwork;
      const rulesFile = path.join(jobDir, 'guest-net.nft');
      if (isolated) {
        await fsp.writeFile(rulesFile, buildGuestRuleset(config.guestNetwork, []), { mode: 0o600, flag: 'wx' });
      }
      const argvFor = (accel: 'kvm' | 'tcg') => {
        const opts: ArgvOptions = {
          sessionId: spec.sessionId, accel, sandbox: config.qemu.sandbox, runAs: null, network: config.qemu.network,
          uefiFirmware: config.qemu.uefi[spec.machine.arch],
          vncTcp: {
            listen: isolated ? NAMESPACED_VNC_LISTEN : vncListen(config.slurm.vncBind),
            secretFile: path.join(jobDir, SECRET_FILE),
          },
        };
        return buildQemuArgv(
          machine, { cpus: spec.cpus, memoryMiB: spec.memoryMiB }, paths, opts,
          { shares: spec.shares ?? [], seedIso, gpus: [] },
        );
      };
      const script = buildJobScript({
        sessionId: spec.sessionId, jobDir,
        qemuBinary: config.qemu.binaries[spec.machine.arch], qemuImg: config.qemu.img,
        overlayArgv: overlayArgv(machine, overlay, config.qemu.isoDiskGiB), overlayPath: overlay,
        argvKvm: argvFor('kvm'), argvTcg: argvFor('tcg'), accel: config.qemu.accel, guestArch: spec.machine.arch,
        vncBind: config.slurm.vncBind, vncPortMin: config.slurm.vncPortMin, vncPortMax: config.slurm.vncPortMax,
        gpus: spec.gpuCount ? {
          count: spec.gpuCount, sysfsRoot: config.slurm.nodeSysfsRoot, lockDir: config.slurm.gpuLockDir,
          exclude: config.gpu.exclude,
        } : null,
        guestNetwork: isolated ? { tools: config.guestNetwork, rulesFile } : null,
      });
      await fsp.writeFile(path.join(jobDir, 'job.sh'), script, { mode: 0o600 });
      const args = sbatchArgs(config, spec, jobDir, this.clock.now());
      jobId = await this.cli.submit(script, args);
      log.info({ sessionId: spec.sessionId, jobId, args }, 'slurm job submitted');
      const handle: SlurmHandle = { kind: 'slurm', jobId, jobDir, node: null, host: null, port: null, accel: null };
      hooks.onQueued?.(handle);
      return await this.awaitReady(handle, spec.runDir, spec.expiresAt);
    } catch (err) {
      // An sbatch that did not answer in time may have queued the job all the same: find it by its name.
      const unanswered = !jobId && err instanceof QwdError && err.details?.mayHaveQueued === true;
      if (jobId) {
        await this.cli.cancel(jobId).catch((e: Error) => log.error(
          { sessionId: spec.sessionId, jobId, err: e.message },
          'the job of a failed start could not be cancelled; it may hold a node until its time limit',
        ));
      } else if (unanswered) {
        await this.cli.cancelByName(`qwd-${spec.sessionId}`).catch((e: Error) => log.error(
          { sessionId: spec.sessionId, err: e.message },
          'a job that sbatch may have queued could not be cancelled by name',
        ));
      }
      await this.cleanup(null, spec.runDir);
      throw err;
    }
  }

  /** Waits for the job's QEMU to report ready and for its VNC to answer from here. */
  async awaitReady(vm: VmHandle, _runDir: string, expiresAt?: number): Promise<SlurmHandle> {
    const handle = asSlurm(vm);
    const { slurm } = this.opts.config;
    let runningSince: number | null = null;
    let nextJobCheck = 0;
    for (;;) {
      const status = await readStatus(handle.jobDir);
      if (status?.state === 'ready') {
        const host = status.bind === '0.0.0.0' || status.bind === '::'
          ? await this.cli.nodeAddress(status.node)
          : probeHost(status.bind);
        await readRfbBanner({ kind: 'tcp', host, port: status.port }, 5000).catch((err: Error) => {
          throw new QwdError(
            'QWD_VNC_UNREACHABLE',
            `job ${handle.jobId}: QEMU on ${status.node} listens on port ${status.port}, ` +
              `but ${host}:${status.port} cannot be reached from the broker: ${err.message}`,
            {
              userMessage: 'The desktop started on a cluster node that the service cannot reach; ' +
                'an administrator has been told.',
              cause: err,
            },
          );
        });
        // --time was the life-time left at submission, and Slurm counts it from the
        // job's start: take off the time it waited, so the job ends at expiresAt
        // even if the broker is down then (lowering a limit needs no privilege).
        this.secrets.set(handle.jobId, await fsp.readFile(path.join(handle.jobDir, SECRET_FILE), 'utf8'));
        if (expiresAt !== undefined) {
          await this.extend(handle, expiresAt).catch((err: Error) => this.opts.log.warn(
            { jobId: handle.jobId, err: err.message }, 'could not align the job\'s time limit with the session\'s end',
          ));
        }
        return { ...handle, node: status.node, host, port: status.port, accel: status.accel };
      }
      if (status?.state === 'failed') {
        throw new QwdError(
          'QWD_LAUNCH_FAILED', `job ${handle.jobId}: ${status.error}`,
          { userMessage: 'The desktop could not start on its cluster node; an administrator has been told.' },
        );
      }
      if (status?.state === 'exited') {
        // Stopped before it was ready (a stop that came during start-up), or QEMU quit at once.
        throw new QwdError(
          'QWD_LAUNCH_FAILED',
          `job ${handle.jobId}: QEMU ended (exit ${status.code}) before the broker saw it ready: ` +
            `${await slurmOutputTail(handle.jobDir)}`,
          { userMessage: 'The desktop stopped before it was ready.' },
        );
      }
      const now = this.clock.now();
      if (now >= nextJobCheck) {
        nextJobCheck = now + slurm.pollIntervalMs;
        const info = await this.cli.jobInfo(handle.jobId);
        if (!info || !ALIVE.has(info.state)) {
          // It reported just before ending: read that first (ready, failed and exited all end this loop).
          if (await readStatus(handle.jobDir)) continue;
          const ended = info ? `${info.state}${info.reason ? `, ${info.reason}` : ''}` : 'no longer known to Slurm';
          throw new QwdError(
            'QWD_LAUNCH_FAILED',
            `job ${handle.jobId} ended before QEMU was ready (${ended}): ${await slurmOutputTail(handle.jobDir)}`,
            {
              userMessage: info?.state === 'CANCELLED'
                ? 'The cluster job of this desktop was cancelled before it started.'
                : 'The desktop\'s cluster job ended before the desktop was ready.',
            },
          );
        }
        if (info.state === 'RUNNING' && runningSince === null) {
          runningSince = now;
          // Slurm's own times: right even for a job that started while the broker was down.
          if (info.submitTime !== null && info.startTime !== null) {
            this.opts.metrics?.slurmQueueWait((info.startTime - info.submitTime) / 1000);
          }
        }
        if (runningSince !== null && now - runningSince > slurm.startTimeoutMs) {
          await this.cli.cancel(handle.jobId).catch((e: Error) => this.opts.log.error(
            { jobId: handle.jobId, err: e.message }, 'a job whose QEMU never became ready could not be cancelled',
          ));
          throw new QwdError(
            'QWD_LAUNCH_TIMEOUT',
            `job ${handle.jobId} runs on ${info.nodes ?? '?'} ` +
              `but QEMU did not report ready within ${slurm.startTimeoutMs} ms`,
          );
        }
      }
      await this.clock.sleep(Math.min(100, slurm.pollIntervalMs));
    }
  }

  /**
   * scancel --batch -s TERM: the job forwards it to QEMU (an orderly shutdown, as QMP quit); then scancel; then
   * SIGKILL.
   */
  stop(vm: VmHandle): Promise<StopOutcome> {
    const handle = asSlurm(vm);
    return this.stopping.run(handle.jobId, () => this.escalate(handle));
  }

  private async escalate(handle: SlurmHandle): Promise<StopOutcome> {
    const { config, log } = this.opts;
    const info = await this.cli.jobInfo(handle.jobId);
    if (!info || !ALIVE.has(info.state)) return 'already-gone';
    if (info.state === 'RUNNING') {
      await this.cli.cancel(handle.jobId, { signal: 'TERM', batchOnly: true });
      if (await this.waitEnded(handle, config.qemu.quitGraceMs)) return 'quit';
      log.warn({ jobId: handle.jobId }, 'job did not end on SIGTERM; cancelling it');
    }
    await this.cli.cancel(handle.jobId);
    // Slurm sends SIGTERM, then SIGKILL after its KillWait.
    if (await this.waitEnded(handle, config.qemu.termGraceMs + 35000)) return 'terminated';
    await this.cli.cancel(handle.jobId, { signal: 'KILL' });
    if (await this.waitEnded(handle, 10000)) return 'killed';
    throw new QwdError('QWD_INTERNAL', `slurm job ${handle.jobId} did not end after scancel -s KILL`);
  }

  private async waitEnded(handle: SlurmHandle, ms: number): Promise<boolean> {
    const deadline = this.clock.now() + ms;
    for (;;) {
      const info = await this.cli.jobInfo(handle.jobId);
      if (!info || !ALIVE.has(info.state)) return true;
      if (this.clock.now() > deadline) return false;
      await this.clock.sleep(200);
    }
  }

  async isAlive(vm: VmHandle): Promise<boolean> {
    const info = await this.cli.jobInfo(asSlurm(vm).jobId);
    return info !== null && ALIVE.has(info.state);
  }

  async vncEndpoint(vm: VmHandle): Promise<VncAddress> {
    const handle = asSlurm(vm);
    if (!handle.host || !handle.port) {
      throw new QwdError('QWD_VNC_UNREACHABLE', `job ${handle.jobId} has not reported its VNC port yet`);
    }
    // Kept in memory once read: every viewer's connection would otherwise read shared storage (NFS) again.
    let password = this.secrets.get(handle.jobId);
    if (password === undefined) {
      password = await fsp.readFile(path.join(handle.jobDir, SECRET_FILE), 'utf8');
      this.secrets.set(handle.jobId, password);
    }
    return { kind: 'tcp', host: handle.host, port: handle.port, password };
  }

  watchExit(vm: VmHandle, onExit: (info: ExitInfo) => void): () => void {
    const handle = asSlurm(vm);
    let done = false;
    const unwatch = this.jobWatch.watch(handle.jobId, (info) => {
      if (done) return;
      done = true;
      readStatus(handle.jobDir).then((status) => onExit(exitInfo(info, status)))
        .catch((err: Error) => this.opts.log.error({ jobId: handle.jobId, err }, 'handling the end of a job failed'));
    });
    return () => {
      done = true;
      unwatch();
    };
  }

  async cleanup(handle: VmHandle | null, runDir: string): Promise<void> {
    if (handle?.kind === 'slurm') this.secrets.delete(asSlurm(handle).jobId);
    await fsp.rm(this.jobDirOf(runDir), { recursive: true, force: true });
  }

  async queueInfo(vm: VmHandle): Promise<QueueInfo | null> {
    const handle = asSlurm(vm);
    const info = await this.cli.jobInfo(handle.jobId);
    if (!info) return null;
    const position = info.state === 'PENDING' ? await this.cli.queuePosition(handle.jobId).catch(() => null) : null;
    return {
      state: info.state === 'PENDING' ? 'waiting' : 'starting',
      reason: info.reason && info.reason !== 'None' ? info.reason : null,
      position, node: info.nodes, native: { state: info.state },
    };
  }

  /** Slurm's time limit counts from the job's start: make it end at expiresAt. */
  async extend(vm: VmHandle, expiresAt: number): Promise<void> {
    const handle = asSlurm(vm);
    const info = await this.cli.jobInfo(handle.jobId);
    if (!info || !ALIVE.has(info.state)) {
      throw new QwdError(
        'QWD_SESSION_ENDED', `job ${handle.jobId} has ended`,
        { userMessage: 'This desktop has ended and cannot be extended.' },
      );
    }
    const from = info.state === 'PENDING' || !info.startTime ? this.clock.now() : info.startTime;
    await this.cli.setTimeLimit(handle.jobId, Math.ceil((expiresAt - from) / 60000));
  }

  async exitReason(vm: VmHandle): Promise<string | null> {
    const handle = asSlurm(vm);
    return exitInfo(await this.cli.jobInfo(handle.jobId), await readStatus(handle.jobDir)).reason ?? null;
  }

  async describe(vm: VmHandle): Promise<Record<string, string | number | null>> {
    const handle = asSlurm(vm);
    const info = await this.cli.jobInfo(handle.jobId);
    return {
      slurmJobId: handle.jobId, node: handle.node ?? info?.nodes ?? null, jobState: info?.state ?? 'GONE',
      reason: info?.reason && info.reason !== 'None' ? info.reason : null,
    };
  }

  /** The session dir under the shared dir (never anything else: it is deleted recursively). */
  private jobDirOf(runDir: string): string {
    return sessionDirIn(this.runRoot, runDir, 'job dir');
  }
}

/** Pure: the sbatch options of a session (the script itself goes on stdin). */
export function sbatchArgs(
  config: Config, spec: Pick<LaunchSpec, 'sessionId' | 'machine' | 'cpus' | 'memoryMiB' | 'expiresAt' | 'gpuCount'>,
  jobDir: string, now: number,
): string[] {
  const o = submitOptionsFor(config.slurm, spec.machine.name);
  const minutes = Math.max(1, Math.ceil((spec.expiresAt - now) / 60000));
  return [
    `--job-name=qwd-${spec.sessionId}`,
    `--time=${minutes}`,
    '--nodes=1',
    '--ntasks=1',
    // A requeued job would boot the desktop again elsewhere, behind a port the broker
    // never learns: a node failure or preemption ends the session instead.
    '--no-requeue',
    // Not the broker's whole environment (the default ALL): only what the script needs.
    '--export=PATH,HOME,LANG,TMPDIR',
    `--cpus-per-task=${spec.cpus}`,
    `--mem=${spec.memoryMiB + QEMU_OVERHEAD_MIB}M`,
    `--chdir=${jobDir}`,
    `--output=${path.join(jobDir, 'slurm.out')}`,
    ...(spec.gpuCount && config.slurm.gpuGres ? [`--gres=${config.slurm.gpuGres}:${spec.gpuCount}`] : []),
    ...(o.partition ? [`--partition=${o.partition}`] : []),
    ...(o.account ? [`--account=${o.account}`] : []),
    ...(o.qos ? [`--qos=${o.qos}`] : []),
    ...o.extraArgs,
  ];
}

/** Why a job ended, for the session's tombstone. */
export function exitInfo(info: JobInfo | null, status: JobStatus | null): ExitInfo {
  const code = status?.state === 'exited' ? status.code : null;
  const byState: Record<string, string> = {
    TIMEOUT: 'its time limit was reached (Slurm ended the job)',
    CANCELLED: 'its Slurm job was cancelled',
    PREEMPTED: 'its Slurm job was preempted',
    NODE_FAIL: 'its compute node failed',
    OUT_OF_MEMORY: 'its Slurm job ran out of memory',
    BOOT_FAIL: 'its compute node failed to boot',
    DEADLINE: 'its Slurm job reached its deadline',
  };
  const reason = info && byState[info.state] ? byState[info.state]
    : code === 0 ? 'the virtual machine was shut down'
      : info?.state === 'COMPLETED' && code === null ? 'its Slurm job ended'
        : 'the virtual machine stopped unexpectedly';
  return { code, signal: null, reason };
}

async function readStatus(jobDir: string): Promise<JobStatus | null> {
  try {
    // Async: the job dir is on shared storage (NFS), and this is read while jobs wait.
    return JSON.parse(await fsp.readFile(path.join(jobDir, STATUS_FILE), 'utf8')) as JobStatus;
  } catch {
    return null; // not written yet (it is renamed into place, so never half-written)
  }
}

async function slurmOutputTail(jobDir: string): Promise<string> {
  for (const name of ['qemu.log', 'slurm.out']) {
    try {
      const text = (await fsp.readFile(path.join(jobDir, name), 'utf8')).trim();
      if (text) return `${name}: ${text.split('\n').slice(-5).join(' | ')}`;
    } catch {
      // try the next one
    }
  }
  return '(no output)';
}

function randomPassword(length: number): string {
  return Array.from({ length }, () => PASSWORD_CHARS[crypto.randomInt(PASSWORD_CHARS.length)]).join('');
}

/**
 * Reads a handle as this launcher's own, checking its shape: the manager hands back whatever the session row holds
 * (a row of another launcher, or of an older broker, is refused here rather than misread).
 */
export function asSlurm(handle: VmHandle): SlurmHandle {
  const h = handle as Partial<SlurmHandle>;
  if (h.kind !== 'slurm') throw new QwdError('QWD_INTERNAL', `the Slurm launcher was given a ${String(h.kind)} handle`);
  const nullable = (v: unknown, type: string) => v === null || typeof v === type;
  if (
    typeof h.jobId !== 'string' || typeof h.jobDir !== 'string' || !nullable(h.node, 'string')
    || !nullable(h.host, 'string')
    || !nullable(h.port, 'number') || !(h.accel === null || h.accel === 'kvm' || h.accel === 'tcg')) {
    throw new QwdError(
      'QWD_INTERNAL', `a Slurm VM handle lacks a field or has one of the wrong type: ${JSON.stringify(h)}`,
    );
  }
  return h as SlurmHandle;
}
