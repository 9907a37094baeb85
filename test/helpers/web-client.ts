// A tiny browser for HTTP tests: keeps its cookies (the session cookie and,
// before a login, the CSRF cookie), reads the CSRF token from the last page,
// and posts forms the way the pages do. With localAddress it connects from
// that loopback address (127.0.0.2, …), so a test has several real clients
// without trusting X-Forwarded-For.
import http from 'node:http';
import type { ApiJson } from './broker.js';

interface Answer {
  status: number;
  text: string;
  location: string | null;
  setCookies: string[];
  headers: http.IncomingHttpHeaders | Headers;
}

export class WebClient {
  private readonly jar = new Map<string, string>();
  csrf = '';

  constructor(readonly baseUrl: string, private readonly opts: { localAddress?: string } = {}) {}

  /** The Cookie header this browser sends. */
  get cookie(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  /** Takes over another browser's cookies (a Cookie header). */
  set cookie(header: string) {
    this.jar.clear();
    for (const part of header.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0) this.jar.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
  }

  async get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; location: string | null }> {
    const res = await this.send('GET', path, { ...headers, cookie: this.cookie });
    this.keepCsrf(res.text);
    return { status: res.status, text: res.text, location: res.location };
  }

  /** Posts a form with the page's CSRF token (unless withCsrf is false). */
  async post(path: string, fields: Record<string, string>, opts: { withCsrf?: boolean } = {}): Promise<{ status: number; text: string; location: string | null }> {
    if (opts.withCsrf !== false && !this.csrf) await this.get('/');
    const body = new URLSearchParams({ ...fields, ...(opts.withCsrf === false ? {} : { _csrf: this.csrf }) }).toString();
    const res = await this.send('POST', path, { 'content-type': 'application/x-www-form-urlencoded', cookie: this.cookie }, body);
    this.keepCsrf(res.text);
    return { status: res.status, text: res.text, location: res.location };
  }

  /** A JSON API call with this browser's cookie (and X-CSRF-Token when asked). */
  async api(method: string, path: string, body?: unknown, opts: { withCsrf?: boolean } = {}): Promise<{ status: number; json: ApiJson }> {
    const headers: Record<string, string> = { cookie: this.cookie, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (opts.withCsrf) headers['x-csrf-token'] = this.csrf;
    const res = await this.send(method, path, headers, body === undefined ? undefined : JSON.stringify(body));
    let json: ApiJson = null;
    try {
      json = JSON.parse(res.text);
    } catch {
      // 204 or HTML.
    }
    return { status: res.status, json };
  }

  get hasCookie(): boolean {
    return this.jar.size > 0;
  }

  /** Has this browser a cookie of this name? */
  holds(name: string): boolean {
    return this.jar.has(name);
  }

  private keepCsrf(text: string): void {
    const m = /name="_csrf" value="([^"]+)"/.exec(text);
    if (m) this.csrf = m[1]!;
  }

  private async send(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
    if (!headers.cookie) delete headers.cookie;
    const res = this.opts.localAddress ? await this.sendFrom(this.opts.localAddress, method, path, headers, body) : await this.fetch(method, path, headers, body);
    for (const set of res.setCookies) {
      const pair = set.split(';')[0]!;
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      // A cleared cookie (Expires in the past, as res.clearCookie sends) is dropped.
      if (/expires=Thu, 01 Jan 1970/i.test(set) || pair.slice(eq + 1) === '') this.jar.delete(name);
      else this.jar.set(name, pair.slice(eq + 1));
    }
    return res;
  }

  private async fetch(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
    const res = await fetch(this.baseUrl + path, { method, headers, body, redirect: 'manual' });
    return { status: res.status, text: await res.text(), location: res.headers.get('location'), setCookies: res.headers.getSetCookie(), headers: res.headers };
  }

  private sendFrom(localAddress: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
    const url = new URL(this.baseUrl + path);
    return new Promise((resolve, reject) => {
      const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, localAddress, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, location: res.headers.location ?? null, setCookies: res.headers['set-cookie'] ?? [], headers: res.headers }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  }
}
