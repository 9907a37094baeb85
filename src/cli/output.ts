// Terminal output for qwdctl: tables that fit 80 columns (or $COLUMNS on a
// terminal; cells are shortened with "…"), stable JSON, and human durations.

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  /** Shorten this column (ids, states) only when nothing else is left to shorten. */
  keep?: boolean;
}

/** The width tables must fit: $COLUMNS on a terminal when set, else 80. */
export function terminalColumns(
  isTTY: boolean | undefined = process.stdout.isTTY, columnsEnv: string | undefined = process.env.COLUMNS,
): number {
  const n = Number(columnsEnv);
  return isTTY && /^\d{1,4}$/.test(columnsEnv ?? '') && n >= 20 ? n : 80;
}

/**
 * Lays rows out in columns that fit `width`. When too wide, in this order:
 * shorten the widest non-`keep` column down to max(6, header); close the gap
 * between columns from two spaces to one; shorten non-`keep` columns down to
 * 4; then shorten any column (ids included) down to 1. Shortened cells end
 * with "…". Only a table with more columns than width/2 can stay wider.
 */
export function table<T>(rows: readonly T[], columns: readonly Column<T>[], width = terminalColumns()): string {
  const cells = rows.map((row) => columns.map((c) => c.value(row)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  let gap = 2;
  const total = () => widths.reduce((a, b) => a + b, 0) + gap * (columns.length - 1);
  const shrink = (floor: (i: number) => number | null) => {
    while (total() > width) {
      let widest = -1;
      for (let i = 0; i < columns.length; i++) {
        const min = floor(i);
        if (min === null || widths[i]! <= min) continue;
        if (widest < 0 || widths[i]! > widths[widest]!) widest = i;
      }
      if (widest < 0) return;
      widths[widest]! -= 1;
    }
  };
  shrink((i) => (columns[i]!.keep ? null : Math.max(6, columns[i]!.header.length)));
  if (total() > width) gap = 1;
  shrink((i) => (columns[i]!.keep ? null : 4));
  shrink(() => 1);
  const fit = (text: string, w: number) => (text.length > w ? text.slice(0, Math.max(0, w - 1)) + '…' : text.padEnd(w));
  const line = (values: string[]) => values.map((v, i) => fit(v, widths[i]!)).join(' '.repeat(gap)).trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

export function shortTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
}

/** "2h", "30m", "1d12h", "90s", "3600" (seconds) → seconds. */
export function parseDuration(text: string): number | null {
  const trimmed = text.trim();
  if (/^\d{1,9}$/.test(trimmed)) return Number(trimmed);
  const re = /(\d{1,6})\s*(d|h|m|s)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(trimmed); m; m = re.exec(trimmed)) {
    total += Number(m[1]) * { d: 86400, h: 3600, m: 60, s: 1 }[m[2] as 'd' | 'h' | 'm' | 's'];
    matched = re.lastIndex;
  }
  return matched === trimmed.length && matched > 0 ? total : null;
}

export function formatRemaining(seconds: number): string {
  if (seconds <= 0) return 'ended';
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d) return `${d}d${h}h`;
  if (h) return `${h}h${String(m).padStart(2, '0')}m`;
  return `${m}m${String(seconds % 60).padStart(2, '0')}s`;
}
