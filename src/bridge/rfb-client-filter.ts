// Frames the client-to-server half of RFB (RFC 6143 §7.1–7.5, plus the extension
// messages noVNC and QEMU use) in the bridge, as an explicit state machine that
// holds one message header (at most 20 bytes) and, only for an extended
// clipboard Provide it forwards, that message (at most the cut-text cap):
// - view-only viewers: input messages (key, pointer, clipboard, power, resize)
//   are dropped by counting their bytes down, never buffered, at any length;
//   a message type it cannot frame closes the viewer (guessing would let input through);
// - control viewers: input passes, but a ClientCutText larger than the
//   cap closes the viewer with a clear reason (QEMU itself refuses more than
//   1 MiB, ui/vnc.c); a type it cannot frame is QEMU's to judge, so the rest of
//   that connection passes through unframed — unless a clipboard policy is
//   enforced on the link, which framing alone can do: then it closes.
// - the clipboard policy (clipboard-policy.ts) of every link: plain and
//   extended ClientCutText (Extended Clipboard pseudo-encoding, a negative
//   length, then u32 flags) are forwarded or dropped by the direction they move
//   text; see cutTextUnit for how the guest → viewer direction is controlled
//   from this side of the connection only.
// Bodies of forwarded messages stream through as they arrive (never
// re-assembled, except an extended Provide, whose zlib data is checked as QEMU
// will read it), so the cost is linear in the bytes and the memory bounded.
import zlib from 'node:zlib';
import { Transform, type TransformCallback } from 'node:stream';
import { FULL_CLIPBOARD, NO_CLIPBOARD, type ClipboardPolicy } from './clipboard-policy.js';

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

/**
 * The Extended Clipboard pseudo-encoding (RFB community spec, "ExtendedClipboard"):
 * a client that lists it in SetEncodings gets QEMU's extended ServerCutText
 * (caps, notify, request, provide); one that does not gets no clipboard message
 * at all (QEMU 7.2 ui/vnc-clipboard.c registers the clipboard peer only then).
 */
export const EXTENDED_CLIPBOARD_ENCODING = 0xc0a1e5ce | 0;
/**
 * What the bridge writes in place of the Extended Clipboard pseudo-encoding when
 * a viewer may neither paste nor copy: a value QEMU does not know and so ignores
 * (ui/vnc.c set_encodings, default case). Replacing keeps the message length, so
 * SetEncodings still streams through without being held.
 */
export const IGNORED_ENCODING = -1;

/** Extended clipboard flags (u32 after the negative length): actions in the high byte, formats in the low 16 bits. */
export const CLIPBOARD_FLAG = {
  text: 1 << 0,
  caps: 1 << 24,
  request: 1 << 25,
  peek: 1 << 26,
  notify: 1 << 27,
  provide: 1 << 28,
} as const;
const FORMAT_BITS = 16;

/** The longest header the framer ever holds: SetPixelFormat, a 20-byte fixed message. */
const MAX_HEADER_BYTES = 20;

/** What a view-only viewer may not send: input, clipboard, power and resize requests. */
const DROPPED = new Set<number>([
  CLIENT_MESSAGE.KeyEvent, CLIENT_MESSAGE.PointerEvent, CLIENT_MESSAGE.ClientCutText, CLIENT_MESSAGE.Xvp,
  CLIENT_MESSAGE.SetDesktopSize,
]);

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
type Phase = 'version' | 'security' | 'vnc-auth' | 'client-init' | 'header' | 'body' | 'encodings' | 'passthrough';

/** How the filter treats a unit it framed: pass (or replace) its header, drop it, or hold it whole for a check. */
interface Unit {
  header: number;
  body: number;
  drop: boolean;
  /** Bytes sent instead of the header (a rewritten encoding). */
  replace?: Buffer;
  /** A piece of a message already counted (one encoding of a SetEncodings). */
  part?: boolean;
  /** Hold header and body until the body is complete, then check them (an extended clipboard Provide). */
  hold?: boolean;
  /** A clipboard message dropped by the viewer's clipboard policy. */
  clipboardDrop?: boolean;
}

export interface RfbClientFilterOptions {
  access: FilterAccess;
  /** Largest ClientCutText a control viewer may send; default MAX_CUT_TEXT_BYTES. */
  maxCutTextBytes?: number;
  /**
   * The viewer's clipboard policy; default: a control link may do both, a
   * view-only link neither (a view-only link never pastes, whatever it says).
   */
  clipboard?: ClipboardPolicy;
  /** Told once, at the first clipboard message the policy drops (for the operator log: "why does paste not work"). */
  onClipboardDropped?: (policy: ClipboardPolicy) => void;
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
  /** An extended Provide being held for its check: its header, flags and the body so far. */
  private holding: { header: Buffer; flags: number; body: Buffer[]; bytes: number } | null = null;
  /** Encodings of the current SetEncodings still to come (phase 'encodings'). */
  private encodingsLeft = 0;
  private readonly access: FilterAccess;
  private readonly clipboard: ClipboardPolicy;
  /** Hide the Extended Clipboard pseudo-encoding from QEMU: this viewer may neither paste nor copy. */
  private readonly stripClipboardEncoding: boolean;
  /** Whether a control link may leave framing: only when nothing but framing limits are enforced on it. */
  private readonly mayPassThrough: boolean;
  private readonly maxCutTextBytes: number;
  private readonly onPassthrough: ((err: RfbProtocolError) => void) | undefined;
  private onClipboardDropped: ((policy: ClipboardPolicy) => void) | undefined;

  constructor(opts: RfbClientFilterOptions) {
    super();
    this.access = opts.access;
    const asked = opts.clipboard ?? (opts.access === 'view' ? NO_CLIPBOARD : FULL_CLIPBOARD);
    // A view-only viewer never pastes, whatever the caller computed.
    this.clipboard = opts.access === 'view' ? { toGuest: false, fromGuest: asked.fromGuest } : asked;
    this.stripClipboardEncoding = !this.clipboard.toGuest && !this.clipboard.fromGuest;
    this.mayPassThrough = opts.access === 'control' && this.clipboard.toGuest && this.clipboard.fromGuest;
    this.maxCutTextBytes = opts.maxCutTextBytes ?? MAX_CUT_TEXT_BYTES;
    this.onPassthrough = opts.onPassthrough;
    this.onClipboardDropped = opts.onClipboardDropped;
  }

  /** Bytes this filter holds between chunks: one message header, or an extended Provide being checked. */
  get bufferedBytes(): number {
    return this.headLength + (this.holding ? this.holding.header.length + this.holding.bytes : 0);
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
        else if (this.holding) {
          // A copy: the chunk's memory is not ours to keep past this call.
          this.holding.body.push(Buffer.from(chunk.subarray(pos, pos + take)));
          this.holding.bytes += take;
        } else out.push(chunk.subarray(pos, pos + take));
        pos += take;
        this.bodyLeft -= take;
        if (this.bodyLeft === 0) {
          this.phase = 'header';
          if (this.holding) this.releaseHeld(out);
        }
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
      case 'encodings':
        return 4;
      default: {
        if (held[0] === CLIENT_MESSAGE.ClientCutText && held.length >= 8) return this.cutTextHeaderBytes(held);
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
  private unit(buf: Buffer): Unit | null {
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
      case 'encodings': {
        if (buf.length < 4) return null;
        if (--this.encodingsLeft === 0) this.phase = 'header';
        const replace = buf.readInt32BE(0) === EXTENDED_CLIPBOARD_ENCODING ? IGNORED_ENCODING_BYTES : undefined;
        return { header: 4, body: 0, drop: false, part: true, ...(replace ? { replace } : {}) };
      }
      default:
        return this.message(buf);
    }
  }

  private message(buf: Buffer): Unit | null {
    if (buf[0] === CLIENT_MESSAGE.ClientCutText) return this.cutTextUnit(buf);
    let f: Framing;
    try {
      f = frameClientMessage(buf);
    } catch (err) {
      if (!this.mayPassThrough || !(err instanceof RfbProtocolError)) throw err;
      // A control link: QEMU decides what it understands; stop framing this connection.
      this.onPassthrough?.(err);
      this.phase = 'passthrough';
      return { header: buf.length, body: 0, drop: false };
    }
    if ('need' in f) return null;
    const drop = this.access === 'view' && isInputMessage(buf);
    if (!drop && buf[0] === CLIENT_MESSAGE.SetEncodings && this.stripClipboardEncoding && f.body > 0) {
      // Each encoding goes through the header buffer, so the pseudo-encoding is found across any split.
      this.phase = 'encodings';
      this.encodingsLeft = f.body / 4;
      return { header: f.header, body: 0, drop: false };
    }
    if (f.body > 0) {
      this.phase = 'body';
      this.bodyLeft = f.body;
      this.dropping = drop;
    }
    return { ...f, drop };
  }

  /** Header bytes a ClientCutText needs before it can be decided: 8, or 12 when its extended flags matter. */
  private cutTextHeaderBytes(buf: Buffer): number {
    const length = buf.readInt32BE(4);
    if (length >= 0 || this.stripClipboardEncoding) return 8;
    const size = -length;
    if (size < 4 || (this.access === 'view' && size > this.maxCutTextBytes)) return 8;
    return 12;
  }

  /**
   * ClientCutText, plain (RFC 6143 §7.5.6) or extended (negative length, then
   * u32 flags). Direction by action: notify and provide move the viewer's text
   * toward the guest (pasting); request and peek ask for the guest's (copying).
   * Copying is controlled from this side alone: QEMU sends guest text to a
   * viewer only as a Provide answering that viewer's own Request (QEMU 7.2
   * ui/vnc-clipboard.c: cbpending is set by the client's request only), so a
   * dropped Request means no guest text ever reaches it. What QEMU still sends
   * unasked is caps and Notify ("the clipboard changed, it has text": flags, no
   * text); a viewer that may neither paste nor copy does not get even those, as
   * its SetEncodings no longer lists the pseudo-encoding. Caps messages pass
   * (QEMU reads nothing else from them), so negotiation works.
   */
  private cutTextUnit(buf: Buffer): Unit | null {
    if (buf.length < 8) return null;
    const length = buf.readInt32BE(4);
    const size = Math.abs(length);
    if (this.access === 'control' && size > this.maxCutTextBytes) {
      throw new RfbProtocolError(
        `ClientCutText of ${size} bytes is over the limit of ${this.maxCutTextBytes} bytes`,
        // RFC 6455 §7.4.1: 1009, a message too big to process.
        { code: 1009, reason: `clipboard text over the limit of ${this.maxCutTextBytes} bytes` },
      );
    }
    if (length < 0 && size < 4) {
      // QEMU drops the connection for this too (ui/vnc.c: "header less than 4 bytes").
      throw new RfbProtocolError(`extended ClientCutText of ${size} bytes has no flags`, {
        code: 4003, reason: 'malformed clipboard message',
      });
    }
    if (length >= 0 || this.stripClipboardEncoding || size > this.maxCutTextBytes) {
      // Plain text moves toward the guest. An extended message from a viewer that may neither
      // paste nor copy, or a view-only one over the cap, is dropped without reading its flags.
      const drop = length >= 0 ? !this.clipboard.toGuest : true;
      return this.startBody({ header: 8, body: size, drop, clipboardDrop: drop });
    }
    if (buf.length < 12) return null;
    const flags = buf.readUInt32BE(8);
    const drop = !this.allowsExtended(flags);
    const unit: Unit = { header: 12, body: size - 4, drop, clipboardDrop: drop };
    // A Provide QEMU will inflate (not one it ignores for a caps or notify flag) is checked first.
    const inflated = (flags & CLIPBOARD_FLAG.provide) !== 0 && (
      flags & (CLIPBOARD_FLAG.caps | CLIPBOARD_FLAG.notify)
    ) === 0;
    if (!unit.drop && inflated) unit.hold = true;
    return this.startBody(unit);
  }

  /**
   * Whether an extended clipboard message with these flags may go on (QEMU acts on caps
   * alone, else on notify alone, else on provide and request: ui/vnc-clipboard.c).
   */
  private allowsExtended(flags: number): boolean {
    if (flags & CLIPBOARD_FLAG.caps) return true;
    const toGuest = (flags & (CLIPBOARD_FLAG.notify | CLIPBOARD_FLAG.provide)) !== 0;
    const fromGuest = (flags & (CLIPBOARD_FLAG.request | CLIPBOARD_FLAG.peek)) !== 0;
    if (!toGuest && !fromGuest) return false; // no action: nothing for QEMU to do
    return (!toGuest || this.clipboard.toGuest) && (!fromGuest || this.clipboard.fromGuest);
  }

  private startBody(unit: Unit): Unit {
    if (unit.body > 0) {
      this.phase = 'body';
      this.bodyLeft = unit.body;
      this.dropping = unit.drop;
    }
    return unit;
  }

  /** The held Provide is complete: check it, then send it on unchanged. */
  private releaseHeld(out: Buffer[]): void {
    const held = this.holding!;
    this.holding = null;
    const body = Buffer.concat(held.body);
    checkClipboardProvide(held.flags, body, this.maxCutTextBytes);
    out.push(held.header, body);
  }

  private account(header: Buffer, unit: Unit, out: Buffer[]): void {
    if (unit.drop) {
      this.stats.dropped++;
      this.stats.droppedBytes += header.length;
      if (unit.clipboardDrop && this.onClipboardDropped) {
        const tell = this.onClipboardDropped;
        this.onClipboardDropped = undefined;
        tell(this.clipboard);
      }
      return;
    }
    if (!unit.part) this.stats.forwarded++;
    if (unit.hold) {
      const copy = Buffer.from(header);
      this.holding = { header: copy, flags: copy.readUInt32BE(8), body: [], bytes: 0 };
      if (unit.body === 0) this.releaseHeld(out);
      return;
    }
    const bytes = unit.replace ?? header;
    if (bytes.length) out.push(bytes);
  }
}

const IGNORED_ENCODING_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(IGNORED_ENCODING, 0);
  return b;
})();

/**
 * Checks an extended clipboard Provide's payload as QEMU will read it, so a
 * viewer sending a bad one is closed with a reason (QEMU would silently drop
 * it, or, before the CVE-2023-3255 fix, loop on trailing bytes): zlib data,
 * at most `maxBytes` once inflated (QEMU 7.2's own limit is 1 MiB, ui/vnc-clipboard.c
 * inflate_buffer), and for every format in `flags` a u32 size that fits in what
 * is left. The stream need not be finished: noVNC (core/deflator.js) sends a
 * Z_FULL_FLUSH without the final block, which QEMU accepts, so this does too.
 * Throws RfbProtocolError with the viewer's close reason.
 */
export function checkClipboardProvide(flags: number, payload: Buffer, maxBytes: number): void {
  let data: Buffer;
  try {
    if (payload.length === 0) throw new Error('no data');
    data = zlib.inflateSync(payload, { maxOutputLength: maxBytes, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new RfbProtocolError(`extended clipboard data inflates to more than ${maxBytes} bytes`, {
        code: 1009, reason: `clipboard text over the limit of ${maxBytes} bytes`,
      });
    }
    throw new RfbProtocolError(`extended clipboard data is not valid zlib: ${(err as Error).message}`, {
      code: 4003, reason: 'clipboard data is not valid zlib',
    });
  }
  let pos = 0;
  for (let bit = 0; bit < FORMAT_BITS; bit++) {
    if (!(flags & (1 << bit))) continue;
    const size = pos + 4 <= data.length ? data.readUInt32BE(pos) : -1;
    if (size < 0 || pos + 4 + size > data.length) {
      const there = Math.max(0, data.length - pos - 4);
      throw new RfbProtocolError(`extended clipboard format ${bit} declares ${size < 0 ? 'no' : size} bytes, ${there}` +
        ` are there`, {
        code: 4003, reason: 'clipboard data sizes do not match',
      });
    }
    pos += 4 + size;
  }
}

/** The browser → VNC filter of a view-only viewer. */
export class ViewOnlyFilter extends RfbClientFilter {
  constructor() {
    super({ access: 'view' });
  }
}
