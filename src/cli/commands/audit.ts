// qwdctl audit: reads the audit trail (src/audit/) through the running
// broker's admin socket, or from the store when no broker runs, like every
// other read command. Times are checked before anything is opened: a bad
// --since is a usage error (exit 1) that touches nothing.
import type { Command } from 'commander';
import { CliContext, usage } from '../context.js';
import { json, parseDuration, table } from '../output.js';
import { boundedText } from '../../audit/actor.js';
import { DEFAULT_LIMIT, MAX_LIMIT, type AuditEntry, type AuditFilter } from '../../audit/query.js';

export interface AuditOptions {
  since?: string;
  until?: string;
  user?: string;
  session?: string;
  kind?: string;
  limit?: string;
  beforeId?: string;
  json?: boolean;
}

const ISO_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|([+-])(\d{2}):?(\d{2}))?)?$/;

/**
 * An ISO date or date-time as milliseconds, or null when no such instant exists. Built from its fields and checked
 * field by field: Date.parse rolls 2026-02-31 over to 2026-03-03 and reads a zone-less time as local time; the trail
 * speaks UTC.
 */
function isoTime(text: string): number | null {
  const m = ISO_TIME.exec(text);
  if (!m) return null;
  const field = (i: number) => (m[i] === undefined ? 0 : Number(m[i]));
  const [y, mo, d, h, mi, s] = [1, 2, 3, 4, 5, 6].map(field);
  const ms = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0'));
  const at = new Date(Date.UTC(y, mo - 1, d, h, mi, s, ms));
  // Date.UTC reads years 0-99 as 1900-99: setUTCFullYear keeps the year typed.
  at.setUTCFullYear(y, mo - 1, d);
  const same = at.getUTCFullYear() === y && at.getUTCMonth() === mo - 1 && at.getUTCDate() === d &&
    at.getUTCHours() === h && at.getUTCMinutes() === mi && at.getUTCSeconds() === s;
  if (!same) return null;
  if (m[9] === undefined) return at.getTime();
  const [zh, zm] = [Number(m[10]), Number(m[11])];
  if (zh > 23 || zm > 59) return null;
  return at.getTime() - (m[9] === '-' ? -1 : 1) * (zh * 60 + zm) * 60_000;
}

/**
 * A time as an administrator writes it: a duration back from now with its unit (`30m`, `2h`, `7d`, `1d12h`, `90s`)
 * or an ISO 8601 date or date-time, read as UTC unless it names a zone. Anything else — a bare number (is `2026` a
 * year or seconds?), a date that does not exist (2026-02-31) — is a usage error naming the option and the value.
 */
export function parseAuditTime(option: string, text: string, now: number): number {
  const trimmed = text.trim();
  let hint = '';
  if (ISO_TIME.test(trimmed)) {
    const ms = isoTime(trimmed);
    if (ms !== null) return ms;
    hint = ': no such date or time';
  } else if (/^\d+$/.test(trimmed)) {
    const n = trimmed.length > 12 ? trimmed.slice(0, 12) + '…' : trimmed;
    hint = `: a duration needs its unit (${n}s, ${n}m…), a date all of year-month-day`;
  } else {
    const seconds = parseDuration(trimmed);
    if (seconds !== null) return now - seconds * 1000;
  }
  const shown = JSON.stringify(text.length > 40 ? text.slice(0, 40) + '…' : text);
  throw usage(`${option} must be a duration (30m, 2h, 7d) or an ISO time (2026-12-01 or 2026-12-01T08:00:00Z), ` +
    `got ${shown}${hint}`);
}

/** The command's options as a filter; every problem is a usage error raised before the store is opened. */
export function auditFilter(opts: AuditOptions, now: number): AuditFilter {
  const filter: AuditFilter = {};
  if (opts.since !== undefined) filter.since = parseAuditTime('--since', opts.since, now);
  if (opts.until !== undefined) filter.until = parseAuditTime('--until', opts.until, now);
  if (filter.since !== undefined && filter.until !== undefined && filter.until <= filter.since) {
    throw usage(`--until (${new Date(filter.until).toISOString()}) must be after --since ` +
      `(${new Date(filter.since).toISOString()})`);
  }
  if (opts.user !== undefined) filter.user = opts.user;
  if (opts.session !== undefined) filter.sessionId = opts.session;
  if (opts.kind !== undefined) filter.kind = opts.kind;
  if (opts.limit !== undefined) {
    const n = /^\d{1,7}$/.test(opts.limit.trim()) ? Number(opts.limit) : NaN;
    if (!(n >= 1 && n <= MAX_LIMIT)) {
      throw usage(`--limit must be a whole number from 1 to ${MAX_LIMIT} (more: page with --before-id), ` +
        `got ${JSON.stringify(opts.limit)}`);
    }
    filter.limit = n;
  }
  if (opts.beforeId !== undefined) {
    const id = /^\d{1,15}$/.test(opts.beforeId.trim()) ? Number(opts.beforeId) : NaN;
    if (!(id >= 1)) throw usage(`--before-id must be a row id (a whole number), got ${JSON.stringify(opts.beforeId)}`);
    filter.beforeId = id;
  }
  return filter;
}

/** The detail as `key=value` pairs (values as JSON), control characters escaped. */
function detailText(detail: Record<string, unknown> | null): string {
  if (!detail) return '';
  return boundedText(Object.entries(detail).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' '), 2000);
}

export function auditTable(entries: readonly AuditEntry[], width?: number): string {
  if (entries.length === 0) return 'no audit rows\n';
  const text = (v: string | null) => (v === null ? '-' : boundedText(v, 200));
  return table(entries, [
    { header: 'TIME (UTC)', value: (e) => e.at.replace(/\.\d{3}Z$/, 'Z'), keep: true },
    { header: 'KIND', value: (e) => text(e.kind), keep: true },
    { header: 'SESSION', value: (e) => text(e.sessionId) },
    { header: 'ACTOR', value: (e) => text(e.actor) },
    { header: 'OWNER', value: (e) => text(e.owner) },
    { header: 'DETAIL', value: (e) => detailText(e.detail) },
  ], width);
}

export function registerAudit(program: Command, ctx: CliContext): void {
  program.command('audit')
    .description('show the audit trail: who created, viewed, extended, stopped desktops, logins, admin changes')
    .option('--since <time>', 'from this time: a duration back from now (30m, 2h, 7d) or an ISO time (UTC)')
    .option('--until <time>', 'before this time (same forms as --since)')
    .option('--user <name>', 'rows done by this user or about them (their sessions, their logins)')
    .option('--session <id>', 'rows of this session')
    .option('--kind <kind>', 'rows of this kind (created, refused, started, viewer-joined, ended, login, ...)')
    .option('--limit <n>', `at most this many rows, the newest (default ${DEFAULT_LIMIT}, at most ${MAX_LIMIT})`)
    .option('--before-id <id>', 'only rows older than row <id>: the next page (give the first id of this one)')
    .option('--json', 'machine-readable output (a JSON array, oldest first)')
    .addHelpText('after', '\nExamples:\n  qwdctl audit --since 2h\n  qwdctl audit --user alice --since 7d --json\n' +
      '  qwdctl audit --session 1f2e3d4c --kind viewer-joined\n  qwdctl audit --since 2026-12-01 --until 2026-12-02\n')
    .action(async (opts: AuditOptions) => {
      const filter = auditFilter(opts, Date.now());
      await ctx.withAdmin(async (admin) => {
        const entries = await admin.audit(filter);
        ctx.print(opts.json ? json(entries) : auditTable(entries));
      });
    });
}
