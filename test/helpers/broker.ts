// Starts a real broker (HTTP + bridge + purge) in-process for a test, on a
// loopback port chosen by the kernel, and stops it — and every VM it started —
// in teardown.
import type { ExecutionContext } from 'ava';
import { startBroker, type Broker } from '../../src/main.js';
import fs from 'node:fs';
import { Writable } from 'node:stream';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createLogger } from '../../src/log.js';
import type { Config } from '../../src/config/schema.js';
import type { LocalHandle } from '../../src/launcher/local.js';
import type { LauncherName } from '../../src/launcher/registry.js';
import Database from 'better-sqlite3';
import { isOurProcess, readProcStat, signalGroup } from '../../src/qemu/process.js';
import type { Clock } from '../../src/clock.js';

// VMs are their own process groups and outlive their parent on purpose. If a
// test worker dies before its teardown (an uncaught exception, a timeout), kill
// the VMs its brokers started — by PID, checked against the store's start time
// and process name — so nothing leaks. The store is read again from its state
// dir: a broker the test closed itself (to restart it) has closed its handle.
const stateDirs = new Set<string>();
process.once('exit', () => {
  for (const stateDir of stateDirs) {
    try {
      const db = new Database(path.join(stateDir, 'qwd.sqlite'), { readonly: true, fileMustExist: true });
      try {
        for (const { handle } of db.prepare('SELECT handle FROM sessions WHERE handle IS NOT NULL').all() as Array<{ handle: string }>) {
          killLocalVm(JSON.parse(handle) as LocalHandle);
        }
      } finally {
        db.close();
      }
    } catch {
      // No store (the test's temp dir is gone with its teardown): nothing of it can be running.
    }
  }
});

/**
 * The broker's log. With QWD_TEST_LOG_DIR, each broker writes its whole JSON log
 * there (one file per test) for a post-mortem. Otherwise its warnings and errors
 * are kept in memory (the last 30) and shown with the test's own output when the
 * test fails, so a failure in CI says what the broker saw.
 */
function testLogger(t: ExecutionContext) {
  const dir = process.env.QWD_TEST_LOG_DIR;
  if (dir) {
    fs.mkdirSync(dir, { recursive: true });
    const name = `${t.title.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 80)}-${process.pid}-${Date.now()}.log`;
    return createLogger('debug', fs.createWriteStream(path.join(dir, name)));
  }
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(line.length > 2000 ? `${line.slice(0, 2000)}…` : line);
      lines.splice(0, Math.max(0, lines.length - 30));
      done();
    },
  });
  t.teardown(() => {
    if (!t.passed) for (const line of lines) t.log(`broker: ${line}`);
  });
  return createLogger('warn', sink);
}

export async function startTestBroker(
  t: ExecutionContext, config: Config,
  opts: { keepVms?: boolean; now?: () => number; clock?: Clock; writerLockWaitMs?: number; launcher?: LauncherName } = {},
): Promise<Broker> {
  const broker = await startBroker(config, testLogger(t), {
    now: opts.now, clock: opts.clock, writerLockWaitMs: opts.writerLockWaitMs, launcher: opts.launcher,
  });
  stateDirs.add(config.stateDir);
  t.teardown(async () => {
    if (!opts.keepVms) await stopAllVms(broker);
    await broker.close();
  });
  return broker;
}

/** Stops every session the broker knows (by the manager, so cleanup runs). */
export async function stopAllVms(broker: Broker): Promise<void> {
  const { manager, rows, db } = broker.services;
  // A broker the test closed itself handed its VMs on (to a second broker, which stops them).
  if (!db.open) return;
  for (const row of rows.all()) {
    try {
      await manager.stop(row.id, 'test teardown');
    } catch {
      // Last resort for a test that broke the store on purpose: kill our own PID.
      killLocalVm(row.handle as LocalHandle | null);
    }
  }
}

/** The QEMU PID of a session the local launcher runs; any other handle (or none) fails the test that expected one. */
export function localPid(handle: unknown): number {
  const isLocal = typeof handle === 'object' && handle !== null && 'kind' in handle && handle.kind === 'local';
  if (!isLocal || !('pid' in handle) || typeof handle.pid !== 'number') {
    throw new Error(`expected a local VM handle, got ${JSON.stringify(handle)}`);
  }
  return handle.pid;
}

/** A local VM is our own process group (if that PID is still our qemu); Slurm jobs are ended by the test's Slurm going away. */
function killLocalVm(handle: LocalHandle | null): void {
  if (handle?.kind !== 'local') return;
  if (isOurProcess(handle.pid, handle.startTime, handle.processName)) signalGroup(handle.pid, 'SIGKILL');
  // Its network namespace and pasta (launcher/guest-netns.ts): pasta by its recorded pid and start time.
  try {
    const [pid, startTime] = fs.readFileSync(path.join(handle.runDir, 'pasta.pid'), 'utf8').trim().split(' ');
    if (startTime && isOurPasta(Number(pid), startTime)) process.kill(Number(pid), 'SIGKILL');
  } catch {
    // No pasta was started (no network, or the run dir is gone): nothing to end.
  }
  const netns = `qwdnet-${path.basename(handle.runDir)}`;
  const bound = path.join(`/run/user/${process.getuid?.() ?? 0}/netns`, netns);
  if (fs.existsSync(bound)) {
    spawnSync('umount', ['--lazy', bound]);
    fs.rmSync(bound, { force: true });
  }
}

function isOurPasta(pid: number, startTime: string): boolean {
  const stat = readProcStat(pid);
  return stat !== null && stat.startTime === startTime && /pasta|passt/.test(fs.readFileSync(`/proc/${pid}/comm`, 'utf8'));
}

/**
 * A JSON body from the API under test. Deliberately `any`: each test reads the
 * fields it asserts on, and the assertions check their values at run time.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
export type ApiJson = any;

export async function api(broker: Broker, method: string, path: string, body?: unknown): Promise<{ status: number; json: ApiJson; text: string }> {
  const res = await fetch(broker.url + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: 'manual',
  });
  const text = await res.text();
  let json: ApiJson = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON (an HTML page or an empty 204): callers look at text.
  }
  return { status: res.status, json, text };
}
