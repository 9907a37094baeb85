// Describes a value someone sent (a JSON body field, a form field) for an
// error message, in at most maxChars characters. Never JSON.stringify the raw
// value: 10,000 nested arrays in 20 KB of JSON overflow the stack there (and
// a huge string would be copied into every log line). Only the top level and
// the first items of a container are looked at; nested containers are shown
// as [...] or {...}, so the cost is bounded whatever the input.

const MAX_ITEMS = 8;

export function describeValue(value: unknown, maxChars = 80): string {
  const text = describeTop(value, Math.max(16, maxChars));
  return text.length <= maxChars ? text : `${text.slice(0, Math.max(0, maxChars - 3))}...`;
}

function describeTop(value: unknown, budget: number): string {
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_ITEMS).map((v) => describeLeaf(v, budget));
    return `[${items.join(', ')}${value.length > MAX_ITEMS ? `, ... (${value.length} items)` : ''}]`;
  }
  if (isPlainObject(value)) {
    const keys = Object.keys(value);
    const shown = keys.slice(0, MAX_ITEMS).map((k) => `${quote(k, 24)}: ${describeLeaf(value[k], budget)}`);
    return `{${shown.join(', ')}${keys.length > MAX_ITEMS ? `, ... (${keys.length} keys)` : ''}}`;
  }
  return describeLeaf(value, budget);
}

/** A value without looking inside containers. */
function describeLeaf(value: unknown, budget: number): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string') return quote(value, budget);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return value.length === 0 ? '[]' : '[...]';
  if (typeof value === 'object') return '{...}';
  return typeof value;
}

function quote(text: string, budget: number): string {
  const cut = text.length > budget ? `${text.slice(0, budget)}...` : text;
  // JSON.stringify of a string is flat (no recursion): it escapes quotes and control characters.
  return JSON.stringify(cut);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
