// What a resumed VM needs that a booted one gets by booting, and what must
// differ between sessions resumed from one state (INSTALL.md, "Resume"):
// - the clipboard agent's port, unplugged before the save (QEMU 7.2 cannot
//   migrate its qemu-vdagent chardev), is plugged in again; the guest's
//   spice-vdagentd reconnects by itself;
// - through qemu-guest-agent (machines with guestAgent: true): the guest's
//   clock, which stopped at the save, is set to the host's time; the hostname
//   becomes the session's own.
// Also the other half, for prepare: unplugging the clipboard port before the save.
import type { Logger } from '../log.js';
import type { Machine } from '../catalog/descriptor.js';
import type { Clock } from '../clock.js';
import { QwdError } from '../errors.js';
import { QmpClient, type QmpEvent } from '../qemu/qmp-client.js';
import { VDAGENT_PLUG } from '../qemu/argv.js';
import { qgaCommand } from '../qemu/qga-client.js';

/** How long a resumed guest's agent may take to answer its first request. */
const GUEST_AGENT_WAIT_MS = 60_000;

/** The hostname a resumed session's guest gets: its machine's name and the session id (RFC 1123 label). */
export function sessionHostname(machine: string, sessionId: string): string {
  return `${machine.replace(/[^a-z0-9-]/g, '-')}-${sessionId}`.slice(-63).replace(/^-+/, '');
}

/** Before a save: the clipboard agent's port goes (QMP device_del, then DEVICE_DELETED), then its chardev. */
export async function unplugVdagent(qmpSocket: string, timeoutMs = 30_000): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket);
  let timer: NodeJS.Timeout | undefined;
  try {
    const deleted = new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new QwdError(
        'QWD_PREPARE_FAILED', `the guest did not release its clipboard port within ${timeoutMs} ms`,
      )), timeoutMs);
      qmp.on('event', (event: QmpEvent) => {
        if (event.event === 'DEVICE_DELETED' && event.data?.device === VDAGENT_PLUG.device.id) resolve();
      });
    });
    // Handled here too: device_del may fail before anyone awaits the event.
    deleted.catch(() => {});
    await qmp.execute('device_del', { id: VDAGENT_PLUG.device.id });
    await deleted;
    await qmp.execute('chardev-remove', { id: VDAGENT_PLUG.chardev.id });
  } finally {
    clearTimeout(timer);
    qmp.close();
  }
}

/**
 * After the resume (the VM runs again): the clipboard port back and the guest's clock, then (not awaited) its
 * hostname.
 */
export async function afterResume(
  machine: Machine, sessionId: string, sockets: { qmp: string; qga: string }, deps: { log: Logger; clock: Clock },
): Promise<void> {
  if (machine.agent === 'spice-vdagent') {
    const qmp = await QmpClient.connect(sockets.qmp);
    try {
      await qmp.execute('chardev-add', { id: VDAGENT_PLUG.chardev.id, backend: VDAGENT_PLUG.chardev.backend });
      await qmp.execute('device_add', { ...VDAGENT_PLUG.device, bus: 'vserial0.0' });
    } finally {
      qmp.close();
    }
  }
  if (!machine.guestAgent) return;
  try {
    // ns since the epoch; a double loses the last bits (< 1 µs), which no guest clock notices. Patient: on a host
    // resuming many desktops at once, a guest may take tens of seconds to run its agent again.
    // The time is taken when the command leaves, after the agent answered guest-sync (which may take a while).
    const now = () => ({ time: deps.clock.now() * 1_000_000 });
    await qgaCommand(sockets.qga, 'guest-set-time', now, GUEST_AGENT_WAIT_MS);
  } catch (err) {
    // The desktop is up and usable; booting it instead would cost minutes. The log says what the guest kept.
    deps.log.warn(
      { sessionId, err: (err as Error).message },
      'the resumed guest\'s clock and hostname were not set: its agent did not answer (it keeps the prepared ones)',
    );
    return;
  }
  // The hostname goes on while the session is handed out (hostnamed takes a second or two to start under TCG):
  // nothing in the first seconds of a desktop needs it; the log says when it is set, or why not.
  const hostname = sessionHostname(machine.name, sessionId);
  const started = deps.clock.now();
  const { log, clock } = deps;
  void guestRun(sockets.qga, '/usr/bin/hostnamectl', ['set-hostname', hostname], clock).then(
    () => log.info({ sessionId, hostname, ms: clock.now() - started }, 'the resumed guest\'s hostname is set'),
    // The session works without it; the log says the guest kept the prepared hostname.
    (err: Error) => log.warn({ sessionId, hostname, err: err.message }, 'the resumed guest\'s hostname was not set'),
  );
}

/** guest-exec and wait for the program's end (guest-exec-status); rejects unless it exits 0. */
export async function guestRun(
  qga: string, file: string, argv: string[], clock: Clock, timeoutMs = 20_000,
): Promise<void> {
  const { pid } = await qgaCommand<{ pid: number }>(
    qga, 'guest-exec', { path: file, arg: argv, 'capture-output': true },
  );
  const deadline = clock.now() + timeoutMs;
  for (;;) {
    const status = await qgaCommand<{ exited: boolean; exitcode?: number; 'err-data'?: string }>(
      qga, 'guest-exec-status', { pid },
    );
    if (status.exited) {
      if (status.exitcode === 0) return;
      const err = status['err-data'] ? Buffer.from(status['err-data'], 'base64').toString('utf8').trim() : '';
      throw new QwdError('QWD_QMP_ERROR', `${file} ${argv.join(' ')} exited ${status.exitcode}: ${err}`);
    }
    if (clock.now() > deadline) throw new QwdError('QWD_QMP_TIMEOUT', `${file} did not end within ${timeoutMs} ms`);
    await clock.sleep(100);
  }
}
