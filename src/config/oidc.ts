// The `oidc` auth backend's config (single sign-on through an OpenID Connect
// provider such as Keycloak or Dex): every key validated here, with the same
// problem reporting as the rest of the config. Not quite pure, like
// parseBackend in auth.ts: clientSecretFile is checked for readability so that
// `qwdctl config check` reports a missing one (the service reads it at start).
import fs from 'node:fs';
import path from 'node:path';
import {
  Problems, readBool, readInt, readOptionalString, readString, rejectUnknownKeys, type Obj,
} from './check.js';

export interface OidcBackendConfig {
  type: 'oidc';
  /** Also the URL path segment: /auth/oidc/<name>/login, /auth/oidc/<name>/callback. */
  name: string;
  /** The button says "Log in with <label>". */
  label: string;
  /**
   * The provider's issuer URL exactly as configured (a trailing "/" included): the discovery document's issuer
   * and the ID tokens' iss must be this very string (OpenID Connect Discovery 1.0 section 4.3).
   */
  issuer: string;
  clientId: string;
  /** Exactly one of the two is set. */
  clientSecret: string | null;
  clientSecretFile: string | null;
  scopes: string[];
  /** The claim that gives the user name (checked against USER_NAME). */
  userClaim: string;
  emailClaim: string;
  groupsClaim: string;
  /** Members of any of these groups are administrators. */
  adminGroups: string[];
  /** Empty: everyone the provider vouches for may log in; else only members of one of these groups. */
  allowedGroups: string[];
  /** How old the last check of a login with the provider may be before a web request checks again (0: always). */
  recheckS: number;
  /** How long a login is kept, counted from its last successful check, while the provider cannot be reached. */
  unreachableGraceS: number;
  /** Every request to the provider (discovery, token, JWKS, userinfo) gives up after this many milliseconds. */
  timeoutMs: number;
  /** Accept an http:// issuer (no TLS): only for a provider on the same host or in tests. */
  allowHttpIssuer: boolean;
}

const NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
const CLAIM = /^[A-Za-z0-9_.:/-]{1,128}$/;
const KEYS = [
  'type', 'name', 'label', 'issuer', 'clientId', 'clientSecret', 'clientSecretFile', 'scopes', 'userClaim',
  'emailClaim', 'groupsClaim', 'adminGroups', 'allowedGroups', 'recheckS', 'unreachableGraceS', 'timeoutMs',
  'allowHttpIssuer',
];

export function parseOidcBackend(p: Problems, item: Obj, at: string, baseDir: string, top: Obj): OidcBackendConfig {
  rejectUnknownKeys(p, item, at, KEYS);
  const name = readString(p, item, 'name', 'oidc', {
    prefix: at, pattern: NAME,
    expectation: 'a short lower-case name (letters, digits, "-"; it is part of the callback URL)',
  });
  const issuer = readString(p, item, 'issuer', '', {
    prefix: at, pattern: /^https?:\/\/[^\s?#]+$/, expectation: 'the provider\'s issuer URL (https://…, no query)',
  });
  if (item.issuer === undefined) {
    p.note(`${at}issuer is required (the provider's issuer URL, e.g. https://sso.example.org/realms/lab)`);
  }
  const allowHttpIssuer = readBool(p, item, 'allowHttpIssuer', false, at);
  // Without TLS anyone on the path could read the client secret and the tokens, or answer as the provider.
  if (issuer.startsWith('http://') && !allowHttpIssuer) {
    p.note(
      `${at}issuer ${issuer} is plain http: use https://, or (only for a provider on the same host, or in tests) ` +
        'allowHttpIssuer: true',
    );
  }
  const clientId = readString(p, item, 'clientId', '', { prefix: at });
  if (item.clientId === undefined) p.note(`${at}clientId is required (the client registered at the provider)`);
  const clientSecret = readOptionalString(p, item, 'clientSecret', { prefix: at });
  const clientSecretFile = readOptionalString(p, item, 'clientSecretFile', { prefix: at });
  if (clientSecret && clientSecretFile) {
    p.note(`${at}: set clientSecret or clientSecretFile, not both`);
  } else if (!clientSecret && !clientSecretFile) {
    p.note(`${at}clientSecret or clientSecretFile is required (the confidential client's secret)`);
  }
  const secretFile = clientSecretFile ? path.resolve(baseDir, clientSecretFile) : null;
  if (secretFile) {
    try {
      const text = fs.readFileSync(secretFile, 'utf8').trim();
      if (text === '') p.note(`${at}clientSecretFile: ${secretFile} is empty`);
    } catch (err) {
      p.note(`${at}clientSecretFile: ${secretFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? err})`);
    }
  }
  const scopes = readList(p, item, 'scopes', ['openid', 'profile', 'email'], at, /^[\x21\x23-\x5b\x5d-\x7e]{1,64}$/);
  if (!scopes.includes('openid')) p.add(`${at}scopes`, 'a list of scopes that includes openid', item.scopes);
  const claim = (key: string, fallback: string) => readString(p, item, key, fallback, {
    prefix: at, pattern: CLAIM, expectation: 'a claim name',
  });
  // The callback and post-logout URLs are built from publicUrl only, never from the request's Host header.
  if (typeof top.publicUrl !== 'string' || top.publicUrl === '') {
    p.note(
      `publicUrl is required when auth.backends has an "oidc" backend: the redirect URI registered at the provider ` +
        `is <publicUrl>/auth/oidc/${name}/callback (e.g. publicUrl: https://desktops.example.org)`,
    );
  }
  return {
    type: 'oidc', name, issuer, clientId, allowHttpIssuer,
    label: readString(p, item, 'label', name, { prefix: at, pattern: /^[^<>\n]{1,64}$/, expectation: 'a short label' }),
    clientSecret, clientSecretFile: secretFile, scopes,
    userClaim: claim('userClaim', 'preferred_username'),
    emailClaim: claim('emailClaim', 'email'),
    groupsClaim: claim('groupsClaim', 'groups'),
    adminGroups: readList(p, item, 'adminGroups', [], at, /^.{1,256}$/s),
    allowedGroups: readList(p, item, 'allowedGroups', [], at, /^.{1,256}$/s),
    recheckS: readInt(p, item, 'recheckS', 300, { prefix: at, min: 0, max: 86400 }),
    unreachableGraceS: readInt(p, item, 'unreachableGraceS', 900, { prefix: at, min: 0, max: 7 * 86400 }),
    timeoutMs: readInt(p, item, 'timeoutMs', 5000, { prefix: at, min: 100, max: 60000 }),
  };
}

function readList(p: Problems, item: Obj, key: string, fallback: string[], at: string, pattern: RegExp): string[] {
  const value = item[key];
  if (value === undefined || value === null) return fallback;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && pattern.test(v))) {
    p.add(`${at}${key}`, 'a list of names', value);
    return fallback;
  }
  return [...new Set(value as string[])];
}
