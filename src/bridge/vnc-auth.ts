// The broker's side of VNC Authentication (RFC 6143 §7.2.2) for desktops whose
// VNC listens on TCP with a password (the Slurm launcher: QEMU on a compute
// node, `-vnc …,password-secret=…`). connectAuthenticatedVnc() returns a Duplex
// that looks to the bridge like a VNC server offering RFB 3.8 with security
// type None, while underneath it authenticates to QEMU with the session's
// password: the password never reaches a browser, and viewers need none.
//
// Two small state machines, pure and unit-tested: stepUpstream() is the
// client half of the handshake toward QEMU (ProtocolVersion → security →
// challenge → SecurityResult), stepDownstream() the server half toward the
// viewer (ProtocolVersion → offer None → choice → SecurityResult), which waits
// for the desktop's outcome before it tells the viewer yes or no. Once both
// are done the Duplex is a plain pipe: ClientInit onward goes to QEMU,
// ServerInit onward comes back, chunk for chunk, with backpressure.
//
// Not here: VeNCrypt/TLS (QEMU's VNC is reached over the cluster network; see
// INSTALL.md), and anything after the handshake (the bridge's own business).
// The AuthenticatingVnc instance owns its upstream socket and destroys it.
import net from 'node:net';
import { createCipheriv } from 'node:crypto';
import { Duplex } from 'node:stream';
import { QwdError } from '../errors.js';
import { systemClock, type CancelTimer, type Clock } from '../clock.js';
import { RfbProtocolError } from './rfb-client-filter.js';

/** RFB minor versions spoken here (RFC 6143 §7.1.1): 3.3, 3.7 and 3.8. */
export type RfbMinor = 3 | 7 | 8;

/** RFC 6143 §7.1.2 / §8.1.2 security type numbers. */
export const SECURITY = { Invalid: 0, None: 1, VncAuth: 2 } as const;

/** A parse of one handshake step: the bytes it used and what they said; null = need more bytes. */
export type Parsed<T> = { consumed: number; value: T } | null;

/** Longer reason strings are a protocol violation here, not a reason to buffer. */
const MAX_REASON_BYTES = 64 * 1024;
const CHALLENGE_BYTES = 16;
const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------
// VNC Authentication (RFC 6143 §7.2.2)

/**
 * The 16-byte answer to a VNC Authentication challenge: the challenge
 * DES-encrypted (ECB) with the password as key. Only the first 8 bytes of the
 * password count, shorter ones are zero-padded, and — the well-known VNC quirk
 * RFC 6143 §7.2.2 alludes to — each key byte is used with its bits reversed.
 */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  if (challenge.length !== CHALLENGE_BYTES) {
    throw new RangeError(`VNC challenge must be ${CHALLENGE_BYTES} bytes, got ${challenge.length}`);
  }
  const key = Buffer.alloc(8);
  Buffer.from(password, 'utf8').copy(key, 0, 0, 8);
  for (let i = 0; i < key.length; i++) key[i] = reverseBits(key[i]!);
  // OpenSSL 3 keeps single DES in the legacy provider; two-key triple DES
  // (EDE) with K1 = K2 is E(K, D(K, E(K, x))) = E(K, x): single DES.
  const cipher = createCipheriv('des-ede-ecb', Buffer.concat([key, key]), null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(challenge), cipher.final()]);
}

function reverseBits(byte: number): number {
  let out = 0;
  for (let bit = 0; bit < 8; bit++) out |= ((byte >> bit) & 1) << (7 - bit);
  return out;
}

// ---------------------------------------------------------------------------
// Parsers and encoders, one per handshake message (RFC 6143 §7.1)

/** "RFB 003.008\n" and friends. */
export function protocolVersion(minor: RfbMinor): Buffer {
  return Buffer.from(`RFB 003.00${minor}\n`, 'latin1');
}

/**
 * A ProtocolVersion message. RFC 6143 §7.1.1: versions other than 3.3, 3.7 and
 * 3.8 "should be interpreted as 3.3", since they do not implement the later
 * handshakes. Throws RfbProtocolError for twelve bytes that are not a version.
 */
export function parseProtocolVersion(buf: Buffer): Parsed<RfbMinor> {
  if (buf.length < 12) return null;
  const text = buf.subarray(0, 12).toString('latin1');
  const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(text);
  if (!m) throw new RfbProtocolError(`not an RFB ProtocolVersion: ${JSON.stringify(text)}`);
  const version = `${m[1]}.${m[2]}`;
  return { consumed: 12, value: version === '003.008' ? 8 : version === '003.007' ? 7 : 3 };
}

/** A reason string (u32 length + text) at `offset`. QEMU NUL-terminates its own; the NULs are dropped. */
export function parseReason(buf: Buffer, offset = 0): Parsed<string> {
  if (buf.length < offset + 4) return null;
  const length = buf.readUInt32BE(offset);
  if (length > MAX_REASON_BYTES) throw new RfbProtocolError(`reason string of ${length} bytes`);
  if (buf.length < offset + 4 + length) return null;
  const text = buf.subarray(offset + 4, offset + 4 + length).toString('utf8').replace(/\0+$/, '');
  return { consumed: offset + 4 + length, value: text };
}

export function encodeReason(reason: string): Buffer {
  const text = Buffer.from(reason, 'utf8');
  const out = Buffer.alloc(4 + text.length);
  out.writeUInt32BE(text.length, 0);
  text.copy(out, 4);
  return out;
}

export type SecurityOffer = { types: number[] } | { failure: string };

/** RFB 3.7+: u8 count + types; a zero count is followed by a reason (RFC 6143 §7.1.2). */
export function parseSecurityTypes(buf: Buffer): Parsed<SecurityOffer> {
  if (buf.length < 1) return null;
  const count = buf[0]!;
  if (count === 0) {
    const reason = parseReason(buf, 1);
    return reason && { consumed: reason.consumed, value: { failure: reason.value } };
  }
  if (buf.length < 1 + count) return null;
  return { consumed: 1 + count, value: { types: [...buf.subarray(1, 1 + count)] } };
}

/** RFB 3.3: the server decides, u32 type; 0 is followed by a reason (RFC 6143 §7.1.2, 3.3 note). */
export function parseSecurityType33(buf: Buffer): Parsed<SecurityOffer> {
  if (buf.length < 4) return null;
  const type = buf.readUInt32BE(0);
  if (type !== SECURITY.Invalid) return { consumed: 4, value: { types: [type] } };
  const reason = parseReason(buf, 4);
  return reason && { consumed: reason.consumed, value: { failure: reason.value } };
}

export type SecurityOutcome = { ok: true } | { ok: false; reason: string };

/** SecurityResult (RFC 6143 §7.1.3): u32 0 = OK; a failure carries a reason only from 3.8 on. */
export function parseSecurityResult(buf: Buffer, minor: RfbMinor): Parsed<SecurityOutcome> {
  if (buf.length < 4) return null;
  if (buf.readUInt32BE(0) === 0) return { consumed: 4, value: { ok: true } };
  if (minor < 8) return { consumed: 4, value: { ok: false, reason: 'authentication failed' } };
  const reason = parseReason(buf, 4);
  return reason && { consumed: reason.consumed, value: { ok: false, reason: reason.value } };
}

export function securityResult(outcome: SecurityOutcome, minor: RfbMinor): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(outcome.ok ? 0 : 1, 0);
  return outcome.ok || minor < 8 ? head : Buffer.concat([head, encodeReason(outcome.reason)]);
}

/** VNC Authentication if offered (we hold a password), else None, else nothing we speak. */
export function pickUpstreamSecurity(types: readonly number[]): typeof SECURITY.VncAuth | typeof SECURITY.None | null {
  if (types.includes(SECURITY.VncAuth)) return SECURITY.VncAuth;
  if (types.includes(SECURITY.None)) return SECURITY.None;
  return null;
}

// ---------------------------------------------------------------------------
// Toward QEMU: the client half of the handshake

export type UpstreamState =
  | { phase: 'version' }
  | { phase: 'security'; minor: RfbMinor }
  | { phase: 'challenge'; minor: RfbMinor }
  | { phase: 'result'; minor: RfbMinor; security: number }
  | { phase: 'authenticated'; security: number }
  | { phase: 'refused'; reason: string };

export interface Step<S> {
  next: S;
  consumed: number;
  /** Bytes to send to the peer this machine talks to. */
  reply?: Buffer;
}

/**
 * One step of the handshake toward the desktop, or null when `buf` does not
 * yet hold the next message (or the handshake is over). Throws
 * RfbProtocolError when the desktop does not speak RFB.
 */
export function stepUpstream(state: UpstreamState, buf: Buffer, password: string): Step<UpstreamState> | null {
  switch (state.phase) {
    case 'version': {
      const version = parseProtocolVersion(buf);
      if (!version) return null;
      // We answer with the server's version, capped at the newest we speak (§7.1.1).
      return {
        next: { phase: 'security', minor: version.value }, consumed: version.consumed,
        reply: protocolVersion(version.value),
      };
    }
    case 'security': {
      const offer = state.minor === 3 ? parseSecurityType33(buf) : parseSecurityTypes(buf);
      if (!offer) return null;
      if ('failure' in offer.value) {
        return { next: { phase: 'refused', reason: offer.value.failure }, consumed: offer.consumed };
      }
      const chosen = pickUpstreamSecurity(offer.value.types);
      if (chosen === null) {
        return {
          next: {
            phase: 'refused',
            reason: `it offers security types [${offer.value.types.join(', ')}]; the broker speaks VNC ` +
              `Authentication (2) and None (1) only`,
          },
          consumed: offer.consumed,
        };
      }
      // In 3.3 the server chose and the client says nothing (§7.1.2).
      const reply = state.minor === 3 ? undefined : Buffer.from([chosen]);
      if (chosen === SECURITY.VncAuth) {
        return { next: { phase: 'challenge', minor: state.minor }, consumed: offer.consumed, reply };
      }
      // None: a SecurityResult follows only from 3.8 on (§7.1.3).
      const next: UpstreamState = state.minor === 8 ? {
        phase: 'result', minor: 8, security: SECURITY.None,
      } : { phase: 'authenticated', security: SECURITY.None };
      return { next, consumed: offer.consumed, reply };
    }
    case 'challenge':
      if (buf.length < CHALLENGE_BYTES) return null;
      return {
        next: { phase: 'result', minor: state.minor, security: SECURITY.VncAuth }, consumed: CHALLENGE_BYTES,
        reply: vncAuthResponse(password, buf.subarray(0, CHALLENGE_BYTES)),
      };
    case 'result': {
      const result = parseSecurityResult(buf, state.minor);
      if (!result) return null;
      const next: UpstreamState = result.value.ok ? {
        phase: 'authenticated', security: state.security,
      } : { phase: 'refused', reason: result.value.reason };
      return { next, consumed: result.consumed };
    }
    case 'authenticated':
    case 'refused':
      return null;
  }
}

// ---------------------------------------------------------------------------
// Toward the viewer: the server half of the handshake

/** What the desktop side has come to, as far as the viewer's handshake is concerned. */
export type DesktopOutcome = { state: 'pending' } | { state: 'ok' } | { state: 'failed'; reason: string };

export type DownstreamState =
  /** Our ProtocolVersion is sent; waiting for the viewer's. */
  | { phase: 'version' }
  /** The None offer is sent; waiting for the viewer's pick (3.7 and 3.8). */
  | { phase: 'choice'; minor: 7 | 8 }
  /** The viewer's side is settled; its answer depends on the desktop. `offered`: whether it has seen the None offer. */
  | { phase: 'await-desktop'; minor: RfbMinor; offered: boolean }
  | { phase: 'ready' }
  | { phase: 'refused'; by: 'viewer' | 'desktop'; reason: string };

const NONE_OFFER = Buffer.from([1, SECURITY.None]);

/**
 * One step of the handshake toward the viewer, or null when it must wait (for
 * the viewer's bytes or the desktop's outcome) or is over. 3.8 viewers get the
 * None offer at once and learn the desktop's outcome from the SecurityResult;
 * 3.3 and 3.7 have no SecurityResult for None, so the offer itself waits for
 * the desktop and a failure is sent in its place (§7.1.2). Throws
 * RfbProtocolError for a viewer that does not send a ProtocolVersion.
 */
export function stepDownstream(
  state: DownstreamState, buf: Buffer, desktop: DesktopOutcome,
): Step<DownstreamState> | null {
  switch (state.phase) {
    case 'version': {
      const version = parseProtocolVersion(buf);
      if (!version) return null;
      if (version.value === 8) {
        return { next: { phase: 'choice', minor: 8 }, consumed: version.consumed, reply: NONE_OFFER };
      }
      return { next: { phase: 'await-desktop', minor: version.value, offered: false }, consumed: version.consumed };
    }
    case 'choice': {
      if (buf.length < 1) return null;
      const type = buf[0]!;
      if (type !== SECURITY.None) {
        const reason = `security type ${type} was not offered; this server offers None (1) only`;
        return {
          next: { phase: 'refused', by: 'viewer', reason }, consumed: 1,
          reply: securityResult({ ok: false, reason }, state.minor),
        };
      }
      return { next: { phase: 'await-desktop', minor: state.minor, offered: true }, consumed: 1 };
    }
    case 'await-desktop': {
      const { minor, offered } = state;
      if (desktop.state === 'pending') return null;
      if (desktop.state === 'ok') {
        if (!offered) {
          return minor === 3 ? {
            next: { phase: 'ready' }, consumed: 0, reply: u32(SECURITY.None),
          } : { next: { phase: 'choice', minor }, consumed: 0, reply: NONE_OFFER };
        }
        return {
          next: { phase: 'ready' }, consumed: 0, reply: minor === 8 ? securityResult({ ok: true }, 8) : undefined,
        };
      }
      const refused: DownstreamState = { phase: 'refused', by: 'desktop', reason: desktop.reason };
      if (offered) {
        // 3.7 has no SecurityResult after None: closing is all that is left.
        return {
          next: refused, consumed: 0,
          reply: minor === 8 ? securityResult({ ok: false, reason: desktop.reason }, 8) : undefined,
        };
      }
      const failure = minor === 3 ? Buffer.concat([
        u32(SECURITY.Invalid), encodeReason(desktop.reason),
      ]) : Buffer.concat([Buffer.from([0]), encodeReason(desktop.reason)]);
      return { next: refused, consumed: 0, reply: failure };
    }
    case 'ready':
    case 'refused':
      return null;
  }
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value, 0);
  return out;
}

// ---------------------------------------------------------------------------
// The Duplex

export interface AuthenticatedVncOptions {
  /** Budget for the whole handshake, both sides, connecting included. Default 10 s. */
  timeoutMs?: number;
  /** The handshake budget's and the failure flush's timers; the system clock by default. */
  clock?: Clock;
}

/**
 * Connects to a password-protected VNC server and returns a Duplex that speaks
 * RFB to its user as a server offering None. Errors (QwdError) are emitted as
 * 'error': QWD_VNC_AUTH_FAILED when the desktop refuses the password,
 * QWD_VNC_UNREACHABLE when it cannot be reached or does not speak RFB,
 * QWD_BAD_REQUEST when the viewer breaks the handshake. Whenever the viewer can
 * be told, it first gets an RFB failure with a reason.
 */
export function connectAuthenticatedVnc(
  address: { host: string; port: number }, password: string, opts: AuthenticatedVncOptions = {},
): Duplex {
  return new AuthenticatingVnc(address, password, opts.timeoutMs ?? 10_000, opts.clock ?? systemClock);
}

/** After a failure is queued for the viewer, how long it may take to read it before we close anyway. */
const FAILURE_FLUSH_MS = 2000;

class AuthenticatingVnc extends Duplex {
  private readonly upstream: net.Socket;
  private readonly where: string;
  private up: UpstreamState = { phase: 'version' };
  private upBuf: Buffer = EMPTY;
  private upEnded = false;
  private down: DownstreamState = { phase: 'version' };
  private downBuf: Buffer = EMPTY;
  private desktop: DesktopOutcome = { state: 'pending' };
  private desktopError: QwdError | null = null;
  private passing = false;
  private ending = false;
  /** The viewer's write callback, held while its bytes wait for the desktop (backpressure). */
  private heldWrite: ((err?: Error | null) => void) | null = null;
  private readonly cancelTimer: CancelTimer;
  private cancelFlush: CancelTimer | null = null;

  constructor(
    address: { host: string; port: number }, private readonly password: string, private readonly timeoutMs: number,
    private readonly clock: Clock,
  ) {
    super({ allowHalfOpen: false });
    this.where = `${address.host}:${address.port}`;
    this.upstream = net.createConnection({ host: address.host, port: address.port });
    // Listeners first: QEMU sends its ProtocolVersion as soon as it accepts.
    this.upstream.on('data', (chunk: Buffer) => this.onUpstreamData(chunk));
    this.upstream.on('end', () => this.onUpstreamEnd());
    this.upstream.on('error', (err) => this.onUpstreamError(err));
    this.upstream.on('close', () => this.onUpstreamClose());
    this.cancelTimer = clock.after(timeoutMs, () => this.onTimeout());
    // RFC 6143 §7.1.1: the server speaks first.
    this.push(protocolVersion(8));
  }

  // --- viewer → us

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.passing) return this.forward(chunk, done);
    this.downBuf = this.downBuf.length ? Buffer.concat([this.downBuf, chunk]) : chunk;
    this.heldWrite = done;
    this.advanceDownstream();
    this.releaseWrite();
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.passing) {
      // The viewer stopped sending mid-handshake: nothing more can happen.
      done();
      if (!this.ending) this.destroy(this.viewerError('closed its side during the RFB handshake'));
      return;
    }
    if (this.upstream.destroyed || this.upstream.writableEnded) return done();
    this.upstream.end(() => done());
  }

  // --- us → viewer

  override _read(): void {
    if (this.passing && this.upstream.isPaused()) this.upstream.resume();
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    this.cancelTimer();
    this.cancelFlush?.();
    this.upstream.destroy();
    done(err);
  }

  // --- the desktop's side

  private onUpstreamData(chunk: Buffer): void {
    if (this.passing) {
      if (!this.push(chunk)) this.upstream.pause();
      return;
    }
    this.upBuf = this.upBuf.length ? Buffer.concat([this.upBuf, chunk]) : chunk;
    if (this.desktop.state !== 'pending') return; // authenticated: kept for pass-through
    try {
      for (
        let step = stepUpstream(this.up, this.upBuf, this.password); step;
        step = stepUpstream(this.up, this.upBuf, this.password)
      ) {
        this.upBuf = this.upBuf.subarray(step.consumed);
        this.up = step.next;
        if (step.reply) this.upstream.write(step.reply);
      }
    } catch (err) {
      return this.desktopFailed(
        new QwdError(
          'QWD_VNC_UNREACHABLE', `VNC ${this.where}: ${(err as Error).message}`,
          { userMessage: 'the desktop does not speak RFB', cause: err },
        )
      );
    }
    if (this.up.phase === 'refused') {
      this.desktopFailed(
        new QwdError(
          'QWD_VNC_AUTH_FAILED', `VNC ${this.where} refused the broker's authentication: ${this.up.reason}`,
          { userMessage: `the desktop refused the connection: ${this.up.reason}` },
        )
      );
    } else if (this.up.phase === 'authenticated') {
      // QEMU sends nothing before ClientInit; whatever comes waits in the kernel, not here.
      this.upstream.pause();
      this.desktop = { state: 'ok' };
      this.advanceDownstream();
      this.releaseWrite();
    }
  }

  private onUpstreamEnd(): void {
    this.upEnded = true;
    if (this.passing) this.push(null);
    else this.desktopFailed(
      new QwdError(
        'QWD_VNC_UNREACHABLE', `VNC ${this.where} closed the connection during the RFB handshake (${this.up.phase})`,
        { userMessage: 'the desktop closed the connection' },
      )
    );
  }

  private onUpstreamError(err: Error): void {
    const failure = new QwdError(
      'QWD_VNC_UNREACHABLE', `VNC ${this.where}: ${err.message}`,
      { userMessage: 'the desktop cannot be reached', cause: err },
    );
    if (this.passing) this.destroy(failure);
    else this.desktopFailed(failure);
  }

  private onUpstreamClose(): void {
    if (this.passing) {
      // After a FIN the readable side drains and ends by itself; anything else is abrupt.
      if (!this.upEnded) this.destroy();
    } else {
      this.desktopFailed(
        new QwdError(
          'QWD_VNC_UNREACHABLE', `VNC ${this.where} closed the connection during the RFB handshake (${this.up.phase})`,
          { userMessage: 'the desktop closed the connection' },
        )
      );
    }
  }

  /** The desktop side is lost before pass-through; the viewer is told when its handshake allows. */
  private desktopFailed(err: QwdError): void {
    if (this.passing || this.desktop.state === 'failed') return;
    this.desktop = { state: 'failed', reason: err.userMessage };
    this.desktopError = err;
    this.upstream.destroy();
    this.advanceDownstream();
    this.releaseWrite();
  }

  private onTimeout(): void {
    if (this.passing || this.ending) return;
    if (this.desktop.state === 'pending') {
      this.desktopFailed(
        new QwdError(
          'QWD_VNC_UNREACHABLE', `VNC ${this.where}: no RFB handshake within ${this.timeoutMs} ms`,
          { userMessage: 'the desktop did not answer in time' },
        )
      );
      if (this.ending) return;
    }
    this.destroy(this.desktopError ?? this.viewerError(`did not finish the RFB handshake within ${this.timeoutMs} ms`));
  }

  // --- the viewer's side

  private advanceDownstream(): void {
    if (this.passing || this.ending || this.destroyed) return;
    // State is updated before each push(): a consumer may write back from its
    // 'data' handler synchronously, which re-enters here through _write().
    try {
      for (
        let step = stepDownstream(this.down, this.downBuf, this.desktop); step;
        step = stepDownstream(this.down, this.downBuf, this.desktop)
      ) {
        this.downBuf = this.downBuf.subarray(step.consumed);
        this.down = step.next;
        if (step.reply) this.push(step.reply);
      }
    } catch (err) {
      return void this.destroy(this.viewerError((err as Error).message));
    }
    if (this.passing || this.ending || this.destroyed) return; // a re-entrant call finished the job
    if (this.down.phase === 'ready') this.startPassThrough();
    else if (this.down.phase === 'refused') this.endWithFailure(
      this.down.by === 'desktop' ? this.desktopError! : this.viewerError(this.down.reason)
    );
  }

  private startPassThrough(): void {
    this.passing = true;
    this.cancelTimer();
    const toViewer = this.upBuf;
    this.upBuf = EMPTY;
    if (this.upEnded) {
      // The desktop closed right after authenticating: deliver what it sent, then end.
      if (toViewer.length) this.push(toViewer);
      this.push(null);
    } else if (!toViewer.length || this.push(toViewer)) {
      this.upstream.resume();
    }
    // The viewer's ClientInit (and anything after it) goes out in releaseWrite().
  }

  /** Lets the viewer's writes continue: unless its bytes are waiting for the desktop. */
  private releaseWrite(): void {
    const done = this.heldWrite;
    if (!done) return;
    if (this.passing) {
      this.heldWrite = null;
      const rest = this.downBuf;
      this.downBuf = EMPTY;
      if (rest.length) this.forward(rest, done);
      else done();
    } else if (this.down.phase === 'version' || this.down.phase === 'choice') {
      // The machine stopped because it needs more of the viewer's bytes.
      this.heldWrite = null;
      done();
    }
  }

  private forward(chunk: Buffer, done: (err?: Error | null) => void): void {
    if (this.upstream.write(chunk)) done();
    else this.upstream.once('drain', () => done());
  }

  /** The failure message is already queued for the viewer: end the stream, and fail once it is read. */
  private endWithFailure(err: QwdError): void {
    this.ending = true;
    this.cancelTimer();
    this.upstream.destroy();
    this.push(null);
    this.once('end', () => this.destroy(err));
    this.cancelFlush = this.clock.after(FAILURE_FLUSH_MS, () => this.destroy(err));
  }

  private viewerError(what: string): QwdError {
    return new QwdError(
      'QWD_BAD_REQUEST', `viewer of VNC ${this.where}: ${what}`, { userMessage: 'The viewer broke the RFB handshake.' },
    );
  }
}
