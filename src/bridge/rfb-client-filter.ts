// Enforces view-only access in the bridge, not in the browser: parses the
// client-to-server half of RFB (RFC 6143 §7.1–7.5, plus the extension messages
// noVNC and QEMU use) and drops input messages, without ever breaking framing.
// A message type it cannot frame closes the viewer: guessing would let input
// through. Control viewers do not go through this at all.
import { Transform, type TransformCallback } from 'node:stream';

export const CLIENT_MESSAGE = {
  SetPixelFormat: 0,
  SetEncodings: 2,
  FramebufferUpdateRequest: 3,
  KeyEvent: 4,
  PointerEvent: 5,
  ClientCutText: 6,
  EnableContinuousUpdates: 150,
  ClientFence: 248,
  Xvp: 250,
  SetDesktopSize: 251,
  Qemu: 255,
} as const;

/** What a view-only viewer may not send: input, clipboard, power and resize requests. */
const DROPPED = new Set<number>([CLIENT_MESSAGE.KeyEvent, CLIENT_MESSAGE.PointerEvent, CLIENT_MESSAGE.ClientCutText, CLIENT_MESSAGE.Xvp, CLIENT_MESSAGE.SetDesktopSize]);

export class RfbProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RfbProtocolError';
  }
}

type Phase = 'version' | 'security' | 'vnc-auth' | 'client-init' | 'messages';

export interface FilterStats {
  forwarded: number;
  dropped: number;
}

/**
 * Returns the length of the complete message at the start of `buf`, or 0 when
 * more bytes are needed. Throws RfbProtocolError for a type it cannot frame.
 */
export function clientMessageLength(buf: Buffer): number {
  if (buf.length < 1) return 0;
  const type = buf[0]!;
  const need = (n: number) => (buf.length >= n ? n : 0);
  switch (type) {
    case CLIENT_MESSAGE.SetPixelFormat:
      return need(20);
    case CLIENT_MESSAGE.SetEncodings:
      return buf.length < 4 ? 0 : need(4 + 4 * buf.readUInt16BE(2));
    case CLIENT_MESSAGE.FramebufferUpdateRequest:
      return need(10);
    case CLIENT_MESSAGE.KeyEvent:
      return need(8);
    case CLIENT_MESSAGE.PointerEvent:
      return need(6);
    case CLIENT_MESSAGE.ClientCutText: {
      if (buf.length < 8) return 0;
      // Extended Clipboard pseudo-encoding: a negative length means abs(length) bytes follow.
      const length = Math.abs(buf.readInt32BE(4));
      if (length > 64 * 1024 * 1024) throw new RfbProtocolError(`ClientCutText of ${length} bytes`);
      return need(8 + length);
    }
    case CLIENT_MESSAGE.EnableContinuousUpdates:
      return need(10);
    case CLIENT_MESSAGE.ClientFence:
      return buf.length < 9 ? 0 : need(9 + buf[8]!);
    case CLIENT_MESSAGE.Xvp:
      return need(4);
    case CLIENT_MESSAGE.SetDesktopSize:
      return buf.length < 8 ? 0 : need(8 + 16 * buf[6]!);
    case CLIENT_MESSAGE.Qemu: {
      if (buf.length < 2) return 0;
      const sub = buf[1]!;
      if (sub === 0) return need(12); // QEMU Extended Key Event
      if (sub === 1) {
        // QEMU Audio: u16 operation; 0 enable, 1 disable, 2 set format (+ u8 fmt, u8 channels, u32 freq)
        if (buf.length < 4) return 0;
        const op = buf.readUInt16BE(2);
        if (op === 0 || op === 1) return need(4);
        if (op === 2) return need(10);
        throw new RfbProtocolError(`unknown QEMU audio operation ${op}`);
      }
      throw new RfbProtocolError(`unknown QEMU client message ${sub}`);
    }
    default:
      throw new RfbProtocolError(`unknown client message type ${type}`);
  }
}

/** True for messages a view-only viewer may not send. */
export function isInputMessage(buf: Buffer): boolean {
  const type = buf[0]!;
  if (DROPPED.has(type)) return true;
  return type === CLIENT_MESSAGE.Qemu && buf[1] === 0; // QEMU Extended Key Event
}

/** Transform for the browser → VNC direction of a view-only viewer. */
export class ViewOnlyFilter extends Transform {
  private phase: Phase = 'version';
  private minor = 8;
  private pending: Buffer = Buffer.alloc(0);
  /** Whether the unit next() just framed is a normal message (not handshake). */
  private wasMessage = false;
  readonly stats: FilterStats = { forwarded: 0, dropped: 0 };

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    try {
      for (;;) {
        const n = this.next();
        if (n === 0) break;
        const message = this.pending.subarray(0, n);
        this.pending = this.pending.subarray(n);
        if (this.wasMessage && isInputMessage(message)) {
          this.stats.dropped++;
        } else {
          out.push(message);
          this.stats.forwarded++;
        }
      }
    } catch (err) {
      // Everything framed before the bad message is still delivered, in order.
      if (out.length) this.push(Buffer.concat(out));
      done(err as Error);
      return;
    }
    done(null, out.length ? Buffer.concat(out) : undefined);
  }

  /** Length of the next complete unit (handshake piece or message), 0 if incomplete. */
  private next(): number {
    const buf = this.pending;
    this.wasMessage = false;
    switch (this.phase) {
      case 'version': {
        if (buf.length < 12) return 0;
        const text = buf.subarray(0, 12).toString('latin1');
        const m = /^RFB 003\.(\d{3})\n$/.exec(text);
        if (!m) throw new RfbProtocolError(`bad ProtocolVersion ${JSON.stringify(text)}`);
        this.minor = Number(m[1]);
        // RFB 3.3: the server chooses the security type; the client sends nothing.
        this.phase = this.minor >= 7 ? 'security' : 'client-init';
        return 12;
      }
      case 'security': {
        if (buf.length < 1) return 0;
        const type = buf[0]!;
        if (type === 1) this.phase = 'client-init';
        else if (type === 2) this.phase = 'vnc-auth';
        else throw new RfbProtocolError(`security type ${type} cannot be filtered`);
        return 1;
      }
      case 'vnc-auth':
        if (buf.length < 16) return 0;
        this.phase = 'client-init';
        return 16;
      case 'client-init':
        if (buf.length < 1) return 0;
        this.phase = 'messages';
        return 1;
      case 'messages': {
        const n = clientMessageLength(buf);
        this.wasMessage = n > 0;
        return n;
      }
    }
  }
}
