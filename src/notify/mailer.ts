// Outgoing mail (nodemailer over SMTP): end-of-life warnings. Configured by
// the mail section; with no smtpHost there is no mailer and nothing is sent.
import nodemailer from 'nodemailer';
import type { Config } from '../config/schema.js';
import { QwdError } from '../errors.js';

export interface MailMessage {
  to: string;
  subject: string;
  text: string;
}

export interface Mailer {
  send(message: MailMessage): Promise<void>;
  close(): void;
}

export function createMailer(mail: Config['mail']): Mailer | null {
  if (!mail.smtpHost) return null;
  const transport = nodemailer.createTransport({
    host: mail.smtpHost,
    port: mail.smtpPort,
    secure: mail.smtpSecure,
    requireTLS: false,
    ignoreTLS: !mail.smtpSecure && !mail.smtpStartTls,
    auth: mail.smtpUser ? { user: mail.smtpUser, pass: mail.smtpPassword ?? '' } : undefined,
    connectionTimeout: 10000,
    greetingTimeout: 10000,
    socketTimeout: 20000,
  });
  return {
    async send(message) {
      try {
        await transport.sendMail({ from: mail.from, to: message.to, subject: message.subject, text: message.text });
      } catch (err) {
        throw new QwdError(
          'QWD_INTERNAL',
          `mail to ${message.to} via ${mail.smtpHost}:${mail.smtpPort} failed: ${(err as Error).message}`,
          { cause: err },
        );
      }
    },
    close: () => transport.close(),
  };
}
