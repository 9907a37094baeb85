// "No token in this log": a broker that logs (at trace) to a file in the test's
// temp dir, a collector for every secret a test meets (link tokens, API
// tokens, login-link tokens, CSRF tokens, cookie values), and the assertion
// that none of them appears anywhere in the log.
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { startBroker, type Broker } from '../../src/main.js';
import { createLogger } from '../../src/log.js';
import type { Config } from '../../src/config/schema.js';
import { stopAllVms } from './broker.js';

export interface LoggingBroker {
  broker: Broker;
  logFile: string;
  /** Resolves when everything logged so far is in the file. */
  flushed(): Promise<void>;
}

/** A broker logging every level to <dir>/broker.log; its VMs are stopped and it is closed in teardown. */
export async function startLoggingBroker(t: ExecutionContext, config: Config, dir: string): Promise<LoggingBroker> {
  const logFile = path.join(dir, 'broker.log');
  const stream = fs.createWriteStream(logFile);
  const broker = await startBroker(config, createLogger('trace', stream));
  t.teardown(async () => {
    await stopAllVms(broker);
    await broker.close();
    await new Promise<void>((resolve) => stream.end(resolve));
  });
  const flushed = () => new Promise<void>((resolve, reject) => stream.write('', (err) => (err ? reject(err) : resolve())));
  return { broker, logFile, flushed };
}

/** Collects secrets as a test meets them. */
export class SecretCollector {
  readonly secrets = new Set<string>();

  add(...values: Array<string | null | undefined>): void {
    for (const v of values) if (v && v.length >= 16) this.secrets.add(v);
  }

  /** Every token-shaped thing in a page, a JSON answer or a mail: link tokens, API tokens, CSRF tokens. */
  addFrom(text: string): void {
    for (const m of text.matchAll(/(?:qwd_)?[A-Za-z0-9_-]{43}(?:\.[A-Za-z0-9_-]{43})?/g)) this.add(m[0]);
    for (const m of text.matchAll(/name="_csrf" value="([^"]+)"/g)) this.add(m[1]);
  }

  /** The value of every cookie in a Cookie header (the signed session id, the CSRF cookie). */
  addCookies(cookieHeader: string): void {
    for (const part of cookieHeader.split(';')) {
      const value = part.slice(part.indexOf('=') + 1).trim();
      this.add(value, safeDecode(value));
      // The session id inside the signed cookie "s:<id>.<mac>".
      const m = /^s:([^.]+)\.(.+)$/.exec(safeDecode(value));
      if (m) this.add(m[1], m[2]);
    }
  }
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The secrets that appear in the text (also percent-encoded, as in a logged URL). */
export function secretsIn(text: string, secrets: Iterable<string>): string[] {
  return [...secrets].filter((s) => text.includes(s) || text.includes(encodeURIComponent(s)));
}

/** Fails the test for every secret found in the log file; the log must have content (else nothing was checked). */
export function assertNoTokenInLog(t: ExecutionContext, logFile: string, secrets: Iterable<string>, minBytes = 1000): void {
  const text = fs.readFileSync(logFile, 'utf8');
  t.true(text.length >= minBytes, `the log ${logFile} has content (${text.length} bytes)`);
  const found = secretsIn(text, secrets);
  t.deepEqual(found.map((s) => `${s.slice(0, 6)}… at line ${text.slice(0, text.indexOf(s)).split('\n').length}`), [], 'no token in the log');
}
