// The stream a viewer is piped into: the desktop's VNC socket itself, or, for
// a password-protected TCP endpoint (a Slurm node), a stream that performs the
// VNC authentication toward QEMU and offers the viewer security type None.
//
// readDesktop() is how the bridge reads it: every chunk goes to a callback
// instead of a 'data' event. For the socket itself the chunks are read into a
// buffer the bridge lends back (net.Socket's `onread`): the next read reuses
// it unless the callback says the chunk is still held (queued for a viewer's
// socket). A fresh Buffer per read, at hundreds of MB/s, is what made the
// bridge inside the broker slow (2–3× websockify's CPU per byte): the kernel
// copied each read into pages never touched before (a page fault per 4 KiB),
// and the garbage collector marked the broker's whole heap again and again to
// free them (perf: _copy_to_iter under exc_page_fault, ConcurrentMarking).
import net from 'node:net';
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

/**
 * Called with each chunk read from the desktop. The chunk is a view of a buffer that the next read may overwrite:
 * return true when something still holds it after the call (a socket write that did not complete), and the next read
 * goes into a new buffer; false, and the same buffer is used again.
 */
export type DesktopChunkHandler = (chunk: Buffer) => boolean;

/**
 * Bytes one read may bring (Node's own default is 64 KiB): one WebSocket message and one write per read, so larger
 * reads cost less per byte (measured: 256 KiB moved ≈ 15 % more than 64 KiB, at less CPU per byte; BENCHMARKS.md).
 * Only the pages a read has filled take memory, so a viewer of a quiet desktop keeps little of it resident.
 */
export const DESKTOP_READ_BYTES = 256 * 1024;

/**
 * connectVnc, read through `onChunk` (no 'data' events). pause() and resume() on the returned stream stop and
 * start the reading; 'end', 'close' and 'error' are emitted as usual.
 */
export function readDesktop(address: VncAddress, onChunk: DesktopChunkHandler, readBytes = DESKTOP_READ_BYTES): Duplex {
  if (address.kind === 'tcp' && address.password !== undefined) {
    const vnc = connectAuthenticatedVnc(address, address.password);
    // A stream of its own making: each chunk is a new Buffer, nothing to lend back.
    vnc.on('data', (chunk: Buffer) => onChunk(chunk));
    return vnc;
  }
  let buffer = Buffer.allocUnsafe(readBytes);
  let held = false;
  const onread = {
    // Asked for the buffer of the next read, once before the first read and after every chunk.
    buffer: () => {
      if (held) buffer = Buffer.allocUnsafe(readBytes);
      held = false;
      return buffer;
    },
    callback: (bytes: number) => {
      held = onChunk(buffer.subarray(0, bytes));
      return true; // false would pause the socket; the handler pauses it itself when the viewer is full
    },
  };
  return address.kind === 'unix'
    ? net.createConnection({ path: address.path, onread })
    : net.createConnection({ host: address.host, port: address.port, onread });
}
