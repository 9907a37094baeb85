// The text of the mail that tells a desktop's owner it ends soon (sent by the
// purge job, purge/service.ts). Pure: a row and a time in, a subject and body out.
import type { SessionRow } from '../store/session-rows.js';

export interface MailText {
  subject: string;
  text: string;
}

/** baseUrl: the broker's public address for the extend link; null leaves the link out. */
export function lifetimeWarningMail(row: SessionRow, remainingS: number, baseUrl: string | null): MailText {
  const minutes = Math.max(1, Math.round(remainingS / 60));
  const plural = minutes === 1 ? '' : 's';
  const link = baseUrl ? `${baseUrl}/s/${row.token}` : null;
  return {
    subject: `Your desktop ${row.machine} ends in ${minutes} minute${plural}`,
    text: [
      `Hello ${row.owner},`,
      '',
      `your ${row.machine} desktop ends at ${new Date(row.expiresAt).toUTCString()} (in about ${minutes} minute` +
        `${plural}).`,
      'Save your work before then: the virtual machine and its disk are deleted at the end.',
      // No link (no public address configured): the line is left out; the '' lines are blank lines.
      link ? `You can extend it (up to the maximum life-time) from its page: ${link}` : null,
      '',
      '-- qemu-web-desktop',
    ].filter((l): l is string => l !== null).join('\n'),
  };
}
