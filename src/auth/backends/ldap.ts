// LDAP (ldapts): search-then-bind (optionally as a service account) or a
// direct bind with a DN template; ldaps:// or StartTLS with a CA file; admin
// rights from a group (member of adminGroupDn). User names are escaped (RFC
// 4515 in filters, RFC 4514 in DNs). An empty password is refused here,
// before the server sees it: an empty simple bind is an anonymous bind.
import { Client, InvalidCredentialsError } from 'ldapts';
import type { LdapBackendConfig } from '../config.js';
import { escapeDnValue, escapeFilterValue, fillTemplate } from '../escape.js';
import { invalid, unavailable, type AuthBackend, type AuthResult } from '../types.js';
import { readCaFile } from '../ca-file.js';

export function ldapBackend(config: LdapBackendConfig): AuthBackend {
  const ca = readCaFile(config.caFile, config.name);
  const tlsOptions = () => (ca ? { ca } : {});
  const newClient = () => new Client({ url: config.url, timeout: config.timeoutMs, connectTimeout: config.timeoutMs, tlsOptions: config.url.startsWith('ldaps:') ? tlsOptions() : undefined });
  const connect = async (client: Client) => {
    if (config.startTls && config.url.startsWith('ldap:')) await client.startTLS(tlsOptions());
  };

  return {
    name: config.name,
    type: 'ldap',
    async authenticate(user: string, password: string): Promise<AuthResult> {
      if (password === '') return invalid('empty password (would be an anonymous bind)');
      const client = newClient();
      try {
        await connect(client);
        let dn: string;
        let mail: string | null = null;
        if (config.userDnTemplate) {
          dn = fillTemplate(config.userDnTemplate, user, escapeDnValue);
        } else {
          if (config.bindDn) await client.bind(config.bindDn, config.bindPassword ?? '');
          const { searchEntries } = await client.search(config.baseDn, {
            scope: 'sub', filter: fillTemplate(config.filter, user, escapeFilterValue), attributes: ['dn', config.mailAttribute], sizeLimit: 2,
          });
          if (searchEntries.length !== 1) return invalid(searchEntries.length ? 'user name matches several entries' : 'no such user');
          dn = searchEntries[0]!.dn;
          mail = firstValue(searchEntries[0]![config.mailAttribute]);
        }
        try {
          await client.bind(dn, password);
        } catch (err) {
          if (err instanceof InvalidCredentialsError) return invalid('wrong password');
          throw err;
        }
        // Bound as the user: read the mail attribute and group membership with the user's rights.
        if (config.userDnTemplate) {
          const { searchEntries } = await client.search(dn, { scope: 'base', attributes: [config.mailAttribute] }).catch(() => ({ searchEntries: [] as Array<Record<string, unknown>> }));
          mail = firstValue(searchEntries[0]?.[config.mailAttribute]);
        }
        let admin = false;
        const groups: string[] = [];
        if (config.adminGroupDn) {
          const { searchEntries } = await client.search(config.adminGroupDn, { scope: 'base', filter: `(|(member=${escapeFilterValue(dn)})(uniqueMember=${escapeFilterValue(dn)}))`, attributes: ['cn'] }).catch(() => ({ searchEntries: [] as Array<Record<string, unknown>> }));
          admin = searchEntries.length > 0;
          if (admin) groups.push(config.adminGroupDn);
        }
        return { ok: true, identity: { user, email: mail, groups, admin, via: config.name } };
      } catch (err) {
        if (err instanceof InvalidCredentialsError) return unavailable(`the service account cannot bind: ${(err as Error).message}`);
        return unavailable(`${config.url}: ${(err as Error).message}`);
      } finally {
        await client.unbind().catch(() => {
          // Already closed (e.g. the server went away): nothing to release.
        });
      }
    },
  };
}

function firstValue(value: unknown): string | null {
  if (Array.isArray(value)) return value.length ? String(value[0]) : null;
  if (value === undefined || value === null) return null;
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}
