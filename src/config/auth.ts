// The auth section of the config: the backend chain (tried in order) and the
// login protections. Parsed with the same problem reporting as the rest.
// Not quite pure: a backend's caFile is checked for readability here, so that
// `qwdctl config check` reports a missing one (the service reads it at start).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  Problems, isObject, rejectUnknownKeys, section, readInt, readString, readOptionalString, readBool, type Obj,
} from './check.js';
import { parseOidcBackend, type OidcBackendConfig } from './oidc.js';

export type { OidcBackendConfig } from './oidc.js';

export interface LdapBackendConfig {
  type: 'ldap'; name: string; url: string; startTls: boolean;
  /** Allow an ldap:// URL without StartTLS (passwords in clear): only for a server on the same host. */
  allowCleartext: boolean;
  caFile: string | null; bindDn: string | null; bindPassword: string | null;
  baseDn: string; filter: string; userDnTemplate: string | null; userAttribute: string; mailAttribute: string;
  adminGroupDn: string | null; timeoutMs: number;
  /**
   * Where to search groups that list the user as member/uniqueMember (their cn become the user's groups); null: no
   * search.
   */
  groupBaseDn: string | null;
  /** An attribute of the user's entry listing the DNs of its groups (e.g. memberOf); null: not read. */
  memberOfAttribute: string | null;
}
export interface ImapBackendConfig {
  type: 'imap'; name: string; host: string; port: number; secure: boolean; caFile: string | null; timeoutMs: number;
  emailDomain: string | null;
}
export interface SmtpBackendConfig {
  type: 'smtp'; name: string; host: string; port: number; secure: boolean; caFile: string | null; timeoutMs: number;
  emailDomain: string | null;
}
export interface EmailBackendConfig { type: 'email'; name: string; allowedDomains: string[]; linkTtlS: number }
export type BackendConfig =
  | { type: 'none'; name: string } | { type: 'local'; name: string }
  | LdapBackendConfig | ImapBackendConfig | SmtpBackendConfig | EmailBackendConfig | OidcBackendConfig;

export interface AuthConfig {
  backends: BackendConfig[];
  /** User names that are administrators whatever backend vouches for them. */
  admins: string[];
  /**
   * Failed logins per (name, client), per client and per name within windowS; anonymous page loads per client and
   * minute (0: no limit).
   */
  rateLimit: {
    maxFailures: number; maxFailuresPerClient: number; maxFailuresPerName: number; windowS: number;
    anonymousPagesPerMinute: number;
  };
  /** Share and view links (pages, API, WebSocket) need a login; always false with auth "none". */
  linksRequireLogin: boolean;
  /** Lifetime of a login (browser session), seconds. */
  sessionTtlS: number;
}

const TYPES = ['none', 'local', 'ldap', 'imap', 'smtp', 'email', 'oidc'] as const;

export function parseAuthConfig(p: Problems, top: Obj, baseDir: string): AuthConfig {
  const raw = section(p, top, 'auth');
  rejectUnknownKeys(p, raw, 'auth.', ['backends', 'admins', 'rateLimit', 'sessionTtlS', 'linksRequireLogin']);
  const list = raw.backends ?? [{ type: 'none' }];
  const backends: BackendConfig[] = [];
  /** Where each parsed backend is in the list, and whether its name was written or defaulted to its type. */
  const origin: Array<{ at: string; named: boolean }> = [];
  if (!Array.isArray(list) || list.length === 0) p.add('auth.backends', 'a non-empty list of backends', list);
  else {
    list.forEach((item, i) => {
      const at = `auth.backends[${i}].`;
      if (!isObject(item)) return p.add(`auth.backends[${i}]`, 'a mapping with a type', item);
      const type = item.type;
      if (typeof type !== 'string' || !(TYPES as readonly string[]).includes(type)) {
        return p.add(`${at}type`, `one of ${TYPES.join(', ')}`, type);
      }
      const b = type === 'oidc'
        ? parseOidcBackend(p, item, at, baseDir, top)
        : parseBackend(p, item, type as Exclude<BackendConfig['type'], 'oidc'>, at, baseDir);
      if (b) {
        backends.push(b);
        origin.push({ at: `auth.backends[${i}]`, named: item.name !== undefined });
      }
    });
    if (backends.some((b) => b.type === 'none') && backends.length > 1) {
      p.note('auth.backends: "none" cannot be combined with other backends (anyone could skip the password)');
    }
    if (
      backends.some((b) => b.type === 'email') && !(
        isObject(top.mail) && typeof top.mail.smtpHost === 'string' && top.mail.smtpHost !== ''
      )
    ) {
      p.note('mail.smtpHost is required when auth.backends has an "email" backend: login links are mailed through it');
    }
    // Mailed login links are built from publicUrl only: a link built from the
    // request's Host header could be pointed at an attacker's site by whoever
    // asks for a victim's link (host header injection).
    if (backends.some((b) => b.type === 'email') && (typeof top.publicUrl !== 'string' || top.publicUrl === '')) {
      p.note(
        'publicUrl is required when auth.backends has an "email" backend: mailed login links are built from it, ' +
          'never from the request\'s Host header (e.g. publicUrl: https://desktops.example.org)',
      );
    }
    // Effective names: a backend without name: is named after its type, so two unnamed oidc backends are both
    // "oidc" (one would silently replace the other's routes); refused, saying so.
    const names = backends.map((b) => b.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) {
      const same = origin.filter((_, i) => names[i] === dup);
      const where = same.map((o) => o.at);
      const unnamed = same.some((o) => !o.named);
      p.note(
        `auth.backends: ${where.join(' and ')} are both named "${dup}"` +
          (unnamed ? ' (a backend without name: is named after its type)' : '') + '; give them distinct name: keys',
      );
    }
  }
  const admins = raw.admins ?? [];
  if (!Array.isArray(admins) || !admins.every((a) => typeof a === 'string')) {
    p.add('auth.admins', 'a list of user names', admins);
  }
  const rl = section(p, raw, 'rateLimit', 'auth.');
  rejectUnknownKeys(
    p, rl, 'auth.rateLimit.',
    ['maxFailures', 'maxFailuresPerClient', 'maxFailuresPerName', 'windowS', 'anonymousPagesPerMinute'],
  );
  const rp = { prefix: 'auth.rateLimit.' };
  const rateLimit = {
    maxFailures: readInt(p, rl, 'maxFailures', 5, { ...rp, min: 1, max: 1000 }),
    maxFailuresPerClient: readInt(p, rl, 'maxFailuresPerClient', 20, { ...rp, min: 1, max: 100000 }),
    maxFailuresPerName: readInt(p, rl, 'maxFailuresPerName', 50, { ...rp, min: 1, max: 100000 }),
    windowS: readInt(p, rl, 'windowS', 300, { ...rp, min: 1, max: 86400 }),
    anonymousPagesPerMinute: readInt(p, rl, 'anonymousPagesPerMinute', 300, { ...rp, min: 0, max: 1000000 }),
  };
  // Else one address could lock a name out alone again (the point of the per-pair limit).
  if (rateLimit.maxFailuresPerName < rateLimit.maxFailures) {
    p.note(
      `auth.rateLimit.maxFailuresPerName (${rateLimit.maxFailuresPerName}) must be at least ` +
        `auth.rateLimit.maxFailures (${rateLimit.maxFailures}), better several times it: failures from many ` +
        `addresses back a name off more slowly`
    );
  }
  const open = backends.every((b) => b.type === 'none');
  const linksRequireLogin = readBool(p, raw, 'linksRequireLogin', !open, 'auth.');
  if (linksRequireLogin && open && backends.length > 0) {
    p.note(
      'auth.linksRequireLogin: true needs a login backend (with auth "none" nobody can log in, so no link would open)'
    );
  }
  return {
    backends,
    admins: Array.isArray(admins) ? (admins as string[]) : [],
    rateLimit,
    linksRequireLogin: linksRequireLogin && !open,
    sessionTtlS: readInt(p, raw, 'sessionTtlS', 12 * 3600, { prefix: 'auth.', min: 60, max: 30 * 86400 }),
  };
}

function parseBackend(
  p: Problems, item: Obj, type: Exclude<BackendConfig['type'], 'oidc'>, at: string, baseDir: string,
): BackendConfig | null {
  const file = (key: string) => {
    const v = readOptionalString(p, item, key, { prefix: at });
    if (!v) return null;
    const resolved = path.resolve(baseDir, v);
    // Read here, not only when the service starts, so that `qwdctl config check` reports it.
    try {
      fs.accessSync(resolved, fs.constants.R_OK);
      if (!fs.statSync(resolved).isFile()) p.note(`${at}${key}: ${resolved} is not a file`);
    } catch (err) {
      p.note(`${at}${key}: ${resolved} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    return resolved;
  };
  const name = readString(p, item, 'name', type, { prefix: at });
  switch (type) {
    case 'none':
    case 'local':
      rejectUnknownKeys(p, item, at, ['type', 'name']);
      return { type, name };
    case 'ldap': {
      rejectUnknownKeys(
        p, item, at,
        [
          'type', 'name', 'url', 'startTls', 'allowCleartext', 'caFile', 'bindDn', 'bindPassword', 'baseDn', 'filter',
          'userDnTemplate', 'userAttribute', 'mailAttribute', 'adminGroupDn', 'groupBaseDn', 'memberOfAttribute',
          'timeoutMs',
        ],
      );
      const url = readString(
        p, item, 'url', '', { prefix: at, pattern: /^ldaps?:\/\/\S+$/, expectation: 'an ldap:// or ldaps:// URL' },
      );
      if (item.url === undefined) p.add(`${at}url`, 'present', undefined);
      const filter = readString(
        p, item, 'filter', '(uid={user})',
        { prefix: at, pattern: /\{user\}/, expectation: 'an LDAP filter containing {user}' },
      );
      const userDnTemplate = readOptionalString(
        p, item, 'userDnTemplate', { prefix: at, pattern: /\{user\}/, expectation: 'a DN template containing {user}' },
      );
      const baseDn = readString(p, item, 'baseDn', '', { prefix: at });
      if (!userDnTemplate && item.baseDn === undefined) {
        p.note(`${at}baseDn is required for search-then-bind (or set userDnTemplate for a direct bind)`);
      }
      const bindDn = readOptionalString(p, item, 'bindDn', { prefix: at });
      const bindPassword = readOptionalString(p, item, 'bindPassword', { prefix: at });
      if (bindDn && !bindPassword) p.note(`${at}bindPassword is required with bindDn`);
      const startTls = readBool(p, item, 'startTls', false, at);
      const allowCleartext = readBool(p, item, 'allowCleartext', false, at);
      // A simple bind sends the password as it is (RFC 4513 section 5.1.2):
      // over plain ldap:// anyone on the path reads every user's password.
      if (url.startsWith('ldap://') && !startTls && !allowCleartext) {
        p.note(
          `${at}url ${url} without startTls would send passwords in clear: use ldaps://, or startTls: true, or (only ` +
            `for a server on the same host, e.g. ldap://127.0.0.1) allowCleartext: true`
        );
      }
      return {
        type, name, url, startTls, allowCleartext, caFile: file('caFile'), bindDn, bindPassword, baseDn, filter,
        userDnTemplate,
        userAttribute: readString(p, item, 'userAttribute', 'uid', { prefix: at }),
        mailAttribute: readString(p, item, 'mailAttribute', 'mail', { prefix: at }),
        adminGroupDn: readOptionalString(p, item, 'adminGroupDn', { prefix: at }),
        timeoutMs: readInt(p, item, 'timeoutMs', 5000, { prefix: at, min: 100, max: 60000 }),
        groupBaseDn: readOptionalString(p, item, 'groupBaseDn', { prefix: at }),
        memberOfAttribute: readOptionalString(
          p, item, 'memberOfAttribute',
          { prefix: at, pattern: /^[A-Za-z][A-Za-z0-9-]*$/, expectation: 'an LDAP attribute name such as memberOf' },
        ),
      };
    }
    case 'imap':
    case 'smtp': {
      rejectUnknownKeys(p, item, at, ['type', 'name', 'host', 'port', 'secure', 'caFile', 'timeoutMs', 'emailDomain']);
      const host = readString(p, item, 'host', '', { prefix: at });
      if (item.host === undefined) p.add(`${at}host`, 'present', undefined);
      const secure = readBool(p, item, 'secure', type === 'imap', at);
      return {
        type, name, host, secure, caFile: file('caFile'),
        port: readInt(
          p, item, 'port', type === 'imap' ? (secure ? 993 : 143) : secure ? 465 : 587,
          { prefix: at, min: 1, max: 65535 },
        ),
        timeoutMs: readInt(p, item, 'timeoutMs', 5000, { prefix: at, min: 100, max: 60000 }),
        emailDomain: readOptionalString(
          p, item, 'emailDomain', { prefix: at, pattern: /^[A-Za-z0-9.-]+$/, expectation: 'a domain name' },
        ),
      };
    }
    case 'email': {
      rejectUnknownKeys(p, item, at, ['type', 'name', 'allowedDomains', 'linkTtlS']);
      const domains = item.allowedDomains;
      if (
        !Array.isArray(domains) || domains.length === 0 || !domains.every(
          (d) => typeof d === 'string' && /^[A-Za-z0-9.-]+$/.test(d)
        )
      ) {
        p.add(`${at}allowedDomains`, 'a non-empty list of domain names (who may get a login link)', domains);
      }
      return {
        type, name, allowedDomains: Array.isArray(domains) ? (domains as string[]).map((d) => d.toLowerCase()) : [],
        linkTtlS: readInt(p, item, 'linkTtlS', 900, { prefix: at, min: 60, max: 86400 }),
      };
    }
  }
}

/**
 * Which peers may set X-Forwarded-For/-Proto/-Host: false (none), a hop count,
 * or addresses/CIDRs and the names loopback, linklocal, uniquelocal (what
 * Express's "trust proxy" / proxy-addr accept). Never `true`: it trusts every
 * hop, so with nginx's $proxy_add_x_forwarded_for the left-most value — which
 * the client wrote — would become req.ip and dodge the per-IP rate limit.
 */
export type TrustProxy = false | number | readonly string[];

const PROXY_NAMES = ['loopback', 'linklocal', 'uniquelocal'];

export function readTrustProxy(p: Problems, top: Obj): TrustProxy {
  const value = top.trustProxy;
  const expectation = 'false, a hop count (an integer from 1 to 32: the number of proxies in front, usually 1), or a ' +
    'list of proxy addresses/CIDRs or loopback, linklocal, uniquelocal';
  if (value === undefined || value === null || value === false) return false;
  if (value === true) {
    p.note(
      'trustProxy: true is refused: it would trust every X-Forwarded-For entry, so a client could claim any IP ' +
        'address and dodge the per-IP login rate limit. Give the number of proxies in front of the service (usually ' +
        'trustProxy: 1) or the proxy\'s address (e.g. trustProxy: loopback, or [10.0.0.5])'
    );
    return false;
  }
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 1 && value <= 32) return value;
    p.add('trustProxy', expectation, value);
    return false;
  }
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((a) => typeof a === 'string' && isProxyAddress(a))) {
    p.add('trustProxy', expectation, value);
    return false;
  }
  return list as string[];
}

/** An IP address, an address/prefix-length, an IPv4 address/netmask, or one of proxy-addr's names. */
export function isProxyAddress(text: string): boolean {
  if (PROXY_NAMES.includes(text)) return true;
  const [addr, range, ...rest] = text.split('/');
  if (rest.length || !addr) return false;
  const family = net.isIP(addr);
  if (family === 0) return false;
  if (range === undefined) return true;
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (family === 4 ? 32 : 128);
  return family === 4 && net.isIPv4(range);
}
