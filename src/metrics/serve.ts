// GET /metrics: the Prometheus text of BrokerMetrics, behind an optional bearer
// token, either on a listener of its own (metrics.listen) or in front of the
// broker's Express app on its public listener. Answered below Express on
// purpose: a scrape needs no browser session, CSRF or anonymous-page brake,
// and identify() would read its Authorization header as an API token.
// A wrong or missing token gets 401 with WWW-Authenticate (RFC 6750 §3) and is
// compared in constant time; the token is never logged. Only GET and HEAD.
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { QwdError } from '../errors.js';
import type { BrokerMetrics } from './broker-metrics.js';

export const METRICS_PATH = '/metrics';

export type RequestListener = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Answers one scrape request (the path is the caller's business). */
export function metricsHandler(metrics: BrokerMetrics, token: string | null, log: Logger): RequestListener {
  const expected = token === null ? null : digest(token);
  return (req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return plain(res, 405, 'Method Not Allowed');
    }
    if (expected && !bearerMatches(req.headers.authorization, expected)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="qemu-web-desktop metrics"');
      return plain(res, 401, 'Unauthorized');
    }
    metrics.scrape().then((body) => {
      res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    }, (err: unknown) => {
      log.error({ err }, 'metrics scrape failed');
      if (!res.headersSent) plain(res, 500, 'Internal Server Error');
      else res.destroy();
    });
  };
}

/** The broker's own listener: /metrics goes to the scrape handler, everything else to the app. */
export function withMetricsPath(scrape: RequestListener, app: RequestListener): RequestListener {
  return (req, res) => {
    const url = req.url ?? '/';
    const pathEnd = url.indexOf('?');
    const pathname = pathEnd < 0 ? url : url.slice(0, pathEnd);
    if (pathname === METRICS_PATH) scrape(req, res);
    else app(req, res);
  };
}

export interface MetricsServer {
  /** http://host:port/metrics, with the port the kernel picked for port 0. */
  url: string;
  close(): Promise<void>;
}

/** A listener of its own (metrics.listen): /metrics and nothing else. */
export async function serveMetrics(
  listen: { host: string; port: number }, scrape: RequestListener,
): Promise<MetricsServer> {
  const server = http.createServer(withMetricsPath(scrape, (_req, res) => plain(res, 404, 'Not Found')));
  await new Promise<void>((resolve, reject) => {
    const where = `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
    const fail = (err: NodeJS.ErrnoException) => reject(new QwdError(
      'QWD_CONFIG_INVALID', `metrics.listen ${where}: cannot listen there (${err.code ?? err.message})`,
      { cause: err },
    ));
    server.once('error', fail);
    server.listen(listen.port, listen.host, () => {
      server.off('error', fail);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}${METRICS_PATH}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

/** Fixed-length digests make timingSafeEqual's comparison independent of where the tokens differ, or their length. */
function digest(value: string): Buffer {
  return crypto.createHash('sha256').update(value, 'utf8').digest();
}

function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  // RFC 6750 §2.1: "Bearer" (case-insensitive scheme, RFC 7235 §2.1), one space, the token.
  const m = header ? /^Bearer +([\x21-\x7e]+) *$/i.exec(header) : null;
  return m !== null && crypto.timingSafeEqual(digest(m[1]!), expected);
}

function plain(res: http.ServerResponse, status: number, text: string): void {
  const body = `${status} ${text}\n`;
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
