// A tiny browser for HTTP tests: keeps the session cookie, reads the CSRF
// token from the last page, and posts forms the way the pages do.

export class WebClient {
  private cookie = '';
  csrf = '';

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
    return this.cookie !== '';
  }

  private keepCookie(res: Response): void {
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0]!;
  }
}
