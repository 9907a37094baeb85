// One OpenID provider as the broker talks to it, through openid-client (the
// certified relying-party library): discovery (cached once it worked), the
// authorization-code flow with PKCE (RFC 7636) and nonce, userinfo, the
// refresh-token grant for re-checks, and the RP-initiated logout URL
// (OpenID Connect RP-Initiated Logout 1.0). Every failure comes out as an
// OidcProviderError of a few kinds the routes decide on; nothing here logs,
// and no token, code or secret is put in an error message.
import * as oidc from 'openid-client';
import type { OidcBackendConfig } from '../../config/oidc.js';
import type { Claims } from './claims.js';

export type OidcFailureKind =
  /** Network error, timeout, or an HTTP 5xx: the provider may be back soon. */
  | 'unavailable'
  /** The provider answered, but not with something we can accept (malformed JSON, a bad or expired ID token). */
  | 'bad-response'
  /** The code or refresh token is not (or no longer) valid: invalid_grant, or userinfo refusing the token. */
  | 'invalid-grant'
  /** The provider refused the login itself (error=access_denied … on the callback) or the client (invalid_client). */
  | 'refused';

export class OidcProviderError extends Error {
  constructor(readonly kind: OidcFailureKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OidcProviderError';
  }
}

/** What a login start leaves in the browser session (single use, see routes/oidc.ts). */
export interface PendingChecks {
  state: string;
  nonce: string;
  verifier: string;
}

/** The tokens kept in the broker's web session for re-checks and logout (never logged, never sent to the browser). */
export interface KeptTokens {
  sub: string;
  refreshToken: string | null;
  /**
   * Only without a refresh token (the re-check then asks userinfo with it), and only up to MAX_KEPT_TOKEN: with a
   * refresh token the re-check gets a fresh one, so a possibly large access token is not stored in the session row.
   */
  accessToken: string | null;
  /** For id_token_hint at logout; null when it was too large to keep. */
  idToken: string | null;
}

/**
 * ID and access tokens larger than this are not kept (a claim with thousands of groups): logout then sends
 * client_id alone; a re-check without a refresh token and without a kept access token ends the login.
 */
export const MAX_KEPT_TOKEN = 8192;

export class OidcProviderClient {
  private metadata: Promise<oidc.ServerMetadata> | null = null;
  private readonly configs = new Map<number, oidc.Configuration>();

  constructor(
    readonly cfg: OidcBackendConfig,
    private readonly secret: string,
    /** <publicUrl>/auth/oidc/<name>/callback */
    readonly redirectUri: string,
    /** Where the provider sends the browser after logout. */
    readonly postLogoutRedirectUri: string,
    /** The broker's clock: tokens' exp/iat are judged on it (openid-client's clockSkew). */
    private readonly now: () => number,
  ) {}

  /** The provider's discovery document, fetched once it answers well (a failure is retried at the next call). */
  async serverMetadata(): Promise<oidc.ServerMetadata> {
    if (!this.metadata) {
      const attempt = this.discover();
      this.metadata = attempt;
      attempt.catch(() => {
        if (this.metadata === attempt) this.metadata = null;
      });
    }
    return this.metadata;
  }

  /** The end_session_endpoint, or null when discovery does not offer one (or cannot be had now). */
  async endSessionEndpoint(): Promise<string | null> {
    try {
      return (await this.serverMetadata()).end_session_endpoint ?? null;
    } catch {
      // The provider is unreachable at logout: the broker's own logout still happens; the caller says where to go.
      return null;
    }
  }

  async startLogin(): Promise<{ url: string; checks: PendingChecks }> {
    const config = await this.configuration();
    const checks = { state: oidc.randomState(), nonce: oidc.randomNonce(), verifier: oidc.randomPKCECodeVerifier() };
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri,
      scope: this.cfg.scopes.join(' '),
      code_challenge: await oidc.calculatePKCECodeChallenge(checks.verifier),
      code_challenge_method: 'S256',
      state: checks.state,
      nonce: checks.nonce,
    });
    return { url: url.href, checks };
  }

  /**
   * The callback: exchanges the code (checking state, PKCE, nonce and the ID token), then reads userinfo.
   * `search` is the callback's query string ("?code=…&state=…"), put on the configured redirect URI
   * (never on the Host the request came with).
   */
  async finishLogin(search: string, checks: PendingChecks): Promise<{ claims: Claims; tokens: KeptTokens }> {
    return this.guard(async () => {
      const config = await this.configuration();
      const current = new URL(this.redirectUri);
      current.search = search;
      const response = await oidc.authorizationCodeGrant(config, current, {
        pkceCodeVerifier: checks.verifier, expectedState: checks.state, expectedNonce: checks.nonce,
        idTokenExpected: true,
      });
      return this.identityClaims(config, response, null);
    });
  }

  /**
   * Asks the provider again who this is now: the refresh-token grant (which a provider refuses for a
   * disabled or deleted user) and then userinfo; without a refresh token, userinfo with the access token.
   */
  async recheck(kept: KeptTokens): Promise<{ claims: Claims; tokens: KeptTokens }> {
    return this.guard(async () => {
      const config = await this.configuration();
      if (kept.refreshToken) {
        const response = await oidc.refreshTokenGrant(config, kept.refreshToken);
        return this.identityClaims(config, response, kept);
      }
      if (!kept.accessToken) throw new OidcProviderError('invalid-grant', 'no refresh or access token kept');
      const info = await oidc.fetchUserInfo(config, kept.accessToken, kept.sub);
      return { claims: { ...info }, tokens: kept };
    });
  }

  /** The provider's logout URL (RP-initiated logout), or null when it offers none. */
  async logoutUrl(idToken: string | null): Promise<string | null> {
    const endpoint = await this.endSessionEndpoint();
    if (!endpoint) return null;
    const config = await this.configuration();
    const params: Record<string, string> = { post_logout_redirect_uri: this.postLogoutRedirectUri };
    if (idToken) params.id_token_hint = idToken;
    else params.client_id = this.cfg.clientId;
    return oidc.buildEndSessionUrl(config, params).href;
  }

  private async identityClaims(
    config: oidc.Configuration, response: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers,
    previous: KeptTokens | null,
  ): Promise<{ claims: Claims; tokens: KeptTokens }> {
    const idClaims = response.claims();
    const sub = idClaims?.sub ?? previous?.sub;
    if (!sub) throw new OidcProviderError('bad-response', 'the token response has no ID token');
    if (previous && sub !== previous.sub) {
      throw new OidcProviderError('invalid-grant', 'the refreshed ID token is for another subject');
    }
    let claims: Claims = { ...(idClaims ?? {}) };
    // Keycloak puts mapped claims in the ID token, Dex and oidc-provider (by default) in userinfo: read both.
    if ((await this.serverMetadata()).userinfo_endpoint) {
      const info = await oidc.fetchUserInfo(config, response.access_token, sub);
      claims = { ...claims, ...info };
    }
    const idToken = response.id_token ?? previous?.idToken ?? null;
    const refreshToken = response.refresh_token ?? previous?.refreshToken ?? null;
    return {
      claims,
      tokens: {
        sub, refreshToken,
        accessToken: refreshToken === null ? bounded(response.access_token) : null,
        idToken: bounded(idToken),
      },
    };
  }

  private async discover(): Promise<oidc.ServerMetadata> {
    return this.guard(async () => {
      const config = await oidc.discovery(
        new URL(this.cfg.issuer), this.cfg.clientId, { client_secret: this.secret },
        oidc.ClientSecretBasic(this.secret),
        { execute: this.cfg.allowHttpIssuer ? [oidc.allowInsecureRequests] : [], timeout: this.timeoutS() },
      );
      return config.serverMetadata();
    });
  }

  /**
   * A Configuration whose clock is the broker's: openid-client freezes clockSkew into it, so there is one per
   * offset (one in production, where the broker's clock is the system's).
   */
  private async configuration(): Promise<oidc.Configuration> {
    const server = await this.serverMetadata();
    const skewS = Math.round((this.now() - Date.now()) / 1000);
    let config = this.configs.get(skewS);
    if (!config) {
      config = new oidc.Configuration(
        server, this.cfg.clientId, { client_secret: this.secret, [oidc.clockSkew]: skewS },
        oidc.ClientSecretBasic(this.secret),
      );
      if (this.cfg.allowHttpIssuer) oidc.allowInsecureRequests(config);
      // The ID token's signature is checked against the provider's JWKS (fetched once per Configuration, then
      // cached): over https TLS already vouches for the token endpoint, but over an http:// issuer nothing else
      // would, and the cost is one JWKS request and an RSA/EC verification per login or refresh.
      oidc.enableNonRepudiationChecks(config);
      config.timeout = this.timeoutS();
      if (this.configs.size > 8) this.configs.clear();
      this.configs.set(skewS, config);
    }
    return config;
  }

  /** openid-client counts its timeout in seconds and aborts after timeout * 1000 ms: fractions keep timeoutMs exact. */
  private timeoutS(): number {
    return this.cfg.timeoutMs / 1000;
  }

  /** Runs a provider call and turns whatever it throws into an OidcProviderError. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw classify(err);
    }
  }
}

function bounded(token: string | null | undefined): string | null {
  return token && token.length <= MAX_KEPT_TOKEN ? token : null;
}

/** openid-client's errors (and fetch's) → the kinds the routes decide on; the message names no token. */
export function classify(err: unknown): OidcProviderError {
  if (err instanceof OidcProviderError) return err;
  if (err instanceof oidc.AuthorizationResponseError) {
    return new OidcProviderError('refused', `the provider answered the authorization with error=${err.error}`, {
      cause: err,
    });
  }
  if (err instanceof oidc.ResponseBodyError) {
    const kind = err.error === 'invalid_grant' ? 'invalid-grant' : err.status >= 500 ? 'unavailable' : 'refused';
    return new OidcProviderError(kind, `the provider answered HTTP ${err.status} error=${err.error}`, { cause: err });
  }
  if (err instanceof oidc.WWWAuthenticateChallengeError) {
    const kind = err.status === 401 ? 'invalid-grant' : err.status >= 500 ? 'unavailable' : 'refused';
    return new OidcProviderError(kind, `the provider refused the token (HTTP ${err.status})`, { cause: err });
  }
  const e = err as { name?: string; code?: string; message?: string; cause?: unknown };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return new OidcProviderError('unavailable', 'the provider did not answer in time', { cause: err });
  }
  if (err instanceof TypeError && !e.code) {
    // fetch() failed: connection refused, reset, DNS. Its cause names the system error.
    const cause = (e.cause as { code?: string } | undefined)?.code;
    return new OidcProviderError('unavailable', `the provider cannot be reached (${cause ?? e.message})`, {
      cause: err,
    });
  }
  if (e?.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM') {
    const status = (e.cause as { status?: number } | undefined)?.status ?? 0;
    return new OidcProviderError(
      status >= 500 ? 'unavailable' : 'bad-response', `the provider answered with HTTP status ${status}`,
      { cause: err },
    );
  }
  return new OidcProviderError(
    'bad-response', `the provider's answer was not accepted: ${e?.code ?? e?.name ?? 'error'}: ${e?.message ?? err}`,
    { cause: err },
  );
}
