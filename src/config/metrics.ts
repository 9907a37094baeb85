// The `metrics:` section: whether the broker serves Prometheus metrics
// (GET /metrics, src/metrics/), where, and behind which bearer token. Off by
// default. Not quite pure: a bearerTokenFile is checked for readability here (as
// auth's caFile is), so that `qwdctl config check` reports a missing one; the
// token itself is read when the broker starts (metrics/serve.ts).
import fs from 'node:fs';
import path from 'node:path';
import { Problems, rejectUnknownKeys, section, readBool, readOptionalString, type Obj } from './check.js';

export interface MetricsConfig {
  readonly enabled: boolean;
  /**
   * A listener of its own for /metrics (e.g. 127.0.0.1:9464, [::1]:9464), so that metrics need not be on the public
   * listener; null: /metrics is served on the broker's own listener (listen:). Port 0 lets the kernel pick (tests).
   */
  readonly listen: { readonly host: string; readonly port: number } | null;
  /** A scrape must send `Authorization: Bearer <token>`; null: no token asked (bearerTokenFile may give one). */
  readonly bearerToken: string | null;
  /** A file holding the token (first line), read when the broker starts; resolved against the config's directory. */
  readonly bearerTokenFile: string | null;
}

const KEYS = ['enabled', 'listen', 'bearerToken', 'bearerTokenFile'] as const;
/** A token is a header value: printable ASCII without spaces, long enough not to be guessed. */
export const BEARER_TOKEN = /^[\x21-\x7e]{16,512}$/;
const TOKEN_EXPECTATION = 'at least 16 printable ASCII characters without spaces (e.g. openssl rand -hex 32)';

export function parseMetricsConfig(p: Problems, top: Obj, baseDir: string): MetricsConfig {
  const raw = section(p, top, 'metrics');
  rejectUnknownKeys(p, raw, 'metrics.', KEYS);
  const enabled = readBool(p, raw, 'enabled', false, 'metrics.');
  const listen = readListen(p, raw.listen);
  const bearerToken = readToken(p, raw.bearerToken);
  const fileRaw = readOptionalString(p, raw, 'bearerTokenFile', { prefix: 'metrics.' });
  const bearerTokenFile = fileRaw ? path.resolve(baseDir, fileRaw) : null;
  if (bearerToken && bearerTokenFile) {
    p.note('metrics.bearerToken and metrics.bearerTokenFile cannot both be set: keep one (the file is safer)');
  }
  if (bearerTokenFile) {
    // Checked here so that `qwdctl config check` reports it; read again (and its content checked) at start.
    try {
      fs.accessSync(bearerTokenFile, fs.constants.R_OK);
      const stat = fs.statSync(bearerTokenFile);
      if (!stat.isFile()) p.note(`metrics.bearerTokenFile: ${bearerTokenFile} is not a file`);
      else if (stat.mode & 0o004) {
        p.note(`metrics.bearerTokenFile: ${bearerTokenFile} can be read by every user: chmod o-r (e.g. 0600 or 0640)`);
      }
    } catch (err) {
      p.note(
        `metrics.bearerTokenFile: ${bearerTokenFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? err})`,
      );
    }
  }
  return { enabled, listen, bearerToken, bearerTokenFile };
}

/** The inline token; a bad one is described by its length only (it is, or is close to, a secret). */
function readToken(p: Problems, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') {
    p.note(`metrics.bearerToken must be a string of ${TOKEN_EXPECTATION}, got a ${typeof value}`);
    return null;
  }
  if (!BEARER_TOKEN.test(value)) {
    p.note(`metrics.bearerToken must be ${TOKEN_EXPECTATION}, got ${value.length} characters (not shown)`);
    return null;
  }
  return value;
}

/** "host:port", with IPv6 hosts in brackets ("[::1]:9464"); null/absent: the broker's own listener. */
function readListen(p: Problems, value: unknown): MetricsConfig['listen'] {
  if (value === undefined || value === null) return null;
  const expectation = 'an address and port like 127.0.0.1:9464 or [::1]:9464, or null for the broker\'s own listener';
  const m = typeof value === 'string' ? /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value) : null;
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    p.add('metrics.listen', expectation, value);
    return null;
  }
  return { host: m[1] ?? m[2]!, port };
}

/** The token a scrape must present, from the config or its file; null when none is asked. Throws what is wrong. */
export function readBearerToken(config: MetricsConfig): string | null {
  if (config.bearerToken) return config.bearerToken;
  if (!config.bearerTokenFile) return null;
  let text: string;
  try {
    text = fs.readFileSync(config.bearerTokenFile, 'utf8');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new Error(`metrics.bearerTokenFile: ${config.bearerTokenFile} cannot be read (${why})`, { cause: err });
  }
  const token = text.split('\n')[0]!.trim();
  // The content is never quoted back: it is (or is close to) a secret.
  if (!BEARER_TOKEN.test(token)) {
    const file = config.bearerTokenFile;
    throw new Error(`metrics.bearerTokenFile: the first line of ${file} must be ${TOKEN_EXPECTATION}`);
  }
  return token;
}
