// Ships audit rows from the store to the configured sinks (sinks.ts). The
// store is the trail; a sink is a copy. Each sink has a mark in the store
// (audit_sinks: the last row id it received), so a sink that fails (a full
// disk, an unwritable file, a collector's host that does not resolve) gets
// the rows it missed when it works again, including rows written while no
// broker ran (qwdctl on the store) or before a crash. A new sink starts at
// the newest row: history is not replayed into it.
// The shipper is woken by each audit write (SessionRows.audited) and reads
// the rows after the mark once the writer's transaction is over (setImmediate:
// a row rolled back is never shipped). Failures are logged at most once a
// minute per sink; they never reach the writer of the row.
import type Database from 'better-sqlite3';
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import type { AuditSink } from './sinks.js';
import { toEntry, type RawEvent } from './query.js';

export const SHIP_BATCH = 500;
/** A failing sink is tried again this often (and at every new row). */
export const RETRY_MS = 10_000;
/** At most one log line per failing sink per this long. */
export const FAILURE_LOG_MS = 60_000;

interface SinkState {
  sink: AuditSink;
  lastId: number;
  failingSince: number | null;
  lastLogged: number;
  suppressed: number;
}

export class AuditShipper {
  private readonly states: SinkState[];
  private scheduled = false;
  private running: Promise<void> | null = null;
  private again = false;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  private nextStatement: Database.Statement | null = null;
  private saveStatement: Database.Statement | null = null;

  constructor(private readonly db: Db, sinks: readonly AuditSink[], private readonly log: Logger) {
    const newest = (db.prepare('SELECT COALESCE(MAX(id), 0) AS id FROM events').get() as { id: number }).id;
    const mark = db.prepare('SELECT last_id FROM audit_sinks WHERE name = ?');
    const start = db.prepare('INSERT OR IGNORE INTO audit_sinks (name, last_id) VALUES (?, ?)');
    this.states = sinks.map((sink) => {
      const found = mark.get(sink.name) as { last_id: number } | undefined;
      if (!found) start.run(sink.name, newest);
      return { sink, lastId: found?.last_id ?? newest, failingSince: null, lastLogged: 0, suppressed: 0 };
    });
  }

  get active(): boolean {
    return this.states.length > 0;
  }

  /** New rows may be there: ship them soon (after the current transaction; many wakes make one pass). */
  wake(): void {
    if (this.closed || this.scheduled || !this.active) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      // run() reports a sink's failure itself; what rejects here is the store (closed under us, full): logged.
      if (this.closed) return;
      this.run().catch((err) => this.log.error({ err }, 'audit rows could not be read for the sinks'));
    });
  }

  /** Ships everything after each sink's mark; resolves when done (or when a sink failed: it is retried later). */
  run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        for (const state of this.states) await this.drain(state);
      } while (this.again && !this.closed);
    })().finally(() => { this.running = null; });
    return this.running;
  }

  private async drain(state: SinkState): Promise<void> {
    // Prepared once, on first use (a drain runs at every audit write's wake).
    const next = this.nextStatement ??= this.db.prepare(
      'SELECT id, at, session_id, kind, detail, actor, owner FROM events WHERE id > ? ORDER BY id LIMIT ?',
    );
    const save = this.saveStatement ??= this.db.prepare('UPDATE audit_sinks SET last_id = ? WHERE name = ?');
    while (!this.closed) {
      const rows = next.all(state.lastId, SHIP_BATCH) as RawEvent[];
      if (rows.length === 0) return;
      try {
        await state.sink.ship(rows.map(toEntry));
      } catch (err) {
        this.failed(state, err as Error);
        return;
      }
      state.lastId = rows[rows.length - 1]!.id;
      save.run(state.lastId, state.sink.name);
      if (state.failingSince !== null) {
        this.log.info(
          { sink: state.sink.name, failedForMs: Date.now() - state.failingSince }, 'audit sink works again',
        );
        state.failingSince = null;
      }
    }
  }

  private failed(state: SinkState, err: Error): void {
    const now = Date.now();
    state.failingSince ??= now;
    if (now - state.lastLogged >= FAILURE_LOG_MS) {
      this.log.error(
        { sink: state.sink.name, err: err.message, code: (err as NodeJS.ErrnoException).code,
          suppressed: state.suppressed },
        'audit sink failed; its rows stay in the store and are sent when it works again',
      );
      state.lastLogged = now;
      state.suppressed = 0;
    } else {
      state.suppressed++;
    }
    if (!this.retry && !this.closed) {
      this.retry = setTimeout(() => {
        this.retry = null;
        this.wake();
      }, RETRY_MS);
      this.retry.unref();
    }
  }

  /** Ships what is pending (best effort) and closes the sinks. Twice is a no-op. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.retry) clearTimeout(this.retry);
    await this.run().catch(() => {}); // failures were logged by failed()
    this.closed = true;
    for (const state of this.states) state.sink.close();
  }
}
