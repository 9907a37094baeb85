// Waits until a VNC endpoint answers with its RFB ProtocolVersion banner
// ("RFB 003.008\n", RFC 6143 §7.1.1). Used as the readiness test: a session is
// ready when QMP answers and the VNC socket speaks RFB.
import net from 'node:net';
import { QwdError } from '../errors.js';

export type VncAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export function connectVnc(address: VncAddress): net.Socket {
  return address.kind === 'unix' ? net.createConnection(address.path) : net.createConnection(address.port, address.host);
}

export function readRfbBanner(address: VncAddress, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connectVnc(address);
    let received = Buffer.alloc(0);
    const done = (err: Error | null, banner?: string) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(banner!);
    };
    const timer = setTimeout(() => done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: no RFB banner within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 12) {
        const banner = received.subarray(0, 12).toString('latin1');
        if (/^RFB \d{3}\.\d{3}\n$/.test(banner)) done(null, banner.trim());
        else done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: not an RFB banner: ${JSON.stringify(banner)}`));
      }
    });
    socket.on('error', (err) => done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: ${err.message}`, { cause: err })));
    socket.on('close', () => done(new QwdError('QWD_VNC_UNREACHABLE', `VNC ${describe(address)}: closed before the RFB banner`)));
  });
}

export function describe(address: VncAddress): string {
  return address.kind === 'unix' ? address.path : `${address.host}:${address.port}`;
}
