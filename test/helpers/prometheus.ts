// The real Prometheus of the tests (Debian's `prometheus` package): promtool to
// check a scraped body, and a Prometheus server on a loopback port, in a temp
// dir, configured from the example scrape config in etc/prometheus/ with the
// broker's target and token file filled in, stopped by its PID in teardown.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { parse, stringify } from 'yaml';
import { ROOT, requireProgram, tempDir, waitFor } from './env.js';
import { runProgram, startPeerOnFreePorts } from './peer-process.js';

export const EXAMPLE_SCRAPE_CONFIG = path.join(ROOT, 'etc', 'prometheus', 'prometheus.yml');
export const DASHBOARD = path.join(ROOT, 'etc', 'grafana', 'qemu-web-desktop-dashboard.json');

/** `promtool check metrics` on a scraped body: its exit code and what it said (nothing when clean). */
export async function promtoolCheckMetrics(body: string): Promise<{ code: number | null; output: string }> {
  requireProgram('promtool', 'prometheus');
  const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
  const code = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  child.stdin.end(body);
  return { code: await code, output: output.trim() };
}

export interface PrometheusServer {
  url: string;
  pid: number;
  /** An instant query through the HTTP API; the whole answer (status, data or errorType/error). */
  query(expr: string): Promise<PromAnswer>;
  /** The scrape targets as Prometheus reports them (/api/v1/targets). */
  targets(): Promise<Array<{ health: string; lastError: string; scrapeUrl: string }>>;
  /** Waits until an instant query returns a sample whose value passes `ok`; resolves with that value. */
  waitForValue(expr: string, ok: (v: number) => boolean, what: string, timeoutMs?: number): Promise<number>;
}

export interface PromAnswer {
  status: 'success' | 'error';
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
  errorType?: string;
  error?: string;
}

/**
 * Starts Prometheus scraping `target` (host:port) every second with the example's job, its bearer token file
 * replaced by `tokenFile` (or its authorization removed when null).
 */
export async function startPrometheus(
  t: ExecutionContext, target: string, tokenFile: string | null,
): Promise<PrometheusServer> {
  requireProgram('prometheus', 'prometheus');
  const dir = tempDir(t, 'qwd-prom-');
  const config = parse(fs.readFileSync(EXAMPLE_SCRAPE_CONFIG, 'utf8'));
  config.global.scrape_interval = '1s';
  config.global.evaluation_interval = '1s';
  const job = config.scrape_configs[0];
  job.static_configs = [{ targets: [target] }];
  job.scrape_timeout = '1s';
  if (tokenFile) job.authorization.credentials_file = tokenFile;
  else delete job.authorization;
  const configFile = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(configFile, stringify(config));
  // The example, filled in, must pass Prometheus' own config check first (a clearer failure than a server that exits).
  await runProgram('promtool', ['check', 'config', configFile]);
  const { peer, ports } = await startPeerOnFreePorts(t, {
    file: 'prometheus',
    portCount: 1,
    argsFor: ([port]) => [
      `--config.file=${configFile}`, `--web.listen-address=127.0.0.1:${port}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`, '--log.level=warn',
    ],
    readyWhat: 'Prometheus to answer /-/ready',
    isReady: async ([port]) => (await fetch(`http://127.0.0.1:${port}/-/ready`).catch(() => null))?.status === 200,
    readyTimeoutMs: 30000,
    termGraceMs: 10000,
  });
  const url = `http://127.0.0.1:${ports[0]}`;
  const query = async (expr: string): Promise<PromAnswer> => {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    return await res.json() as PromAnswer;
  };
  return {
    url, pid: peer.pid, query,
    targets: async () => {
      const res = await fetch(`${url}/api/v1/targets`);
      const json = await res.json() as { data: { activeTargets: Array<{ health: string; lastError: string; scrapeUrl: string }> } };
      return json.data.activeTargets;
    },
    waitForValue: async (expr, ok, what, timeoutMs = 20000) => (await waitFor(what, async () => {
      const answer = await query(expr);
      const value = answer.data?.result[0]?.value[1];
      return value !== undefined && ok(Number(value)) ? { value: Number(value) } : false;
    }, timeoutMs)).value,
  };
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * The samples of a Prometheus text body (exposition format 0.0.4), for asserting values; the body's validity is
 * promtool's to judge (promtoolCheckMetrics).
 */
export function parseSamples(body: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of the one sample with this name and (at least) these labels; undefined when there is none. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** The sum of every sample with this name and (at least) these labels. */
export function sampleSum(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);
}
