// Where a desktop's VNC is, and whether it answers: readRfbBanner() waits
// until a VNC endpoint sends its RFB ProtocolVersion banner ("RFB 003.008\n",
// RFC 6143 §7.1.1) and is the readiness test: a session is ready when QMP
// answers and the VNC speaks RFB. What a viewer is piped into (authenticated
// or not) is the bridge's business: src/bridge/vnc-connect.ts.
import net from 'node:net';
import { QwdError } from '../errors.js';

/**
 * A desktop's VNC endpoint. A TCP endpoint with a `password` is protected by
 * VNC Authentication, which the broker performs itself (src/bridge/vnc-auth.ts):
 * viewers are offered security type None and never see the password.
 */
export type VncAddress = { kind: 'unix'; path: string } | {
  kind: 'tcp'; host: string; port: number; password?: string;
};

/** The endpoint's own socket, no handshake. */
export function connectRaw(address: VncAddress): net.Socket {
  return address.kind === 'unix'
    ? net.createConnection(address.path)
    : net.createConnection(address.port, address.host);
}

export function readRfbBanner(address: VncAddress, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    // Raw even when the address has a password: the banner comes before any authentication.
    const socket = connectRaw(address);
    let received = Buffer.alloc(0);
    const done = (err: Error | null, banner?: string) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(banner!);
    };
    const timer = setTimeout(
      () => done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: no RFB banner within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 12) {
        const banner = received.subarray(0, 12).toString('latin1');
        if (/^RFB \d{3}\.\d{3}\n$/.test(banner)) done(null, banner.trim());
        else done(
          new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: not an RFB banner: ${JSON.stringify(banner)}`)
        );
      }
    });
    socket.on(
      'error',
      (err) => done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: ${err.message}`, { cause: err })),
    );
    socket.on(
      'close',
      () => done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: closed before the RFB banner`)),
    );
  });
}

export function describe(address: VncAddress): string {
  return address.kind === 'unix' ? address.path : `${address.host}:${address.port}`;
}
