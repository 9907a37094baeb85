// What a viewer's connect and disconnect cost the broker's event loop in SQLite
// (npm run bench:store): the bridge reports each viewer count to the presence
// service, which writes it to the session's row (SessionRows.setViewers), a
// synchronous better-sqlite3 commit on the event loop. This opens the real
// store (openDb: WAL, the product's pragmas and migrations) in a fresh state
// dir, inserts --sessions running rows, then times --writes viewer-count
// writes spread over those rows, connect and disconnect alternating, as one
// commit each, after a warm-up pass not counted — under the synchronous level openDb sets (NORMAL) and, for comparison,
// under FULL and NORMAL. Prints a Markdown table for BENCHMARKS.md with the
// machine, the file system and the load.
//   node --import tsx bench/store-writes.ts [--dir D] [--sessions N] [--writes N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { openDb, type Db } from '../src/store/db.js';
import { SessionRows, type SessionRow } from '../src/store/session-rows.js';
import { percentile } from './stats.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: os.tmpdir() },
    sessions: { type: 'string', default: '100' },
    writes: { type: 'string', default: '4000' },
  },
});
const sessions = Number(values.sessions);
const writes = Number(values.writes);
if (!Number.isInteger(sessions) || sessions < 1 || !Number.isInteger(writes) || writes < 100) {
  console.error('usage: npm run bench:store [-- --dir D] [--sessions N ≥ 1] [--writes N ≥ 100]');
  process.exit(2);
}

type Level = 'as opened' | 'FULL' | 'NORMAL';
const SYNCHRONOUS = ['OFF', 'NORMAL', 'FULL', 'EXTRA'];

function row(i: number, now: number): SessionRow {
  const id = i.toString(16).padStart(12, '0');
  return {
    id, token: `t${id}`, tokenHash: `h${id}`, viewToken: `v${id}`, viewTokenHash: `w${id}`, owner: `user${i}`,
    machine: 'blank', cpus: 1, memoryMiB: 64, createdAt: now, expiresAt: now + 3_600_000, state: 'running',
    handle: { pid: 1000 + i }, runDir: `/nonexistent/${id}`, updatedAt: now, viewers: 0, oneShot: false, email: null,
    warnedBeforeS: null, gpus: 0, idleSince: now, balloonTargetMiB: null, hadViewer: false,
  };
}

interface Result { level: Level; synchronous: string; ms: number[]; totalMs: number }

function measure(level: Level): Result {
  const stateDir = fs.mkdtempSync(path.join(values.dir!, 'qwd-store-bench-'));
  let db: Db | null = null;
  try {
    db = openDb(stateDir);
    if (level !== 'as opened') db.pragma(`synchronous = ${level}`);
    const synchronous = SYNCHRONOUS[db.pragma('synchronous', { simple: true }) as number] ?? '?';
    const rows = new SessionRows(db);
    const now = Date.now();
    for (let i = 0; i < sessions; i++) rows.insert(row(i, now));
    const ids = rows.all().map((r) => r.id);
    const counts = new Map(ids.map((id) => [id, 0]));
    const ms: number[] = [];
    const began = performance.now();
    for (let n = 0; n < writes; n++) {
      const id = ids[n % ids.length]!;
      // A viewer joins on the first pass over the rows, leaves on the next: counts stay 0 or 1.
      const viewers = counts.get(id) === 0 ? 1 : 0;
      const t0 = performance.now();
      rows.setViewers(id, viewers, now + n);
      ms.push(performance.now() - t0);
      counts.set(id, viewers);
    }
    return { level, synchronous, ms, totalMs: performance.now() - began };
  } finally {
    db?.close();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

function fsType(dir: string): string {
  try {
    return execFileSync('df', ['--output=fstype,source', dir], { encoding: 'utf8' }).trim().split('\n')[1]!.trim();
  } catch {
    return 'unknown';
  }
}

const fmt = (ms: number) => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`);
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(', ');
const loadBefore = load();
measure('NORMAL'); // warm-up, not counted: the first pass pays for compiling the code paths
const results = (['as opened', 'FULL', 'NORMAL'] as const).map(measure);
console.log(`store writes: ${new Date().toISOString()}, ${os.cpus()[0]?.model ?? 'CPU'} × ${os.availableParallelism()}, ` +
  `Node ${process.version}, file system ${fsType(values.dir!)}, load ${loadBefore} before, ${load()} after; ` +
  `${sessions} session rows, ${writes} viewer-count writes (one commit each)\n`);
console.log('| synchronous | per write p50 | p99 | max | writes per second (one after the other) |');
console.log('|---|---|---|---|---|');
for (const r of results) {
  const label = r.level === 'as opened' ? `as openDb leaves it (${r.synchronous})` : r.synchronous;
  const sorted = [...r.ms].sort((a, b) => a - b);
  console.log(`| ${label} | ${fmt(percentile(sorted, 50))} | ${fmt(percentile(sorted, 99))} | ` +
    `${fmt(sorted[sorted.length - 1]!)} | ${Math.round(writes / (r.totalMs / 1000))} |`);
}
