// The audit trail's pure parts, table by table: the times qwdctl audit reads,
// text from outside made fit for a row, RFC 5424 messages, the audit: config
// section and its errors, and who ends a session by default.
import test from 'ava';
import { parseAuditTime, auditFilter, auditTable } from '../../src/cli/commands/audit.js';
import { boundedText, endActor, webActor, ACTORS } from '../../src/audit/actor.js';
import { syslogMessage, MAX_DATAGRAM } from '../../src/audit/syslog.js';
import { parseConfig } from '../../src/config/schema.js';
import { endReason } from '../../src/store/end-reason.js';
import { QwdError } from '../../src/errors.js';
import type { AuditEntry } from '../../src/audit/query.js';

const NOW = Date.UTC(2026, 11, 5, 12, 0, 0);

for (const [text, expected] of [
  ['30m', NOW - 30 * 60_000],
  ['2h', NOW - 2 * 3_600_000],
  ['7d', NOW - 7 * 86_400_000],
  ['1d12h', NOW - 36 * 3_600_000],
  ['90s', NOW - 90_000],
  ['2028-02-29', Date.UTC(2028, 1, 29)],
  ['2026-12-31T23:59:59Z', Date.UTC(2026, 11, 31, 23, 59, 59)],
  ['2026-12-01T08:00-0130', Date.UTC(2026, 11, 1, 9, 30)],
  ['2026-12-01', Date.UTC(2026, 11, 1)],
  ['2026-12-01T08:00', Date.UTC(2026, 11, 1, 8)],
  ['2026-12-01 08:00:30', Date.UTC(2026, 11, 1, 8, 0, 30)],
  ['2026-12-01T08:00:00Z', Date.UTC(2026, 11, 1, 8)],
  ['2026-12-01T08:00:00+02:00', Date.UTC(2026, 11, 1, 6)],
  ['2026-12-01T08:00:00.250Z', Date.UTC(2026, 11, 1, 8, 0, 0, 250)],
] as const) {
  test(`--since ${text} is ${new Date(expected).toISOString()}`, (t) => {
    t.is(parseAuditTime('--since', text, NOW), expected);
  });
}

for (const text of [
  'yesterday', '', '2h ago', '-2h', '2026-13-01', '2026-12-01T25:00Z', '12/01/2026', '3w', '2h;drop',
  // Dates Date.parse would roll over (2026-02-31 → 2026-03-03), and bare numbers (a year? seconds?).
  '2026-02-30', '2026-02-31', '2026-02-29', '2026-04-31', '2026-00-10', '2026-12-00', '2026-12-01T23:60Z',
  '2026-12-01T24:00Z', '2026-12-01T08:00:60Z', '2026-12-01T08:00+24:00', '2026', '90', '0',
]) {
  test(`--since ${JSON.stringify(text)} is a usage error naming the option and the value`, (t) => {
    const err = t.throws(() => parseAuditTime('--since', text, NOW), { instanceOf: QwdError });
    t.is(err!.code, 'QWD_BAD_REQUEST');
    t.is(err!.family, 'usage');
    t.regex(err!.userMessage, /^--since must be a duration \(30m, 2h, 7d\) or an ISO time/);
    t.true(err!.userMessage.includes(JSON.stringify(text)));
  });
}

test('the filter: --until before --since, a bad --limit are usage errors; the rest passes as given', (t) => {
  t.throws(() => auditFilter({ since: '1h', until: '2h' }, NOW), { message: /--until .* must be after --since/ });
  for (const limit of ['0', '-1', 'ten', '1e3', '99999999']) {
    t.throws(() => auditFilter({ limit }, NOW), { message: /--limit must be a whole number/ }, limit);
  }
  t.deepEqual(auditFilter({ since: '2h', user: 'alice', session: 'abc', kind: 'login', limit: '5' }, NOW), {
    since: NOW - 7_200_000, user: 'alice', sessionId: 'abc', kind: 'login', limit: 5,
  });
});

test('text from outside is bounded and its control characters escaped', (t) => {
  t.is(boundedText('alice'), 'alice');
  t.is(boundedText('a'.repeat(70)), 'a'.repeat(64) + '…');
  t.is(boundedText('evil\u001b[31mred\nline\u2028'), 'evil\\u001b[31mred\\u000aline\\u2028');
  t.is(boundedText(42), '42');
});

test('actors: users by name, everyone else with a colon no user name can have', (t) => {
  t.is(webActor({ user: 'alice' }, 'control'), 'alice');
  t.is(webActor(null, 'control'), 'link:control');
  t.is(webActor(undefined, 'view'), 'link:view');
  t.is(webActor(null), 'web:anonymous');
  t.is(endActor(endReason('expired')), ACTORS.purge);
  t.is(endActor(endReason('one-shot')), ACTORS.oneShot);
  t.is(endActor(endReason('vm-exited', 'the guest powered off')), ACTORS.vm);
  t.is(endActor(endReason('launch-failed')), ACTORS.broker);
  t.is(endActor(endReason('stopped', 'stopped by its user', 'alice')), 'alice');
  for (const actor of Object.values(ACTORS)) t.true(actor.includes(':'), actor);
});

const ENTRY: AuditEntry = {
  id: 7, at: '2026-12-05T12:00:00.000Z', kind: 'login', sessionId: null, actor: 'web:anonymous', owner: 'alice',
  detail: { backend: 'password', result: 'failure', ip: '127.0.0.1' },
};

test('RFC 5424: PRI from facility and severity, header fields, BOM and the row as JSON', (t) => {
  const msg = syslogMessage(ENTRY, { facility: 'authpriv', appName: 'qwd', hostname: 'host one', procId: 42 });
  const text = msg.toString('utf8');
  // authpriv (10) * 8 + warning (4): a failed login
  t.regex(text, /^<84>1 2026-12-05T12:00:00\.000Z host_one qwd 42 login - \uFEFF\{/);
  t.deepEqual(JSON.parse(text.slice(text.indexOf('\uFEFF') + 1)), ENTRY);
  const ok = syslogMessage({ ...ENTRY, detail: { result: 'success' } }, {
    facility: 'local0', appName: 'qwd', hostname: 'h', procId: 1,
  }).toString();
  t.true(ok.startsWith('<134>1 '), 'local0 (16) * 8 + informational (6)');
  const huge = syslogMessage({ ...ENTRY, detail: { text: 'x'.repeat(5000) } }, {
    facility: 'user', appName: 'qwd', hostname: 'h', procId: 1,
  });
  t.true(huge.length <= MAX_DATAGRAM);
  t.regex(huge.toString(), /"detail":null,"truncated":true/);
});

test('the audit: config section: defaults, and every bad value named with its key', (t) => {
  const ok = parseConfig({}, '/etc/qwd.yml', '/etc');
  t.deepEqual(ok.config!.audit, { retentionDays: 400, jsonFile: null, syslog: null });
  const full = parseConfig({
    audit: { retentionDays: 0, jsonFile: 'log/audit.jsonl', syslog: { host: 'logs.example.org', port: 5514 } },
  }, '/etc/qwd.yml', '/etc');
  t.deepEqual(full.config!.audit, {
    retentionDays: 0, jsonFile: '/etc/log/audit.jsonl',
    syslog: { host: 'logs.example.org', port: 5514, protocol: 'udp', facility: 'authpriv', appName: 'qemu-web-desktop' },
  });
  const bad = parseConfig({
    audit: {
      retentionDays: -1, jsonFile: 3, colour: 'red',
      syslog: { port: 70000, protocol: 'tcp', facility: 'kern', appName: 'has space', extra: 1 },
    },
  }, '/etc/qwd.yml', '/etc');
  t.is(bad.config, null);
  const problems = bad.problems.join('\n');
  for (const expected of [
    /audit\.retentionDays must be an integer from 0 to 100000, got -1/,
    /audit\.jsonFile must be a file path, got 3/,
    /audit\.colour is not a known key/,
    /audit\.syslog\.host is required when audit\.syslog is set/,
    /audit\.syslog\.port must be an integer from 1 to 65535, got 70000/,
    /audit\.syslog\.protocol must be one of udp, got "tcp"/,
    /audit\.syslog\.facility must be one of user, daemon, auth, authpriv, local0/,
    /audit\.syslog\.appName must be up to 48 printable ASCII characters, got "has space"/,
    /audit\.syslog\.extra is not a known key/,
  ]) t.regex(problems, expected);
  t.regex(parseConfig({ audit: { syslog: 'udp://x' } }, '/e.yml', '/').problems.join(), /audit\.syslog must be a mapping/);
});

test('the table: ISO UTC times, "-" for what is not known, control characters never reach the terminal', (t) => {
  const out = auditTable([
    ENTRY,
    { id: 8, at: '2026-12-05T12:00:01.000Z', kind: 'refused', sessionId: null, actor: 'x\u001b]0;pwned\u0007', owner: null,
      detail: { code: 'QWD_ADMISSION_LIMIT' } },
  ], 200);
  const lines = out.trimEnd().split('\n');
  t.regex(lines[0]!, /^TIME \(UTC\)\s+KIND\s+SESSION\s+ACTOR\s+OWNER\s+DETAIL$/);
  t.regex(lines[1]!, /^2026-12-05T12:00:00Z\s+login\s+-\s+web:anonymous\s+alice\s+backend="password" result="failure"/);
  t.false(out.includes('\u001b'), 'no escape character');
  t.false(out.includes('\u0007'));
  t.is(auditTable([]), 'no audit rows\n');
});
