// The broker under test as a separate process: `node bin/qwdctl -c <config>
// serve -p 0`, in its own process group, so its RSS is its own and a Ctrl-C
// on the benchmark does not reach it before the sessions are stopped.
// bin/qwdctl runs dist/ when it is built, else src/ through tsx; which one ran
// is reported. The broker's JSON log (stderr) is parsed for per-session phase
// timestamps. Cleanup, newest first: the benchmark DELETEs its sessions, then
// the broker gets SIGTERM, then a safety net stops whatever the state DB still
// lists (as `qwdctl sessions stop --all` would) and SIGKILLs, by PID, any
// process still running from the temp dir.
import fs from 'node:fs';
import path from 'node:path';
import { createServices } from '../src/main.js';
import { silentLogger } from '../src/log.js';
import { ROOT, pidsMentioning } from '../test/helpers/env.js';
import type { Cleanup } from './cleanup.js';
import type { BenchSetup } from './bench-setup.js';
import { spawnTracked, waitForLine, type Tracked } from './processes.js';

export interface SessionPhases {
  /** Broker clock (epoch ms) of its log lines for this session. */
  created?: number;
  spawned?: number;
  running?: number;
}

export interface BrokerProcess {
  pid: number;
  url: string;
  /** What bin/qwdctl ran, and whether dist/ is older than src/. */
  runs: string;
  phases: Map<string, SessionPhases>;
  tracked: Tracked;
  /** Log lines at warn level or above, for the report. */
  warnings: string[];
  /** The argv of the last qemu the broker spawned, and that session's id (from its log). */
  lastQemu: { sessionId: string; argv: string[] } | null;
}

export async function startBrokerProcess(cleanup: Cleanup, setup: BenchSetup): Promise<BrokerProcess> {
  cleanup.add('stop sessions left in the state DB', () => stopLeftovers(setup));
  const phases = new Map<string, SessionPhases>();
  const warnings: string[] = [];
  let lastQemu: BrokerProcess['lastQemu'] = null;
  const onLine = (stream: 'stdout' | 'stderr', line: string) => {
    if (stream !== 'stderr' || !line.startsWith('{')) return;
    let entry: { time?: number; msg?: string; sessionId?: string; level?: number; argv?: string[] };
    try {
      entry = JSON.parse(line);
    } catch {
      return; // Not a log line (a stack trace): kept in tracked.stderr for error messages.
    }
    if ((entry.level ?? 0) >= 40) warnings.push(line.slice(0, 400));
    if (!entry.sessionId || entry.time === undefined) return;
    const p = phases.get(entry.sessionId) ?? {};
    if (entry.msg === 'session created') p.created = entry.time;
    else if (entry.msg === 'qemu spawned') {
      p.spawned = entry.time;
      if (entry.argv) lastQemu = { sessionId: entry.sessionId, argv: entry.argv };
    }
    else if (entry.msg === 'session running') p.running = entry.time;
    phases.set(entry.sessionId, p);
  };
  const tracked = spawnTracked(cleanup, 'broker', process.execPath, [path.join(ROOT, 'bin', 'qwdctl'), '-c', setup.configFile, 'serve', '-p', '0'], { cwd: ROOT, group: true, onLine });
  const m = await waitForLine(tracked, /listening on (http:\/\/127\.0\.0\.1:\d+)/, 30000, 'the broker (bin/qwdctl serve)');
  return {
    pid: tracked.pid, url: m[1]!, runs: describeQwdctlTarget(), phases, tracked, warnings,
    get lastQemu() {
      return lastQemu;
    },
  };
}

/** What bin/qwdctl runs (see its source): dist/cli/main.js if present, else src through tsx. */
export function describeQwdctlTarget(): string {
  const compiled = path.join(ROOT, 'dist', 'cli', 'main.js');
  if (!fs.existsSync(compiled)) return 'src/ through tsx (no dist/)';
  const newest = (dir: string, ext: string): number => {
    let t = 0;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (entry.isFile() && entry.name.endsWith(ext)) t = Math.max(t, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
    }
    return t;
  };
  const stale = newest(path.join(ROOT, 'src'), '.ts') > newest(path.join(ROOT, 'dist'), '.js');
  return stale ? 'dist/ (compiled JS; note: some src/ files are newer than dist/ — run npm run build)' : 'dist/ (compiled JS, up to date with src/)';
}

/**
 * The safety net after the broker is gone: stop every session its state DB
 * still lists through the session manager (QMP quit → SIGTERM → SIGKILL, then
 * cleanup), then SIGKILL by PID anything still running from our temp dir.
 */
async function stopLeftovers(setup: BenchSetup): Promise<void> {
  if (!fs.existsSync(path.join(setup.config.stateDir))) return;
  const services = await createServices(setup.config, silentLogger());
  const problems: string[] = [];
  try {
    for (const row of services.rows.all()) {
      try {
        await services.manager.stop(row.id, 'benchmark cleanup');
        problems.push(`session ${row.id} was still running at the end and was stopped by the safety net`);
      } catch (err) {
        problems.push(`session ${row.id}: ${(err as Error).message}`);
      }
    }
  } finally {
    services.load.stop();
    services.db.close();
  }
  for (const pid of pidsMentioning(setup.dir)) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
      problems.push(`pid ${pid} (running from ${setup.dir}) was still alive and got SIGKILL`);
    } catch {
      // ESRCH: it ended between the scan and the signal.
    }
  }
  if (problems.length) throw new Error(problems.join('; '));
}
