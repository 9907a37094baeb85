// The fake launcher: VMs that exist only in memory, with outcomes a test
// scripts (a start that succeeds, fails or queues; a VM that exits on its own;
// a stop that works, fails or is held). It is the proof that a launcher is one
// file plus its registration, and it lets the session manager's lifecycle be
// tested without QEMU. It runs nothing and shows no screen (vncEndpoint
// refuses). A site cannot choose it: the config schema knows only local and
// slurm, so it is reached only by code that builds services (tests).
// It owns its VMs' state; the session dirs it creates under runRoot are real
// (and guarded as the real launchers guard theirs) so cleanup can be checked.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QwdError } from '../errors.js';
import type { VncAddress } from '../qemu/rfb-probe.js';
import { StopOnce } from './stop-once.js';
import { sessionDirIn } from './session-dir.js';
import type {
  ExitInfo, Launcher, LauncherCapabilities, LaunchSpec, QueueInfo, StartHooks, StopOutcome, VmHandle,
} from './types.js';

/**
 * What one start does: resolve at once, reject, queue (onQueued, then wait) until ready() or failQueued(), or boot
 * slowly: wait for ready() as a VM that takes its time to boot (no queue).
 */
export type FakeStart = 'ready' | 'fail' | 'queue' | 'slow';
/** What one stop does: end the VM ('quit'), or leave it running and throw, as a VM that survived SIGKILL. */
export type FakeStop = 'quit' | 'fail';

export interface FakeHandle extends VmHandle {
  kind: 'fake';
  sessionId: string;
}

export interface FakeLauncherOptions {
  runRoot: string;
  /** Default: a launcher like the local one (no queue, host capacity, guest control). */
  capabilities?: Partial<LauncherCapabilities>;
  /** What each start does, in order; once used up, starts are 'ready'. */
  starts?: FakeStart[];
  /** What each stop does, in order; once used up, stops are 'quit'. */
  stops?: FakeStop[];
}

interface FakeVm {
  alive: boolean;
  queued: { ready: () => void; fail: (err: Error) => void } | null;
  watchers: Set<(info: ExitInfo) => void>;
  /** Why it ended, when it ended by itself with a reason (exitReason). */
  exitReason: string | null;
  qmp: Array<{ command: string; args?: Record<string, unknown> }>;
}

export class FakeLauncher implements Launcher {
  readonly kind = 'fake';
  readonly capabilities: LauncherCapabilities;
  readonly runRoot: string;
  /** Stops actually run (after de-duplication), by session id. */
  readonly stopsRun = new Map<string, number>();
  readonly awaitReady?: (handle: VmHandle, runDir: string) => Promise<VmHandle>;
  readonly queueInfo?: (handle: VmHandle) => Promise<QueueInfo | null>;
  readonly qmp?: <T = unknown>(handle: VmHandle, command: string, args?: Record<string, unknown>) => Promise<T>;
  private readonly vms = new Map<string, FakeVm>();
  private readonly starts: FakeStart[];
  private readonly stops: FakeStop[];
  private readonly stopping = new StopOnce();
  private held: Promise<void> | null = null;

  constructor(opts: FakeLauncherOptions) {
    this.runRoot = opts.runRoot;
    this.capabilities = {
      queues: false, ownsCapacity: false, nodeGpusPerSession: 0, onBrokerHost: true, guestControl: true,
      ...opts.capabilities,
    };
    this.starts = [...(opts.starts ?? [])];
    this.stops = [...(opts.stops ?? [])];
    // The optional methods exist exactly when the capability that names them is declared.
    if (this.capabilities.queues) {
      this.awaitReady = (handle) => this.waitQueued(asFake(handle));
      this.queueInfo = async (handle) => {
        const vm = this.vms.get(asFake(handle).sessionId);
        if (!vm?.alive || !vm.queued) return null;
        return { state: 'waiting', reason: 'Resources', position: 1, node: null, native: { state: 'PENDING' } };
      };
    }
    if (this.capabilities.guestControl) {
      this.qmp = async <T>(handle: VmHandle, command: string, args?: Record<string, unknown>) => {
        const vm = this.running(asFake(handle));
        vm.qmp.push({ command, args });
        return (command === 'query-balloon' ? { actual: 0 } : {}) as T;
      };
    }
  }

  async start(spec: LaunchSpec, hooks: StartHooks = {}): Promise<VmHandle> {
    const dir = sessionDirIn(this.runRoot, spec.runDir);
    await fsp.mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
    await fsp.mkdir(dir, { mode: 0o700 });
    const handle: FakeHandle = { kind: 'fake', sessionId: spec.sessionId };
    const vm: FakeVm = { alive: true, queued: null, watchers: new Set(), qmp: [], exitReason: null };
    this.vms.set(spec.sessionId, vm);
    try {
      const outcome = this.starts.shift() ?? 'ready';
      if (outcome === 'fail') {
        vm.alive = false;
        throw new QwdError('QWD_LAUNCH_FAILED', `fake VM of session ${spec.sessionId} failed to start (scripted)`, {
          userMessage: 'The desktop could not start.',
        });
      }
      if (outcome === 'queue') {
        if (!this.capabilities.queues) throw new Error('a fake start cannot queue without capabilities.queues');
        const ready = this.waitQueued(handle);
        hooks.onQueued?.(handle);
        return await ready;
      }
      if (outcome === 'slow') return await this.waitQueued(handle);
      return handle;
    } catch (err) {
      await this.cleanup(null, spec.runDir);
      throw err;
    }
  }

  /** What the next starts do, after those already scripted (a test given a broker's launcher scripts it here). */
  script(...starts: FakeStart[]): void {
    this.starts.push(...starts);
  }

  /** The VM's start waits (queued, or booting slowly) for ready() or failQueued(). */
  waiting(sessionId: string): boolean {
    return !!this.vms.get(sessionId)?.queued;
  }

  /** A queued VM gets its node and becomes ready; a slow one has booted. */
  ready(sessionId: string): void {
    this.vms.get(sessionId)?.queued?.ready();
  }

  /** A queued VM's start fails (the scheduler gave up on it). */
  failQueued(sessionId: string, message = 'the fake scheduler gave up'): void {
    this.vms.get(sessionId)?.queued?.fail(new QwdError('QWD_LAUNCH_FAILED', message));
  }

  /** The VM ends on its own (a guest power-off, a crash, a scheduler's time limit). */
  exit(sessionId: string, info: ExitInfo = { code: 0, signal: null }): void {
    const vm = this.vms.get(sessionId);
    if (!vm?.alive) return;
    vm.alive = false;
    vm.exitReason = info.reason ?? null;
    for (const onExit of [...vm.watchers]) onExit(info);
    vm.watchers.clear();
  }

  /** Holds every stop until the returned function is called (to stop a VM twice while its stop runs). */
  holdStops(): () => void {
    let release!: () => void;
    this.held = new Promise((resolve) => { release = resolve; });
    return () => {
      this.held = null;
      release();
    };
  }

  /** QMP commands a VM has been sent, in order. */
  qmpSent(sessionId: string): ReadonlyArray<{ command: string; args?: Record<string, unknown> }> {
    return this.vms.get(sessionId)?.qmp ?? [];
  }

  stop(handle: VmHandle): Promise<StopOutcome> {
    const { sessionId } = asFake(handle);
    return this.stopping.run(sessionId, async () => {
      this.stopsRun.set(sessionId, (this.stopsRun.get(sessionId) ?? 0) + 1);
      await this.held;
      const vm = this.vms.get(sessionId);
      if (!vm?.alive) return 'already-gone';
      if ((this.stops.shift() ?? 'quit') === 'fail') {
        throw new QwdError('QWD_INTERNAL', `fake VM of session ${sessionId} survived SIGKILL (scripted)`);
      }
      vm.alive = false;
      vm.queued?.fail(new QwdError('QWD_LAUNCH_FAILED', `fake VM of session ${sessionId} was cancelled while queued`));
      return 'quit';
    });
  }

  /** The reason its scripted exit gave, as a scheduler tells why a job ended. */
  async exitReason(handle: VmHandle): Promise<string | null> {
    return this.vms.get(asFake(handle).sessionId)?.exitReason ?? null;
  }

  async isAlive(handle: VmHandle): Promise<boolean> {
    return this.vms.get(asFake(handle).sessionId)?.alive ?? false;
  }

  async vncEndpoint(handle: VmHandle): Promise<VncAddress> {
    throw new QwdError('QWD_VNC_UNREACHABLE', `fake VM of session ${asFake(handle).sessionId} has no screen`);
  }

  watchExit(handle: VmHandle, onExit: (info: ExitInfo) => void): () => void {
    const vm = this.vms.get(asFake(handle).sessionId);
    if (!vm?.alive) {
      queueMicrotask(() => onExit({ code: null, signal: null }));
      return () => {};
    }
    let fired = false;
    const once = (info: ExitInfo) => {
      if (!fired) onExit(info);
      fired = true;
    };
    vm.watchers.add(once);
    return () => {
      fired = true;
      vm.watchers.delete(once);
    };
  }

  async cleanup(_handle: VmHandle | null, runDir: string): Promise<void> {
    await fsp.rm(sessionDirIn(this.runRoot, runDir), { recursive: true, force: true });
  }

  private waitQueued(handle: FakeHandle): Promise<VmHandle> {
    const vm = this.vms.get(handle.sessionId);
    if (!vm?.alive) {
      return Promise.reject(new QwdError('QWD_LAUNCH_FAILED', `fake VM of session ${handle.sessionId} is gone`));
    }
    return new Promise((resolve, reject) => {
      vm.queued = {
        ready: () => {
          vm.queued = null;
          resolve(handle);
        },
        fail: (err) => {
          vm.queued = null;
          vm.alive = false;
          reject(err);
        },
      };
    });
  }

  private running(handle: FakeHandle): FakeVm {
    const vm = this.vms.get(handle.sessionId);
    if (!vm?.alive) throw new QwdError('QWD_SESSION_ENDED', `fake VM of session ${handle.sessionId} is not running`);
    return vm;
  }
}

function asFake(handle: VmHandle): FakeHandle {
  const h = handle as Partial<FakeHandle>;
  if (h.kind !== 'fake' || typeof h.sessionId !== 'string') {
    throw new QwdError('QWD_INTERNAL', `the fake launcher was given another handle: ${JSON.stringify(h)}`);
  }
  return h as FakeHandle;
}
