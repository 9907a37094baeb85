// qwdctl audit as a separate process with no broker running (it reads the
// store itself, under the writer lock, like every other command): filters on
// seeded rows, --json parsed, and a bad time: a usage error (exit 1) that
// names the option and opens nothing, so no state dir and no file appear.
import test from 'ava';
import fs from 'node:fs';
import { makeSetup } from '../helpers/env.js';
import { qwdctl } from '../helpers/cli.js';
import { openDb } from '../../src/store/db.js';
import { SessionRows } from '../../src/store/session-rows.js';
import type { AuditEntry } from '../../src/audit/query.js';

const HOUR = 3_600_000;

test('qwdctl audit without a broker: --since, --until, --user, --session, --kind, --limit, --json', async (t) => {
  const setup = makeSetup(t);
  const db = openDb(setup.stateDir);
  const rows = new SessionRows(db);
  const now = Date.now();
  rows.audit('s-old', 'created', { owner: 'ada', machine: 'blank' }, now - 30 * 24 * HOUR, { actor: 'ada', owner: 'ada' });
  rows.audit('s-one', 'created', { owner: 'ada', machine: 'blank' }, now - 3 * HOUR, { actor: 'ada', owner: 'ada' });
  rows.audit('s-one', 'viewer-joined', { access: 'view' }, now - 2.5 * HOUR, { actor: 'bea', owner: 'ada' });
  rows.audit(null, 'login', { backend: 'local', result: 'failure' }, now - HOUR, { actor: 'web:anonymous', owner: 'cid' });
  rows.audit('s-one', 'ended', { code: 'expired' }, now - 60_000, { actor: 'system:purge', owner: 'ada' });
  db.close();
  const c = ['--config', setup.configFile, 'audit', '--json'];
  const kinds = async (...args: string[]) => {
    const res = await qwdctl([...c, ...args]);
    t.is(res.code, 0, res.stderr);
    return (JSON.parse(res.stdout) as AuditEntry[]).map((e) => `${e.kind}:${e.sessionId ?? '-'}`);
  };
  t.deepEqual(await kinds(), ['created:s-old', 'created:s-one', 'viewer-joined:s-one', 'login:-', 'ended:s-one']);
  t.deepEqual(await kinds('--since', '2h'), ['login:-', 'ended:s-one']);
  t.deepEqual(await kinds('--since', '7d', '--until', '30m'), ['created:s-one', 'viewer-joined:s-one', 'login:-']);
  t.deepEqual(await kinds('--since', new Date(now - 3 * HOUR).toISOString()), [
    'created:s-one', 'viewer-joined:s-one', 'login:-', 'ended:s-one',
  ]);
  t.deepEqual(await kinds('--user', 'bea'), ['viewer-joined:s-one'], 'what bea did');
  t.deepEqual(await kinds('--user', 'cid'), ['login:-'], 'what was about cid');
  t.deepEqual(await kinds('--session', 's-one', '--kind', 'ended'), ['ended:s-one']);
  t.deepEqual(await kinds('--limit', '2'), ['login:-', 'ended:s-one'], 'the newest two, oldest first');
  t.deepEqual(await kinds('--user', 'nobody'), []);
  t.deepEqual(await kinds('--limit', '2', '--before-id', '4'), ['created:s-one', 'viewer-joined:s-one'], 'the page before');
  const table = await qwdctl(['--config', setup.configFile, 'audit', '--kind', 'login']);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /^TIME \(UTC\)\s+KIND\s+SESSION\s+ACTOR\s+OWNER\s+DETAIL\n\S+Z\s+login\s+-\s+web:anonymous\s+cid\s+backend="local"/);
});

test('a bad time is a clear usage error (exit 1) and nothing is opened or written', async (t) => {
  const setup = makeSetup(t);
  for (const args of [
    ['--since', 'yesterday'], ['--until', '2026-02-31T99:00'], ['--since', '1h', '--until', '2h'], ['--limit', '0'],
    ['--limit', '10001'], ['--before-id', 'x'], ['--since', '2026-02-30'], ['--since', '2026-02-31'], ['--since', '2026'], ['--until', '2026-13-01'],
  ]) {
    const res = await qwdctl(['--config', setup.configFile, 'audit', ...args]);
    t.is(res.code, 1, args.join(' '));
    t.is(res.stdout, '');
    t.regex(res.stderr, /^qwdctl: --(since|until|limit|before-id)\b.* must /, res.stderr);
  }
  const res = await qwdctl(['--config', setup.configFile, 'audit', '--since', 'yesterday']);
  t.is(res.stderr, 'qwdctl: --since must be a duration (30m, 2h, 7d) or an ISO time (2026-12-01 or 2026-12-01T08:00:00Z), got "yesterday"\n');
  const rolled = await qwdctl(['--config', setup.configFile, 'audit', '--since', '2026-02-31']);
  t.regex(rolled.stderr, /got "2026-02-31": no such date or time\n$/);
  const year = await qwdctl(['--config', setup.configFile, 'audit', '--since', '2026']);
  t.regex(year.stderr, /got "2026": a duration needs its unit \(2026s, 2026m…\)/);
  t.false(fs.existsSync(setup.stateDir), 'no state dir, no store, no lock was made');
});

test('qwdctl audit is in the help and in bash completion', async (t) => {
  const help = await qwdctl(['audit', '--help']);
  t.is(help.code, 0);
  for (const option of ['--since <time>', '--until <time>', '--user <name>', '--session <id>', '--kind <kind>', '--limit <n>', '--before-id <id>', '--json']) {
    t.true(help.stdout.includes(option), option);
  }
  t.regex(help.stdout, /qwdctl audit --since 2h/);
  t.regex((await qwdctl(['--help'])).stdout, /\n {2}audit\b/);
  const completion = (await qwdctl(['completion', 'bash'])).stdout;
  t.regex(completion, /words="[^"]*\baudit\b/);
  t.regex(completion, /--since --until --user --session --kind --limit --before-id/);
});
