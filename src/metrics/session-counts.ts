// Sessions counted for a scrape in one SQL query (GROUP BY state, machine),
// and what they reserve as admission counts it (admission/policy.ts
// reservedBy): every live session counts toward the service's limits, queued
// ones too; only those that run or may run on this host (starting, running,
// stopping) hold its CPUs, memory and GPUs. Reads only; a prepared statement
// over the store's connection (the broker's own, in this process).
import type { Db } from '../store/db.js';
import type { SessionState } from '../store/session-rows.js';

export interface SessionGroup {
  state: SessionState;
  machine: string;
  sessions: number;
  cpus: number;
  memoryMiB: number;
  gpus: number;
}

export interface SessionCounts {
  groups: SessionGroup[];
  reserved: { sessions: number; cpus: number; memoryMiB: number; gpus: number };
}

const LIVE: ReadonlySet<string> = new Set(['starting', 'queued', 'running', 'stopping']);

/** A counter over the store: each call is one query (an index-free scan of the sessions table, which stays small). */
export function sessionCounter(db: Db): () => SessionCounts {
  const statement = db.prepare(
    'SELECT state, machine, COUNT(*) AS sessions, SUM(cpus) AS cpus, SUM(memory_mib) AS memoryMiB, ' +
      'SUM(gpus) AS gpus FROM sessions GROUP BY state, machine',
  );
  return () => {
    const groups = statement.all() as SessionGroup[];
    return { groups, reserved: reservedOf(groups) };
  };
}

/** Pure: the groups' reservations, as reservedBy counts them row by row. */
export function reservedOf(groups: readonly SessionGroup[]): SessionCounts['reserved'] {
  const reserved = { sessions: 0, cpus: 0, memoryMiB: 0, gpus: 0 };
  for (const g of groups) {
    if (!LIVE.has(g.state)) continue;
    reserved.sessions += g.sessions;
    if (g.state === 'queued') continue;
    reserved.cpus += g.cpus;
    reserved.memoryMiB += g.memoryMiB;
    reserved.gpus += g.gpus;
  }
  return reserved;
}
