// The guest as a test reaches it: qemu-guest-agent (QGA) over the session's
// org.qemu.guest_agent.0 port (a Unix socket QEMU serves, <runDir>/qga.sock on
// machines with guestAgent: true). One connection per request, synchronised
// with guest-sync first (QGA's protocol: a reply to an abandoned request may
// still sit in the port). guest-exec runs programs with an argv array; the
// desktop user's X session is reached with runuser + env, never a shell string.
import { waitFor } from './env.js';
import { qgaCommand } from '../../src/qemu/qga-client.js';

/** One request to the guest agent (the product's own client); rejects with QGA's error or after timeoutMs (a loaded TCG guest can take seconds). */
export function qga(
  socketPath: string, command: string, args?: Record<string, unknown>, timeoutMs = 15_000,
): Promise<unknown> {
  return qgaCommand(socketPath, command, args, timeoutMs);
}

export interface ExecResult {
  exitcode: number;
  out: string;
  err: string;
}

export interface ExecOptions {
  /** Written to the program's standard input (QGA input-data), then closed. */
  input?: string;
  /** Collect stdout/stderr (default true). Off for programs that leave a child holding them (xclip -i). */
  capture?: boolean;
  timeoutMs?: number;
}

/** Runs a program in the guest (guest-exec) and waits for its end (guest-exec-status). */
export async function guestExec(socketPath: string, file: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const capture = opts.capture ?? true;
  const { pid } = (await qga(socketPath, 'guest-exec', {
    path: file, arg: argv, 'capture-output': capture,
    ...(opts.input === undefined ? {} : { 'input-data': Buffer.from(opts.input, 'utf8').toString('base64') }),
  })) as { pid: number };
  const status = await waitFor(`${file} ${argv.join(' ')} to end in the guest`, async () => {
    const s = (await qga(socketPath, 'guest-exec-status', { pid })) as { exited: boolean; exitcode?: number; 'out-data'?: string; 'err-data'?: string };
    return s.exited ? s : false;
  }, opts.timeoutMs ?? 30_000);
  const text = (b64: string | undefined) => Buffer.from(b64 ?? '', 'base64').toString('utf8');
  return { exitcode: status.exitcode ?? -1, out: text(status['out-data']), err: text(status['err-data']) };
}

/** Starts a program in the guest and does not wait for it (an editor that stays open). */
export async function guestSpawn(socketPath: string, file: string, argv: string[]): Promise<number> {
  const { pid } = (await qga(socketPath, 'guest-exec', { path: file, arg: argv, 'capture-output': false })) as { pid: number };
  return pid;
}

/**
 * argv (for /usr/sbin/runuser) that runs `program` as the desktop's user inside its X session:
 * display :0 with the Xauthority LightDM wrote, and the user's D-Bus session bus.
 */
export function asDesktopUser(user: string, uid: number, program: string, args: string[]): string[] {
  return [
    '-u', user, '--', '/usr/bin/env', 'DISPLAY=:0', `XAUTHORITY=/home/${user}/.Xauthority`, `HOME=/home/${user}`,
    `XDG_RUNTIME_DIR=/run/user/${uid}`, `DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/${uid}/bus`, program, ...args,
  ];
}
