// qwdctl sessions list|show|start|stop|extend|url|logs (and the DARTS aliases
// start/stop, which call the same functions).
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline/promises';
import type { Command } from 'commander';
import { QwdError } from '../../errors.js';
import type { Admin } from '../../admin/operations.js';
import type { SessionRow } from '../../store/session-rows.js';
import { CliContext, usage } from '../context.js';
import { formatRemaining, json, parseDuration, shortTime, table } from '../output.js';

/** The stable JSON shape of a session (documented in INSTALL.md). */
export function sessionJson(row: SessionRow, baseUrl: string, now = Date.now()) {
  return {
    id: row.id, owner: row.owner, machine: row.machine, cpus: row.cpus, memoryMiB: row.memoryMiB, state: row.state,
    createdAt: new Date(row.createdAt).toISOString(), expiresAt: new Date(row.expiresAt).toISOString(),
    remainingS: Math.max(0, Math.round((row.expiresAt - now) / 1000)), viewers: row.viewers,
    url: `${baseUrl}/s/${row.token}`, pid: recorded(row.handle, 'pid', 'number'),
    accel: recorded(row.handle, 'accel', 'string'), runDir: row.runDir,
    slurmJobId: recorded(row.handle, 'jobId', 'string'), node: recorded(row.handle, 'node', 'string'),
  };
}

/**
 * A field of the handle as the session row recorded it, or null: these are shown as stored (a local VM's pid, a
 * Slurm job's id and node), whichever launcher wrote the row, without asking a launcher to read it.
 */
function recorded<K extends 'number' | 'string'>(
  handle: unknown, key: string, type: K,
): (K extends 'number' ? number : string) | null {
  const value = typeof handle === 'object' && handle !== null ? (handle as Record<string, unknown>)[key] : undefined;
  return typeof value === type ? value as K extends 'number' ? number : string : null;
}

/** Slurm job id, node and job state per session (Slurm launcher only). */
export type SchedulerInfo = ReadonlyMap<string, Record<string, string | number | null>>;

/**
 * squeue's compact job state codes (squeue(1), "JOB STATE CODES"), so the
 * Slurm table fits 80 columns; other states (our GONE) are shown as they are.
 */
const SLURM_STATE_CODES: Record<string, string> = {
  PENDING: 'PD', RUNNING: 'R', SUSPENDED: 'S', COMPLETING: 'CG', COMPLETED: 'CD', CONFIGURING: 'CF', CANCELLED: 'CA',
  FAILED: 'F', TIMEOUT: 'TO', PREEMPTED: 'PR', NODE_FAIL: 'NF', BOOT_FAIL: 'BF', DEADLINE: 'DL', OUT_OF_MEMORY: 'OOM',
  REQUEUED: 'RQ', RESIZING: 'RS', STOPPED: 'ST', SIGNALING: 'SI', SPECIAL_EXIT: 'SE', STAGE_OUT: 'SO',
  RESV_DEL_HOLD: 'RD',
  REQUEUE_FED: 'RF', REQUEUE_HOLD: 'RH', REVOKED: 'RV',
};

export function compactJobState(state: string): string {
  return SLURM_STATE_CODES[state] ?? state;
}

/** Like ps(1)'s START: the time (UTC) within the last 24 hours, else the date. */
export function startedColumn(createdAt: number, now: number): string {
  const text = shortTime(createdAt); // "YYYY-MM-DD HH:MM", UTC
  return now - createdAt < 86400_000 ? text.slice(11) : text.slice(5, 10);
}

export function sessionsTable(
  rows: SessionRow[], now = Date.now(), scheduler: SchedulerInfo | null = null, width?: number,
): string {
  if (rows.length === 0) return 'no sessions\n';
  const job = (r: SessionRow, key: string) => String(scheduler?.get(r.id)?.[key] ?? '-');
  return table(rows, [
    { header: 'ID', value: (r) => r.id, keep: true },
    { header: 'USER', value: (r) => r.owner },
    { header: 'MACHINE', value: (r) => r.machine },
    { header: 'CPU', value: (r) => String(r.cpus), keep: true },
    { header: 'MEM', value: (r) => `${r.memoryMiB}M`, keep: true },
    { header: 'STATE', value: (r) => r.state, keep: true },
    { header: 'STARTED', value: (r) => startedColumn(r.createdAt, now), keep: true },
    { header: 'LEFT', value: (r) => formatRemaining(Math.round((r.expiresAt - now) / 1000)), keep: true },
    { header: 'VIEW', value: (r) => String(r.viewers), keep: true },
    ...(scheduler ? [
      { header: 'JOB', value: (r: SessionRow) => job(r, 'slurmJobId'), keep: true },
      { header: 'NODE', value: (r: SessionRow) => job(r, 'node') },
      { header: 'ST', value: (r: SessionRow) => compactJobState(job(r, 'jobState')) },
    ] : []),
  ], width);
}

export async function findSession(admin: Admin, id: string): Promise<SessionRow> {
  if (!/^[0-9a-f]{1,12}$/.test(id)) {
    throw usage(
      `session id must be the 12-character hex id shown by "qwdctl sessions list", got ` +
        `${JSON.stringify(id.slice(0, 40))}`
    );
  }
  const exact = await admin.getSession(id);
  if (exact) return exact;
  const matches = (await admin.listSessions()).filter((r) => r.id.startsWith(id));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) {
    throw usage(`session id prefix "${id}" matches ${matches.length} sessions; give more characters`);
  }
  throw new QwdError('QWD_SESSION_NOT_FOUND', `no session ${id}`, { userMessage: `There is no session ${id}.` });
}

/** Each id in turn (the first that is not found ends it, as before any is stopped). */
async function findSessions(admin: Admin, ids: string[]): Promise<SessionRow[]> {
  const rows: SessionRow[] = [];
  for (const id of ids) rows.push(await findSession(admin, id));
  return rows;
}

export interface StartOptions {
  cpus?: string;
  memory?: string;
  lifetime?: string;
  user?: string;
  json?: boolean;
}

export async function startSession(ctx: CliContext, machine: string, opts: StartOptions): Promise<void> {
  const lifetimeS = opts.lifetime === undefined ? undefined : parseDuration(opts.lifetime);
  if (lifetimeS === null) {
    throw usage(`--lifetime must be a duration like 2h, 30m, 1d or seconds, got ${JSON.stringify(opts.lifetime)}`);
  }
  await ctx.withAdmin(async (admin, config) => {
    const row = await admin.createSession({
      machine, user: opts.user ?? process.env.SUDO_USER ?? process.env.USER ?? 'admin',
      ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
      ...(opts.memory !== undefined ? { memoryMiB: opts.memory } : {}),
      ...(lifetimeS !== undefined ? { lifetimeS } : {}),
    });
    const info = sessionJson(row, ctx.baseUrl(config));
    if (opts.json) ctx.print(json(info));
    else ctx.print(
      `started session ${row.id} (${row.machine}, ${row.cpus} CPU, ${row.memoryMiB} MiB) until ` +
        `${shortTime(row.expiresAt)} UTC\n${info.url}`
    );
  });
}

export async function stopSessions(
  ctx: CliContext, ids: string[], opts: { all?: boolean; yes?: boolean; json?: boolean },
): Promise<void> {
  if (opts.all && ids.length) throw usage('give session ids or --all, not both');
  if (!opts.all && ids.length === 0) throw usage('which session? give one or more ids, or --all');
  await ctx.withAdmin(async (admin) => {
    const rows = opts.all ? await admin.listSessions() : await findSessions(admin, ids);
    if (opts.all && rows.length === 0) return ctx.print(opts.json ? json({ stopped: [] }) : 'no sessions to stop');
    if (opts.all && !opts.yes) {
      if (!process.stdin.isTTY) {
        throw usage(`refusing to stop all ${rows.length} sessions without confirmation: add --yes`);
      }
      const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
      const answer = await rl.question(`Stop all ${rows.length} sessions? Unsaved work in them is lost. [y/N] `);
      rl.close();
      if (!/^y(es)?$/i.test(answer.trim())) return ctx.print('nothing stopped');
    }
    for (const row of rows) {
      await admin.stopSession(row.id, 'stopped by an administrator');
      if (!opts.json) ctx.print(`stopped session ${row.id} (${row.owner}, ${row.machine})`);
    }
    if (opts.json) ctx.print(json({ stopped: rows.map((r) => r.id) }));
  });
}

export function registerSessions(program: Command, ctx: CliContext): void {
  const sessions = program.command('sessions').description('list, inspect, start, stop and extend desktop sessions');

  sessions.command('list').alias('ls').description('all sessions').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin, config) => {
        const rows = await admin.listSessions();
        const base = ctx.baseUrl(config);
        ctx.print(opts.json ? json(rows.map((r) => sessionJson(r, base))) : sessionsTable(rows));
      });
    });

  sessions.command('show <id>').description('one session in detail').option('--json', 'machine-readable output')
    .action(async (id: string, opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin, config) => {
        const row = await findSession(admin, id);
        // With a scheduler (Slurm), also the job's state as it reports it now.
        const jobState = (await admin.hostStatus()).launcher?.jobs ? {
          jobState: (await admin.schedulerInfo(row.id)).jobState ?? null
        } : {};
        const info = { ...sessionJson(row, ctx.baseUrl(config)), ...jobState };
        ctx.print(
          opts.json ? json(info) : Object.entries(info).map(([k, v]) => `${k.padEnd(11)} ${v ?? '-'}`).join('\n')
        );
      });
    });

  sessions.command('start <machine>')
    .description('start a session exactly as the web form does (same admission, same store)')
    .option('--cpus <n>', 'CPUs').option('--memory <MiB>', 'memory in MiB')
      .option('--lifetime <duration>', 'life-time, e.g. 2h, 30m, 1d')
    .option('--user <name>', 'owner (default: $SUDO_USER or $USER)').option('--json', 'machine-readable output')
    .action((machine: string, opts: StartOptions) => startSession(ctx, machine, opts));

  sessions.command('stop [ids...]').description('stop sessions (QMP quit → SIGTERM → SIGKILL, then clean up)')
    .option('--all', 'stop every session').option('-y, --yes', 'do not ask for confirmation with --all')
      .option('--json', 'machine-readable output')
    .action((ids: string[], opts: { all?: boolean; yes?: boolean; json?: boolean }) => stopSessions(ctx, ids, opts));

  sessions.command('extend <id>').description('add time to a session, up to the maximum life-time')
    .requiredOption('--by <duration>', 'time to add, e.g. 1h, 30m').option('--json', 'machine-readable output')
    .action(async (id: string, opts: { by: string; json?: boolean }) => {
      const byS = parseDuration(opts.by);
      if (!byS) throw usage(`--by must be a duration like 1h, 30m or seconds, got ${JSON.stringify(opts.by)}`);
      await ctx.withAdmin(async (admin, config) => {
        const row = await admin.extendSession((await findSession(admin, id)).id, byS);
        ctx.print(
          opts.json ? json(
            sessionJson(row, ctx.baseUrl(config))
          ) : `session ${row.id} now ends at ${shortTime(row.expiresAt)} UTC`
        );
      });
    });

  sessions.command('balloon <id>')
    .description("show the guest's memory (QMP query-balloon), or set the balloon target with --target")
    .option('--target <MiB>', 'memory the guest should keep (64 to its size); its size gives everything back')
      .option('--json', 'machine-readable output')
    .action(async (id: string, opts: { target?: string; json?: boolean }) => {
      await ctx.withAdmin(async (admin) => {
        const row = await findSession(admin, id);
        if (opts.target !== undefined) {
          if (!/^\d{1,9}$/.test(opts.target)) {
            throw usage(`--target must be a whole number of MiB, got ${JSON.stringify(opts.target)}`);
          }
          await admin.setBalloon(row.id, Number(opts.target));
        }
        const info = await admin.balloonInfo(row.id);
        ctx.print(
          opts.json
            ? json({ id: row.id, ...info })
            : `session ${row.id}: guest has ${info.actualMiB} of ${info.memoryMiB} MiB` +
              `${info.targetMiB !== null ? ` (balloon target ${info.targetMiB} MiB)` : ''}`
        );
      });
    });

  sessions.command('url <id>').description("print the session's link (keyboard and mouse: share with care)")
    .option('--json', 'machine-readable output')
    .action(async (id: string, opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin, config) => {
        const row = await findSession(admin, id);
        const { url } = sessionJson(row, ctx.baseUrl(config));
        ctx.print(opts.json ? json({ id: row.id, url }) : url);
      });
    });

  sessions.command('logs <id>').description("print the session's QEMU log and serial console log")
    .option('--json', 'machine-readable output')
    .action(async (id: string, opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin) => {
        const row = await findSession(admin, id);
        const logs = ['qemu.log', 'serial.log'].map((name) => {
          const file = path.join(row.runDir, name);
          try {
            return { name, file, text: fs.readFileSync(file, 'utf8'), error: null };
          } catch (err) {
            // A log QEMU has not written (yet) is reported, not fatal: the other may say why.
            return { name, file, text: null, error: (err as NodeJS.ErrnoException).code ?? 'unreadable' };
          }
        });
        if (opts.json) return ctx.print(json({ id: row.id, logs }));
        for (const log of logs) {
          ctx.print(`==> ${log.file} <==`);
          ctx.print(log.text === null ? `(${log.error})` : log.text || '(empty)');
        }
      });
    });
}
