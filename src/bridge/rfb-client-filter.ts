// Frames the client-to-server half of RFB (RFC 6143 §7.1–7.5, plus the extension
// messages noVNC and QEMU use) in the bridge, as an explicit state machine that
// never holds more than one message header (at most 20 bytes):
// - view-only viewers: input messages (key, pointer, clipboard, power, resize)
//   are dropped by counting their bytes down, never buffered, at any length;
//   a message type it cannot frame closes the viewer (guessing would let input through);
// - control viewers: nothing is dropped, but a ClientCutText larger than the
//   cap closes the viewer with a clear reason (QEMU itself refuses more than
//   1 MiB, ui/vnc.c); a type it cannot frame is QEMU's to judge, so the rest of
//   that connection passes through unframed.
// Bodies of forwarded messages stream through as they arrive (never
// re-assembled), so the cost is linear in the bytes and the memory is constant.
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

/** QEMU refuses a ClientCutText (plain or extended) of more than 1 MiB (ui/vnc.c, protocol_client_msg). */
export const MAX_CUT_TEXT_BYTES = 1024 * 1024;

/** The longest header the framer ever holds: SetPixelFormat, a 20-byte fixed message. */
const MAX_HEADER_BYTES = 20;

/** What a view-only viewer may not send: input, clipboard, power and resize requests. */
const DROPPED = new Set<number>([CLIENT_MESSAGE.KeyEvent, CLIENT_MESSAGE.PointerEvent, CLIENT_MESSAGE.ClientCutText, CLIENT_MESSAGE.Xvp, CLIENT_MESSAGE.SetDesktopSize]);

export class RfbProtocolError extends Error {
  /** The WebSocket close code and reason for the viewer (RFC 6455 §7.4, §7.1.6: a short reason). */
  readonly closeCode: number;
  readonly closeReason: string;
  constructor(message: string, close: { code: number; reason: string } = { code: 4003, reason: 'protocol error' }) {
    super(message);
    this.name = 'RfbProtocolError';
    this.closeCode = close.code;
    this.closeReason = close.reason;
  }
}

export type FilterAccess = 'view' | 'control';

export interface FilterStats {
  /** Messages (and handshake pieces) passed on. */
  forwarded: number;
  /** Messages dropped (view-only input). */
  dropped: number;
  /** Bytes of dropped messages, counted and discarded. */
  droppedBytes: number;
}

/** How a message at the start of a buffer is framed: a header of `header` bytes, then `body` bytes. */
export type Framing = { need: number } | { header: number; body: number };

/**
 * Frames the message at the start of `buf`: either how many bytes are needed
 * before its size is known, or its header and body sizes. Never needs more
 * than MAX_HEADER_BYTES. Throws RfbProtocolError for a type it cannot frame.
 */
export function frameClientMessage(buf: Buffer): Framing {
  if (buf.length < 1) return { need: 1 };
  const type = buf[0]!;
  const fixed = (n: number): Framing => (buf.length >= n ? { header: n, body: 0 } : { need: n });
  switch (type) {
    case CLIENT_MESSAGE.SetPixelFormat:
      return fixed(20);
    case CLIENT_MESSAGE.SetEncodings:
      return buf.length < 4 ? { need: 4 } : { header: 4, body: 4 * buf.readUInt16BE(2) };
    case CLIENT_MESSAGE.FramebufferUpdateRequest:
      return fixed(10);
    case CLIENT_MESSAGE.KeyEvent:
      return fixed(8);
    case CLIENT_MESSAGE.PointerEvent:
      return fixed(6);
    case CLIENT_MESSAGE.ClientCutText:
      // Extended Clipboard pseudo-encoding: a negative length means abs(length) bytes follow.
      return buf.length < 8 ? { need: 8 } : { header: 8, body: Math.abs(buf.readInt32BE(4)) };
    case CLIENT_MESSAGE.EnableContinuousUpdates:
      return fixed(10);
    case CLIENT_MESSAGE.ClientFence:
      return buf.length < 9 ? { need: 9 } : { header: 9, body: buf[8]! };
    case CLIENT_MESSAGE.Xvp:
      return fixed(4);
    case CLIENT_MESSAGE.SetDesktopSize:
      return buf.length < 8 ? { need: 8 } : { header: 8, body: 16 * buf[6]! };
    case CLIENT_MESSAGE.Qemu: {
      if (buf.length < 2) return { need: 2 };
      const sub = buf[1]!;
      if (sub === 0) return fixed(12); // QEMU Extended Key Event
      if (sub === 1) {
        // QEMU Audio: u16 operation; 0 enable, 1 disable, 2 set format (+ u8 fmt, u8 channels, u32 freq)
        if (buf.length < 4) return { need: 4 };
        const op = buf.readUInt16BE(2);
        if (op === 0 || op === 1) return fixed(4);
        if (op === 2) return fixed(10);
        throw new RfbProtocolError(`unknown QEMU audio operation ${op}`);
      }
      throw new RfbProtocolError(`unknown QEMU client message ${sub}`);
    }
    default:
      throw new RfbProtocolError(`unknown client message type ${type}`);
  }
}

/**
 * The length of the complete message at the start of `buf`, or 0 when more
 * bytes are needed. Throws RfbProtocolError for a type it cannot frame.
 */
export function clientMessageLength(buf: Buffer): number {
  const f = frameClientMessage(buf);
  if ('need' in f) return 0;
  return buf.length >= f.header + f.body ? f.header + f.body : 0;
}

/** True for messages a view-only viewer may not send (decided from the header alone). */
export function isInputMessage(header: Buffer): boolean {
  const type = header[0]!;
  if (DROPPED.has(type)) return true;
  return type === CLIENT_MESSAGE.Qemu && header[1] === 0; // QEMU Extended Key Event
}

/**
 * The parser's states. Handshake pieces are fixed-size, so they go through the
 * same header buffer; `body` streams (forward) or counts down (drop) the rest
 * of a message; `passthrough` is a control link past a type it cannot frame.
 */
type Phase = 'version' | 'security' | 'vnc-auth' | 'client-init' | 'header' | 'body' | 'passthrough';

export interface RfbClientFilterOptions {
  access: FilterAccess;
  /** Largest ClientCutText a control viewer may send; default MAX_CUT_TEXT_BYTES. */
  maxCutTextBytes?: number;
  /** Told once when a control link leaves framing (its detail goes to the operator log). */
  onPassthrough?: (err: RfbProtocolError) => void;
}

/** Transform for the browser → VNC direction of a viewer. */
export class RfbClientFilter extends Transform {
  readonly stats: FilterStats = { forwarded: 0, dropped: 0, droppedBytes: 0 };
  private phase: Phase = 'version';
  private readonly head = Buffer.alloc(MAX_HEADER_BYTES);
  private headLength = 0;
  /** Bytes of the current message's body still to come, and what happens to them. */
  private bodyLeft = 0;
  private dropping = false;
  private readonly access: FilterAccess;
  private readonly maxCutTextBytes: number;
  private readonly onPassthrough: ((err: RfbProtocolError) => void) | undefined;

  constructor(opts: RfbClientFilterOptions) {
    super();
    this.access = opts.access;
    this.maxCutTextBytes = opts.maxCutTextBytes ?? MAX_CUT_TEXT_BYTES;
    this.onPassthrough = opts.onPassthrough;
  }

  /** Bytes this filter holds between chunks: at most one message header. */
  get bufferedBytes(): number {
    return this.headLength;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const out: Buffer[] = [];
    try {
      this.consume(chunk, out);
    } catch (err) {
      // Everything framed before the bad message is still delivered, in order.
      if (out.length) this.push(out.length === 1 ? out[0] : Buffer.concat(out));
      done(err as Error);
      return;
    }
    done(null, out.length === 0 ? undefined : out.length === 1 ? out[0] : Buffer.concat(out));
  }

  /** Runs the state machine over one chunk; forwarded bytes are appended to `out` as slices. */
  private consume(chunk: Buffer, out: Buffer[]): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.phase === 'passthrough') {
        out.push(pos === 0 ? chunk : chunk.subarray(pos));
        return;
      }
      if (this.phase === 'body') {
        const take = Math.min(this.bodyLeft, chunk.length - pos);
        if (this.dropping) this.stats.droppedBytes += take;
        else out.push(chunk.subarray(pos, pos + take));
        pos += take;
        this.bodyLeft -= take;
        if (this.bodyLeft === 0) this.phase = 'header';
        continue;
      }
      // A header: from the chunk itself when it is all there (the common case), else via `head`.
      if (this.headLength === 0) {
        const rest = chunk.subarray(pos);
        const done = this.unit(rest);
        if (done) {
          this.account(rest.subarray(0, done.header), done, out);
          pos += done.header;
          continue;
        }
      }
      // Copy only as much as the unit may still need, so nothing of the next message is taken.
      const want = this.needed();
      // want > headLength always (a complete header would have been taken above); max() guards the loop anyway.
      const take = Math.max(1, Math.min(want - this.headLength, chunk.length - pos));
      chunk.copy(this.head, this.headLength, pos, pos + take);
      this.headLength += take;
      pos += take;
      const held = this.head.subarray(0, this.headLength);
      const done = this.unit(held);
      if (done) {
        this.headLength = 0;
        // A copy: `head` is reused for the next header while this one may still wait in the stream.
        this.account(Buffer.from(held.subarray(0, done.header)), done, out);
      }
    }
  }

  /** How many header bytes the current unit needs, given what `head` holds (≥ headLength + 1). */
  private needed(): number {
    const held = this.head.subarray(0, this.headLength);
    switch (this.phase) {
      case 'version':
        return 12;
      case 'vnc-auth':
        return 16;
      case 'security':
      case 'client-init':
        return 1;
      default: {
        const f = frameClientMessage(held);
        // frameClientMessage only says "need" for sizes above what it was given.
        return 'need' in f ? f.need : this.headLength;
      }
    }
  }

  /**
   * If `buf` starts with a complete unit header, advances the phase and says
   * how to treat it; null when more bytes are needed.
   */
  private unit(buf: Buffer): { header: number; body: number; drop: boolean } | null {
    switch (this.phase) {
      case 'version': {
        if (buf.length < 12) return null;
        const text = buf.subarray(0, 12).toString('latin1');
        const m = /^RFB 003\.(\d{3})\n$/.exec(text);
        if (!m) throw new RfbProtocolError(`bad ProtocolVersion ${JSON.stringify(text)}`);
        // RFB 3.3: the server chooses the security type; the client sends nothing.
        this.phase = Number(m[1]) >= 7 ? 'security' : 'client-init';
        return { header: 12, body: 0, drop: false };
      }
      case 'security': {
        if (buf.length < 1) return null;
        const type = buf[0]!;
        if (type === 1) this.phase = 'client-init';
        else if (type === 2) this.phase = 'vnc-auth';
        else throw new RfbProtocolError(`security type ${type} cannot be filtered`);
        return { header: 1, body: 0, drop: false };
      }
      case 'vnc-auth':
        if (buf.length < 16) return null;
        this.phase = 'client-init';
        return { header: 16, body: 0, drop: false };
      case 'client-init':
        if (buf.length < 1) return null;
        this.phase = 'header';
        return { header: 1, body: 0, drop: false };
      default:
        return this.message(buf);
    }
  }

  private message(buf: Buffer): { header: number; body: number; drop: boolean } | null {
    let f: Framing;
    try {
      f = frameClientMessage(buf);
    } catch (err) {
      if (this.access === 'view' || !(err instanceof RfbProtocolError)) throw err;
      // A control link: QEMU decides what it understands; stop framing this connection.
      this.onPassthrough?.(err);
      this.phase = 'passthrough';
      return { header: buf.length, body: 0, drop: false };
    }
    if ('need' in f) return null;
    const drop = this.access === 'view' && isInputMessage(buf);
    if (!drop && buf[0] === CLIENT_MESSAGE.ClientCutText && f.body > this.maxCutTextBytes) {
      throw new RfbProtocolError(
        `ClientCutText of ${f.body} bytes is over the limit of ${this.maxCutTextBytes} bytes`,
        // RFC 6455 §7.4.1: 1009, a message too big to process.
        { code: 1009, reason: `clipboard text over the limit of ${this.maxCutTextBytes} bytes` },
      );
    }
    if (f.body > 0) {
      this.phase = 'body';
      this.bodyLeft = f.body;
      this.dropping = drop;
    }
    return { ...f, drop };
  }

  private account(header: Buffer, unit: { header: number; body: number; drop: boolean }, out: Buffer[]): void {
    if (unit.drop) {
      this.stats.dropped++;
      this.stats.droppedBytes += header.length;
    } else {
      this.stats.forwarded++;
      if (header.length) out.push(header);
    }
  }
}

/** The browser → VNC filter of a view-only viewer. */
export class ViewOnlyFilter extends RfbClientFilter {
  constructor() {
    super({ access: 'view' });
  }
}
