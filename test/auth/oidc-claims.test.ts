// From a provider's claims to an Identity or a refusal (decideIdentity): pure, table by table.
import test from 'ava';
import { MAX_GROUPS_KEPT, conditionGroups, decideIdentity, readGroups } from '../../src/auth/oidc/claims.js';
import type { OidcBackendConfig } from '../../src/config/oidc.js';

const CFG: OidcBackendConfig = {
  type: 'oidc', name: 'sso', label: 'Lab SSO', issuer: 'https://sso.example.org', clientId: 'qwd',
  clientSecret: 'x', clientSecretFile: null, scopes: ['openid'], userClaim: 'preferred_username',
  emailClaim: 'email', groupsClaim: 'groups', adminGroups: ['qwd-admins'], allowedGroups: [], recheckS: 300,
  unreachableGraceS: 900, timeoutMs: 5000, allowHttpIssuer: false,
};

const cases: Array<[string, Record<string, unknown>, Partial<OidcBackendConfig>, string[], unknown]> = [
  ['a plain user', { preferred_username: 'alice', email: 'alice@example.org', groups: ['staff'] }, {}, [],
    { ok: true, user: 'alice', email: 'alice@example.org', groups: ['staff'], admin: false }],
  ['admin through adminGroups', { preferred_username: 'root1', groups: ['qwd-admins'] }, {}, [],
    { ok: true, user: 'root1', email: null, groups: ['qwd-admins'], admin: true }],
  ['admin through auth.admins', { preferred_username: 'boss' }, {}, ['boss'],
    { ok: true, user: 'boss', email: null, groups: [], admin: true }],
  ['another user claim', { preferred_username: 'x y', uid: 'carol' }, { userClaim: 'uid' }, [],
    { ok: true, user: 'carol', email: null, groups: [], admin: false }],
  ['a single group as a string', { preferred_username: 'dan', groups: 'staff' }, { allowedGroups: ['staff'] }, [],
    { ok: true, user: 'dan', email: null, groups: ['staff'], admin: false }],
  ['groups that are not strings are ignored', { preferred_username: 'erin', groups: ['a', 3, null, { x: 1 }, 'a', ''] },
    {}, [], { ok: true, user: 'erin', email: null, groups: ['a'], admin: false }],
  ['an e-mail that is not one is dropped', { preferred_username: 'fay', email: 'not an address' }, {}, [],
    { ok: true, user: 'fay', email: null, groups: [], admin: false }],
  ['no user claim', { sub: 'abc' }, {}, [], { ok: false, reason: 'bad-user' }],
  ['a user name with a slash', { preferred_username: '../etc' }, {}, [], { ok: false, reason: 'bad-user' }],
  ['a user name too long', { preferred_username: 'a'.repeat(65) }, {}, [], { ok: false, reason: 'bad-user' }],
  ['a user name that is a number', { preferred_username: 42 }, {}, [], { ok: false, reason: 'bad-user' }],
  ['not in allowedGroups', { preferred_username: 'gil', groups: ['visitors'] }, { allowedGroups: ['staff'] }, [],
    { ok: false, reason: 'not-allowed' }],
  ['no groups claim while allowedGroups is set', { preferred_username: 'hal' }, { allowedGroups: ['staff'] }, [],
    { ok: false, reason: 'not-allowed' }],
];
for (const [title, claims, cfg, admins, expected] of cases) {
  test(`claims: ${title}`, (t) => {
    const d = decideIdentity(claims, { ...CFG, ...cfg }, admins);
    const got = d.ok
      ? { ok: true, user: d.identity.user, email: d.identity.email, groups: d.identity.groups, admin: d.identity.admin }
      : { ok: false, reason: d.reason };
    t.deepEqual(got, expected);
    if (d.ok) t.is(d.identity.via, 'sso');
    else t.notRegex(d.userMessage, /undefined|\[object/);
  });
}

test('claims: 10,000 groups are bounded; decisions see them all; the configured ones are kept first', (t) => {
  const groups = [...Array.from({ length: 10_000 }, (_, i) => `g${i}`), 'staff', 'qwd-admins', 'x'.repeat(300)];
  const d = decideIdentity({ preferred_username: 'ivy', groups }, { ...CFG, allowedGroups: ['staff'] }, []);
  if (!d.ok) return t.fail(d.detail);
  t.true(d.identity.admin);
  t.is(d.identity.groups.length, MAX_GROUPS_KEPT);
  t.deepEqual(d.identity.groups.slice(0, 3), ['staff', 'qwd-admins', 'g0'], 'in the provider\'s order');
  t.is(d.groupsSeen, 10_002, 'the over-long name is not a group');
  t.is(d.groupsDropped, 10_002 - MAX_GROUPS_KEPT);
});

test('readGroups: only a list or a string is a groups claim', (t) => {
  t.deepEqual(readGroups(undefined), []);
  t.deepEqual(readGroups({ staff: true }), []);
  t.deepEqual(readGroups(['b', 'a', 'b']), ['b', 'a']);
});

test('claims: groups a boot-script condition names are kept wherever the provider puts them', (t) => {
  const named = conditionGroups([
    [{ exec: 'a', when: { groups: ['beamline-7'] }, source: 'site' }, { exec: 'b', source: 'site' }],
    [{ exec: 'c', when: { groups: ['cryo', 'beamline-7'], users: ['x'] }, source: 'machines/m.yml' }],
  ]);
  t.deepEqual([...named], ['beamline-7', 'cryo']);
  const groups = [...Array.from({ length: 10_000 }, (_, i) => `g${i}`), 'cryo', 'staff', 'beamline-7'];
  const d = decideIdentity({ preferred_username: 'ivy', groups }, { ...CFG, allowedGroups: ['staff'] }, [], named);
  if (!d.ok) return t.fail(d.detail);
  t.is(d.identity.groups.length, MAX_GROUPS_KEPT);
  t.deepEqual(d.identity.groups.slice(0, 4), ['cryo', 'staff', 'beamline-7', 'g0'], 'named first, then in order');
  const without = decideIdentity({ preferred_username: 'ivy', groups }, { ...CFG, allowedGroups: ['staff'] }, []);
  t.false(without.ok && without.identity.groups.includes('beamline-7'), 'without the condition it would be dropped');
});
