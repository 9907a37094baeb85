// The session-access policy, table by table: what a link gives each asker, and each
// refusal's code, status and message (the pages and the API answer with them).
import test from 'ava';
import { SessionAccessError, decideSessionAccess, type AccessNeed, type Asker } from '../../src/http/session-access.js';
import type { TokenLookup } from '../../src/sessions/manager.js';
import type { Identity } from '../../src/auth/types.js';
import type { SessionRow } from '../../src/store/session-rows.js';
import { endReason } from '../../src/store/end-reason.js';

const row = { id: 's1', token: 'C'.repeat(43), viewToken: 'V'.repeat(43), owner: 'ada' } as SessionRow;
const control: TokenLookup = { kind: 'live', row, access: 'control' };
const view: TokenLookup = { kind: 'live', row, access: 'view' };
const person = (user: string, admin = false): Identity => ({ user, email: null, groups: [], admin, via: 'local' });
const ada = person('ada');
const bob = person('bob');
const root = person('root', true);
const REVOKED = 'This link was revoked by the owner of the desktop; ask them for a new one.';
const SEE: AccessNeed = { kind: 'see' };
const CHANGE: AccessNeed = { kind: 'change', what: 'change it' };
const asker = (identity: Identity | null, open = false, mustLogIn = false): Asker => ({ identity, open, mustLogIn });

test('a live link gives its kind; managing needs the control link and the owner, an admin, or auth "none"', (t) => {
  const cases: Array<[string, TokenLookup, Asker, boolean]> = [
    ['owner, control link', control, asker(ada), true],
    ['admin, control link', control, asker(root), true],
    ['another user, control link', control, asker(bob), false],
    ['nobody logged in, control link', control, asker(null), false],
    ['auth "none", control link', control, asker(null, true), true],
    ['owner, view link', view, asker(ada), false],
    ['auth "none", view link', view, asker(null, true), false],
  ];
  for (const [what, found, who, manage] of cases) {
    const access = decideSessionAccess(found, who, SEE);
    t.deepEqual(access, { row, access: found.kind === 'live' ? found.access : 'view', manage }, what);
  }
  t.is(decideSessionAccess(control, asker(ada), CHANGE).manage, true);
  t.is(decideSessionAccess(control, asker(null, true), CHANGE).manage, true);
});

test('refusals carry the refusal, code, status and the message the user sees', (t) => {
  const ended: TokenLookup = { kind: 'ended', ended: { sessionId: 's1', endedAt: 1, end: endReason('expired') } };
  const revoked: TokenLookup = { kind: 'ended', ended: { sessionId: 's1', endedAt: 1, end: endReason('revoked') } };
  const cases: Array<[string, TokenLookup, Asker, AccessNeed, string, string, number, string]> = [
    ['a login first where links need one, known token or not', { kind: 'unknown' }, asker(null, false, true), SEE,
      'login', 'QWD_UNAUTHORIZED', 401, 'Log in first, or send an API token (Authorization: Bearer …).'],
    ['an unknown token', { kind: 'unknown' }, asker(ada), SEE,
      'unknown', 'QWD_SESSION_NOT_FOUND', 404, 'No desktop has this token.'],
    ['an ended desktop', ended, asker(ada), SEE,
      'ended', 'QWD_SESSION_ENDED', 410, 'This desktop has ended (its life-time ran out).'],
    ['a revoked link', revoked, asker(ada), CHANGE,
      'revoked', 'QWD_SESSION_ENDED', 410, REVOKED],
    ['a change through the view link, even by the owner', view, asker(ada), CHANGE,
      'view-only', 'QWD_FORBIDDEN', 403, 'A view-only link cannot change this desktop.'],
    ['a change by another user', control, asker(bob), CHANGE,
      'not-owner', 'QWD_FORBIDDEN', 403, 'Only the owner of this desktop (or an administrator) can change it.'],
    ['a change by nobody, where links need no login check', control, asker(null), CHANGE,
      'not-owner', 'QWD_FORBIDDEN', 403, 'Only the owner of this desktop (or an administrator) can change it.'],
  ];
  for (const [what, found, who, need, refusal, code, status, userMessage] of cases) {
    const e = t.throws(() => decideSessionAccess(found, who, need), { instanceOf: SessionAccessError }, what);
    t.deepEqual([e?.refusal, e?.code, e?.httpStatus, e?.userMessage], [refusal, code, status, userMessage], what);
  }
});

test('a refused change names what was asked and links back to the desktop', (t) => {
  const need: AccessNeed = { kind: 'change', what: 'stop, extend or re-link it' };
  const e = t.throws(() => decideSessionAccess(control, asker(bob), need), { instanceOf: SessionAccessError });
  t.is(e?.userMessage, 'Only the owner of this desktop (or an administrator) can stop, extend or re-link it.');
  t.is(e?.controlToken, row.token);
  t.regex(e?.message ?? '', /^bob may not change session s1 of ada$/);
});
