// The local launcher: qemu-system-<arch> as a child of the broker, in its own
// process group (so it survives a broker restart), with QMP and VNC on Unix
// sockets in the session's 0700 run dir. Readiness is observed (QMP answers,
// VNC sends its RFB banner), never assumed after a sleep. Stop escalates
// QMP quit → SIGTERM → SIGKILL with grace timers.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config, Arch } from '../config/schema.js';
import { createOverlay } from '../snapshot/overlay.js';
import { applyVirtCustomize, buildSeedIso } from '../guest/seed-iso.js';
import { buildQemuArgv, qemuProcessName, type VmPaths } from '../qemu/argv.js';
import type { AccelChoice } from '../qemu/accel.js';
import { QmpClient } from '../qemu/qmp-client.js';
import { readRfbBanner, type VncAddress } from '../qemu/rfb-probe.js';
import { isOurProcess, readProcStat, signalGroup } from '../qemu/process.js';
import type { ExitInfo, Launcher, LaunchSpec, LocalHandle, StartHooks, StopOutcome, VmHandle } from './types.js';

export interface LocalLauncherOptions {
  config: Config;
  accel: AccelChoice;
  log: Logger;
}

const HOST_ARCH: Arch | null = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : null;

export function vmPaths(runDir: string): VmPaths {
  return {
    overlay: path.join(runDir, 'disk.qcow2'),
    qmpSocket: path.join(runDir, 'qmp.sock'),
    vncSocket: path.join(runDir, 'vnc.sock'),
    serialLog: path.join(runDir, 'serial.log'),
    pidFile: path.join(runDir, 'qemu.pid'),
  };
}

export class LocalLauncher implements Launcher {
  readonly kind = 'local';
  get runRoot(): string {
    return this.opts.config.runDir;
  }
  private readonly children = new Map<number, { child: ChildProcess; exit: ExitInfo | null }>();
  private readonly stopping = new Map<number, Promise<StopOutcome>>();

  constructor(private readonly opts: LocalLauncherOptions) {}

  async start(spec: LaunchSpec, _hooks?: StartHooks): Promise<VmHandle> {
    const { config, log } = this.opts;
    this.assertInsideRunRoot(spec.runDir);
    await fsp.mkdir(path.dirname(spec.runDir), { recursive: true, mode: 0o700 });
    await fsp.mkdir(spec.runDir, { mode: 0o700 });
    let child: ChildProcess | null = null;
    try {
      await createOverlay(config.qemu.img, spec.machine, spec.runDir, config.qemu.isoDiskGiB);
      const paths = vmPaths(spec.runDir);
      let seedIso: string | null = null;
      const scripts = spec.bootScripts?.scripts ?? [];
      if (scripts.length && spec.bootScripts!.delivery === 'cloud-init') {
        seedIso = await buildSeedIso(config.guest.genisoimage, spec.runDir, spec.sessionId, spec.machine.name, scripts);
      } else if (scripts.length) {
        await applyVirtCustomize(config.guest.virtCustomize, spec.runDir, paths.overlay, scripts);
      }
      for (const s of scripts) log.info({ sessionId: spec.sessionId, script: s.name, source: s.source, delivery: spec.bootScripts!.delivery }, 'boot script applied');
      // KVM runs only guests of the host's own architecture.
      const accel = spec.machine.arch === HOST_ARCH ? this.opts.accel.accel : 'tcg';
      const runAs = process.getuid?.() === 0 ? config.qemu.runAs : null;
      const argv = buildQemuArgv(spec.machine, { cpus: spec.cpus, memoryMiB: spec.memoryMiB }, paths, {
        sessionId: spec.sessionId, accel, sandbox: config.qemu.sandbox, runAs, network: config.qemu.network,
        uefiFirmware: config.qemu.uefi[spec.machine.arch],
      }, { shares: spec.shares ?? [], seedIso, gpus: spec.gpus ?? [] });
      const binary = config.qemu.binaries[spec.machine.arch];
      const logFd = fs.openSync(path.join(spec.runDir, 'qemu.log'), 'a', 0o600);
      try {
        child = spawn(binary, argv, { detached: true, stdio: ['ignore', logFd, logFd] });
      } finally {
        fs.closeSync(logFd);
      }
      const spawned = child;
      const entry = { child: spawned, exit: null as ExitInfo | null };
      await new Promise<void>((resolve, reject) => {
        spawned.once('spawn', () => resolve());
        spawned.once('error', reject);
      }).catch((err: Error) => {
        throw new QwdError('QWD_LAUNCH_FAILED', `cannot run ${binary}: ${err.message}${(err as NodeJS.ErrnoException).code === 'ENOENT' ? ' (install qemu-system-x86 / qemu-system-arm, or set qemu.binaries)' : ''}`, { cause: err });
      });
      const pid = spawned.pid!;
      this.children.set(pid, entry);
      spawned.once('exit', (code, signal) => {
        entry.exit = { code, signal };
      });
      spawned.unref();
      log.info({ sessionId: spec.sessionId, pid, accel, reason: this.opts.accel.reason, argv: [binary, ...argv] }, 'qemu spawned');
      await this.waitReady(spec, pid, entry, paths);
      const startTime = readProcStat(pid)?.startTime ?? '';
      return {
        kind: 'local', pid, startTime, processName: qemuProcessName(spec.sessionId), runDir: spec.runDir,
        qmpSocket: paths.qmpSocket, vncSocket: paths.vncSocket, accel,
      };
    } catch (err) {
      if (child?.pid) {
        signalGroup(child.pid, 'SIGKILL');
        await this.waitChildExit(child.pid, 5000);
        this.children.delete(child.pid);
      }
      await this.cleanup(null, spec.runDir);
      throw err;
    }
  }

  private async waitReady(spec: LaunchSpec, pid: number, entry: { exit: ExitInfo | null }, paths: VmPaths): Promise<void> {
    const deadline = Date.now() + this.opts.config.qemu.readyTimeoutMs;
    const died = async () => {
      const tail = await readTail(path.join(spec.runDir, 'qemu.log'));
      const how = entry.exit?.signal ? `signal ${entry.exit.signal}` : `exit ${entry.exit?.code}`;
      return new QwdError('QWD_LAUNCH_FAILED', `qemu for session ${spec.sessionId} exited during start-up (${how}): ${tail}`);
    };
    let qmpOk = false;
    for (let delay = 5; ; delay = Math.min(delay * 2, 50)) {
      if (entry.exit) throw await died();
      if (Date.now() > deadline) throw new QwdError('QWD_LAUNCH_TIMEOUT', `qemu for session ${spec.sessionId} (pid ${pid}) was not ready within ${this.opts.config.qemu.readyTimeoutMs} ms`);
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
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  stop(vm: VmHandle): Promise<StopOutcome> {
    const handle = asLocal(vm);
    const running = this.stopping.get(handle.pid);
    if (running) return running;
    const promise = this.escalate(handle).finally(() => {
      this.stopping.delete(handle.pid);
      this.children.delete(handle.pid);
    });
    this.stopping.set(handle.pid, promise);
    return promise;
  }

  private async escalate(handle: LocalHandle): Promise<StopOutcome> {
    const { config, log } = this.opts;
    if (!this.alive(handle)) return 'already-gone';
    try {
      const qmp = await QmpClient.connect(handle.qmpSocket, { timeoutMs: Math.min(2000, config.qemu.quitGraceMs || 1) });
      try {
        await qmp.quit(config.qemu.quitGraceMs);
      } finally {
        qmp.close();
      }
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

  vncAddress(vm: VmHandle): VncAddress {
    return { kind: 'unix', path: asLocal(vm).vncSocket };
  }

  watchExit(vm: VmHandle, onExit: (info: ExitInfo) => void): () => void {
    const handle = asLocal(vm);
    let fired = false;
    let unsubscribe = () => {};
    const fire = (info: ExitInfo) => {
      if (fired) return;
      fired = true;
      unsubscribe();
      onExit(info);
    };
    const own = this.children.get(handle.pid);
    if (own?.exit) {
      queueMicrotask(() => fire(own.exit!));
    } else if (own) {
      const listener = (code: number | null, signal: NodeJS.Signals | null) => fire({ code, signal });
      own.child.once('exit', listener);
      unsubscribe = () => own.child.off('exit', listener);
    } else {
      // Adopted after a broker restart: not our child, so poll /proc.
      const timer = setInterval(() => {
        if (!isOurProcess(handle.pid, handle.startTime, handle.processName)) fire({ code: null, signal: null });
      }, 1000);
      timer.unref();
      unsubscribe = () => clearInterval(timer);
    }
    return () => {
      fired = true;
      unsubscribe();
    };
  }

  async qmp<T = unknown>(vm: VmHandle, command: string, args?: Record<string, unknown>): Promise<T> {
    const client = await QmpClient.connect(asLocal(vm).qmpSocket, { timeoutMs: 3000 });
    try {
      return await client.execute<T>(command, args, { timeoutMs: 5000 });
    } finally {
      client.close();
    }
  }

  async cleanup(_handle: VmHandle | null, runDir: string): Promise<void> {
    this.assertInsideRunRoot(runDir);
    await fsp.rm(runDir, { recursive: true, force: true });
  }

  private assertInsideRunRoot(runDir: string): void {
    const root = path.resolve(this.opts.config.runDir);
    const resolved = path.resolve(runDir);
    if (path.dirname(resolved) !== root) throw new QwdError('QWD_INTERNAL', `refusing to use run dir ${runDir} outside ${root}`);
  }

  private async waitGone(handle: LocalHandle, ms: number): Promise<boolean> {
    if (this.children.has(handle.pid)) return this.waitChildExit(handle.pid, ms);
    const deadline = Date.now() + ms;
    while (Date.now() <= deadline) {
      if (!isOurProcess(handle.pid, handle.startTime, handle.processName)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return !isOurProcess(handle.pid, handle.startTime, handle.processName);
  }

  private waitChildExit(pid: number, ms: number): Promise<boolean> {
    const entry = this.children.get(pid);
    if (!entry) return Promise.resolve(true);
    if (entry.exit) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        entry.child.off('exit', onExit);
        resolve(false);
      }, ms);
      const onExit = () => {
        clearTimeout(timer);
        resolve(true);
      };
      entry.child.once('exit', onExit);
    });
  }
}

function asLocal(handle: VmHandle): LocalHandle {
  if (handle.kind !== 'local') throw new QwdError('QWD_INTERNAL', `the local launcher was given a ${handle.kind} handle`);
  return handle;
}

async function readTail(file: string): Promise<string> {
  try {
    const text = await fsp.readFile(file, 'utf8');
    return text.trim().split('\n').slice(-5).join(' | ') || '(no output)';
  } catch {
    return '(no log)';
  }
}
