// Terminal output for qwdctl: tables that fit 80 columns (the widest column
// is shortened with "…"), stable JSON, and human durations.

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  /** Never shorten this column (ids, states). */
  keep?: boolean;
}

export function table<T>(rows: readonly T[], columns: readonly Column<T>[], width = 80): string {
  const cells = rows.map((row) => columns.map((c) => c.value(row)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (columns.length - 1);
  while (total() > width) {
    let widest = -1;
    for (let i = 0; i < columns.length; i++) {
      if (columns[i]!.keep || widths[i]! <= Math.max(6, columns[i]!.header.length)) continue;
      if (widest < 0 || widths[i]! > widths[widest]!) widest = i;
    }
    if (widest < 0) break;
    widths[widest]! -= 1;
  }
  const fit = (text: string, w: number) => (text.length > w ? text.slice(0, Math.max(0, w - 1)) + '…' : text.padEnd(w));
  const line = (values: string[]) => values.map((v, i) => fit(v, widths[i]!)).join('  ').trimEnd();
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
