// The "read as UTC" rule of qwdctl audit --since/--until under a zone that is
// not UTC: this file sets TZ in its own worker process (ava: workerThreads
// false), before any test runs (the imports make no Date when loaded; the first
// test checks the zone took effect), so a zone-less ISO time that were
// read as local time would be an hour off (Berlin: UTC+1 in December, UTC+2 in
// July). The rest of the suite runs in whatever zone the machine has.
process.env.TZ = 'Europe/Berlin';

import test from 'ava';
import { parseAuditTime, auditFilter } from '../../src/cli/commands/audit.js';

const NOW = Date.UTC(2026, 11, 5, 12, 0, 0);

test('the worker really is in Europe/Berlin (else this file proves nothing)', (t) => {
  t.is(new Date(Date.UTC(2026, 11, 1, 8)).getHours(), 9, 'UTC+1 in December');
  t.is(new Date(Date.UTC(2026, 6, 1, 8)).getHours(), 10, 'UTC+2 in July');
  t.is(Intl.DateTimeFormat().resolvedOptions().timeZone, 'Europe/Berlin');
});

for (const [text, expected] of [
  ['2026-12-01', Date.UTC(2026, 11, 1)],
  ['2026-12-01T08:00', Date.UTC(2026, 11, 1, 8)],
  ['2026-12-01 08:00:30', Date.UTC(2026, 11, 1, 8, 0, 30)],
  ['2026-07-01T08:00', Date.UTC(2026, 6, 1, 8)],
  ['2026-03-29T02:30', Date.UTC(2026, 2, 29, 2, 30)], // does not exist in Berlin (clocks jump 02:00 → 03:00): in UTC it does
  ['2026-10-25T02:30', Date.UTC(2026, 9, 25, 2, 30)], // twice in Berlin, once in UTC
  ['2026-12-01T08:00:00+02:00', Date.UTC(2026, 11, 1, 6)],
  ['2026-12-01T08:00Z', Date.UTC(2026, 11, 1, 8)],
] as const) {
  test(`under TZ=Europe/Berlin, --since ${text} is ${new Date(expected).toISOString()}`, (t) => {
    t.is(parseAuditTime('--since', text, NOW), expected);
  });
}

test('under TZ=Europe/Berlin, --since/--until a day apart are 24 hours apart, in UTC', (t) => {
  t.deepEqual(auditFilter({ since: '2026-12-01', until: '2026-12-02' }, NOW), {
    since: Date.UTC(2026, 11, 1), until: Date.UTC(2026, 11, 2),
  });
  t.throws(() => parseAuditTime('--until', '2026-02-29', NOW), { message: /no such date or time/ });
});
