// table() and terminalColumns(): pure layout, no process or terminal involved.
import test from 'ava';
import { table, terminalColumns, type Column } from '../../src/cli/output.js';
import { compactJobState, sessionsTable, startedColumn, type SchedulerInfo } from '../../src/cli/commands/sessions.js';
import type { SessionRow } from '../../src/store/session-rows.js';

const widest = (text: string) => Math.max(...text.trimEnd().split('\n').map((l) => l.length));

interface MachineLike { name: string; arch: string; format: string; cpus: string; memory: string; description: string }
const machineColumns: Column<MachineLike>[] = [
  { header: 'NAME', value: (m) => m.name, keep: true },
  { header: 'ARCH', value: (m) => m.arch, keep: true },
  { header: 'FORMAT', value: (m) => m.format, keep: true },
  { header: 'CPUS', value: (m) => m.cpus, keep: true },
  { header: 'MEMORY', value: (m) => m.memory, keep: true },
  { header: 'DESCRIPTION', value: (m) => m.description },
];
const longMachine: MachineLike = {
  name: 'debian12-data-analysis-with-gpu-and-cuda', // 40 characters
  arch: 'x86_64', format: 'qcow2', cpus: '2/16', memory: '4096/65536M',
  description: 'Debian 12 with Jupyter, R, Octave and the CUDA toolkit for the lab',
};

test('a table that fits is laid out with two spaces and nothing shortened', (t) => {
  const out = table([{ a: 'x', b: 'yy' }], [{ header: 'A', value: (r) => r.a }, { header: 'BEE', value: (r) => r.b }], 80);
  t.is(out, 'A  BEE\nx  yy\n');
});

test('a 40-character machine name still fits 80 columns, shortened with …', (t) => {
  t.is(longMachine.name.length, 40);
  const out = table([longMachine], machineColumns, 80);
  t.true(widest(out) <= 80, out);
  const row = out.split('\n')[1]!;
  t.regex(row, /^debian12-data-analysis/);
  t.regex(row, /x86_64\s+qcow2\s+2\/16\s+4096\/65536M/, 'short keep columns stay whole');
  t.true(row.includes('…'));
});

test('every row fits the width even when keep columns alone are too wide', (t) => {
  const rows = [{ id: 'a'.repeat(50), state: 'b'.repeat(50) }];
  const out = table(rows, [{ header: 'ID', value: (r) => r.id, keep: true }, { header: 'STATE', value: (r) => r.state, keep: true }], 40);
  t.true(widest(out) <= 40, out);
  t.regex(out.split('\n')[1]!, /^a+… b+…$/);
});

test('non-keep columns are shortened before keep columns', (t) => {
  const rows = [{ id: '0123456789ab', note: 'n'.repeat(100) }];
  const out = table(rows, [{ header: 'ID', value: (r) => r.id, keep: true }, { header: 'NOTE', value: (r) => r.note }], 30);
  t.true(widest(out) <= 30, out);
  t.true(out.split('\n')[1]!.startsWith('0123456789ab  nnn'));
});

function row(id: string, owner: string, machine: string): SessionRow {
  const now = Date.UTC(2024, 4, 1, 9, 30);
  return {
    id, owner, machine, cpus: 16, memoryMiB: 65536, state: 'starting', createdAt: now, expiresAt: now + 26 * 3600_000, viewers: 12,
    token: 't', viewToken: 'v', runDir: '/tmp/x', handle: null,
  } as unknown as SessionRow;
}

test('the Slurm session table (job, node, state) fits 80 columns with long values', (t) => {
  const rows = [row('0123456789ab', 'a.very.long.user.name@example.org', 'debian12-data-analysis-with-gpu-and-cuda'), row('ba9876543210', 'bob', 'slax')];
  const scheduler: SchedulerInfo = new Map([
    ['0123456789ab', { slurmJobId: 12345678, node: 'gpu-node-0042.cluster.example.org', jobState: 'COMPLETING' }],
    ['ba9876543210', { slurmJobId: 7, node: null, jobState: 'PENDING' }],
  ]);
  const now = Date.UTC(2024, 4, 1, 10, 0);
  const out = sessionsTable(rows, now, scheduler, 80);
  t.true(widest(out) <= 80, out);
  const [header, first, second] = out.split('\n');
  t.regex(header!, /^ID\s+USER\s+MACH…\s+CPU\s+MEM\s+STATE\s+STARTED\s+LEFT\s+VIEW\s+JOB\s+NODE\s+ST$/);
  t.regex(first!, /^0123456789ab a\.ve… debi… 16\s+65536M\s+starting\s+09:30\s+1d\d+h\s+12\s+12345678\s+gpu-…\s+CG$/);
  t.regex(second!, /^ba9876543210 bob\s+slax\s+.*\s+7\s+-\s+PD$/);
  // A typical row needs little shortening.
  const typical = sessionsTable([{ ...row('0123456789ab', 'alice', 'debian12'), cpus: 2, memoryMiB: 4096, state: 'running', viewers: 1 }], now,
    new Map([['0123456789ab', { slurmJobId: 4711, node: 'node01', jobState: 'RUNNING' }]]), 80);
  t.true(widest(typical) <= 80, typical);
  t.regex(typical, /\n0123456789ab alice\s+debian… 2\s+4096M running 09:30\s+1d\d+h\s+1\s+4711 node01 R\n/);
  // The same table in a wide terminal is not shortened at all.
  const wide = sessionsTable(rows, now, scheduler, 200);
  t.false(wide.includes('…'));
  t.regex(wide, /gpu-node-0042\.cluster\.example\.org  CG/);
});

test('STARTED shows the time within a day, else the date (as ps does)', (t) => {
  const started = Date.UTC(2024, 4, 1, 9, 30);
  t.is(startedColumn(started, started + 3600_000), '09:30');
  t.is(startedColumn(started, started + 2 * 86400_000), '05-01');
});

test('Slurm job states are shown as squeue compact codes; unknown ones unchanged', (t) => {
  t.is(compactJobState('RUNNING'), 'R');
  t.is(compactJobState('PENDING'), 'PD');
  t.is(compactJobState('CANCELLED'), 'CA');
  t.is(compactJobState('GONE'), 'GONE');
});

test('tables follow $COLUMNS only on a terminal', (t) => {
  t.is(terminalColumns(true, '120'), 120);
  t.is(terminalColumns(false, '120'), 80);
  t.is(terminalColumns(true, undefined), 80);
  t.is(terminalColumns(true, 'wide'), 80);
  t.is(terminalColumns(true, '5'), 80, 'absurdly narrow values are ignored');
  const out = table([longMachine], machineColumns, terminalColumns(true, '60'));
  t.true(widest(out) <= 60, out);
});
