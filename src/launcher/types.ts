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

export type VmHandle = LocalHandle;

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
}

export type StopOutcome = 'quit' | 'terminated' | 'killed' | 'already-gone';

export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

export interface Launcher {
  readonly kind: string;
  /** Creates the disk, starts the VM and resolves once QMP and VNC answer. */
  start(spec: LaunchSpec): Promise<VmHandle>;
  /** Ask → SIGTERM → SIGKILL; resolves when the VM is gone. Twice is a no-op. */
  stop(handle: VmHandle): Promise<StopOutcome>;
  isAlive(handle: VmHandle): boolean;
  vncAddress(handle: VmHandle): VncAddress;
  /** Calls back once when the VM exits (however that is noticed); returns an unsubscribe. */
  watchExit(handle: VmHandle, onExit: (info: ExitInfo) => void): () => void;
  /** Runs one QMP command on the VM (connect, negotiate, execute, close). */
  qmp<T = unknown>(handle: VmHandle, command: string, args?: Record<string, unknown>): Promise<T>;
  /** Releases what start() created on disk (run dir, overlay, sockets). Idempotent. */
  cleanup(handle: VmHandle | null, runDir: string): Promise<void>;
}
