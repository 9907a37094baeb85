// LDAP (ldapts): search-then-bind (optionally as a service account) or a
// direct bind with a DN template; ldaps:// or StartTLS with a CA file. User
// names are escaped (RFC 4515 in filters, RFC 4514 in DNs). An empty password
// is refused here, before the server sees it: an empty simple bind is an
// anonymous bind (RFC 4513 section 5.1.2).
//
// The identity is the directory's, not the typed name: `userAttribute` of the
// found entry (so "ALICE" logs in as "alice"). Groups (cn values, for boot
// script conditions) come from the DNs in `memberOfAttribute` on the user's
// entry and/or from the groups below `groupBaseDn` that list the user as
// member/uniqueMember. Admin rights: membership of `adminGroupDn` by either
// route, or the admin group listing the user itself.
import { Client, InvalidCredentialsError } from 'ldapts';
import type { LdapBackendConfig } from '../../config/auth.js';
import { escapeDnValue, escapeFilterValue, fillTemplate } from '../escape.js';
import { USER_NAME, invalid, unavailable, type AuthBackend, type AuthResult } from '../types.js';
import { readCaFile } from '../ca-file.js';

type Entry = Record<string, unknown> & { dn: string };

export function ldapBackend(config: LdapBackendConfig): AuthBackend {
  const ca = readCaFile(config.caFile, config.name);
  const tlsOptions = () => (ca ? { ca } : {});
  const newClient = () => new Client({
    url: config.url, timeout: config.timeoutMs, connectTimeout: config.timeoutMs,
    tlsOptions: config.url.startsWith('ldaps:') ? tlsOptions() : undefined,
  });
  const connect = async (client: Client) => {
    if (config.startTls && config.url.startsWith('ldap:')) await client.startTLS(tlsOptions());
  };
  // memberOf-style attributes are operational in OpenLDAP: returned only when asked for by name.
  const attributes = [
    config.userAttribute, config.mailAttribute, ...(config.memberOfAttribute ? [config.memberOfAttribute] : [])
  ];

  return {
    name: config.name,
    type: 'ldap',
    async authenticate(user: string, password: string): Promise<AuthResult> {
      if (password === '') return invalid('empty password (would be an anonymous bind)');
      const client = newClient();
      try {
        await connect(client);
        let dn: string;
        let entry: Entry | null = null;
        if (config.userDnTemplate) {
          dn = fillTemplate(config.userDnTemplate, user, escapeDnValue);
        } else {
          if (config.bindDn) await client.bind(config.bindDn, config.bindPassword ?? '');
          const { searchEntries } = await client.search(config.baseDn, {
            scope: 'sub', filter: fillTemplate(config.filter, user, escapeFilterValue), attributes, sizeLimit: 2,
          });
          if (searchEntries.length !== 1) {
            return invalid(searchEntries.length ? 'user name matches several entries' : 'no such user');
          }
          entry = searchEntries[0]!;
          dn = entry.dn;
        }
        try {
          await client.bind(dn, password);
        } catch (err) {
          if (err instanceof InvalidCredentialsError) return invalid('wrong password');
          throw err;
        }
        // Bound as the user: a direct bind reads its own entry with the user's rights.
        if (!entry) {
          const { searchEntries } = await client.search(dn, { scope: 'base', attributes });
          entry = searchEntries[0] ?? null;
        }
        const name = pickUserName(allValues(entry?.[config.userAttribute]), user);
        if (!name) {
          return unavailable(
            `${dn}: the entry has no usable ${config.userAttribute} (userAttribute) value for a user name`
          );
        }
        const memberOf = config.memberOfAttribute ? allValues(entry?.[config.memberOfAttribute]) : [];
        const groups = new Set(memberOf.map(groupNameOfDn).filter((g): g is string => g !== null));
        const groupDns = [...memberOf];
        if (config.groupBaseDn) {
          const filter = `(|(member=${escapeFilterValue(dn)})(uniqueMember=${escapeFilterValue(dn)}))`;
          const { searchEntries } = await client.search(
            config.groupBaseDn, { scope: 'sub', filter, attributes: ['cn'] },
          );
          for (const g of searchEntries) {
            groupDns.push(g.dn);
            for (const cn of allValues(g.cn)) groups.add(cn);
          }
        }
        let admin = false;
        if (config.adminGroupDn) {
          admin = groupDns.some((g) => sameDn(g, config.adminGroupDn!));
          if (!admin) {
            // An admin group that is missing or unreadable with the user's rights grants nothing: not an error.
            const { searchEntries } = await client.search(
              config.adminGroupDn,
              {
                scope: 'base', filter: `(|(member=${escapeFilterValue(dn)})(uniqueMember=${escapeFilterValue(dn)}))`,
                attributes: ['cn'],
              },
            ).catch(() => ({ searchEntries: [] as Entry[] }));
            admin = searchEntries.length > 0;
          }
          if (admin) {
            const cn = groupNameOfDn(config.adminGroupDn);
            if (cn) groups.add(cn);
          }
        }
        return {
          ok: true,
          identity: {
            user: name, email: firstValue(entry?.[config.mailAttribute]), groups: [...groups].sort(), admin,
            via: config.name,
          },
        };
      } catch (err) {
        if (err instanceof InvalidCredentialsError) {
          return unavailable(`the service account cannot bind: ${(err as Error).message}`);
        }
        return unavailable(`${config.url}: ${(err as Error).message}`);
      } finally {
        await client.unbind().catch(() => {
          // Already closed (e.g. the server went away): nothing to release.
        });
      }
    },
  };
}

/**
 * The user name from the entry's userAttribute values: the one equal to the
 * typed name ignoring case if there is one (uid may be multi-valued), else the
 * first; null when none is a valid user name.
 */
export function pickUserName(values: readonly string[], typed: string): string | null {
  const usable = values.filter((v) => USER_NAME.test(v));
  return usable.find((v) => v.toLowerCase() === typed.toLowerCase()) ?? usable[0] ?? null;
}

/** "cn=physics,ou=groups,dc=example,dc=org" → "physics"; null when the first RDN is not a cn (RFC 4514). */
export function groupNameOfDn(dn: string): string | null {
  const m = /^\s*cn\s*=\s*((?:[^,+\\]|\\.)+)/i.exec(dn);
  if (!m) return null;
  const bytes: number[] = [];
  const raw = m[1]!.trim();
  for (let i = 0; i < raw.length; i++) {
    const hex = raw[i] === '\\' ? /^[0-9a-fA-F]{2}/.exec(raw.slice(i + 1)) : null;
    if (hex) {
      bytes.push(parseInt(hex[0], 16));
      i += 2;
    } else {
      if (raw[i] === '\\') i++;
      const ch = String.fromCodePoint(raw.codePointAt(i) ?? 0x20);
      bytes.push(...Buffer.from(ch, 'utf8'));
      i += ch.length - 1;
    }
  }
  return Buffer.from(bytes).toString('utf8') || null;
}

/**
 * DN equality for group checks: case and spaces around separators do not count (attribute types and usual matching
 * rules are case-insensitive).
 */
export function sameDn(a: string, b: string): boolean {
  const norm = (dn: string) => dn.trim().replace(/\s*([,=+])\s*/g, '$1').toLowerCase();
  return norm(a) === norm(b);
}

function allValues(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  return list.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : String(v)));
}

function firstValue(value: unknown): string | null {
  return allValues(value)[0] ?? null;
}
