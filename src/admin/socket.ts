// The admin socket's place and wire format, shared by the broker's server and
// qwdctl's client. The socket is `admin.sock` in the state dir; the protocol is
// HTTP/1.1 over it: `POST /v1/<operation>` with `{"args": [...]}`, answered 200
// `{"result": ...}`, or with the error's HTTP status and
// `{"error": {code, message, userMessage, details, problems}}`, which the
// client turns back into the same QwdError (so qwdctl's exit codes and
// messages do not depend on which process ran the operation).
import path from 'node:path';
import { ConfigError, ERROR_CODES, QwdError, toQwdError, type ErrorCode } from '../errors.js';

export const ADMIN_SOCKET_FILE = 'admin.sock';

/** sun_path holds 108 bytes with its terminating NUL (unix(7)). */
const MAX_SOCKET_PATH_BYTES = 107;

export function adminSocketPath(stateDir: string): string {
  const socketPath = path.join(path.resolve(stateDir), ADMIN_SOCKET_FILE);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    const message = `the admin socket ${socketPath} would be longer than the ${MAX_SOCKET_PATH_BYTES} bytes a Unix ` +
      'socket path may have: choose a shorter stateDir';
    throw new QwdError('QWD_CONFIG_INVALID', message, { userMessage: message });
  }
  return socketPath;
}

export interface WireError {
  code: string;
  message: string;
  userMessage: string;
  details: Record<string, unknown> | null;
  problems: string[] | null;
}

export function errorToWire(err: unknown): { status: number; error: WireError } {
  const qwd = toQwdError(err);
  return {
    status: qwd.httpStatus,
    error: {
      code: qwd.code, message: qwd.message, userMessage: qwd.userMessage, details: qwd.details ?? null,
      problems: qwd instanceof ConfigError ? qwd.problems : null,
    },
  };
}

export function errorFromWire(wire: WireError): QwdError {
  if (wire.problems) {
    return new ConfigError(wire.problems, wire.code === 'QWD_MACHINE_INVALID' ? 'QWD_MACHINE_INVALID' : undefined);
  }
  // A code this qwdctl does not know (a broker of another version) is still an error, of the internal family.
  const code = Object.hasOwn(ERROR_CODES, wire.code) ? wire.code as ErrorCode : 'QWD_INTERNAL';
  return new QwdError(code, wire.message, {
    userMessage: wire.userMessage, ...(wire.details ? { details: wire.details } : {}),
  });
}
