// Facts about processes from /proc: is this PID alive, not a zombie, and
// really the qemu we started (its -name and its start time match)? This is how
// a restarted broker adopts VMs without ever signalling a recycled PID.
import fs from 'node:fs';

export interface ProcStat {
  state: string;
  startTime: string;
}

export function readProcStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Fields after the parenthesised comm (which may itself contain spaces or ")").
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0] ?? '?', startTime: rest[19] ?? '' };
}

export function readCmdline(pid: number): string[] | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s !== '');
  } catch {
    return null;
  }
}

/** Alive and not a zombie. */
export function isRunning(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== null && stat.state !== 'Z' && stat.state !== 'X';
}

/** The PID is alive, started at `startTime`, and carries our `-name`. */
export function isOurProcess(pid: number, startTime: string, processName: string): boolean {
  const stat = readProcStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X' || stat.startTime !== startTime) return false;
  const argv = readCmdline(pid);
  if (!argv) return false;
  const i = argv.indexOf('-name');
  return i >= 0 && (argv[i + 1] ?? '').split(',')[0] === processName;
}

/**
 * The PID is alive and carries our `-name` (no start time to compare: for a
 * QEMU found by the pidfile in its run dir, whose broker died before it could
 * record a handle; the name holds the random session id).
 */
export function isNamedProcess(pid: number, processName: string): boolean {
  if (!isRunning(pid)) return false;
  const argv = readCmdline(pid);
  const i = argv?.indexOf('-name') ?? -1;
  return i >= 0 && (argv![i + 1] ?? '').split(',')[0] === processName;
}

export function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    try {
      process.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}
