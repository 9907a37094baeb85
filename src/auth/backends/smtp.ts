// SMTP AUTH (nodemailer verify() with the user's own credentials) against the
// site's submission server. 535 = invalid; connection problems = unavailable.
import nodemailer from 'nodemailer';
import type { SmtpBackendConfig } from '../../config/auth.js';
import { invalid, unavailable, type AuthBackend, type AuthResult } from '../types.js';
import { readCaFile } from '../ca-file.js';

export function smtpBackend(config: SmtpBackendConfig): AuthBackend {
  const ca = readCaFile(config.caFile, config.name);
  return {
    name: config.name,
    type: 'smtp',
    async authenticate(user: string, password: string): Promise<AuthResult> {
      if (password === '') return invalid('empty password');
      const transport = nodemailer.createTransport({
        host: config.host, port: config.port, secure: config.secure,
        // Credentials only over TLS: STARTTLS is required on a plain port.
        requireTLS: !config.secure,
        auth: { user, pass: password },
        tls: { ca, rejectUnauthorized: true },
        connectionTimeout: config.timeoutMs, greetingTimeout: config.timeoutMs, socketTimeout: config.timeoutMs,
      });
      try {
        await transport.verify();
        return {
          ok: true,
          identity: {
            user, email: config.emailDomain ? `${user}@${config.emailDomain}` : user.includes('@') ? user : null,
            groups: [], admin: false, via: config.name,
          },
        };
      } catch (err) {
        const e = err as { responseCode?: number; code?: string; message: string };
        if (e.code === 'EAUTH' || e.responseCode === 535) return invalid('SMTP AUTH refused');
        return unavailable(`${config.host}:${config.port}: ${e.code ?? ''} ${e.message}`.trim());
      } finally {
        transport.close();
      }
    },
  };
}
