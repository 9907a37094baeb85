// Login rows on a real store: a failed attempt keeps the typed name only when
// it has the shape of a user name (USER_NAME, src/auth/types.ts); anything else
// (a password typed into the name field) is not kept: owner null, reason
// 'malformed-name'. A name a backend vouched for is kept as it is.
import test from 'ava';
import { fakeSessions } from '../helpers/fake-sessions.js';
import { recordLoginAttempt, type LoginAttempt } from '../../src/audit/login.js';
import { queryAudit } from '../../src/audit/query.js';

const cases: Array<[string, LoginAttempt, { owner: string | null; reason?: string }]> = [
  ['a plain name that failed', { backend: 'local', user: 'alice', result: 'failure', reason: 'invalid' },
    { owner: 'alice', reason: 'invalid' }],
  ['an e-mail-like name that failed', { backend: 'ldap', user: 'a.b+c@example.org', result: 'failure' },
    { owner: 'a.b+c@example.org' }],
  ['a password typed as the name', { backend: 'local', user: 'hunter2 Secret!', result: 'failure', reason: 'invalid' },
    { owner: null, reason: 'malformed-name' }],
  ['a password without spaces but with a symbol', { backend: 'local', user: 'S3cr#t:pw', result: 'rate-limited' },
    { owner: null, reason: 'malformed-name' }],
  ['a name too long for a user name', { backend: 'local', user: 'x'.repeat(65), result: 'unavailable' },
    { owner: null, reason: 'malformed-name' }],
  ['no name', { backend: 'password', user: null, result: 'failure' }, { owner: null }],
  ['a provider-vouched name of another shape', { backend: 'sso', user: 'Ada Lovelace', result: 'success' },
    { owner: 'Ada Lovelace' }],
];

for (const [what, attempt, expected] of cases) {
  test(`login row for ${what}: owner ${JSON.stringify(expected.owner)}`, (t) => {
    const { db, rows } = fakeSessions(t);
    recordLoginAttempt(rows, attempt, 1_000);
    const [row] = queryAudit(db, { kind: 'login' });
    t.is(row!.owner, expected.owner);
    t.is(row!.detail!.reason, expected.reason);
    if (attempt.user !== null && expected.owner === null) {
      t.false(JSON.stringify(queryAudit(db, {})).includes(attempt.user), 'the typed text is nowhere in the trail');
      t.is(row!.actor, 'web:anonymous');
    }
  });
}
