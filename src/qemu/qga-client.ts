// One request to a guest's qemu-guest-agent (QGA) over its virtio-serial
// port, which QEMU joins to <runDir>/qga.sock (machines with guestAgent: true).
// QGA's protocol (qga/qapi-schema.json): a reply to an abandoned request may
// still sit in the port, so every request is preceded by guest-sync with a
// random id, and replies before the matching one are dropped. One connection
// per request: QGA serves one client at a time.
import crypto from 'node:crypto';
import net from 'node:net';
import { QwdError } from '../errors.js';

/**
 * Sends one command; `args` may be a function, called once the agent has answered guest-sync (for a value that
 * must be taken when the command leaves, such as the host's time for guest-set-time).
 */
export async function qgaCommand<T = unknown>(
  socketPath: string, command: string, args?: Record<string, unknown> | (() => Record<string, unknown>),
  timeoutMs = 10_000,
): Promise<T> {
  const socket = net.createConnection(socketPath);
  try {
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new QwdError(
        'QWD_QMP_TIMEOUT', `guest agent ${socketPath}: no answer to ${command} within ${timeoutMs} ms`,
      )), timeoutMs);
      const syncId = crypto.randomInt(1, 2 ** 31);
      let synced = false;
      let buffer = '';
      socket.setEncoding('latin1');
      socket.on('error', (err) => {
        clearTimeout(timer);
        reject(new QwdError('QWD_QMP_ERROR', `guest agent ${socketPath}: ${err.message}`, { cause: err }));
      });
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
          // A stale guest-sync-delimited answer starts with 0xFF.
          const line = buffer.slice(0, nl).replace(/^\xff/, '').trim();
          buffer = buffer.slice(nl + 1);
          let reply: { return?: unknown; error?: { desc?: string } };
          try {
            reply = JSON.parse(Buffer.from(line, 'latin1').toString('utf8')) as typeof reply;
          } catch {
            continue; // a partial answer an earlier, abandoned request left in the port
          }
          if (!synced) {
            if (reply.return !== syncId) continue;
            synced = true;
            const values = typeof args === 'function' ? args() : args;
            const request = values ? { execute: command, arguments: values } : { execute: command };
            socket.write(`${JSON.stringify(request)}\n`);
            continue;
          }
          clearTimeout(timer);
          if (reply.error) {
            reject(new QwdError('QWD_QMP_ERROR', `guest agent: ${command}: ${reply.error.desc ?? 'error'}`));
          } else {
            resolve(reply.return as T);
          }
          return;
        }
      });
      socket.write(`${JSON.stringify({ execute: 'guest-sync', arguments: { id: syncId } })}\n`);
    });
  } finally {
    socket.destroy();
  }
}
