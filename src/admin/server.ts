// The broker's admin socket: qwdctl's way in while a broker runs, as virsh
// talks to libvirtd. Serves the operations of operations.ts (wire format in
// socket.ts) on a Unix socket in the state dir, 0600 and owned by the broker's
// user: the kernel lets only that user (and root) connect, which is the whole
// authorisation. The peer's uid is not checked again: Node offers no
// SO_PEERCRED without a native module, and the state dir (0700) and the
// socket's mode already keep every other user out. Owns the socket file:
// created at start (a stale one of ours is replaced, anything else refused)
// and removed at close.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import { ADMIN_OPERATIONS, type Admin } from './operations.js';
import { errorToWire } from './socket.js';

const MAX_BODY_BYTES = 1 << 20;

export interface AdminServer {
  socketPath: string;
  /** Stops serving (requests in flight are cut) and removes the socket; twice is a no-op. */
  close(): Promise<void>;
}

function refuse(socketPath: string, why: string): QwdError {
  const message = `${socketPath} ${why}; the broker will not replace it: remove it yourself if it is not needed`;
  return new QwdError('QWD_STATE_DIR_UNSAFE', message, { userMessage: message });
}

/** True when something accepts connections on the socket (a live server), false when nothing does (stale). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(err);
    });
  });
}

/**
 * Clears the way for our socket: nothing there, or a socket of ours that nobody serves (left by a
 * broker that was killed) which is removed. Anything else is refused, never deleted.
 */
async function clearStaleSocket(socketPath: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) throw refuse(socketPath, 'exists and is not a socket');
  if (stat.uid !== (process.getuid?.() ?? 0)) {
    throw refuse(socketPath, `is a socket of another user (uid ${stat.uid})`);
  }
  if (await answers(socketPath)) throw refuse(socketPath, 'is served by another process');
  fs.rmSync(socketPath);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new QwdError('QWD_BAD_REQUEST', `admin request body over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function answer(ops: Admin, req: http.IncomingMessage): Promise<unknown> {
  const name = /^\/v1\/([A-Za-z]+)$/.exec(req.url ?? '')?.[1];
  if (req.method !== 'POST' || !name || !Object.hasOwn(ADMIN_OPERATIONS, name)) {
    throw new QwdError('QWD_NOT_FOUND', `no admin operation ${req.method} ${req.url}`);
  }
  let args: unknown;
  try {
    args = (JSON.parse(await readBody(req)) as { args?: unknown }).args;
  } catch (err) {
    if (err instanceof QwdError) throw err;
    throw new QwdError('QWD_BAD_REQUEST', `admin request body is not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(args)) throw new QwdError('QWD_BAD_REQUEST', 'admin request body must be {"args": [...]}');
  const operation = ops[name as keyof Admin] as (...a: unknown[]) => Promise<unknown>;
  return operation(...args);
}

export async function serveAdmin(socketPath: string, ops: Admin, log: Logger): Promise<AdminServer> {
  await clearStaleSocket(socketPath);
  // Operations such as a session's start or stop take as long as QEMU takes; each has its own timeouts.
  const server = http.createServer({ requestTimeout: 0 }, (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    answer(ops, req).then(
      (result) => send(200, { result: result ?? null }),
      (err: unknown) => {
        const { status, error } = errorToWire(err);
        log[status >= 500 ? 'error' : 'info']({ url: req.url, err }, 'admin operation failed');
        send(status, { error });
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // The socket is made with the umask's mode; until this chmod the state dir (0700) keeps others out.
  fs.chmodSync(socketPath, 0o600);
  const { ino } = fs.statSync(socketPath);
  log.info({ socketPath }, 'admin socket listening');
  let closed: Promise<void> | null = null;
  return {
    socketPath,
    close: () => {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => {
        // Node removes a listening socket's file when it closes; a file still there is removed only if it is ours.
        try {
          if (fs.lstatSync(socketPath).ino === ino) fs.rmSync(socketPath);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      });
      return closed;
    },
  };
}
