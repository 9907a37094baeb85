// The narrow interface between the session manager and whatever runs VMs
// (a local qemu process today; a Slurm job later). The manager never knows
// how a VM runs, only its handle, its VNC address and whether it is alive.
import type { Machine } from '../catalog/descriptor.js';
import type { VncAddress } from '../qemu/rfb-probe.js';
import type { ResolvedShare } from '../guest/shares.js';
import type { ResolvedScript, ScriptDelivery } from '../guest/boot-scripts.js';

export interface LocalHandle {
  kind: 'local';
  pid: number;
  /** /proc/<pid>/stat start time, so a recycled PID is never mistaken for ours. */
  startTime: string;
  processName: string;
  runDir: string;
  qmpSocket: string;
  vncSocket: string;
  accel: 'kvm' | 'tcg';
}

/** A VM running as a Slurm job on a compute node. */
export interface SlurmHandle {
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

export type VmHandle = LocalHandle | SlurmHandle;

/** Where a queued VM is: Slurm's job state and reason, and its place in the queue. */
export interface QueueInfo {
  state: string;
  reason: string | null;
  /** 1 = next to start; null when unknown. */
  position: number | null;
  node: string | null;
}

export interface StartHooks {
  /**
   * Called once the VM has been handed to a scheduler that may make it wait
   * (a Slurm job submitted): the manager records the handle and answers the
   * user at once, while start() goes on until the VM is ready.
   */
  onQueued?(handle: VmHandle): void;
}

export interface LaunchSpec {
  sessionId: string;
  machine: Machine;
  cpus: number;
  memoryMiB: number;
  runDir: string;
  /** Host folders, already resolved and checked against the share roots. */
  shares?: readonly ResolvedShare[];
  /** Boot scripts, already substituted; delivered per the machine's delivery. */
  bootScripts?: { delivery: ScriptDelivery; scripts: readonly ResolvedScript[] };
  /** Claimed GPUs: per GPU, the PCI functions of its IOMMU group (GPU first). */
  gpus?: readonly (readonly string[])[];
  /** GPUs the node picks itself (launchers with nodeGpusPerSession): how many. */
  gpuCount?: number;
  /** When the session ends (a scheduler's time limit is set from it). */
  expiresAt: number;
}

export type StopOutcome = 'quit' | 'terminated' | 'killed' | 'already-gone';

export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /**
   * Why, in words for the session's tombstone, when the launcher knows better than the exit code (e.g. Slurm's time
   * limit).
   */
  reason?: string;
}

/** Why a VM ended, in words for its tombstone: the launcher's own account, else what its exit status says. */
export function exitWords(info: ExitInfo): string {
  if (info.reason) return info.reason;
  return info.code === 0 ? 'the virtual machine was shut down' : 'the virtual machine stopped unexpectedly';
}

export interface Launcher {
  readonly kind: string;
  /** Where session directories live (the run dir locally; the shared dir for Slurm). */
  readonly runRoot: string;
  /**
   * For schedulers that own GPUs on their nodes (Slurm gres): the most GPUs one
   * VM may ask for; the scheduler counts them and the node picks the devices.
   * Absent or 0: GPUs are this host's own, claimed in the store.
   */
  readonly nodeGpusPerSession?: number;
  /** Creates the disk, starts the VM and resolves once QMP and VNC answer. */
  start(spec: LaunchSpec, hooks?: StartHooks): Promise<VmHandle>;
  /** Ask → SIGTERM → SIGKILL; resolves when the VM is gone. Twice is a no-op. */
  stop(handle: VmHandle): Promise<StopOutcome>;
  isAlive(handle: VmHandle): Promise<boolean>;
  vncAddress(handle: VmHandle): VncAddress;
  /** Calls back once when the VM exits (however that is noticed); returns an unsubscribe. */
  watchExit(handle: VmHandle, onExit: (info: ExitInfo) => void): () => void;
  /** Runs one QMP command on the VM (connect, negotiate, execute, close). */
  qmp<T = unknown>(handle: VmHandle, command: string, args?: Record<string, unknown>): Promise<T>;
  /** Releases what start() created on disk (run dir, overlay, sockets). Idempotent. */
  cleanup(handle: VmHandle | null, runDir: string): Promise<void>;
  /**
   * Goes on waiting for a queued VM (after a broker restart) until it is ready; absent for launchers that never queue.
   */
  awaitReady?(handle: VmHandle, runDir: string, expiresAt?: number): Promise<VmHandle>;
  /** A scheduler's view of a VM waiting to start (Slurm); absent for launchers that never queue. */
  queueInfo?(handle: VmHandle): Promise<QueueInfo | null>;
  /** Tells the scheduler about a new end time (Slurm enforces it); absent where nothing else enforces it. */
  extend?(handle: VmHandle, expiresAt: number): Promise<void>;
  /** Scheduler details for status displays (Slurm job id, node, job state). */
  describe?(handle: VmHandle): Promise<Record<string, string | number | null>>;
  /** Why a VM that is no longer alive ended, when the launcher can tell (Slurm: cancelled, time limit, preempted…). */
  exitReason?(handle: VmHandle): Promise<string | null>;
}
