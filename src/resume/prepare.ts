// qwdctl machines prepare: boots a machine once at one of its resume sizes,
// waits until it says it is ready, saves its RAM and device state next to a
// frozen copy of its disk, and checks the result by resuming it once. The VM
// runs through the local launcher (same argv, same network namespace as a
// session), in a work dir of its own under the prepared dir, so the purge job
// never mistakes it for an orphan session dir. Everything is written in a
// temporary dir that becomes the prepared dir only once checked: a failure, or
// an interrupted prepare, leaves the old state (if any) as it was.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Machine, ReadySignal, ResumeSize } from '../catalog/descriptor.js';
import type { AccelChoice } from '../qemu/accel.js';
import { systemClock, type Clock } from '../clock.js';
import { LocalLauncher, type LocalHandle } from '../launcher/local.js';
import type { LaunchSpec } from '../launcher/types.js';
import { newSessionId } from '../sessions/tokens.js';
import { saveState } from './save-state.js';
import { ScreenWatch } from './screen-watch.js';
import { guestRun, unplugVdagent } from './after-resume.js';
import { qgaCommand } from '../qemu/qga-client.js';
import { readLogTail, runTool } from '../qemu/run-tool.js';
import {
  FROZEN_DISK, META_FILE, PREPARED_DIR, STATE_FILE, checkPreparedState, deviceKey, masterStamp, preparedDir,
  qemuVersion, resumeSizeListed, type PreparedMeta,
} from './prepared.js';

export interface PrepareDeps {
  config: Config;
  accel: AccelChoice;
  log: Logger;
  clock?: Clock;
}

export interface PrepareReport {
  machine: string;
  cpus: number;
  memoryMiB: number;
  dir: string;
  stateBytes: number;
  diskBytes: number;
  /** Boot until ready, then save. */
  prepareMs: number;
  /** The check: a session's VM resumed from it, until it answered on VNC and QMP. */
  resumeMs: number;
}

/** How long a machine may take to say it is ready (a desktop under TCG takes minutes). */
const READY_TIMEOUT_MS = 15 * 60 * 1000;
const SAVE_TIMEOUT_MS = 5 * 60 * 1000;
/** After the ready signal: how long the screen must stay still, and how long to wait for that at most. */
const SCREEN_QUIET_MS = 3000;
const SCREEN_TIMEOUT_MS = 2 * 60 * 1000;

export async function prepareMachine(
  deps: PrepareDeps, machine: Machine, size: ResumeSize,
  opts: { force?: boolean; onProgress?: (line: string) => void; signal?: AbortSignal } = {},
): Promise<PrepareReport> {
  const { config, log } = deps;
  const clock = deps.clock ?? systemClock;
  const say = opts.onProgress ?? (() => {});
  if (!machine.resume) {
    throw new QwdError('QWD_BAD_REQUEST', `machine ${machine.name} has no resume: profile in ${machine.file}`);
  }
  if (!resumeSizeListed(machine, size)) {
    const sizes = machine.resume.sizes.map((s) => `${s.cpus}x${s.memoryMiB}`).join(', ');
    throw new QwdError(
      'QWD_BAD_REQUEST', `machine ${machine.name}: ${size.cpus} CPU(s) and ${size.memoryMiB} MiB is not one of its ` +
        `resume sizes (${sizes})`,
    );
  }
  const dir = preparedDir(config.machinesDir, machine.name, size);
  if (fs.existsSync(dir) && !opts.force) {
    throw new QwdError(
      'QWD_BAD_REQUEST', `machine ${machine.name} is already prepared at this size (${dir}); --force prepares it again`,
    );
  }
  const workRoot = path.join(config.machinesDir, PREPARED_DIR, '.work');
  await fsp.mkdir(workRoot, { recursive: true, mode: 0o700 });
  const tmp = await fsp.mkdtemp(path.join(path.dirname(workRoot), `.${machine.name}-`));
  // The VMs of a prepare are sessions of a launcher whose run dir is the work dir.
  const launcher = new LocalLauncher({ config: { ...config, runDir: workRoot }, accel: deps.accel, log, clock });
  const spec = (id: string): LaunchSpec => ({
    sessionId: id, machine, cpus: size.cpus, memoryMiB: size.memoryMiB, runDir: path.join(workRoot, id),
    expiresAt: clock.now() + READY_TIMEOUT_MS,
  });
  try {
    const started = clock.now();
    say(`booting ${machine.name} (${size.cpus} CPU(s), ${size.memoryMiB} MiB)`);
    const boot = spec(newSessionId());
    const vm = await launcher.startForSaving(boot);
    let screen: ScreenWatch | null = null;
    try {
      // Watched from the start: QEMU draws a virtio-vga scanout only for a display client that asks.
      screen = await ScreenWatch.open(vm.vncSocket, clock);
      say('waiting for the guest to be ready');
      // Between two looks: a Ctrl-C (the VM is stopped below, not left running) or a VM that died.
      const goOn = async () => {
        if (opts.signal?.aborted) {
          throw new QwdError('QWD_PREPARE_FAILED', `machine ${machine.name}: interrupted; its VM is stopped and ` +
            'nothing of this prepare is kept');
        }
        if (!await launcher.isAlive(vm)) {
          const tail = await readLogTail(path.join(boot.runDir, 'qemu.log'));
          throw new QwdError('QWD_PREPARE_FAILED', `the VM ended before it was ready (qemu: ${tail})`);
        }
      };
      await waitGuestReady(boot.runDir, machine.resume.ready, vm, clock, goOn);
      // A program that has started has not painted yet: the state is saved once the screen is drawn and still.
      say('waiting for its screen to be drawn and still');
      if (!await screen.waitQuiet(SCREEN_QUIET_MS, SCREEN_TIMEOUT_MS, goOn)) {
        say(`its screen did not stay still for ${SCREEN_QUIET_MS / 1000} s within ${SCREEN_TIMEOUT_MS / 60000} min: ` +
          'saving it as it is');
      }
      screen.close();
      // QEMU 7.2 cannot save the clipboard agent's chardev: its port goes first (sessions plug it in again).
      if (machine.agent === 'spice-vdagent') await unplugVdagent(vm.qmpSocket);
      say('saving its state');
      const runAs = process.getuid?.() === 0 ? config.qemu.runAs : null;
      const saved = await saveState(vm.qmpSocket, path.join(tmp, STATE_FILE), {
        zstd: config.qemu.zstd, timeoutMs: SAVE_TIMEOUT_MS, clock, owner: runAs ? await userIds(runAs) : null,
      }).catch(async (err: Error) => {
        // QEMU says why in its log (a device that cannot migrate, a socket it could not reach).
        const tail = await readLogTail(path.join(boot.runDir, 'qemu.log'));
        throw new QwdError('QWD_PREPARE_FAILED', `${err.message} (qemu: ${tail})`);
      });
      await launcher.stop(vm);
      // The disk as it was when the state was saved: the VM was paused from the save on.
      await fsp.rename(path.join(boot.runDir, FROZEN_DISK), path.join(tmp, FROZEN_DISK));
      const accel = vm.accel;
      const meta: PreparedMeta = {
        format: 1, machine: machine.name, cpus: size.cpus, memoryMiB: size.memoryMiB,
        qemuVersion: await qemuVersion(config.qemu.binaries[machine.arch]),
        master: await masterStamp(machine.image),
        deviceKey: deviceKey(machine, size, {
          accel, network: config.qemu.network, uefiFirmware: config.qemu.uefi[machine.arch],
        }),
        preparedAt: clock.now(), stateBytes: saved.bytes, prepareMs: clock.now() - started,
      };
      await fsp.writeFile(path.join(tmp, META_FILE), JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
    } finally {
      screen?.close();
      await launcher.stop(vm).catch(() => {});
      await launcher.cleanup(vm, boot.runDir);
    }
    // In place only now, complete; the old state (with --force) is set aside until the new one is checked.
    await fsp.mkdir(path.dirname(dir), { recursive: true, mode: 0o755 });
    const previous = fs.existsSync(dir) ? path.join(path.dirname(dir), `.${path.basename(dir)}.previous`) : null;
    if (previous) {
      await fsp.rm(previous, { recursive: true, force: true });
      await fsp.rename(dir, previous);
    }
    await fsp.rename(tmp, dir);
    const meta = JSON.parse(await fsp.readFile(path.join(dir, META_FILE), 'utf8')) as PreparedMeta;
    say('checking it: resuming it once');
    const resumeMs = await checkByResuming(launcher, spec(newSessionId()), config, machine, size, clock).catch(
      async (err: Error) => {
        await fsp.rm(dir, { recursive: true, force: true });
        if (previous) await fsp.rename(previous, dir);
        throw new QwdError('QWD_PREPARE_FAILED', `machine ${machine.name}: the saved state did not resume: ` +
          `${err.message}; it was not kept${previous ? ' (the previous state is back in place)' : ''}`, { cause: err });
      },
    );
    if (previous) await fsp.rm(previous, { recursive: true, force: true });
    const report = {
      machine: machine.name, cpus: size.cpus, memoryMiB: size.memoryMiB, dir, stateBytes: meta.stateBytes,
      diskBytes: (await fsp.stat(path.join(dir, FROZEN_DISK))).size, prepareMs: meta.prepareMs, resumeMs,
    };
    log.info(report, 'machine prepared');
    return report;
  } catch (err) {
    if (err instanceof QwdError && err.code === 'QWD_PREPARE_FAILED') throw err;
    throw new QwdError('QWD_PREPARE_FAILED', `machine ${machine.name}: preparing failed: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/** Resumes the prepared state once, as a session would, and stops it; the time until it answered. */
async function checkByResuming(
  launcher: LocalLauncher, spec: LaunchSpec, config: Config, machine: Machine, size: ResumeSize, clock: Clock,
): Promise<number> {
  const choice = await checkPreparedState(config, machine, size, launcher.accelFor(machine));
  if (!choice.resume) throw new Error(choice.reason);
  const started = clock.now();
  const vm = await launcher.startResumed(spec, choice);
  const ms = clock.now() - started;
  try {
    await launcher.stop(vm);
  } finally {
    await launcher.cleanup(vm, spec.runDir);
  }
  return ms;
}

/** A user's uid and gid, as the system resolves them (id(1): local files, LDAP and all NSS sources). */
async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  const id = async (flag: string) => Number(
    (await runTool('id', [flag, user], { timeoutMs: 5000, errorCode: 'QWD_PREPARE_FAILED' })).stdout.trim(),
  );
  return { uid: await id('-u'), gid: await id('-g') };
}

/** The guest says it is ready: a line on its serial port (the demo prints "QWD: boot ok"). */
async function waitGuestReady(
  runDir: string, ready: ReadySignal, vm: LocalHandle, clock: Clock, goOn: () => Promise<void>,
): Promise<void> {
  const deadline = clock.now() + READY_TIMEOUT_MS;
  if (!('serial' in ready)) {
    // The guest agent answers guest-ping once the guest has started it (late in its boot).
    for (;;) {
      await goOn();
      const qga = path.join(runDir, 'qga.sock');
      const ping = qgaCommand(qga, 'guest-ping', undefined, 5000);
      const running = (name: string) => guestRun(qga, '/usr/bin/pgrep', ['-x', name], clock)
        .then(() => true, () => false);
      const ok = await ping.then(() => true, () => false) && (!ready.process || await running(ready.process));
      if (ok) return;
      if (clock.now() > deadline) {
        const minutes = READY_TIMEOUT_MS / 60000;
        throw new QwdError('QWD_PREPARE_FAILED', `the guest agent did not answer within ${minutes} min`);
      }
      await clock.sleep(1000);
    }
  }
  const log = path.join(runDir, 'serial.log');
  for (;;) {
    await goOn();
    const text = await fsp.readFile(log, 'utf8').catch(() => '');
    if (text.includes(ready.serial)) return;
    if (clock.now() > deadline) {
      throw new QwdError(
        'QWD_PREPARE_FAILED', `the guest did not print "${ready.serial}" on its serial port within ` +
          `${READY_TIMEOUT_MS / 60000} min (pid ${vm.pid})`,
      );
    }
    await clock.sleep(200);
  }
}
