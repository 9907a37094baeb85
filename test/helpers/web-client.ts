// A tiny browser for HTTP tests: keeps its cookies (the session cookie and,
// before a login, the CSRF cookie), reads the CSRF token from the last page,
// and posts forms the way the pages do.

export class WebClient {
  private readonly jar = new Map<string, string>();
  csrf = '';

  /** The Cookie header this browser sends. */
  get cookie(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  constructor(readonly baseUrl: string) {}

  async get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; location: string | null }> {
    const res = await fetch(this.baseUrl + path, { headers: { ...headers, cookie: this.cookie }, redirect: 'manual' });
    this.keepCookie(res);
    const text = await res.text();
    const m = /name="_csrf" value="([^"]+)"/.exec(text);
    if (m) this.csrf = m[1]!;
    return { status: res.status, text, location: res.headers.get('location') };
  }

  /** Posts a form with the page's CSRF token (unless withCsrf is false). */
  async post(path: string, fields: Record<string, string>, opts: { withCsrf?: boolean } = {}): Promise<{ status: number; text: string; location: string | null }> {
    if (opts.withCsrf !== false && !this.csrf) await this.get('/');
    const body = new URLSearchParams({ ...fields, ...(opts.withCsrf === false ? {} : { _csrf: this.csrf }) });
    const res = await fetch(this.baseUrl + path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: this.cookie }, body, redirect: 'manual' });
    this.keepCookie(res);
    const text = await res.text();
    const m = /name="_csrf" value="([^"]+)"/.exec(text);
    if (m) this.csrf = m[1]!;
    return { status: res.status, text, location: res.headers.get('location') };
  }

  /** A JSON API call with this browser's cookie (and X-CSRF-Token when asked). */
  async api(method: string, path: string, body?: unknown, opts: { withCsrf?: boolean } = {}): Promise<{ status: number; json: any }> {
    const headers: Record<string, string> = { cookie: this.cookie, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (opts.withCsrf) headers['x-csrf-token'] = this.csrf;
    const res = await fetch(this.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), redirect: 'manual' });
    this.keepCookie(res);
    const text = await res.text();
    let json: any = null;
    try {
      json = JSON.parse(text);
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

  private keepCookie(res: Response): void {
    for (const set of res.headers.getSetCookie()) {
      const pair = set.split(';')[0]!;
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      // A cleared cookie (Expires in the past, as res.clearCookie sends) is dropped.
      if (/expires=Thu, 01 Jan 1970/i.test(set) || pair.slice(eq + 1) === '') this.jar.delete(name);
      else this.jar.set(name, pair.slice(eq + 1));
    }
  }
}
