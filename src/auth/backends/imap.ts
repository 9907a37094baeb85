// IMAP login (imapflow) against the site's mail server, implicit TLS or
// STARTTLS. Wrong credentials are "invalid"; a server that does not answer
// is "unavailable" so the chain moves on.
import { ImapFlow } from 'imapflow';
import type { ImapBackendConfig } from '../../config/auth.js';
import { invalid, unavailable, type AuthBackend, type AuthResult } from '../types.js';
import { readCaFile } from '../ca-file.js';

export function imapBackend(config: ImapBackendConfig): AuthBackend {
  const ca = readCaFile(config.caFile, config.name);
  return {
    name: config.name,
    type: 'imap',
    async authenticate(user: string, password: string): Promise<AuthResult> {
      if (password === '') return invalid('empty password');
      const client = new ImapFlow({
        host: config.host, port: config.port, secure: config.secure, logger: false,
        auth: { user, pass: password },
        tls: { ca, rejectUnauthorized: true },
        connectionTimeout: config.timeoutMs, greetingTimeout: config.timeoutMs, socketTimeout: config.timeoutMs,
        // Never send the password over an unencrypted connection.
        doSTARTTLS: config.secure ? undefined : true,
      } as ConstructorParameters<typeof ImapFlow>[0]);
      client.on('error', () => {
        // Reported through connect()'s rejection.
      });
      try {
        await client.connect();
        await client.logout();
        return {
          ok: true,
          identity: {
            user, email: config.emailDomain ? `${user}@${config.emailDomain}` : user.includes('@') ? user : null,
            groups: [], admin: false, via: config.name,
          },
        };
      } catch (err) {
        const e = err as { authenticationFailed?: boolean; responseStatus?: string; message: string; code?: string };
        if (e.authenticationFailed || e.responseStatus === 'NO') return invalid('IMAP login refused');
        return unavailable(`${config.host}:${config.port}: ${e.code ?? ''} ${e.message}`.trim());
      } finally {
        client.close();
      }
    },
  };
}
