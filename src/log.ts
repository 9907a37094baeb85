// Structured JSON logging (pino). One logger is created by a composition root
// and passed down; modules take a child logger with their own `module` field.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'qemu-web-desktop' },
      // Passwords and tokens must never reach a log line.
      redact: { paths: ['password', '*.password', 'token', '*.token', 'viewToken', '*.viewToken', 'req.headers.cookie'], censor: '[redacted]' },
    },
    destination ?? process.stderr,
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
