// The local launcher: qemu-system-<arch> as a child of the broker, in its own
// process group (so it survives a broker restart), with QMP and VNC on Unix
// sockets in the session's 0700 run dir. Readiness is observed (QMP answers,
// VNC sends its RFB banner), never assumed after a sleep. Stop escalates
// QMP quit → SIGTERM → SIGKILL with grace timers.
//
// While a VM is watched, the launcher holds a QMP connection to it (the
// "monitor") for QMP events: a guest power-off is a SHUTDOWN event with
// guest: true, which says why the VM ended even when it is not our child (an
// adopted VM has no exit code). A QMP socket serves one client at a time (a
// second connect waits unanswered until the first closes), so the monitor
// has a socket of its own (qmp-events.sock) and qmp.sock stays free for
// commands from the broker and qwdctl. A VM started without that socket is
// monitored on qmp.sock, and the launcher's own commands then share the
// monitor's connection.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config, Arch } from '../config/schema.js';
import { createOverlay } from '../snapshot/overlay.js';
import { applyVirtCustomize, buildSeedIso } from '../guest/seed-iso.js';
import { buildQemuArgv, qemuProcessName, type VmPaths } from '../qemu/argv.js';
import type { AccelChoice } from '../qemu/accel.js';
import { QmpClient, type QmpEvent } from '../qemu/qmp-client.js';
import { readRfbBanner, type VncAddress } from '../qemu/rfb-probe.js';
import { isNamedProcess, isOurProcess, readProcStat, signalGroup } from '../qemu/process.js';
import { escapeOptionValue, qemuOpts } from '../qemu/escape.js';
import { findProgram, readLogTail } from '../qemu/run-tool.js';
import { inNetnsArgv, prepareGuestNetwork, tearDownGuestNetwork } from './guest-netns.js';
import { StopOnce } from './stop-once.js';
import { sessionDirIn } from './session-dir.js';
import { systemClock, type CancelTimer, type Clock } from '../clock.js';
import {
  FROZEN_DISK, STATE_FILE, checkPreparedState, resumeSizeListed, type ResumeDecision,
} from '../resume/prepared.js';
import { stateReader } from '../resume/save-state.js';
import { afterResume } from '../resume/after-resume.js';
import {
  exitWords, type ExitInfo, type Launcher, type LauncherCapabilities, type LaunchSpec, type StartHooks,
  type StopOutcome, type VmHandle,
} from './types.js';

/** A VM this launcher runs (stored as JSON in the session row, as it always was). */
export interface LocalHandle extends VmHandle {
  kind: 'local';
  pid: number;
  /** /proc/<pid>/stat start time, so a recycled PID is never mistaken for ours. */
  startTime: string;
  processName: string;
  runDir: string;
  qmpSocket: string;
  vncSocket: string;
  accel: 'kvm' | 'tcg';
  /** The VM resumed a prepared state (qwdctl machines prepare) instead of booting; absent in older rows. */
  resumed?: boolean;
}

export interface LocalLauncherOptions {
  config: Config;
  accel: AccelChoice;
  log: Logger;
  /** Deadlines, polls and the adopted VMs' watch; the system clock by default (QEMU runs in real time). */
  clock?: Clock;
}

/** The accelerator a machine's VMs get here: KVM runs only guests of the host's own architecture. */
export function sessionAccel(machine: Pick<LaunchSpec['machine'], 'arch'>, accel: AccelChoice): 'kvm' | 'tcg' {
  return machine.arch === HOST_ARCH ? accel.accel : 'tcg';
}

/** The least time a resumed VM gets to load its state (INSTALL.md, Resume). */
const LOAD_TIMEOUT_MS = 90_000;

/** A prepared state a session may resume. */
type UsableState = Extract<ResumeDecision, { resume: true }>;

const HOST_ARCH: Arch | null = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : null;

export function vmPaths(runDir: string): VmPaths {
  return {
    overlay: path.join(runDir, 'disk.qcow2'),
    qmpSocket: path.join(runDir, 'qmp.sock'),
    vncSocket: path.join(runDir, 'vnc.sock'),
    serialLog: path.join(runDir, 'serial.log'),
    pidFile: path.join(runDir, 'qemu.pid'),
    qgaSocket: path.join(runDir, 'qga.sock'),
  };
}

/** The QMP socket the launcher's monitor listens on for events (see the header). */
export function qmpEventsSocket(runDir: string): string {
  return path.join(runDir, 'qmp-events.sock');
}

/**
 * Pure: the extra QEMU arguments for the monitor's own QMP socket. (Kept next
 * to the monitor that needs it; buildQemuArgv builds everything else.)
 */
export function eventsMonitorArgv(runDir: string): string[] {
  return ['-qmp', qemuOpts(`unix:${escapeOptionValue(qmpEventsSocket(runDir))}`, { server: true, wait: false })];
}

export class LocalLauncher implements Launcher {
  readonly kind = 'local';
  /** QEMU runs here, as the broker's child; nothing queues, and the broker's own QMP reaches it. */
  readonly capabilities: LauncherCapabilities = {
    queues: false, ownsCapacity: false, nodeGpusPerSession: 0, onBrokerHost: true, guestControl: true,
  };
  get runRoot(): string {
    return this.opts.config.runDir;
  }
  private readonly children = new Map<number, { child: ChildProcess; exit: ExitInfo | null }>();
  private readonly stopping = new StopOnce();
  /** One QMP connection per watched VM (by pid), shared by every watch of it. */
  private readonly monitors = new Map<number, QmpMonitor>();
  /** Why VMs the monitor saw shut down from inside ended (pid → words), for exitReason(). */
  private readonly guestShutdowns = new Map<number, string>();

  private readonly clock: Clock;

  constructor(private readonly opts: LocalLauncherOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /**
   * Starts a session's VM: resumed from its machine's prepared state when there is a usable one for its size (and
   * the session needs no device the state lacks), else booted. A resume that fails is logged and the VM boots.
   */
  async start(spec: LaunchSpec, _hooks?: StartHooks): Promise<LocalHandle> {
    // Deciding may fail too (qemu --version, a master gone meanwhile): the session then boots, which says the rest.
    const choice = await this.resumeChoice(spec).catch((err: Error): ResumeDecision => (
      { resume: false, reason: `the prepared state could not be checked: ${err.message}` }
    ));
    if (choice?.resume) {
      try {
        return await this.startVm(spec, choice);
      } catch (err) {
        this.opts.log.warn(
          { sessionId: spec.sessionId, state: choice.dir, err: (err as Error).message },
          'resuming the prepared state failed; booting instead',
        );
      }
    } else if (choice) {
      this.opts.log.info({ sessionId: spec.sessionId, reason: choice.reason }, 'booting: no usable prepared state');
    }
    return this.startVm(spec, null);
  }

  /**
   * Whether this session may resume a prepared state: null when its machine and size are not meant to (a cold boot
   * is simply what it gets); otherwise the decision, with the reason when it may not.
   */
  async resumeChoice(spec: LaunchSpec): Promise<ResumeDecision | null> {
    const size = { cpus: spec.cpus, memoryMiB: spec.memoryMiB };
    if (!resumeSizeListed(spec.machine, size)) return null;
    // A state holds the devices it was saved with: folders, a seed CD-ROM or GPUs of this session are not in it.
    if ((spec.shares?.length ?? 0) > 0 || (spec.bootScripts?.scripts.length ?? 0) > 0 || (spec.gpus?.length ?? 0) > 0) {
      return { resume: false, reason: 'the session has host folders, boot scripts or GPUs, which a saved state lacks' };
    }
    return checkPreparedState(this.opts.config, spec.machine, size, this.accelFor(spec.machine));
  }

  /** A resume and nothing else (qwdctl machines prepare checks a state with it): a failure is an error. */
  startResumed(spec: LaunchSpec, choice: UsableState): Promise<LocalHandle> {
    return this.startVm(spec, choice);
  }

  /** A VM whose state will be saved (qwdctl machines prepare): booted with its disk on fds it can reopen. */
  startForSaving(spec: LaunchSpec): Promise<LocalHandle> {
    return this.startVm(spec, null, { saving: true });
  }

  accelFor(machine: LaunchSpec['machine']): 'kvm' | 'tcg' {
    return sessionAccel(machine, this.opts.accel);
  }

  private async startVm(
    spec: LaunchSpec, resume: UsableState | null, opts: { saving?: boolean } = {},
  ): Promise<LocalHandle> {
    const { config, log } = this.opts;
    this.assertInsideRunRoot(spec.runDir);
    await fsp.mkdir(path.dirname(spec.runDir), { recursive: true, mode: 0o700 });
    await fsp.mkdir(spec.runDir, { mode: 0o700 });
    let child: ChildProcess | null = null;
    let reader: ReturnType<typeof stateReader> | null = null;
    let networkConnected: Promise<void> = Promise.resolve();
    try {
      // The pinned machine names the master by the real path that was checked (see overlay.ts).
      // A resumed VM's disk is an overlay on the frozen disk, as it was when its state was saved.
      const base = resume ? { ...spec.machine, image: path.join(resume.dir, FROZEN_DISK), format: 'qcow2' as const }
        : spec.machine;
      const { machine } = await createOverlay(
        config.qemu.img, base, spec.runDir, config.qemu.isoDiskGiB, config.machinesDir,
      );
      const paths = vmPaths(spec.runDir);
      let seedIso: string | null = null;
      const scripts = spec.bootScripts?.scripts ?? [];
      if (scripts.length && spec.bootScripts!.delivery === 'cloud-init') {
        seedIso = await buildSeedIso(config.guest.genisoimage, spec.runDir, spec.sessionId, spec.machine.name, scripts);
      } else if (scripts.length) {
        await applyVirtCustomize(config.guest.virtCustomize, spec.runDir, paths.overlay, scripts);
      }
      for (const s of scripts) {
        log.info(
          { sessionId: spec.sessionId, script: s.name, source: s.source, delivery: spec.bootScripts!.delivery },
          'boot script applied',
        );
      }
      const accel = this.accelFor(machine);
      const runAs = process.getuid?.() === 0 ? config.qemu.runAs : null;
      // A VM that migrates (saved or resumed) gets its disk as fds 4 and 5 (see ArgvOptions.overlayFds).
      const migrates = !!resume || !!opts.saving;
      const argv = buildQemuArgv(machine, { cpus: spec.cpus, memoryMiB: spec.memoryMiB }, paths, {
        sessionId: spec.sessionId, accel, sandbox: config.qemu.sandbox, runAs, network: config.qemu.network,
        uefiFirmware: config.qemu.uefi[spec.machine.arch],
        ...(migrates ? { overlayFds: { readWrite: 4, readOnly: 5 } } : {}),
        ...(resume ? { vdagentLater: true } : {}),
      }, { shares: spec.shares ?? [], seedIso, gpus: spec.gpus ?? [] }).concat(eventsMonitorArgv(spec.runDir));
      // The saved state arrives on fd 3, from zstd (QEMU 7.2 has no file: URI; exec: would need a shell).
      if (resume) argv.push('-incoming', 'fd:3');
      const binary = config.qemu.binaries[spec.machine.arch];
      // With network, QEMU runs in the session's own network namespace (see guest-netns.ts).
      let command = { file: binary, argv };
      if (config.qemu.network === 'user') {
        // nsenter would only report a missing QEMU after the namespace exists: look first.
        const resolved = findProgram(binary);
        if (!resolved) {
          throw new QwdError(
            'QWD_LAUNCH_FAILED',
            `cannot run ${binary}: not found (install qemu-system-x86 / qemu-system-arm, or set qemu.binaries)`,
          );
        }
        networkConnected = (await prepareGuestNetwork(config.guestNetwork, spec.runDir, config.guestNetwork)).connected;
        command = inNetnsArgv(config.guestNetwork, spec.runDir, resolved, argv);
      }
      if (resume) {
        // Started in the same tick as QEMU: while the event loop turns, Node would read the pipe's first bytes
        // (the stream's header) into zstd's stdout stream, and QEMU would find no migration stream.
        reader = stateReader(config.qemu.zstd, path.join(resume.dir, STATE_FILE));
        // A zstd that cannot run or read leaves QEMU an empty stream: QEMU then fails to load, which says it.
        reader.done.catch(() => {});
      }
      const logFd = fs.openSync(path.join(spec.runDir, 'qemu.log'), 'a', 0o600);
      const diskFds = migrates ? [fs.openSync(paths.overlay, 'r+'), fs.openSync(paths.overlay, 'r')] : [];
      try {
        const stdio: StdioOptions = ['ignore', logFd, logFd];
        if (migrates) stdio.push(reader ? reader.child.stdout! : 'ignore', ...diskFds);
        child = spawn(command.file, command.argv, { detached: true, stdio });
      } finally {
        fs.closeSync(logFd);
        for (const fd of diskFds) fs.closeSync(fd);
      }
      const spawned = child;
      const entry = { child: spawned, exit: null as ExitInfo | null };
      await new Promise<void>((resolve, reject) => {
        spawned.once('spawn', () => resolve());
        spawned.once('error', reject);
      }).catch((err: Error) => {
        const hint = (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? ' (install qemu-system-x86 / qemu-system-arm, or set qemu.binaries)'
          : '';
        throw new QwdError('QWD_LAUNCH_FAILED', `cannot run ${binary}: ${err.message}${hint}`, { cause: err });
      });
      const pid = spawned.pid!;
      this.children.set(pid, entry);
      spawned.once('exit', (code, signal) => {
        entry.exit = { code, signal };
      });
      spawned.unref();
      log.info(
        {
          sessionId: spec.sessionId, pid, accel, reason: this.opts.accel.reason, argv: [command.file, ...command.argv],
        },
        'qemu spawned',
      );
      // QEMU has its own copy of the state's pipe now.
      reader?.child.stdout?.destroy();
      await Promise.all([this.waitReady(spec, pid, entry, paths), networkConnected]);
      if (resume) {
        const loading = this.clock.now();
        await this.finishIncoming(spec, entry, paths);
        const loaded = this.clock.now();
        await afterResume(spec.machine, spec.sessionId, { qmp: paths.qmpSocket, qga: paths.qgaSocket }, {
          log, clock: this.clock,
        });
        log.info(
          {
            sessionId: spec.sessionId, state: resume.dir, loadMs: loaded - loading, afterMs: this.clock.now() - loaded,
          },
          'session resumed from a prepared state',
        );
      }
      const startTime = readProcStat(pid)?.startTime ?? '';
      return {
        kind: 'local', pid, startTime, processName: qemuProcessName(spec.sessionId), runDir: spec.runDir,
        qmpSocket: paths.qmpSocket, vncSocket: paths.vncSocket, accel, ...(resume ? { resumed: true } : {}),
      };
    } catch (err) {
      reader?.child.kill('SIGKILL');
      // pasta may still be starting: let it settle (it kills itself on failure) before the cleanup ends it.
      await networkConnected.catch(() => {
        // Its error, if any, is the same start failing; `err` says more.
      });
      if (child?.pid) {
        signalGroup(child.pid, 'SIGKILL');
        await this.waitChildExit(child.pid, 5000);
        this.children.delete(child.pid);
      }
      await this.cleanup(null, spec.runDir);
      throw err;
    }
  }

  /**
   * A resumed VM: waits until QEMU has read the whole state (it listens on VNC and QMP while it loads), then
   * continues it (it was saved paused). QEMU that cannot load the state exits: that is the error.
   */
  private async finishIncoming(spec: LaunchSpec, entry: { exit: ExitInfo | null }, paths: VmPaths): Promise<void> {
    // Loading is reading the state and allocating the guest's RAM: seconds, but on a busy host it can take longer
    // than a boot's first answer; giving up early would only add a whole boot to the wait.
    const waitMs = Math.max(this.opts.config.qemu.readyTimeoutMs, LOAD_TIMEOUT_MS);
    const deadline = this.clock.now() + waitMs;
    // QEMU's main loop also loads the RAM: on a busy host it may answer late, so each call gets the whole budget.
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: waitMs, clock: this.clock });
    try {
      for (;;) {
        if (entry.exit) {
          const tail = await readLogTail(path.join(spec.runDir, 'qemu.log'));
          const message = `qemu for session ${spec.sessionId} could not load the state: ${tail}`;
          throw new QwdError('QWD_LAUNCH_FAILED', message);
        }
        const left = Math.max(1, deadline - this.clock.now());
        const { status } = await qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: left });
        if (status !== 'inmigrate') {
          if (status !== 'running') await qmp.execute('cont', undefined, { timeoutMs: left });
          return;
        }
        if (this.clock.now() > deadline) {
          throw new QwdError(
            'QWD_LAUNCH_TIMEOUT', `qemu for session ${spec.sessionId} did not load its state within ${waitMs} ms`,
          );
        }
        await this.clock.sleep(50);
      }
    } finally {
      qmp.close();
    }
  }

  private async waitReady(
    spec: LaunchSpec, pid: number, entry: { exit: ExitInfo | null }, paths: VmPaths,
  ): Promise<void> {
    const deadline = this.clock.now() + this.opts.config.qemu.readyTimeoutMs;
    const died = async () => {
      const tail = await readLogTail(path.join(spec.runDir, 'qemu.log'));
      const how = entry.exit?.signal ? `signal ${entry.exit.signal}` : `exit ${entry.exit?.code}`;
      return new QwdError(
        'QWD_LAUNCH_FAILED', `qemu for session ${spec.sessionId} exited during start-up (${how}): ${tail}`,
      );
    };
    let qmpOk = false;
    for (let delay = 5; ; delay = Math.min(delay * 2, 50)) {
      if (entry.exit) throw await died();
      if (this.clock.now() > deadline) {
        throw new QwdError(
          'QWD_LAUNCH_TIMEOUT',
          `qemu for session ${spec.sessionId} (pid ${pid}) was not ready within ` +
            `${this.opts.config.qemu.readyTimeoutMs} ms`,
        );
      }
      try {
        if (!qmpOk && fs.existsSync(paths.qmpSocket)) {
          const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 2000 });
          try {
            await qmp.execute('query-status');
          } finally {
            qmp.close();
          }
          qmpOk = true;
        }
        if (qmpOk && fs.existsSync(paths.vncSocket)) {
          await readRfbBanner({ kind: 'unix', path: paths.vncSocket }, 2000);
          return;
        }
      } catch {
        // Not listening yet (or just went away: the exit check above tells which); poll again.
      }
      await this.clock.sleep(delay);
    }
  }

  stop(vm: VmHandle): Promise<StopOutcome> {
    const handle = asLocal(vm);
    return this.stopping.run(String(handle.pid), () => this.escalate(handle).then(async (outcome) => {
      // The VM is gone: so is its network (cleanup() repeats this, harmlessly).
      await tearDownGuestNetwork(this.opts.config.guestNetwork, handle.runDir).catch((err: Error) => {
        this.opts.log.warn(
          { pid: handle.pid, err: err.message },
          'the guest network namespace could not be removed yet; cleanup retries',
        );
      });
      return outcome;
    }).finally(() => {
      this.children.delete(handle.pid);
    }));
  }

  private async escalate(handle: LocalHandle): Promise<StopOutcome> {
    const { config, log } = this.opts;
    if (!this.alive(handle)) return 'already-gone';
    this.monitors.get(handle.pid)?.endExpected();
    try {
      await this.withQmp(
        handle, Math.min(2000, config.qemu.quitGraceMs || 1), (qmp) => qmp.quit(config.qemu.quitGraceMs),
      );
      if (await this.waitGone(handle, config.qemu.quitGraceMs)) return 'quit';
    } catch (err) {
      log.warn({ pid: handle.pid, err: (err as Error).message }, 'QMP quit failed; sending SIGTERM');
    }
    if (!this.alive(handle)) return 'quit';
    signalGroup(handle.pid, 'SIGTERM');
    if (await this.waitGone(handle, config.qemu.termGraceMs)) return 'terminated';
    log.warn({ pid: handle.pid }, 'qemu ignored SIGTERM; sending SIGKILL');
    signalGroup(handle.pid, 'SIGKILL');
    if (await this.waitGone(handle, 10000)) return 'killed';
    throw new QwdError('QWD_INTERNAL', `qemu pid ${handle.pid} survived SIGKILL for 10 s`);
  }

  async isAlive(vm: VmHandle): Promise<boolean> {
    return this.alive(asLocal(vm));
  }

  private alive(handle: LocalHandle): boolean {
    const own = this.children.get(handle.pid);
    if (own?.exit) return false;
    return isOurProcess(handle.pid, handle.startTime, handle.processName);
  }

  async vncEndpoint(vm: VmHandle): Promise<VncAddress> {
    return { kind: 'unix', path: asLocal(vm).vncSocket };
  }

  watchExit(vm: VmHandle, onExit: (info: ExitInfo) => void): () => void {
    const handle = asLocal(vm);
    let fired = false;
    let cancelled = false;
    let unsubscribe = () => {};
    const monitor = this.acquireMonitor(handle);
    const release = () => this.releaseMonitor(handle.pid, monitor);
    const fire = (info: ExitInfo) => {
      if (fired) return;
      fired = true;
      unsubscribe();
      // QEMU sends SHUTDOWN and then exits; the exit may be noticed before the
      // event is read off the socket. The socket's end comes after its data,
      // so wait (briefly) for it before deciding why the VM ended.
      void monitor.drained(500).then(() => {
        release();
        if (cancelled) return; // unsubscribed meanwhile: the caller no longer wants to hear
        const reason = info.reason ?? monitor.guestShutdownReason ?? undefined;
        onExit(reason ? { ...info, reason } : info);
      });
    };
    const own = this.children.get(handle.pid);
    if (own?.exit) {
      queueMicrotask(() => fire(own.exit!));
    } else if (own) {
      const listener = (code: number | null, signal: NodeJS.Signals | null) => fire({ code, signal });
      own.child.once('exit', listener);
      unsubscribe = () => own.child.off('exit', listener);
    } else {
      // Adopted after a broker restart: not our child, so poll /proc — every
      // second, and at once when the monitor says the VM is going away.
      const check = () => {
        if (!isOurProcess(handle.pid, handle.startTime, handle.processName)) fire({ code: null, signal: null });
      };
      let cancelTimer = () => {};
      const tick = () => {
        check();
        if (!fired) cancelTimer = this.clock.after(1000, tick, { background: true });
      };
      cancelTimer = this.clock.after(1000, tick, { background: true });
      const soon = () => void this.waitGone(handle, 5000).then((gone) => gone && check());
      monitor.on('ending', soon);
      unsubscribe = () => {
        cancelTimer();
        monitor.off('ending', soon);
      };
    }
    return () => {
      cancelled = true;
      if (fired) return; // the exit is being delivered: fire() releases the monitor
      fired = true;
      unsubscribe();
      release();
    };
  }

  async qmp<T = unknown>(vm: VmHandle, command: string, args?: Record<string, unknown>): Promise<T> {
    return this.withQmp(asLocal(vm), 3000, (client) => client.execute<T>(command, args, { timeoutMs: 5000 }));
  }

  /**
   * Why a VM of ours ended: the guest's own shutdown as the monitor saw it, else
   * (for a child of this broker) its exit status, so that a purge that notices the
   * death before watchExit delivers it writes the same words.
   */
  async exitReason(vm: VmHandle): Promise<string | null> {
    if (vm.kind !== 'local') return null;
    const { pid } = asLocal(vm);
    const own = this.children.get(pid);
    // Gone from /proc, but Node may not have reaped it yet: its exit status follows at once.
    if (own && !own.exit) await this.waitChildExit(pid, 1000);
    return this.guestShutdowns.get(pid) ?? (own?.exit ? exitWords(own.exit) : null);
  }

  /** Runs fn on the watched VM's monitor connection, or on a connection of its own (closed after). */
  private async withQmp<T>(
    handle: LocalHandle, connectTimeoutMs: number, fn: (client: QmpClient) => Promise<T>,
  ): Promise<T> {
    const monitor = this.monitors.get(handle.pid);
    const shared = monitor?.onCommandSocket ? await monitor.client() : null;
    if (shared) return fn(shared);
    const client = await QmpClient.connect(handle.qmpSocket, { timeoutMs: connectTimeoutMs });
    try {
      return await fn(client);
    } finally {
      client.close();
    }
  }

  private acquireMonitor(handle: LocalHandle): QmpMonitor {
    let monitor = this.monitors.get(handle.pid);
    if (!monitor) {
      monitor = new QmpMonitor(handle, () => this.alive(handle), this.opts.log, this.clock);
      monitor.on('guest-shutdown', (reason: string) => {
        this.guestShutdowns.set(handle.pid, reason);
        this.opts.log.info({ pid: handle.pid, reason }, 'guest shut down from inside');
      });
      this.monitors.set(handle.pid, monitor);
    }
    monitor.users++;
    return monitor;
  }

  private releaseMonitor(pid: number, monitor: QmpMonitor): void {
    if (--monitor.users > 0) return;
    monitor.close();
    if (this.monitors.get(pid) === monitor) this.monitors.delete(pid);
  }

  async cleanup(handle: VmHandle | null, runDir: string): Promise<void> {
    this.assertInsideRunRoot(runDir);
    // A handle of another launcher (a row from before the site switched) has nothing here to forget.
    if (handle?.kind === 'local') this.guestShutdowns.delete(asLocal(handle).pid);
    await this.killLeftBehind(runDir);
    await tearDownGuestNetwork(this.opts.config.guestNetwork, runDir);
    await fsp.rm(runDir, { recursive: true, force: true });
  }

  /**
   * A QEMU can outlive its handle: a broker killed while QEMU was starting
   * never recorded one, and the purge later cleans up the abandoned start by
   * its run dir alone. QEMU wrote its PID there (-pidfile); if that process
   * still runs with this session's -name, it is ours and is killed before its
   * disk and sockets are deleted.
   */
  private async killLeftBehind(runDir: string): Promise<void> {
    let pid: number;
    try {
      pid = Number((await fsp.readFile(vmPaths(runDir).pidFile, 'utf8')).trim());
    } catch {
      return; // No pidfile: QEMU never started here (or its dir is already gone).
    }
    const name = qemuProcessName(path.basename(runDir));
    if (!Number.isInteger(pid) || pid <= 1 || !isNamedProcess(pid, name)) return;
    this.opts.log.warn(
      { pid, runDir }, 'qemu still running in a run dir being cleaned up (its start was abandoned); killing it',
    );
    signalGroup(pid, 'SIGKILL');
    const deadline = this.clock.now() + 10000;
    while (isNamedProcess(pid, name)) {
      if (this.clock.now() > deadline) throw new QwdError('QWD_INTERNAL', `qemu pid ${pid} survived SIGKILL for 10 s`);
      await this.clock.sleep(20);
    }
  }

  private assertInsideRunRoot(runDir: string): void {
    sessionDirIn(this.opts.config.runDir, runDir);
  }

  private async waitGone(handle: LocalHandle, ms: number): Promise<boolean> {
    if (this.children.has(handle.pid)) return this.waitChildExit(handle.pid, ms);
    const deadline = this.clock.now() + ms;
    while (this.clock.now() <= deadline) {
      if (!isOurProcess(handle.pid, handle.startTime, handle.processName)) return true;
      await this.clock.sleep(20);
    }
    return !isOurProcess(handle.pid, handle.startTime, handle.processName);
  }

  private waitChildExit(pid: number, ms: number): Promise<boolean> {
    const entry = this.children.get(pid);
    if (!entry) return Promise.resolve(true);
    if (entry.exit) return Promise.resolve(true);
    return new Promise((resolve) => {
      const cancel = this.clock.after(ms, () => {
        entry.child.off('exit', onExit);
        resolve(false);
      });
      const onExit = () => {
        cancel();
        resolve(true);
      };
      entry.child.once('exit', onExit);
    });
  }
}

/**
 * Reads a handle as this launcher's own, checking its shape: the manager hands back whatever the session row holds
 * (a row of another launcher, or of an older broker, is refused here rather than misread).
 */
export function asLocal(handle: VmHandle): LocalHandle {
  const h = handle as Partial<LocalHandle>;
  if (h.kind !== 'local') {
    throw new QwdError('QWD_INTERNAL', `the local launcher was given a ${String(h.kind)} handle`);
  }
  const strings = [h.startTime, h.processName, h.runDir, h.qmpSocket, h.vncSocket];
  const accelOk = h.accel === 'kvm' || h.accel === 'tcg';
  if (!Number.isInteger(h.pid) || strings.some((v) => typeof v !== 'string') || !accelOk) {
    throw new QwdError(
      'QWD_INTERNAL', `a local VM handle lacks a field or has one of the wrong type: ${JSON.stringify(h)}`,
    );
  }
  return h as LocalHandle;
}

/**
 * Why a VM ended, in words for the session's tombstone, from a QMP SHUTDOWN
 * event (qapi/run-state.json: ShutdownCause); null when the host, not the
 * guest, asked (quit, a signal) — the caller knows why it stopped the VM then.
 */
export function guestShutdownReason(event: QmpEvent): string | null {
  if (event.event !== 'SHUTDOWN' || event.data?.guest !== true) return null;
  switch (event.data.reason) {
    case 'guest-reset':
      return 'the virtual machine was restarted from inside, which ends the session';
    case 'guest-panic':
      return 'the virtual machine was shut down after its operating system crashed';
    default: // 'guest-shutdown' (ACPI power-off, poweroff -f, …)
      return 'the virtual machine was shut down from inside';
  }
}

/**
 * The launcher's QMP connection to one watched VM: reconnects while the VM
 * lives (another client may hold the socket for a while), records a guest
 * shutdown, and emits 'ending' when the VM announces or shows its end (a
 * SHUTDOWN event, the socket closing).
 */
class QmpMonitor extends EventEmitter {
  users = 0;
  guestShutdownReason: string | null = null;
  /** Monitoring on qmp.sock (a VM started without qmp-events.sock): commands must share this connection. */
  readonly onCommandSocket: boolean;
  private readonly socketPath: string;
  private current: QmpClient | null = null;
  private connecting: Promise<QmpClient | null> | null = null;
  private retry: CancelTimer | null = null;
  private closed = false;
  private ending = false;
  private readonly closeWaiters = new Set<() => void>();

  constructor(
    private readonly handle: LocalHandle, private readonly isAlive: () => boolean, private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    super();
    const events = qmpEventsSocket(handle.runDir);
    this.onCommandSocket = !fs.existsSync(events);
    this.socketPath = this.onCommandSocket ? handle.qmpSocket : events;
    void this.client();
  }

  /** The open connection, after the connect in progress if there is one; null when QMP cannot be reached. */
  client(): Promise<QmpClient | null> {
    if (this.closed) return Promise.resolve(null);
    if (this.current) return Promise.resolve(this.current);
    if (this.connecting) return this.connecting;
    if (this.ending) return Promise.resolve(null); // the VM is going away: no new connection
    if (this.retry) {
      this.retry();
      this.retry = null;
    }
    this.connecting = QmpClient.connect(this.socketPath, { timeoutMs: 3000 }).then(
      (client) => {
        this.connecting = null;
        if (this.closed) {
          client.close();
          return null;
        }
        this.attach(client);
        return client;
      },
      (err: Error) => {
        this.connecting = null;
        for (const done of [...this.closeWaiters]) done();
        this.log.debug(
          { pid: this.handle.pid, socket: this.socketPath, err: err.message }, 'QMP monitor could not connect',
        );
        this.reconnectLater();
        return null;
      },
    );
    return this.connecting;
  }

  /** The broker is stopping this VM itself: its connection closing is no reason to reconnect. */
  endExpected(): void {
    this.ending = true;
  }

  /** Resolves once the connection has closed (or there is none), or after ms. */
  drained(ms: number): Promise<void> {
    if (!this.current && !this.connecting) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        cancel();
        this.closeWaiters.delete(done);
        resolve();
      };
      const cancel = this.clock.after(ms, done);
      this.closeWaiters.add(done);
    });
  }

  close(): void {
    this.closed = true;
    this.retry?.();
    this.retry = null;
    this.current?.close();
    this.current = null;
    for (const done of [...this.closeWaiters]) done();
  }

  private attach(client: QmpClient): void {
    this.current = client;
    client.on('event', (event: QmpEvent) => {
      if (event.event !== 'SHUTDOWN') return;
      const reason = guestShutdownReason(event);
      if (reason) {
        this.guestShutdownReason = reason;
        this.emit('guest-shutdown', reason);
      }
      this.emit('ending');
    });
    client.once('close', () => {
      this.current = null;
      for (const done of [...this.closeWaiters]) done();
      if (this.closed) return;
      if (!this.ending && this.isAlive()) this.reconnectLater();
      else this.emit('ending');
    });
  }

  private reconnectLater(): void {
    if (this.closed || this.ending || this.retry || !this.isAlive()) return;
    this.retry = this.clock.after(1000, () => {
      this.retry = null;
      void this.client();
    }, { background: true });
  }
}
