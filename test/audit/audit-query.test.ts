// queryAudit on a real store (openDb: the real migrations and indexes): a
// --since query uses the events_at index for its range and its order (EXPLAIN
// QUERY PLAN, and timed against the whole-table walk it replaced), --limit is
// capped, and --before-id pages through everything once, in the trail's order.
import test from 'ava';
import { makeSetup } from '../helpers/env.js';
import { openDb, type Db } from '../../src/store/db.js';
import { SessionRows } from '../../src/store/session-rows.js';
import { queryAudit, MAX_LIMIT } from '../../src/audit/query.js';
import { QwdError } from '../../src/errors.js';

const T0 = Date.UTC(2026, 0, 1);

function seeded(t: Parameters<typeof makeSetup>[0], count: number): Db {
  const db = openDb(makeSetup(t).stateDir);
  t.teardown(() => db.close());
  const rows = new SessionRows(db);
  db.transaction(() => {
    for (let i = 0; i < count; i++) rows.audit(`s${i % 50}`, 'viewer-joined', { i }, T0 + i * 1000, { actor: 'ada' });
  })();
  return db;
}

const plan = (db: Db, sql: string, params: Record<string, unknown>) =>
  (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as Array<{ detail: string }>).map((r) => r.detail).join('; ');

test('a --since query searches the events_at index (range and order), not the whole table', (t) => {
  const db = seeded(t, 200_000);
  db.exec('ANALYZE');
  const where = 'SELECT id, at, session_id, kind, detail, actor, owner FROM events WHERE at >= @since';
  const since = T0 + 199_000 * 1000;
  t.regex(plan(db, `${where} ORDER BY at DESC, id DESC LIMIT @limit`, { since, limit: 1000 }),
    /SEARCH events USING INDEX events_at \(at>\?\)/);
  t.notRegex(plan(db, `${where} ORDER BY at DESC, id DESC LIMIT @limit`, { since, limit: 1000 }), /TEMP B-TREE/);
  // The order it replaced, timed on the same rows: fewer rows in the range (500) than the limit (1,000), so
  // walking by id cannot stop at the range's edge and reads the whole table.
  const time = (f: () => unknown) => {
    const start = process.hrtime.bigint();
    for (let i = 0; i < 5; i++) f();
    return Number(process.hrtime.bigint() - start) / 5e6;
  };
  const recent = T0 + 199_500 * 1000;
  t.regex(plan(db, `${where} ORDER BY id DESC LIMIT @limit`, { since: recent, limit: 1000 }), /SCAN events/);
  const old = db.prepare(`${where} ORDER BY id DESC LIMIT @limit`);
  const oldMs = time(() => old.all({ since: recent, limit: 1000 }));
  const newMs = time(() => queryAudit(db, { since: recent, limit: 1000 }));
  t.log(`--since, 500 of 200,000 rows in range, limit 1000: ${newMs.toFixed(2)} ms now, ` +
    `${oldMs.toFixed(2)} ms with ORDER BY id DESC`);
  t.is(queryAudit(db, { since: recent, limit: 1000 }).length, 500);
  t.true(newMs < oldMs, `${newMs} ms vs ${oldMs} ms`);
});

test('--before-id pages through every row once, oldest first within a page; a missing cursor is a clear error', (t) => {
  const db = seeded(t, 2_345);
  const seen: number[] = [];
  let beforeId: number | undefined;
  for (;;) {
    const page = queryAudit(db, { limit: 1000, ...(beforeId === undefined ? {} : { beforeId }) });
    if (page.length === 0) break;
    t.deepEqual(page.map((e) => e.id), [...page.map((e) => e.id)].sort((a, b) => a - b), 'oldest first');
    seen.unshift(...page.map((e) => e.id));
    beforeId = page[0]!.id;
  }
  t.is(seen.length, 2_345);
  t.is(new Set(seen).size, 2_345);
  t.deepEqual(queryAudit(db, { limit: 3, beforeId: 4 }).map((e) => e.id), [1, 2, 3]);
  const err = t.throws(() => queryAudit(db, { beforeId: 999_999 }), { instanceOf: QwdError });
  t.regex(err!.userMessage, /--before-id 999999: no audit row has this id/);
  t.throws(() => queryAudit(db, { beforeId: 1.5 }), { message: /--before-id must be a row id/ });
});

test(`--limit is capped at ${MAX_LIMIT} (the query runs on the broker's event loop)`, (t) => {
  const db = seeded(t, 10);
  t.is(MAX_LIMIT, 10_000);
  t.throws(() => queryAudit(db, { limit: MAX_LIMIT + 1 }), { message: /--limit must be a whole number from 1 to 10000/ });
  t.is(queryAudit(db, { limit: MAX_LIMIT }).length, 10);
});
