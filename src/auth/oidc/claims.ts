// From an OpenID provider's claims (ID token merged with userinfo) to the
// broker's Identity, or a refusal: pure, no I/O. Decides the user name (the
// configured claim, checked against USER_NAME), the e-mail, the groups
// (bounded: see MAX_GROUPS_KEPT), admin rights (adminGroups, auth.admins) and
// whether the user may log in at all (allowedGroups). conditionGroups() lists the
// groups the config's conditions name (always kept, wherever the provider puts them).
import type { OidcBackendConfig } from '../../config/oidc.js';
import type { ScriptDecl } from '../../config/guest.js';
import { USER_NAME, type Identity } from '../types.js';

/**
 * Groups kept in a login (the web session row, boot-script conditions). A
 * provider may send thousands (every LDAP group of a user); the decisions
 * (allowed, admin) are made on all of them, but only this many are kept:
 * the groups a condition names (adminGroups, allowedGroups, boot scripts'
 * when.groups: see conditionGroups) always, then the others in the
 * provider's order up to this bound.
 */
export const MAX_GROUPS_KEPT = 200;
/** Longer group names are dropped (none of ours is that long; a provider bug or an attack). */
export const MAX_GROUP_NAME = 256;
/** Groups read at all from one claim: past this the rest is ignored (and said so). */
export const MAX_GROUPS_READ = 100_000;

export type ClaimsDecision =
  | { ok: true; identity: Identity; groupsSeen: number; groupsDropped: number }
  | { ok: false; reason: 'bad-user' | 'not-allowed'; user: string | null; detail: string; userMessage: string };

export type Claims = Record<string, unknown>;

/**
 * `named`: groups some other condition of the config names (boot scripts' when.groups): kept whatever their
 * place in the claim, so that a group the provider sends at position 10,000 still chooses its boot script.
 */
export function decideIdentity(
  claims: Claims, cfg: OidcBackendConfig, admins: readonly string[], named: ReadonlySet<string> = new Set(),
): ClaimsDecision {
  const rawUser = claims[cfg.userClaim];
  if (typeof rawUser !== 'string' || !USER_NAME.test(rawUser)) {
    return {
      ok: false, reason: 'bad-user', user: null,
      detail: rawUser === undefined
        ? `the provider sent no "${cfg.userClaim}" claim`
        : `the "${cfg.userClaim}" claim is not a usable user name (${describe(rawUser)})`,
      userMessage: `Your account at ${cfg.label} has no user name this service can use ` +
        `(claim "${cfg.userClaim}"). Ask the administrators.`,
    };
  }
  const user = rawUser;
  const emailRaw = claims[cfg.emailClaim];
  const email = typeof emailRaw === 'string' && /^[^\s@]{1,64}@[^\s@]{1,253}$/.test(emailRaw) ? emailRaw : null;
  const all = readGroups(claims[cfg.groupsClaim]);
  const member = new Set(all);
  if (cfg.allowedGroups.length > 0 && !cfg.allowedGroups.some((g) => member.has(g))) {
    return {
      ok: false, reason: 'not-allowed', user,
      detail: `${user} is in none of the allowed groups (${all.length} groups sent)`,
      userMessage: `Your account ${user} is not in a group allowed to use this service. Ask the administrators ` +
        'to add you, then log in again.',
    };
  }
  const admin = cfg.adminGroups.some((g) => member.has(g)) || admins.includes(user);
  const wanted = new Set([...cfg.adminGroups, ...cfg.allowedGroups, ...named]);
  // The named ones are bounded by the config (never by the provider), so they all fit even past MAX_GROUPS_KEPT.
  const namedKept = all.filter((g) => wanted.has(g));
  const others = all.filter((g) => !wanted.has(g)).slice(0, Math.max(0, MAX_GROUPS_KEPT - namedKept.length));
  const kept = [...namedKept, ...others];
  return {
    ok: true, identity: { user, email, groups: kept, admin, via: cfg.name },
    groupsSeen: all.length, groupsDropped: all.length - kept.length,
  };
}

/** The groups the boot scripts' conditions (when.groups) name: the site's and every machine's. */
export function conditionGroups(scriptLists: Iterable<readonly ScriptDecl[]>): Set<string> {
  const out = new Set<string>();
  for (const list of scriptLists) for (const s of list) for (const g of s.when?.groups ?? []) out.add(g);
  return out;
}

/** The group names in a groups claim: strings only, each once, none too long; a single string is one group. */
export function readGroups(value: unknown): string[] {
  const list = typeof value === 'string' ? [value] : Array.isArray(value) ? value.slice(0, MAX_GROUPS_READ) : [];
  const seen = new Set<string>();
  for (const g of list) {
    if (typeof g === 'string' && g.length > 0 && g.length <= MAX_GROUP_NAME) seen.add(g);
  }
  return [...seen];
}

function describe(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : typeof value;
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
