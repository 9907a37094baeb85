// Child processes of the benchmark and what /proc says about processes: spawn
// with an argv array (never a shell), register a cleanup that signals the PID
// (or the process group the child leads) SIGTERM then SIGKILL, and wait until
// it is gone. Nothing here looks processes up by name.
import fs from 'node:fs';
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { Cleanup } from './cleanup.js';

export interface Tracked {
  child: ChildProcess;
  pid: number;
  /** Lines written to stdout / stderr so far (for readiness and error messages). */
  stdout: string[];
  stderr: string[];
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after graceMs; resolves once the process is gone. Twice is a no-op. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Spawns `file argv` and registers its stop with `cleanup`. With `group: true`
 * the child leads its own process group (so a terminal's Ctrl-C reaches only
 * the benchmark, which then stops things in order), and stop() signals the
 * whole group: the child and whatever it forked (websockify forks per connection).
 */
export function spawnTracked(cleanup: Cleanup, name: string, file: string, argv: string[], opts: SpawnOptions & { group?: boolean; onLine?: (stream: 'stdout' | 'stderr', line: string) => void } = {}): Tracked {
  const { group = false, onLine, ...spawnOpts } = opts;
  const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOpts, detached: group });
  if (child.pid === undefined) throw new Error(`${name}: cannot run ${file} ${argv.join(' ')}`);
  const pid = child.pid;
  const stdout: string[] = [];
  const stderr: string[] = [];
  for (const [stream, sink] of [['stdout', stdout], ['stderr', stderr]] as const) {
    let partial = '';
    child[stream]?.setEncoding('utf8');
    child[stream]?.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        sink.push(line);
        if (sink.length > 5000) sink.shift();
        onLine?.(stream, line);
      }
    });
  }
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
    child.once('error', () => {
      exitInfo ??= { code: null, signal: null };
      resolve(exitInfo);
    });
  });
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(group ? -pid : pid, sig);
    } catch (err) {
      // ESRCH: already gone, which is what we want.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  let stopping: Promise<void> | null = null;
  const stop = (graceMs = 3000) => {
    stopping ??= (async () => {
      if (!exitInfo) {
        signal('SIGTERM');
        const timer = new Promise((r) => setTimeout(r, graceMs, 'timeout'));
        if ((await Promise.race([exited, timer])) === 'timeout') {
          signal('SIGKILL');
          await exited;
        }
      }
      // The leader is gone; forked members of its group may still be exiting.
      if (group) await waitGroupGone(pid, graceMs);
    })();
    return stopping;
  };
  const unregister = cleanup.add(`stop ${name} (pid ${pid})`, () => stop());
  // exited never rejects.
  void exited.then(() => {
    if (!group) unregister();
  });
  return { child, pid, stdout, stderr, exited, stop };
}

/** Waits until no process is left in group `pgid`, SIGKILLing stragglers after graceMs. */
async function waitGroupGone(pgid: number, graceMs: number): Promise<void> {
  const deadline = Date.now() + graceMs;
  while (groupMembers(pgid).length) {
    if (Date.now() > deadline) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        // ESRCH: the group emptied in the meantime.
      }
      await new Promise((r) => setTimeout(r, 100));
      if (groupMembers(pgid).length) throw new Error(`process group ${pgid} survived SIGKILL`);
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Fields of /proc/<pid>/stat after the command name (index 0 = state). */
function statFields(pid: number): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Live (non-zombie) PIDs whose process group is `pgid`. */
export function groupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f && f[0] !== 'Z' && Number(f[2]) === pgid) pids.push(Number(entry));
  }
  return pids;
}

/** A size field of /proc/<pid>/status in KiB (VmRSS: resident now, VmHWM: peak resident), or null if the process is gone. */
export function readStatusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function readVmRssKiB(pid: number): number | null {
  return readStatusKiB(pid, 'VmRSS');
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU time (user + system, ms) used so far by the processes of group `pgid`. */
export function groupCpuMs(pgid: number): number {
  let ticks = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    // stat fields 14, 15 (utime, stime) are indexes 11, 12 after the name.
    if (f && Number(f[2]) === pgid) ticks += Number(f[11]) + Number(f[12]);
  }
  return (ticks * 1000) / CLOCK_TICKS;
}

/** CPU time (user + system, ms) used so far by one process. */
export function processCpuMs(pid: number): number {
  const f = statFields(pid);
  return f ? ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS : 0;
}

/** Open file descriptors of a process (entries of /proc/<pid>/fd), or null if it is gone or not ours to read. */
export function countFds(pid: number): number | null {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** Waits for a line matching `pattern` on a tracked child's stdout; fails if it exits first. */
export function waitForLine(t: Tracked, pattern: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      for (const line of t.stdout) {
        const m = pattern.exec(line);
        if (m) return finish(null, m);
      }
      return undefined;
    };
    const onData = () => setImmediate(check);
    const timer = setTimeout(() => finish(new Error(`${what}: no line matching ${pattern} within ${timeoutMs} ms; stderr: ${t.stderr.slice(-10).join('\n')}`)), timeoutMs);
    let done = false;
    const finish = (err: Error | null, m?: RegExpExecArray) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      t.child.stdout?.off('data', onData);
      if (err) reject(err);
      else resolve(m!);
    };
    t.child.stdout?.on('data', onData);
    void t.exited.then(({ code, signal }) => finish(new Error(`${what} exited (${signal ?? `code ${code}`}) before it was ready; stderr: ${t.stderr.slice(-10).join('\n')}`)));
    check();
  });
}
