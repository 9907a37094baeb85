// Small validation helpers that collect every problem instead of stopping at the
// first, and phrase each one as "<file>: <key> must be <expectation>, got <value>".

export class Problems {
  readonly list: string[] = [];
  constructor(readonly file: string) {}

  add(key: string, expectation: string, value: unknown): void {
    this.list.push(`${this.file}: ${key} must be ${expectation}, got ${show(value)}`);
  }

  note(message: string): void {
    this.list.push(`${this.file}: ${message}`);
  }

  get ok(): boolean {
    return this.list.length === 0;
  }
}

export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? value.slice(0, 77) + '...' : value);
  try {
    const text = JSON.stringify(value);
    return text.length > 80 ? text.slice(0, 77) + '...' : text;
  } catch {
    return String(value);
  }
}

export type Obj = Record<string, unknown>;

export function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reports keys that the schema does not know (typos would otherwise be silently ignored). */
export function rejectUnknownKeys(p: Problems, obj: Obj, prefix: string, known: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) p.note(`${prefix}${key} is not a known key (known: ${known.join(', ')})`);
  }
}

/** Reads a section that must be a mapping; reports and returns {} otherwise. */
export function section(p: Problems, obj: Obj, key: string, prefix = ''): Obj {
  const value = obj[key];
  if (value === undefined || value === null) return {};
  if (!isObject(value)) {
    p.add(prefix + key, 'a mapping', value);
    return {};
  }
  return value;
}

export function readInt(
  p: Problems, obj: Obj, key: string, fallback: number, opts: { min?: number; max?: number; prefix?: string } = {},
): number {
  const value = obj[key];
  if (value === undefined || value === null) return fallback;
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    p.add((opts.prefix ?? '') + key, `an integer from ${min} to ${max}`, value);
    return fallback;
  }
  return value;
}

export function readNumber(
  p: Problems, obj: Obj, key: string, fallback: number, opts: { min?: number; max?: number; prefix?: string } = {},
): number {
  const value = obj[key];
  if (value === undefined || value === null) return fallback;
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_VALUE;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    p.add((opts.prefix ?? '') + key, `a number from ${min} to ${max}`, value);
    return fallback;
  }
  return value;
}

export function readString(
  p: Problems, obj: Obj, key: string, fallback: string,
  opts: { prefix?: string; pattern?: RegExp; expectation?: string } = {},
): string {
  const value = obj[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'string' || value.length === 0 || (opts.pattern && !opts.pattern.test(value))) {
    p.add((opts.prefix ?? '') + key, opts.expectation ?? 'a non-empty string', value);
    return fallback;
  }
  return value;
}

export function readOptionalString(
  p: Problems, obj: Obj, key: string, opts: { prefix?: string; pattern?: RegExp; expectation?: string } = {},
): string | null {
  const value = obj[key];
  if (value === undefined || value === null) return null;
  return readString(p, obj, key, '', opts) || null;
}

export function readBool(p: Problems, obj: Obj, key: string, fallback: boolean, prefix = ''): boolean {
  const value = obj[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') {
    p.add(prefix + key, 'true or false', value);
    return fallback;
  }
  return value;
}

export function readEnum<T extends string>(
  p: Problems, obj: Obj, key: string, allowed: readonly T[], fallback: T, prefix = '',
): T {
  const value = obj[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    p.add(prefix + key, `one of ${allowed.join(', ')}`, value);
    return fallback;
  }
  return value as T;
}

export function readIntList(
  p: Problems, obj: Obj, key: string, fallback: number[], opts: { min?: number; max?: number; prefix?: string } = {},
): number[] {
  const value = obj[key];
  if (value === undefined || value === null) return fallback;
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  if (
    !Array.isArray(value) || !value.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max)
  ) {
    p.add((opts.prefix ?? '') + key, `a list of integers from ${min} to ${max}`, value);
    return fallback;
  }
  return value as number[];
}
