// Measurement 3: the bridge's own throughput ceiling. One fake VNC source
// (fake-vnc-source-main.ts, never rate-limited, listening on a Unix socket and
// on 127.0.0.1 TCP) is read over each path for a
// bounded window, paths interleaved, in the same run:
//   direct-unix — the reader connects to the source's Unix socket itself;
//   direct-tcp  — the reader connects to the source's plain TCP port on
//                 127.0.0.1 itself: the ceiling with no WebSocket framing and
//                 no relay, over the transport the relays' clients use;
//   bridge      — through our bridge, alone: bridge-harness-main.ts runs
//                 attachBridge (src/bridge/ws-bridge.ts) in its own small
//                 process behind a stand-in session manager (a HARNESS);
//   websockify  — through websockify (Debian package `websockify`) with
//                 --unix-target on the same source, its own process;
//   broker      — through the bridge inside the real broker process, on a real
//                 session whose VNC socket the benchmark has pointed at the
//                 source (pointRealSessionAtSource: guest paused over QMP,
//                 run-dir vnc.sock replaced by a symlink). Same code as
//                 `bridge`, but sharing the broker's heap and event loop.
// Each relay is read by two clients, each a fresh process (throughput-reader.ts):
//   the `ws` client reading binary messages, and a byte-counting client that
//   only does the upgrade and counts socket bytes without parsing frames
//   (headers are 2–10 bytes per ~64 KiB message, < 0.02 % of the count); the
//   `ws` client takes most of a core on a small host, the byte counter leaves
//   more to the relay and so comes nearer the relay's own ceiling.
// CPU use of reader, relay and source over the window (from /proc) shows which
// one is the bottleneck. Everything is on 127.0.0.1 or Unix sockets in temp dirs.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../test/helpers/env.js';
import type { Config } from '../src/config/schema.js';
import { QmpClient } from '../src/qemu/qmp-client.js';
import { vmPaths } from '../src/launcher/local.js';
import type { Cleanup } from './cleanup.js';
import { createSession, deleteSession, type CreatedSession } from './api.js';
import type { BrokerProcess } from './broker-process.js';
import { spawnTracked, waitForLine, type Tracked } from './processes.js';
import type { ReaderJob, ReaderKind, ReaderResult } from './throughput-reader.js';

export type Relay = 'bridge' | 'websockify' | 'broker';
export type RelayPath = 'direct-unix' | 'direct-tcp' | Relay | `${Relay}-raw`;

export const RELAY_PATHS: RelayPath[] = ['direct-unix', 'direct-tcp', 'bridge', 'websockify', 'broker', 'bridge-raw', 'websockify-raw', 'broker-raw'];

export interface ThroughputSample {
  path: RelayPath;
  round: number;
  bytes: number;
  seconds: number;
  /** 10^6 bytes per second. */
  mbPerS: number;
  /** WebSocket messages (direct paths, byte counter: socket reads) in the window, and their mean size. */
  messages: number;
  meanMessageKiB: number;
  /** CPU use over the window, in % of one core. */
  readerCpuPct: number;
  relayCpuPct: number | null;
  sourceCpuPct: number;
}

interface RelayEndpoint {
  wsUrl: string;
  pid: number;
  /** Count the relay's whole process group (websockify forks a process per connection). */
  group: boolean;
}

export interface ThroughputRig {
  sourcePath: string;
  /** The source's plain TCP listener on 127.0.0.1. */
  sourceTcpPort: number;
  source: Tracked;
  relays: Record<Relay, RelayEndpoint>;
  /** The real broker session whose VNC socket now leads to the source. */
  brokerSession: { id: string; token: string };
}

const TSX = ['--import', 'tsx'];

/** Starts the source, the bridge harness and websockify, and points one real broker session at the source. */
export async function startThroughputRig(cleanup: Cleanup, opts: { websockify: string; chunkKiB: number; broker: BrokerProcess; config: Config; machine: string }): Promise<ThroughputRig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-bench-tp-'));
  cleanup.add(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  const sourcePath = path.join(dir, 'source.sock');

  const source = spawnTracked(cleanup, 'fake VNC source', process.execPath, [...TSX, path.join(ROOT, 'bench', 'fake-vnc-source-main.ts'), sourcePath, String(opts.chunkKiB)], { cwd: ROOT });
  const sourceTcpPort = JSON.parse((await waitForLine(source, /^\{"ready":true,"tcpPort":\d+\}$/, 15000, 'the fake VNC source'))[0]).tcpPort as number;

  const harness = spawnTracked(cleanup, 'bridge harness', process.execPath, [...TSX, path.join(ROOT, 'bench', 'bridge-harness-main.ts'), sourcePath], { cwd: ROOT });
  const harnessUrl = JSON.parse((await waitForLine(harness, /^\{"wsUrl":.*\}$/, 15000, 'the bridge harness'))[0]).wsUrl as string;

  const { port, tracked: websockify } = await startWebsockify(cleanup, opts.websockify, sourcePath);

  const brokerSession = await pointRealSessionAtSource(cleanup, opts.broker, opts.config, opts.machine, sourcePath);
  return {
    sourcePath, sourceTcpPort, source, brokerSession: { id: brokerSession.id, token: brokerSession.token },
    relays: {
      bridge: { wsUrl: harnessUrl, pid: harness.pid, group: false },
      websockify: { wsUrl: `ws://127.0.0.1:${port}/`, pid: websockify.pid, group: true },
      broker: { wsUrl: brokerSession.wsUrl, pid: opts.broker.pid, group: false },
    },
  };
}

/**
 * BENCHMARK-ONLY surgery on a session of our own temp broker, so the real
 * broker's bridge can be measured against the unthrottled source: create a
 * session, pause its guest (QMP stop: no guest CPU during the measurements),
 * move QEMU's VNC socket aside and put a symlink to the source in its place.
 * The bridge connects to the socket path at each viewer connection, so new
 * viewers reach the source. DELETE stops the VM and removes the run dir as usual.
 */
async function pointRealSessionAtSource(cleanup: Cleanup, broker: BrokerProcess, config: Config, machine: string, sourcePath: string): Promise<CreatedSession> {
  const session = await createSession(broker.url, { machine, cpus: 1, memoryMiB: 128, lifetimeS: 3600, user: 'bench-throughput' });
  cleanup.add(`DELETE session ${session.id}`, () => deleteSession(broker.url, session.token));
  const paths = vmPaths(path.join(config.runDir, session.id));
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 5000 });
  try {
    await qmp.execute('stop');
  } finally {
    qmp.close();
  }
  fs.renameSync(paths.vncSocket, `${paths.vncSocket}.qemu`);
  fs.symlinkSync(sourcePath, paths.vncSocket);
  return session;
}

const READER_KIND: Record<RelayPath, ReaderKind> = {
  'direct-unix': 'unix', 'direct-tcp': 'tcp', bridge: 'ws', websockify: 'ws', broker: 'ws', 'bridge-raw': 'raw-ws', 'websockify-raw': 'raw-ws', 'broker-raw': 'raw-ws',
};

/** One bounded measurement of one path, by a fresh reader process (throughput-reader-main.ts). */
export async function measurePath(cleanup: Cleanup, rig: ThroughputRig, which: RelayPath, round: number, windowMs: number, warmUpMs = 300): Promise<ThroughputSample> {
  const relay = which === 'direct-unix' || which === 'direct-tcp' ? null : rig.relays[which.replace(/-raw$/, '') as Relay];
  const target = relay ? relay.wsUrl : which === 'direct-tcp' ? `tcp://127.0.0.1:${rig.sourceTcpPort}` : rig.sourcePath;
  const job: ReaderJob = {
    kind: READER_KIND[which], target, windowMs, warmUpMs,
    sourcePid: rig.source.pid, relay: relay ? { pid: relay.pid, group: relay.group } : null,
  };
  const reader = spawnTracked(cleanup, `throughput reader (${which})`, process.execPath, [...TSX, path.join(ROOT, 'bench', 'throughput-reader-main.ts'), JSON.stringify(job)], { cwd: ROOT });
  const line = await waitForLine(reader, /^\{"ok":.*\}$/, windowMs + warmUpMs + 30000, `the throughput reader (${which})`);
  await reader.exited;
  const answer = JSON.parse(line[0]) as { ok: true; result: ReaderResult } | { ok: false; error: string };
  if (!answer.ok) throw new Error(`throughput ${which}, round ${round}: ${answer.error}`);
  const r = answer.result;
  const pct = (cpuMs: number) => cpuMs / 10 / r.seconds;
  return {
    path: which, round, bytes: r.bytes, seconds: r.seconds, mbPerS: r.bytes / 1e6 / r.seconds,
    messages: r.messages, meanMessageKiB: r.bytes / 1024 / Math.max(1, r.messages),
    readerCpuPct: pct(r.readerCpuMs), relayCpuPct: r.relayCpuMs === null ? null : pct(r.relayCpuMs), sourceCpuPct: pct(r.sourceCpuMs),
  };
}

/** websockify on a free port of 127.0.0.1 in front of a Unix socket, listening when this resolves. */
export async function startWebsockify(cleanup: Cleanup, program: string, unixTarget: string): Promise<{ port: number; tracked: Tracked }> {
  const port = await freeLoopbackPort();
  // Own process group: websockify forks a process per connection; stop() signals them all.
  const tracked = spawnTracked(cleanup, 'websockify', program, [`127.0.0.1:${port}`, `--unix-target=${unixTarget}`], { group: true });
  await waitListening(tracked, port, 10000);
  return { port, tracked };
}

async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

async function waitListening(t: Tracked, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  // exited never rejects.
  void t.exited.then(() => {
    exited = true;
  });
  for (;;) {
    if (exited) throw new Error(`websockify (pid ${t.pid}) exited before listening on 127.0.0.1:${port}: ${t.stderr.slice(-10).join('\n')}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`websockify (pid ${t.pid}) not listening on 127.0.0.1:${port} within ${timeoutMs} ms: ${t.stderr.slice(-10).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
