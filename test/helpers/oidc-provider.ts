// A real OpenID provider for the tests: the `oidc-provider` package (the
// certified OP implementation) on 127.0.0.1, port chosen by the kernel,
// configured the way a site configures Keycloak for the broker: one
// confidential client with a secret, PKCE required, a `groups` claim (scope
// "groups" and the groups claim sent with userinfo, as Keycloak's group
// mapper does), refresh tokens, and RP-initiated logout. Accounts are a Map
// the test changes (remove a user from a group, delete them). `faults` turns
// the server into a bad one for a path (malformed JSON, HTTP 500, a JWKS of
// another key so that every signature fails to verify). Stopped in
// teardown; `stop()` earlier takes it off the network (provider down).
// Also a small provider-side browser that signs in through the provider's
// own login and consent forms (its development interactions), by plain HTTP.
import http from 'node:http';
import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { ExecutionContext } from 'ava';
import Provider from 'oidc-provider';

export interface TestAccount {
  preferred_username?: unknown;
  email?: string;
  groups?: unknown;
}

export interface TestProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  accounts: Map<string, TestAccount>;
  /** path (e.g. /token, /.well-known/openid-configuration) → what to answer instead of the provider. */
  faults: Map<string, Fault>;
  /** Requests the provider received, by path (how many times discovery ran, …). */
  hits: Map<string, number>;
  /**
   * Requests to this path wait until release() (a slow provider, to line up concurrent requests); `reached`
   * resolves when the first one arrives.
   */
  hold(path: string): { reached: Promise<void>; release: () => void };
  /** Takes the provider off the network (connections refused) until start(). */
  stop(): Promise<void>;
  start(): Promise<void>;
}

export type Fault = 'garbage-json' | 'http-500' | 'other-jwks';

export interface ProviderOptions {
  publicUrl: string;
  backendName?: string;
  /** ID token lifetime (s); the broker's clock is moved past it to test expiry. */
  idTokenTtlS?: number;
  /** The issuer is http://127.0.0.1:<port> + this (e.g. "/": an issuer with a trailing slash, as some sites have). */
  issuerSuffix?: string;
  /** false: no refresh tokens (re-checks then use userinfo with the access token). Default true, like Keycloak. */
  refreshTokens?: boolean;
}

export async function startOidcProvider(t: ExecutionContext, opts: ProviderOptions): Promise<TestProvider> {
  const server = http.createServer();
  await listen(server, 0);
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}${opts.issuerSuffix ?? ''}`;
  const clientId = 'qemu-web-desktop';
  const clientSecret = crypto.randomBytes(24).toString('base64url');
  const accounts = new Map<string, TestAccount>();
  const faults = new Map<string, Fault>();
  const hits = new Map<string, number>();
  const holds = new Map<string, { arrived: () => void; released: Promise<void> }>();
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };
  // Another key under the same kid: what a forged ID token's signer would publish (fault 'other-jwks').
  const otherKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
  const otherJwks = JSON.stringify({ keys: [{ ...otherKey, kid: 'test-key', use: 'sig', alg: 'RS256' }] });
  const name = opts.backendName ?? 'sso';
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId, client_secret: clientSecret,
      redirect_uris: [`${opts.publicUrl}/auth/oidc/${name}/callback`],
      post_logout_redirect_uris: [`${opts.publicUrl}/login`],
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk as never] },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email', 'email_verified'],
      groups: ['groups'] },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    pkce: { required: () => true },
    // Like Keycloak: a refresh token with every code exchange, no offline_access scope needed.
    issueRefreshToken: async (_ctx, client) => opts.refreshTokens !== false && client.grantTypeAllowed('refresh_token'),
    findAccount: async (_ctx, sub) => {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return { accountId: sub, claims: async () => ({ sub, preferred_username: sub, ...account }) };
    },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    ttl: {
      IdToken: opts.idTokenTtlS ?? 600, AccessToken: 600, RefreshToken: 3600, Interaction: 600, Session: 3600,
      Grant: 3600, AuthorizationCode: 60,
    },
  });
  const callback = provider.callback();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = new URL(req.url ?? '/', issuer).pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const held = holds.get(path);
    if (held) {
      held.arrived();
      void held.released.then(() => answer(req, res, path));
      return;
    }
    answer(req, res, path);
  });
  const answer = (req: http.IncomingMessage, res: http.ServerResponse, path: string) => {
    const fault = faults.get(path);
    if (fault === 'garbage-json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"issuer": "' + issuer + '", "token_endpoint":');
      return;
    }
    if (fault === 'other-jwks') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(otherJwks);
      return;
    }
    if (fault === 'http-500') {
      res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error');
      return;
    }
    callback(req, res);
  };
  let running = true;
  const stop = async () => {
    if (!running) return;
    running = false;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };
  t.teardown(stop);
  return {
    issuer, clientId, clientSecret, accounts, faults, hits, stop,
    hold: (path: string) => {
      let arrived!: () => void;
      let release!: () => void;
      const reached = new Promise<void>((resolve) => { arrived = resolve; });
      const released = new Promise<void>((resolve) => { release = resolve; });
      holds.set(path, { arrived, released });
      return { reached, release: () => { holds.delete(path); release(); } };
    },
    start: async () => {
      if (running) return;
      await listen(server, port);
      running = true;
    },
  };
}

function listen(server: http.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * The user's browser at the provider: its own cookie jar, follows the provider's redirects, fills the login
 * form (any password: the development interactions accept it) and the consent form, and stops at the first
 * redirect that leaves the provider (the broker's callback), which it returns.
 */
export class ProviderBrowser {
  private readonly jar = new Map<string, string>();

  constructor(private readonly issuer: string) {}

  async authorize(url: string, login: string): Promise<URL> {
    let next: { method: 'GET' | 'POST'; url: string; body?: string } = { method: 'GET', url };
    for (let step = 0; step < 12; step++) {
      const res = await this.send(next.method, next.url, next.body);
      if (res.location) {
        const to = new URL(res.location, next.url);
        if (to.origin !== new URL(this.issuer).origin) return to;
        next = { method: 'GET', url: to.href };
        continue;
      }
      const action = /<form[^>]*action="([^"]+)"/.exec(res.text)?.[1];
      const prompt = /name="prompt" value="([^"]+)"/.exec(res.text)?.[1];
      if (res.status !== 200 || !action || !prompt) {
        throw new Error(`the provider answered ${res.status} without a form: ${res.text.slice(0, 300)}`);
      }
      const fields: Record<string, string> = prompt === 'login' ? { prompt, login, password: 'any' } : { prompt };
      next = { method: 'POST', url: new URL(action, next.url).href, body: new URLSearchParams(fields).toString() };
    }
    throw new Error('the provider kept redirecting');
  }

  /** Opens the provider's sign-in page and presses its Cancel link: returns where the provider sends the browser. */
  async cancel(url: string): Promise<URL> {
    let at = url;
    for (let step = 0; step < 6; step++) {
      const res = await this.send('GET', at);
      if (res.location) {
        at = new URL(res.location, at).href;
        continue;
      }
      const abort = /<a href="([^"]+\/abort)"/.exec(res.text)?.[1];
      if (!abort) throw new Error(`no Cancel link on the provider's page: ${res.text.slice(0, 300)}`);
      const out = await this.send('GET', new URL(abort, at).href);
      const back = await this.send('GET', new URL(out.location!, at).href);
      return new URL(back.location!, at);
    }
    throw new Error('the provider kept redirecting');
  }

  /** A GET at the provider with this browser's cookies: status, location and body. */
  async get(url: string): Promise<{ status: number; location: string | null; text: string }> {
    return this.send('GET', url);
  }

  private async send(method: string, url: string, body?: string) {
    const headers: Record<string, string> = { cookie: [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ') };
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    for (const set of res.headers.getSetCookie()) {
      const pair = set.split(';')[0]!;
      const eq = pair.indexOf('=');
      this.jar.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    return { status: res.status, location: res.headers.get('location'), text: await res.text() };
  }
}
