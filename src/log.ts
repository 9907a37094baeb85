// Structured JSON logging (pino). One logger is created by a composition root
// and passed down; modules take a child logger with their own `module` field.
//
// Secrets never reach a log line, whatever field or message carries them: every
// line pino writes passes through redactSecrets() on its way to the
// destination (one place, so a new log call cannot forget). It blanks the link
// tokens in paths (/s/, /ws/, /v/, /api/v1/sessions/, /login/email/), query
// strings, API tokens (qwd_…), Bearer credentials, our cookies, and any bare
// 43-character base64url word (the shape of every 256-bit token we issue:
// control, view, e-mail login, CSRF nonce and MAC). The `redact` paths below
// also drop whole fields that hold passwords or tokens.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

const CENSOR = '[redacted]';

const RULES: ReadonlyArray<[RegExp, string]> = [
  // A link token in a path, also percent-encoded or after an encoded slash.
  [/(\/(?:s|ws|v|api\/v1\/sessions|login\/email)(?:\/|%2F))[^/?#\s"\\]+/gi, `$1${CENSOR}`],
  // Query strings (?t=<viewer ticket>, ?next=/s/<token>): values only, names stay.
  [/([?&][A-Za-z0-9_.-]{1,32}=)[^&#\s"\\]+/g, `$1${CENSOR}`],
  [/qwd_[A-Za-z0-9_-]{8,}/g, `qwd_${CENSOR}`],
  [/(Bearer\s+)[^\s"\\]+/gi, `$1${CENSOR}`],
  [/(qwd\.(?:sid|csrf)=)[^;\s"\\]+/g, `$1${CENSOR}`],
  [/(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g, CENSOR],
];

/** A log line (or any text) with every token-shaped secret blanked out. */
export function redactSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of RULES) out = out.replace(pattern, replacement);
  return out;
}

/** The destination, behind redactSecrets (pino writes one whole line per write call). */
function redacting(destination: NodeJS.WritableStream): { write(line: string): boolean } {
  return { write: (line: string) => destination.write(redactSecrets(line)) };
}

export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'qemu-web-desktop' },
      // Passwords and tokens must never reach a log line.
      redact: {
        paths: [
          'password', '*.password', 'token', '*.token', 'viewToken', '*.viewToken', 'req.headers.cookie', 'cookie',
          '*.cookie', 'csrf', '*.csrf', '_csrf', '*._csrf',
        ],
        censor: CENSOR,
      },
    },
    redacting(destination ?? process.stderr),
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
