// Addresses and CIDR blocks (IPv4 and IPv6) as config values: parsed, normalised
// (host bits cleared) and formatted back. Pure; node:net only validates.
import net from 'node:net';

export interface Cidr {
  readonly family: 4 | 6;
  /** The network address, normalised (host bits cleared). */
  readonly address: string;
  readonly prefix: number;
}

/** Denied unless a site says otherwise: link-local (cloud metadata services live at 169.254.169.254). */
export const DEFAULT_DENY = ['169.254.0.0/16', 'fe80::/10'] as const;

/** Parses "10.1.0.0/16", "2001:db8::/32" or a bare address (a /32 or /128); null when it is not one. */
export function parseCidr(text: string): Cidr | null {
  const [addr, bits, extra] = text.trim().split('/');
  if (addr === undefined || extra !== undefined) return null;
  const family = net.isIPv4(addr) ? 4 : net.isIPv6(addr) ? 6 : 0;
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  if (bits !== undefined && !/^\d{1,3}$/.test(bits)) return null;
  const prefix = bits === undefined ? max : Number(bits);
  if (prefix > max) return null;
  const bytes = family === 4 ? ipv4Bytes(addr) : ipv6Bytes(addr);
  if (!bytes) return null;
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return { family, address: family === 4 ? [...bytes].join('.') : formatIpv6(bytes), prefix };
}

export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

function ipv4Bytes(addr: string): Uint8Array | null {
  const parts = addr.split('.').map(Number);
  return parts.length === 4 && parts.every(
    (n) => Number.isInteger(n) && n >= 0 && n <= 255
  ) ? Uint8Array.from(parts) : null;
}

function ipv6Bytes(addr: string): Uint8Array | null {
  let text = addr;
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes its two 16-bit words.
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = ipv4Bytes(v4[2]!);
    if (!b) return null;
    text = `${v4[1]}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parse = (s: string | undefined) => (
    s ? s.split(':').map((h) => (/^[0-9a-f]{1,4}$/i.test(h) ? parseInt(h, 16) : NaN)) : []
  );
  const a = parse(halves[0]);
  const b = halves.length === 2 ? parse(halves[1]) : [];
  if (halves.length === 2 && a.length + b.length > 7) return null;
  const words = halves.length === 2 ? [...a, ...new Array<number>(8 - a.length - b.length).fill(0), ...b] : a;
  if (words.length !== 8 || words.some((w) => Number.isNaN(w))) return null;
  return Uint8Array.from(words.flatMap((w) => [w >> 8, w & 0xff]));
}

function formatIpv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i]! << 8) | bytes[i + 1]!);
  // RFC 5952: the longest run of two or more zero words becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
