// Real test peers as processes: loopback ports (free ones to listen on, a closed
// one to find nobody), a self-signed certificate, a foreground server spawned
// from an argv array, waited for until ready (new ports when the picked ones
// were taken meanwhile), and stopped by the PID we spawned (SIGTERM, then
// SIGKILL), plus the /proc reads that check those PIDs are gone. Used by
// slapd.ts and dovecot.ts, which know what their server needs; this module
// knows nothing about LDAP or mail. It owns one piece of state: the set of
// children still alive, killed by PID if a test worker exits before its
// teardown. It never signals a process by name.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { waitFor } from './env.js';

const execFileAsync = promisify(execFile);

const RUN_TIMEOUT_MS = 30000;
const KILL_WAIT_MS = 5000;
const STDERR_TAIL_CHARS = 4000;
const PORT_ATTEMPTS = 3;

// ---- Ports ----

/** Free loopback ports, all distinct: bound to port 0 together, read, then closed. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, () => new Promise<net.Server>((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/** A loopback port where nothing listens (picked free, then closed): a server that is down. */
export async function closedPort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

// ---- Programs and certificates ----

/** Runs a program to completion (argv array, no shell) and returns its stdout; the error carries its stderr. */
export async function runProgram(file: string, args: string[]): Promise<string> {
  try {
    return (await execFileAsync(file, args, { encoding: 'utf8', timeout: RUN_TIMEOUT_MS })).stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

/** A self-signed EC certificate for 127.0.0.1 and localhost in `dir`; the cert is also the CA file clients trust. */
export async function writeSelfSignedCert(dir: string): Promise<{ certFile: string; keyFile: string }> {
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  await runProgram('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyFile, '-out', certFile]);
  return { certFile, keyFile };
}

// ---- Spawn, ready, stop by PID ----

export interface PeerProcess {
  pid: number;
  /** True once the process has exited. */
  exited(): boolean;
  /** "code 1" or "signal SIGKILL". */
  exitReason(): string;
  stderrTail(): string;
  /** SIGTERM, SIGKILL after the grace; resolves once the process has exited. Twice is a no-op. */
  stop(): Promise<void>;
}

// If a test worker dies before its teardown runs, kill what it started — by
// PID — so nothing outlives the test run.
const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/** Spawns a foreground server (argv array, no shell) whose stop is registered in teardown at once. */
export async function spawnPeer(t: ExecutionContext, file: string, args: string[], opts: { termGraceMs: number; env?: Record<string, string> }): Promise<PeerProcess> {
  const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env: opts.env ? { ...process.env, ...opts.env } : process.env });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-STDERR_TAIL_CHARS)));
  let done = false;
  let spawnError: Error | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      if (child.pid === undefined) resolve(); // It never started: no 'exit' will follow.
    });
    child.once('exit', () => resolve());
  }).then(() => {
    done = true;
    liveChildren.delete(child);
  });
  if (child.pid === undefined) {
    await exit;
    throw new Error(`${file} did not start: ${spawnError?.message ?? 'no PID'}`);
  }
  liveChildren.add(child);
  let stopping: Promise<void> | undefined;
  const peer: PeerProcess = {
    pid: child.pid,
    exited: () => done,
    exitReason: () => (child.signalCode ? `signal ${child.signalCode}` : `code ${child.exitCode}`),
    stderrTail: () => stderr.trim() || '(no stderr)',
    stop: () => (stopping ??= (async () => {
      if (done) return;
      child.kill('SIGTERM');
      if (await within(exit, opts.termGraceMs)) return;
      child.kill('SIGKILL');
      if (!(await within(exit, KILL_WAIT_MS))) throw new Error(`${file} (PID ${child.pid}) did not exit after SIGTERM and SIGKILL`);
    })()),
  };
  t.teardown(() => peer.stop());
  return peer;
}

export interface PeerStart {
  file: string;
  portCount: number;
  /** The argv for these ports; may write a config file that names them. */
  argsFor(ports: number[]): string[];
  /** Ends "waiting for …" in the timeout message, e.g. 'slapd to accept a bind'. */
  readyWhat: string;
  /** One readiness probe: true once the server answers as it should. */
  isReady(ports: number[]): Promise<boolean>;
  readyTimeoutMs: number;
  termGraceMs: number;
  /** More to say when startup fails (e.g. the server's log), appended to the error. */
  failureDetail?(): string;
}

/**
 * Spawns `file` on fresh free loopback ports and waits until it is ready. The
 * ports are free when picked but could be taken before the server binds them:
 * then it exits with "Address already in use" and we try new ports, up to
 * PORT_ATTEMPTS times. Each spawned process is stopped in teardown.
 */
export async function startPeerOnFreePorts(t: ExecutionContext, start: PeerStart): Promise<{ peer: PeerProcess; ports: number[] }> {
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(start.portCount);
    const peer = await spawnPeer(t, start.file, start.argsFor(ports), { termGraceMs: start.termGraceMs });
    try {
      await waitFor(start.readyWhat, async () => {
        if (peer.exited()) throw new Error(`${start.file} exited during startup (${peer.exitReason()}): ${peer.stderrTail()}`);
        return start.isReady(ports);
      }, start.readyTimeoutMs);
    } catch (err) {
      if (peer.exited() && attempt < PORT_ATTEMPTS && /Address already in use/.test(peer.stderrTail())) continue;
      if (!start.failureDetail) throw err;
      throw new Error(`${(err as Error).message}\n${start.failureDetail()}`, { cause: err });
    }
    return { peer, ports };
  }
}

async function within(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- /proc (proc(5): /proc/PID/stat) ----

/** The state letter and parent PID from /proc/PID/stat; the command name may hold spaces and ')', so read after the last ')'. */
function readStat(pid: number | string): { state: string; parentPid: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const [state, parentPid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: state!, parentPid: Number(parentPid) };
}

/** True while a process with this PID exists and is not a zombie. */
export function isRunning(pid: number): boolean {
  try {
    return readStat(pid).state !== 'Z';
  } catch {
    return false;
  }
}

/** Every live descendant of `pid` (read from /proc; nothing is signalled). */
export function descendantsOf(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      parentOf.set(Number(entry), readStat(entry).parentPid);
    } catch {
      // The process ended while we looked.
    }
  }
  const found: number[] = [];
  let frontier = [pid];
  while (frontier.length > 0) {
    const next = [...parentOf].filter(([, parent]) => frontier.includes(parent)).map(([child]) => child);
    found.push(...next);
    frontier = next;
  }
  return found.filter(isRunning);
}

/**
 * Waits for the former children of a stopped process (PIDs noted from
 * descendantsOf before the stop); SIGKILLs any still running after
 * KILL_WAIT_MS and then fails, naming them as `what` (e.g. 'dovecot children').
 */
export async function waitForChildrenExit(pids: number[], what: string): Promise<void> {
  const deadline = Date.now() + KILL_WAIT_MS;
  while (pids.some(isRunning) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const left = pids.filter(isRunning);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // It exited between the check and the kill: that is what we wanted.
    }
  }
  if (left.length > 0) throw new Error(`${what} ${left.join(', ')} outlived their parent and were killed`);
}

/**
 * A run of `count` consecutive TCP ports in [low, high) that nothing listens on now on 127.0.0.1 (a VNC port range
 * for Slurm nodes, below the kernel's ephemeral range).
 */
export async function freePortRange(low: number, high: number, count: number): Promise<number> {
  const free = (port: number) => new Promise<boolean>((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = low + Math.floor(Math.random() * (high - low - count));
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = await free(p);
    if (ok) return base;
  }
  throw new Error(`no ${count} free consecutive ports in ${low}-${high}`);
}
