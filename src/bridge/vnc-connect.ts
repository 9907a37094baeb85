// The stream a viewer is piped into: the desktop's VNC socket itself, or, for
// a password-protected TCP endpoint (a Slurm node), a stream that performs the
// VNC authentication toward QEMU and offers the viewer security type None.
import type { Duplex } from 'node:stream';
import { connectRaw, type VncAddress } from '../qemu/rfb-probe.js';
import { connectAuthenticatedVnc } from './vnc-auth.js';

/** A stream that speaks RFB from its first byte, as a viewer expects. */
export function connectVnc(address: VncAddress): Duplex {
  if (address.kind === 'tcp' && address.password !== undefined) {
    return connectAuthenticatedVnc(address, address.password);
  }
  return connectRaw(address);
}
