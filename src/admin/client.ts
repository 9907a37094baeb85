// qwdctl's side of the admin socket: an Admin whose operations run in the
// running broker (wire format in socket.ts). connectAdmin() answers null when
// no broker serves the socket (none was started, or one was killed and left
// its socket behind): qwdctl then works on the store itself, under the lock.
import http from 'node:http';
import { QwdError } from '../errors.js';
import { ADMIN_OPERATIONS, type Admin } from './operations.js';
import { errorFromWire, type WireError } from './socket.js';

/** The broker went away while it was asked (or answered what no broker sends). */
function brokerLost(socketPath: string, why: string, cause?: unknown): QwdError {
  const message = `the broker on ${socketPath} ${why}`;
  return new QwdError('QWD_INTERNAL', message, { userMessage: message, cause });
}

function call(socketPath: string, name: string, args: unknown[]): Promise<unknown> {
  const body = JSON.stringify({ args });
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath, method: 'POST', path: `/v1/${name}`,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (err) => reject(brokerLost(socketPath, 'closed the connection before answering', err)));
      res.on('end', () => {
        let parsed: { result?: unknown; error?: WireError };
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof parsed;
        } catch (err) {
          return reject(brokerLost(socketPath, `answered ${name} with something that is not JSON`, err));
        }
        if (res.statusCode === 200 && 'result' in parsed) resolve(parsed.result);
        else if (parsed.error) reject(errorFromWire(parsed.error));
        else reject(brokerLost(socketPath, `answered ${name} with HTTP ${res.statusCode} and no error`));
      });
    });
    req.on('error', (err) => reject(Object.assign(err, { socketPath })));
    req.end(body);
  });
}

/** Operations run by the broker that serves `socketPath`. */
export function remoteAdmin(socketPath: string): Admin {
  const admin: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
  for (const name of Object.keys(ADMIN_OPERATIONS)) {
    admin[name] = (...args) => call(socketPath, name, args).catch((err: NodeJS.ErrnoException) => {
      if (err instanceof QwdError) throw err;
      throw brokerLost(socketPath, `could not be asked to ${name}: ${err.message}`, err);
    });
  }
  return admin as unknown as Admin;
}

/**
 * The running broker's operations, or null when no broker serves the socket. A socket this user
 * may not open is an error that says so (qwdctl runs as the broker's user, or root).
 */
export async function connectAdmin(socketPath: string): Promise<Admin | null> {
  try {
    await call(socketPath, 'hostStatus', []);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return null;
    if (code === 'EACCES') {
      const message = `${socketPath}: permission denied; run qwdctl as the broker's user (or root)`;
      throw new QwdError('QWD_FORBIDDEN', message, { userMessage: message, cause: err });
    }
    if (err instanceof QwdError) throw err;
    throw brokerLost(socketPath, `could not be reached: ${(err as Error).message}`, err);
  }
  return remoteAdmin(socketPath);
}
