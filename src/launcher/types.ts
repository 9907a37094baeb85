// The narrow interface between the session manager and whatever runs VMs, in
// the way of Open OnDemand's ood_core adapters: a local qemu process, a Slurm
// job, or the in-memory fake of the tests; registry.ts maps each name to its
// factory. The manager never knows how a VM runs: it holds an opaque handle,
// asks the declared capabilities, and calls the methods below.
import type { Machine } from '../catalog/descriptor.js';
import type { VncAddress } from '../qemu/rfb-probe.js';
import type { ResolvedShare } from '../guest/shares.js';
import type { ResolvedScript, ScriptDelivery } from '../guest/boot-scripts.js';

/**
 * What a launcher gives back for a VM it started: plain JSON that the manager
 * stores in the session row and hands back to the launcher unread. `kind` names
 * the launcher that made it; only that launcher reads the rest (its own
 * parse function checks the shape, so a row written by another launcher, or
 * by an older broker, is refused with a clear error rather than misread).
 */
export interface VmHandle {
  readonly kind: string;
}

/**
 * What a launcher can do, declared once, so that callers ask this and never
 * the launcher's name. An optional method of Launcher exists exactly when the
 * capability that names it says so.
 */
export interface LauncherCapabilities {
  /** VMs may wait in a scheduler's queue: start() calls onQueued; awaitReady and queueInfo exist. */
  readonly queues: boolean;
  /** The scheduler decides where VMs fit: admission does not count this host's load (what does not fit waits). */
  readonly ownsCapacity: boolean;
  /**
   * GPUs the scheduler counts and the node picks: the most one VM may ask for. 0: GPUs are this host's own,
   * claimed in the store.
   */
  readonly nodeGpusPerSession: number;
  /** VMs run on the broker's own host: its VFIO GPUs and its guest network namespaces serve them. */
  readonly onBrokerHost: boolean;
  /** The broker reaches the guest's QMP (balloon, query-balloon): qmp() exists. */
  readonly guestControl: boolean;
}

/** Where a queued VM is, in words any scheduler can give: waiting for resources, or being started. */
export type QueueState = 'waiting' | 'starting';

/** Where a queued VM is: its normalised state, why it waits, its place in the queue, and the scheduler's own words. */
export interface QueueInfo {
  state: QueueState;
  reason: string | null;
  /** 1 = next to start; null when unknown. */
  position: number | null;
  node: string | null;
  /** The scheduler's own view, for display (Slurm: its job state word, e.g. PENDING). */
  native: { readonly state: string };
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
  /** GPUs the node picks itself (launchers with capabilities.nodeGpusPerSession): how many. */
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
  /** The name it is registered under (registry.ts), as handles and logs name it. */
  readonly kind: string;
  readonly capabilities: LauncherCapabilities;
  /** Where session directories live (the run dir locally; the shared dir for Slurm). */
  readonly runRoot: string;
  /**
   * Creates the disk, starts the VM and resolves once it is ready (its VNC answers). Stop de-duplication
   * (stop-once.ts) and the session-dir guard (session-dir.ts) are shared by every launcher.
   */
  start(spec: LaunchSpec, hooks?: StartHooks): Promise<VmHandle>;
  /** Ask → SIGTERM → SIGKILL; resolves when the VM is gone. Twice is a no-op. */
  stop(handle: VmHandle): Promise<StopOutcome>;
  isAlive(handle: VmHandle): Promise<boolean>;
  /**
   * Where the VM's VNC listens (for a password-protected TCP endpoint, with its password: the bridge does the VNC
   * authentication itself, see bridge/vnc-connect.ts). Asynchronous: it may read shared storage.
   */
  vncEndpoint(handle: VmHandle): Promise<VncAddress>;
  /** Calls back once when the VM exits (however that is noticed); returns an unsubscribe. */
  watchExit(handle: VmHandle, onExit: (info: ExitInfo) => void): () => void;
  /** Runs one QMP command on the VM (connect, negotiate, execute, close); with capabilities.guestControl only. */
  qmp?<T = unknown>(handle: VmHandle, command: string, args?: Record<string, unknown>): Promise<T>;
  /** Releases what start() created on disk (run dir, overlay, sockets). Idempotent. */
  cleanup(handle: VmHandle | null, runDir: string): Promise<void>;
  /** Goes on waiting for a queued VM (after a broker restart) until it is ready; with capabilities.queues only. */
  awaitReady?(handle: VmHandle, runDir: string, expiresAt?: number): Promise<VmHandle>;
  /** A scheduler's view of a VM waiting to start (Slurm); with capabilities.queues only. */
  queueInfo?(handle: VmHandle): Promise<QueueInfo | null>;
  /** Tells the scheduler about a new end time (Slurm enforces it); absent where nothing else enforces it. */
  extend?(handle: VmHandle, expiresAt: number): Promise<void>;
  /**
   * The scheduler's details of a VM for status displays, in its own words (Slurm: job id, node, job state); absent for
   * launchers that run no scheduler jobs (qwdctl then shows no job columns).
   */
  describe?(handle: VmHandle): Promise<Record<string, string | number | null>>;
  /** Why a VM that is no longer alive ended, when the launcher can tell (Slurm: cancelled, time limit, preempted…). */
  exitReason?(handle: VmHandle): Promise<string | null>;
}
