// Single sign-on logins (the `oidc` backends): starting and completing a
// login, re-checking a login with its provider, and the logout URL. Decides
// what each outcome means for the user (the page's status and words) and
// reports every outcome to one sink (reportLogin) — the place where the audit
// trail and the auth metrics are fed. No HTTP here (routes/oidc.ts), and no
// token, code or secret ever goes into a log line or an event.
import fs from 'node:fs';
import type { Config } from '../../config/schema.js';
import type { OidcBackendConfig } from '../../config/oidc.js';
import type { Logger } from '../../log.js';
import { QwdError } from '../../errors.js';
import type { Identity } from '../types.js';
import type { ScriptDecl } from '../../config/guest.js';
import { conditionGroups, decideIdentity } from './claims.js';
import {
  OidcProviderClient, OidcProviderError, type KeptTokens, type OidcFailureKind, type PendingChecks,
} from './provider-client.js';
import type { AuthAttemptOutcome } from '../../metrics/recorder.js';

export type OidcOutcome =
  /** Logged in. */
  | 'accepted'
  /** Not allowed (allowedGroups), or no usable user name. */
  | 'refused'
  /** The provider or its answer failed (down, malformed, expired ID token, replayed code). */
  | 'failed'
  /** A re-check ended the login (removed from allowedGroups, token revoked, grace over). */
  | 'ended'
  /** A re-check could not reach the provider; the login is kept for now. */
  | 'kept-unreachable'
  | 'logout';

/** One login event: who (when known), through which backend, with what outcome; `detail` is for operators. */
export interface LoginEvent {
  backend: string;
  outcome: OidcOutcome;
  user: string | null;
  detail?: string;
  /** Why a 'failed' login failed: the provider's side (OidcFailureKind), or the rate limit on starts. */
  failure?: OidcFailureKind | 'rate-limited';
}

export type LoginEventSink = (event: LoginEvent) => void;

/**
 * A login event as a login attempt in the metrics' terms (qwd_auth_attempts_total), or null for what is not an
 * attempt (a logout, a re-check). A provider that is down or answers garbage is 'unavailable', as a password
 * backend that cannot be asked; a used code, a wrong state or a refusal is 'invalid'.
 */
export function attemptOutcome(event: LoginEvent): AuthAttemptOutcome | null {
  switch (event.outcome) {
    case 'accepted': return 'success';
    case 'refused': return 'invalid';
    case 'failed':
      if (event.failure === 'rate-limited') return 'rate-limited';
      return event.failure === 'unavailable' || event.failure === 'bad-response' ? 'unavailable' : 'invalid';
    default: return null;
  }
}

/** What a login keeps in the broker's web session besides the Identity. */
export interface OidcLoginState {
  backend: string;
  tokens: KeptTokens;
  /** Last successful check with the provider (the login itself, or a re-check), on the broker's clock. */
  checkedAt: number;
  /** Set while re-checks fail because the provider is unreachable: no new attempt before this time. */
  retryAt?: number;
}

export type LoginCompletion =
  | { ok: true; identity: Identity; state: OidcLoginState }
  | { ok: false; status: 400 | 403 | 502 | 503; title: string; message: string };

export type RecheckDecision =
  | { action: 'keep' }
  | { action: 'update'; identity: Identity; state: OidcLoginState }
  | { action: 'end'; reason: string };

/** How long a login start (state, nonce, PKCE verifier) waits for its callback. */
export const PENDING_TTL_MS = 10 * 60 * 1000;

export class OidcLogins {
  private readonly clients = new Map<string, OidcProviderClient>();

  constructor(
    private readonly config: Config, private readonly log: Logger, private readonly now: () => number,
    private readonly onEvent: LoginEventSink = () => {},
    /**
     * The machines' boot scripts (the catalog's, read at each login: it can be reloaded): the groups their
     * conditions name are kept in every login, like those of the site's guest.bootScripts.
     */
    private readonly machineScripts: () => Iterable<readonly ScriptDecl[]> = () => [],
  ) {
    const publicUrl = config.publicUrl ?? '';
    for (const b of config.auth.backends) {
      if (b.type !== 'oidc') continue;
      this.clients.set(b.name, new OidcProviderClient(
        b, readSecret(b), `${publicUrl}/auth/oidc/${b.name}/callback`, `${publicUrl}/login`, now,
      ));
    }
  }

  has(name: string): boolean {
    return this.clients.has(name);
  }

  label(name: string): string {
    return this.clients.get(name)?.cfg.label ?? name;
  }

  /** Every login outcome goes through here: the log line, then the sink (audit rows, metrics). */
  reportLogin(event: LoginEvent): void {
    const level = event.outcome === 'accepted' || event.outcome === 'logout' ? 'info' : 'warn';
    this.log[level]({ backend: event.backend, user: event.user, outcome: event.outcome, detail: event.detail },
      `single sign-on: ${event.outcome}`);
    try {
      this.onEvent(event);
    } catch (err) {
      // A failing audit or metrics sink must not turn a login into an error page; it is logged.
      this.log.error({ err, backend: event.backend }, 'login event sink failed');
    }
  }

  /** The provider's authorization URL and the checks to keep for the callback; throws OidcProviderError. */
  async begin(name: string): Promise<{ url: string; checks: PendingChecks }> {
    try {
      return await this.client(name).startLogin();
    } catch (err) {
      const failure = err instanceof OidcProviderError ? err : new OidcProviderError('bad-response', String(err));
      this.reportLogin({
        backend: name, outcome: 'failed', user: null, detail: `login start: ${failure.message}`, failure: failure.kind,
      });
      throw failure;
    }
  }

  async complete(name: string, search: string, checks: PendingChecks): Promise<LoginCompletion> {
    const client = this.client(name);
    const label = client.cfg.label;
    let result;
    try {
      result = await client.finishLogin(search, checks);
    } catch (err) {
      const failure = err as OidcProviderError;
      this.reportLogin({
        backend: name, outcome: 'failed', user: null, detail: failure.message, failure: failure.kind,
      });
      return failedLogin(failure, label);
    }
    const decision = decideIdentity(result.claims, client.cfg, this.config.auth.admins, this.namedGroups());
    if (!decision.ok) {
      this.reportLogin({ backend: name, outcome: 'refused', user: decision.user, detail: decision.detail });
      return { ok: false, status: 403, title: 'Login refused', message: decision.userMessage };
    }
    if (decision.groupsDropped > 0) {
      this.log.warn({ backend: name, user: decision.identity.user, groups: decision.groupsSeen,
        kept: decision.identity.groups.length }, 'single sign-on: more groups than are kept; the rest are dropped');
    }
    this.reportLogin({ backend: name, outcome: 'accepted', user: decision.identity.user });
    return {
      ok: true, identity: decision.identity, state: { backend: name, tokens: result.tokens, checkedAt: this.now() },
    };
  }

  /**
   * Is this login still good? Asks the provider when the last check is older than recheckS. A provider that
   * says no (token refused, user gone, not in allowedGroups any more, another user name) ends the login; one
   * that cannot be reached (or answers garbage) keeps it until unreachableGraceS after the last good check,
   * asking again at most every min(recheckS, 30) s meanwhile.
   */
  async recheck(identity: Identity, state: OidcLoginState): Promise<RecheckDecision> {
    const client = this.clients.get(state.backend);
    if (!client) return { action: 'end', reason: `backend ${state.backend} is no longer configured` };
    const cfg = client.cfg;
    const now = this.now();
    if (now - state.checkedAt < cfg.recheckS * 1000) return { action: 'keep' };
    if (state.retryAt !== undefined && now < state.retryAt) return this.withinGrace(identity, state, cfg, now, null);
    let result;
    try {
      result = await client.recheck(state.tokens);
    } catch (err) {
      const failure = err as OidcProviderError;
      if (failure.kind === 'invalid-grant' || failure.kind === 'refused') {
        return this.end(identity, state, `the provider refused the re-check: ${failure.message}`);
      }
      return this.withinGrace(identity, state, cfg, now, failure);
    }
    const decision = decideIdentity(result.claims, cfg, this.config.auth.admins, this.namedGroups());
    if (!decision.ok) return this.end(identity, state, decision.detail);
    if (decision.identity.user !== identity.user) {
      return this.end(identity, state, `the user name changed at the provider (now ${decision.identity.user})`);
    }
    return {
      action: 'update', identity: decision.identity,
      state: { backend: state.backend, tokens: result.tokens, checkedAt: now },
    };
  }

  /** Where to send the browser after the broker's own logout: the provider's end_session_endpoint, or null. */
  async logoutUrl(state: OidcLoginState, user: string): Promise<string | null> {
    const client = this.clients.get(state.backend);
    this.reportLogin({ backend: state.backend, outcome: 'logout', user });
    return client ? client.logoutUrl(state.tokens.idToken) : null;
  }

  private withinGrace(
    identity: Identity, state: OidcLoginState, cfg: OidcBackendConfig, now: number, failure: OidcProviderError | null,
  ): RecheckDecision {
    if (now - state.checkedAt >= (cfg.recheckS + cfg.unreachableGraceS) * 1000) {
      return this.end(identity, state, `the provider could not be asked for ${Math.round((now - state.checkedAt)
        / 1000)} s (unreachableGraceS ${cfg.unreachableGraceS})${failure ? `: ${failure.message}` : ''}`);
    }
    if (!failure) return { action: 'keep' };
    this.reportLogin({ backend: state.backend, outcome: 'kept-unreachable', user: identity.user,
      detail: `${failure.message}; the login is kept until ${new Date(state.checkedAt
        + (cfg.recheckS + cfg.unreachableGraceS) * 1000).toISOString()}` });
    return {
      action: 'update', identity,
      state: { ...state, retryAt: now + Math.min(cfg.recheckS, 30) * 1000 },
    };
  }

  private end(identity: Identity, state: OidcLoginState, reason: string): RecheckDecision {
    this.reportLogin({ backend: state.backend, outcome: 'ended', user: identity.user, detail: reason });
    return { action: 'end', reason };
  }

  /** The groups a boot-script condition names (site and machines): never dropped from a login. */
  private namedGroups(): Set<string> {
    return conditionGroups([this.config.guest.bootScripts, ...this.machineScripts()]);
  }

  private client(name: string): OidcProviderClient {
    const client = this.clients.get(name);
    if (!client) throw new QwdError('QWD_NOT_FOUND', `no oidc backend named ${name}`);
    return client;
  }
}

/**
 * The origins the SSO login and logout forms are redirected to (the CSP's form-action must allow them): the
 * issuers' origins, where Keycloak and Dex serve their authorization and end-session endpoints.
 */
export function singleSignOnOrigins(config: Config): string[] {
  return [...new Set(config.auth.backends.flatMap((b) => (b.type === 'oidc' ? [new URL(b.issuer).origin] : [])))];
}

function failedLogin(failure: OidcProviderError, label: string): LoginCompletion {
  switch (failure.kind) {
    case 'unavailable':
      return {
        ok: false, status: 503, title: 'Login service unavailable',
        message: `${label} cannot be reached right now. Please try again later.`,
      };
    case 'invalid-grant':
      return {
        ok: false, status: 400, title: 'Login not completed',
        message: 'This login was already used or has expired. Please log in again.',
      };
    case 'refused':
      return {
        ok: false, status: 403, title: 'Login refused',
        message: `${label} did not log you in. Please try again, or ask the administrators.`,
      };
    case 'bad-response':
      return {
        ok: false, status: 502, title: 'Login not completed',
        message: `The answer from ${label} could not be accepted. Please try again; if it happens again, tell ` +
          'the administrators.',
      };
  }
}

function readSecret(b: OidcBackendConfig): string {
  if (b.clientSecret) return b.clientSecret;
  try {
    return fs.readFileSync(b.clientSecretFile ?? '', 'utf8').trim();
  } catch (err) {
    throw new QwdError('QWD_CONFIG_INVALID', `auth backend ${b.name}: clientSecretFile ${b.clientSecretFile} cannot ` +
      `be read (${(err as NodeJS.ErrnoException).code ?? err})`, { cause: err });
  }
}
