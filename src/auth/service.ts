// The authentication service the HTTP layer uses: builds the backend chain
// from the config, applies rate limits, and runs the e-mail link flow.
import crypto from 'node:crypto';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { UserStore } from '../store/users.js';
import type { Mailer } from '../notify/mailer.js';
import { QwdError } from '../errors.js';
import { authenticateChain, type AuthAttemptHook } from './chain.js';
import { LoginRateLimiter, clientKey, loginKeys, type Admission, type Attempt } from './rate-limit.js';
import { localBackend } from './backends/local.js';
import { ldapBackend } from './backends/ldap.js';
import { imapBackend } from './backends/imap.js';
import { smtpBackend } from './backends/smtp.js';
import { USER_NAME, type AuthBackend, type Identity } from './types.js';
import type { EmailBackendConfig } from '../config/auth.js';
import type { LoginAttempt } from '../audit/login.js';

export type LoginOutcome =
  | { ok: true; identity: Identity }
  | { ok: false; status: 401 | 429 | 503; message: string; retryAfterS?: number };

export class AuthService {
  readonly backends: AuthBackend[];
  readonly emailBackend: EmailBackendConfig | null;
  private readonly limiter: LoginRateLimiter;
  /**
   * Where login attempts are recorded (the broker sets it to the audit trail: audit/login.ts); null records nothing.
   */
  auditLogin: ((attempt: LoginAttempt) => void) | null = null;

  constructor(
    private readonly config: Config, private readonly users: UserStore, private readonly mailer: Mailer | null,
    private readonly log: Logger, private readonly now: () => number = Date.now,
    /**
     * Told of every login attempt's backend (its config name) and outcome (metrics: recordAuthAttempt); nothing by
     * default. Public so that any login path (an OpenID Connect callback, a route) reports through the same hook.
     */
    readonly recordAttempt: AuthAttemptHook = () => {},
  ) {
    this.backends = config.auth.backends.flatMap((b): AuthBackend[] => {
      switch (b.type) {
        case 'none': return [];
        case 'local': return [localBackend(b.name, users)];
        case 'ldap': return [ldapBackend(b)];
        case 'imap': return [imapBackend(b)];
        case 'smtp': return [smtpBackend(b)];
        case 'email': return [];
        // Single sign-on has no password to check: its routes are http/routes/oidc.ts.
        case 'oidc': return [];
      }
    });
    this.emailBackend = (
      config.auth.backends.find((b) => b.type === 'email') as EmailBackendConfig | undefined
    ) ?? null;
    this.limiter = new LoginRateLimiter(config.auth.rateLimit.windowS, now);
  }

  /** No backend proves anything: users type a name (DARTS's "none"). */
  get open(): boolean {
    return this.config.auth.backends.every((b) => b.type === 'none');
  }

  /** The single sign-on backends, for the login page's "Log in with <label>" buttons. */
  get singleSignOn(): Array<{ name: string; label: string }> {
    return this.config.auth.backends.flatMap((b) => (b.type === 'oidc' ? [{ name: b.name, label: b.label }] : []));
  }

  get hasPasswordLogin(): boolean {
    return this.backends.length > 0;
  }

  /**
   * A login attempt for the audit trail, from any login path (password, e-mail link, an OpenID Connect callback).
   * Never throws: a trail that cannot be written is logged, and the login goes on as it was decided.
   */
  recordLogin(attempt: LoginAttempt): void {
    try {
      this.auditLogin?.(attempt);
    } catch (err) {
      this.log.error({ err: (err as Error).message, backend: attempt.backend }, 'login attempt could not be audited');
    }
  }

  /** knownDevice: the browser carries a mark of an earlier login as this name (auth/known-device.ts). */
  async login(user: string, password: string, ip: string, knownDevice = false): Promise<LoginOutcome> {
    const outcome = await this.checkLogin(user, password, ip, knownDevice);
    const name = user.trim();
    if (outcome.ok) {
      this.recordLogin({ backend: outcome.identity.via, user: outcome.identity.user, result: 'success', ip });
    } else {
      const result = outcome.status === 429 ? 'rate-limited' : outcome.status === 503 ? 'unavailable' : 'failure';
      this.recordLogin({ backend: 'password', user: name === '' ? null : name, result, ip });
    }
    return outcome;
  }

  private async checkLogin(user: string, password: string, ip: string, knownDevice: boolean): Promise<LoginOutcome> {
    const name = user.trim();
    const keys = loginKeys(this.config.auth.rateLimit, name, ip, { knownDevice });
    // Counted before the backends are asked (forgiven below on success), so
    // that concurrent guesses cannot all pass the check.
    const admission = this.limiter.admit(keys);
    if (!admission.admitted) {
      this.recordAttempt('chain', 'rate-limited');
      const wait = admission.retryAfterS;
      return { ok: false, status: 429, message: `Too many failed logins. Try again in ${wait} s.`, retryAfterS: wait };
    }
    if (!USER_NAME.test(name) || password === '') {
      this.recordAttempt('chain', 'invalid');
      return { ok: false, status: 401, message: 'Invalid user name or password.' };
    }
    const result = await authenticateChain(
      this.backends, name, password, this.config.auth.admins, this.log, this.recordAttempt,
    );
    if (result.ok) {
      this.limiter.forgive(admission.attempt);
      this.limiter.succeed(keys);
      return result;
    }
    if (result.reason === 'unavailable') {
      // Nobody checked the password: not a guess that counts.
      this.limiter.forgive(admission.attempt);
      return { ok: false, status: 503, message: 'The login service is unavailable right now. Please try again later.' };
    }
    return { ok: false, status: 401, message: 'Invalid user name or password.' };
  }

  /** Mails a single-use login link; says nothing about whether the address is known. */
  async sendEmailLink(address: string, ip: string): Promise<void> {
    const backend = this.emailBackend;
    if (!backend || !this.mailer) {
      throw new QwdError(
        'QWD_BAD_REQUEST', 'e-mail login is not configured', { userMessage: 'Login by e-mail is not available here.' },
      );
    }
    // Only the configured public URL, never the request's Host header (which the
    // requester controls). The config check makes this unreachable; kept as a guard.
    const baseUrl = this.config.publicUrl;
    if (!baseUrl) {
      throw new QwdError(
        'QWD_CONFIG_INVALID', 'e-mail login needs publicUrl in the config',
        { userMessage: 'Login by e-mail is not available here.' },
      );
    }
    const email = address.trim().toLowerCase();
    const keys = loginKeys(this.config.auth.rateLimit, email, ip);
    const wait = this.limiter.retryAfterS(keys);
    if (wait > 0) {
      throw new QwdError(
        'QWD_ADMISSION_LIMIT', 'e-mail link rate limited',
        { userMessage: `Too many login links requested. Try again in ${wait} s.` },
      );
    }
    const m = /^[a-z0-9._%+-]{1,64}@([a-z0-9.-]{1,253}\.[a-z]{2,63})$/.exec(email);
    if (!m) {
      throw new QwdError(
        'QWD_BAD_REQUEST', 'not an e-mail address', { userMessage: 'Please enter a valid e-mail address.' },
      );
    }
    if (!backend.allowedDomains.includes(m[1]!)) {
      this.limiter.fail(keys);
      throw new QwdError(
        'QWD_BAD_REQUEST', `domain ${m[1]} not allowed`,
        { userMessage: `Login links are only sent to addresses at ${backend.allowedDomains.join(', ')}.` },
      );
    }
    // Counted like a failure so that one address cannot be flooded with links.
    this.limiter.fail(keys);
    const token = crypto.randomBytes(32).toString('base64url');
    this.users.addEmailToken(hashToken(token), email, Date.now() + backend.linkTtlS * 1000);
    const minutes = Math.round(backend.linkTtlS / 60);
    await this.mailer.send({
      to: email,
      subject: 'Your qemu-web-desktop login link',
      text: `Open this link to log in (it works once, for ${minutes} minutes):\n\n${baseUrl}/login/email/${token}` +
        `\n\nIf you did not ask for it, ignore this mail.\n`,
    });
    this.log.info({ email }, 'login link mailed');
  }

  /**
   * The address a login link would log in, while it is usable (opening the link shows it; only the POST redeems it).
   */
  peekEmailLink(token: string): string | null {
    if (!this.emailBackend || !/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    return this.users.peekEmailToken(hashToken(token), Date.now());
  }

  /** Redeems a login link: once, before it expires. */
  redeemEmailLink(token: string): Identity | null {
    if (!this.emailBackend || !/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const email = this.users.consumeEmailToken(hashToken(token), Date.now());
    this.recordLogin({ backend: this.emailBackend.name, user: email, result: email ? 'success' : 'failure' });
    this.recordAttempt(this.emailBackend.name, email ? 'success' : 'invalid');
    if (!email) return null;
    return {
      user: email, email, groups: [], admin: this.config.auth.admins.includes(email), via: this.emailBackend.name,
    };
  }

  /**
   * A single sign-on login start from this address (each one writes a browser-session row): counted like a
   * failed login of this client (auth.rateLimit.maxFailuresPerClient within windowS, under a key of its own so
   * that it never holds back the password form), and forgiven when its callback logs in.
   */
  admitSingleSignOnStart(ip: string): Admission {
    return this.limiter.admit([
      { key: `sso-start:${clientKey(ip)}`, max: this.config.auth.rateLimit.maxFailuresPerClient },
    ]);
  }

  /** The start led to a login: it no longer counts. */
  forgiveSingleSignOnStart(attempt: Attempt): void {
    this.limiter.forgive(attempt);
  }

  /** The time to record as a browser login's start (see currentIdentity). */
  loginStartedAt(): number {
    return this.now();
  }

  /**
   * A browser login as it stands now: null once it is auth.sessionTtlS old
   * (or has no start time), when the backend that vouched for it is no longer
   * configured, or when its local account was deleted; a local account's
   * admin flag as the store says now (so `qwdctl users admin|del` takes
   * effect at the next request, not at the next login).
   */
  currentIdentity(identity: Identity | undefined, loggedInAt: number | undefined): Identity | null {
    if (!identity) return null;
    if (loggedInAt === undefined || this.now() - loggedInAt >= this.config.auth.sessionTtlS * 1000) return null;
    const backend = this.config.auth.backends.find((b) => b.name === identity.via);
    if (!backend || backend.type === 'none') return null;
    if (backend.type !== 'local') return identity;
    const account = this.users.get(identity.user);
    if (!account) return null;
    const admin = account.admin || this.config.auth.admins.includes(account.name);
    return admin === identity.admin ? identity : { ...identity, admin };
  }

  /**
   * An API token (Authorization: Bearer) → who it speaks for, as things stand
   * now. A token for a local account lives only as long as the account, and is
   * an admin token only while the account is an admin too (so `qwdctl users
   * del|admin off` takes effect at the next call, like for browser logins).
   * A token for any other name (an LDAP, IMAP, SMTP or e-mail user) keeps the
   * identity it was issued with: the service cannot ask those backends without
   * the user's password, so revoke such tokens with `qwdctl tokens revoke`.
   */
  identityForApiToken(token: string): Identity | null {
    if (!/^qwd_[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const found = this.users.apiTokenByHash(hashToken(token), Date.now());
    if (!found) return null;
    const account = this.users.get(found.user);
    if (!account) {
      // With only local accounts configured, a name without an account is a deleted one.
      const othersCanVouch = this.config.auth.backends.some((b) => b.type !== 'local');
      return othersCanVouch ? {
        user: found.user, email: null, groups: [], admin: found.admin, via: 'api-token',
      } : null;
    }
    const accountAdmin = account.admin || this.config.auth.admins.includes(account.name);
    return {
      user: account.name, email: account.email, groups: [], admin: found.admin && accountAdmin, via: 'api-token',
    };
  }
}

export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('hex');
}

export function newApiToken(): { id: string; token: string } {
  return { id: crypto.randomBytes(4).toString('hex'), token: `qwd_${crypto.randomBytes(32).toString('base64url')}` };
}
