// The WebSocket ↔ VNC bridge on the broker's own HTTP server: /ws/<token>.
// The token is checked before the upgrade (unknown → 404, ended → 410, no
// upgrade). noVNC offers no WebSocket subprotocol and gets none; older clients
// that offer "binary" get it back; we never answer with one not offered. Bytes flow both ways
// with backpressure: desktop → viewer through a ViewerOutbox (ws.send per read, the desktop's
// stream paused while the viewer's socket holds too much; viewer-outbox.ts), viewer → desktop
// as ws messages written into the filter (the viewer's socket paused while the filter is full).
// The VNC side's first bytes (the RFB banner) are read by a callback attached before anything
// is awaited.
// Both links' browser → VNC bytes go through the RFB client filter (view-only:
// input dropped; both: clipboard text capped and the viewer's clipboard policy
// enforced — the stricter of the site's and the machine's, see
// clipboard-policy.ts and, for how copying out of the guest is stopped without
// parsing the server's framebuffer stream, RfbClientFilter.cutTextUnit).
// Viewer caps are checked before the upgrade too (503 QWD_VIEWERS_FULL), so a
// full link costs no WebSocket. Where the VNC is comes from the launcher, also
// before the upgrade (asynchronously; 503 when it cannot say), and the token is
// checked again once it has answered, in the tick that counts and upgrades.
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '../log.js';
import type { ErrorCode } from '../errors.js';
import type { SessionManager, EndedEvent, RevokedEvent, TokenLookup } from '../sessions/manager.js';
import type { ViewerPresence } from '../sessions/presence.js';
import type { LinkKind } from '../store/session-rows.js';
import { MAX_CUT_TEXT_BYTES, RfbClientFilter, RfbProtocolError } from './rfb-client-filter.js';
import { DEFAULT_VIEWER_CAPS, decideViewerAdmission, type ViewerCaps } from './viewer-caps.js';
import { readViewerTicket } from './viewer-ticket.js';
import { clipboardModeOf, decideClipboardPolicy, type SiteClipboardPolicy } from './clipboard-policy.js';
import type { ClipboardMode } from '../config/schema.js';
import { describe, type VncAddress } from '../qemu/rfb-probe.js';
import { readDesktop } from './vnc-connect.js';
import { ViewerOutbox } from './viewer-outbox.js';
import { systemClock, type Clock } from '../clock.js';
import type { BridgeStats } from '../metrics/recorder.js';

export interface Bridge {
  viewerCount(sessionId: string): number;
  /** Bytes the bridge holds for a session's viewers, waiting to be sent (bounded per viewer: see stalledViewerMs). */
  bufferedBytes(sessionId: string): number;
  viewerCounts(sessionId: string): { control: number; view: number };
  /** Names of logged-in viewers (from their viewer tickets), one per connection. */
  viewerNames(sessionId: string): string[];
  /**
   * The clipboard policy a viewer of this machine on this link gets, by name
   * ('both' | 'to-guest' | 'from-guest' | 'off'), decided exactly as the bridge
   * enforces it: for the viewer page (e.g. a data-clipboard attribute).
   */
  clipboardMode(machine: string, access: LinkKind): ClipboardMode;
  /** Viewers by access and bytes carried each way since the bridge started (the metrics read these at scrape). */
  stats(): BridgeStats;
  close(): void;
}

const WS_PATH = /^\/ws\/([A-Za-z0-9_-]{1,128})\/?$/;

/**
 * The largest WebSocket message a viewer may send: ws holds a whole message
 * before handing it on, so this bounds what one viewer pins. The largest RFB
 * client message QEMU accepts is a ClientCutText of 1 MiB (+ its 8-byte header);
 * noVNC sends far smaller messages.
 */
export const MAX_VIEWER_MESSAGE_BYTES = MAX_CUT_TEXT_BYTES + 64 * 1024;

export interface BridgeOptions {
  /**
   * A link is refused (401, before the upgrade) unless this says the request's browser is logged in
   * (auth.linksRequireLogin).
   */
  isLoggedIn?: (req: http.IncomingMessage) => boolean;
  /**
   * The clipboard policy: the site's (config.bridge) and a machine's by name
   * (undefined: the machine is no longer in the catalog, and its viewers get
   * no clipboard at all). Default: both ways for control links, none for view-only.
   */
  clipboard?: { site: SiteClipboardPolicy; machine: (name: string) => ClipboardMode | undefined };
  /**
   * A viewer that has read nothing for this long while bytes wait for it is dropped (close 4008). Until then what
   * waits is bounded anyway: the bridge stops reading the viewer's own VNC connection once the viewer's outbox is
   * full (viewer-outbox.ts). Default 30 s (bridge.stalledViewerS).
   */
  stalledViewerMs?: number;
  clock?: Clock;
}

/** How often each viewer's stream is looked at for a stall. */
const STALL_CHECK_MS = 1000;

const DEFAULT_CLIPBOARD: NonNullable<BridgeOptions['clipboard']> = {
  site: { clipboard: 'both', viewOnlyClipboard: false },
  machine: () => 'both',
};

export function attachBridge(
  server: http.Server, manager: SessionManager, presence: ViewerPresence, log: Logger, ticketSecret: string,
  caps: ViewerCaps = DEFAULT_VIEWER_CAPS,
  opts: BridgeOptions = {},
): Bridge {
  const clipboardConfig = opts.clipboard ?? DEFAULT_CLIPBOARD;
  /** A machine gone from the catalog gets no clipboard (fail closed). */
  const clipboardPolicyFor = (machine: string, kind: LinkKind) =>
    decideClipboardPolicy(clipboardConfig.site, clipboardConfig.machine(machine) ?? 'off', kind);
  const wss = new WebSocketServer({
    noServer: true, handleProtocols: chooseProtocol, maxPayload: MAX_VIEWER_MESSAGE_BYTES, perMessageDeflate: false,
  });
  const viewers = new Map<string, Set<WebSocket>>();
  const access = new WeakMap<WebSocket, LinkKind>();
  /** What each viewer's bytes wait in on their way out. */
  const outbound = new WeakMap<WebSocket, ViewerOutbox>();
  const clock = opts.clock ?? systemClock;
  const stalledViewerMs = opts.stalledViewerMs ?? 30_000;
  const names = new WeakMap<WebSocket, string>();
  // Totals for the metrics: one integer add per message on the data path, nothing more.
  let desktopToViewerBytes = 0;
  let viewerToDesktopBytes = 0;

  const closeViewers = ({ id, end }: EndedEvent) => {
    for (const ws of viewers.get(id) ?? []) ws.close(4000, `session ended: ${end.detail}`.slice(0, 120));
  };
  const closeRevoked = ({ id, kind }: RevokedEvent) => {
    for (const ws of viewers.get(id) ?? []) if (access.get(ws) === kind) ws.close(4001, 'link revoked');
  };
  /** Set by close(): viewers torn down then must not write to the store (it may be closed next). */
  let closing = false;
  manager.on('ending', closeViewers);
  manager.on('ended', closeViewers);
  manager.on('revoked', closeRevoked);

  /** Bytes held for one viewer, waiting to be written to its socket. */
  function buffered(ws: WebSocket): number {
    return outbound.get(ws)?.buffered ?? 0;
  }

  function countViewers(id: string): { control: number; view: number } {
    const counts = { control: 0, view: 0 };
    for (const ws of viewers.get(id) ?? []) counts[access.get(ws) ?? 'control']++;
    return counts;
  }

  const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const match = WS_PATH.exec(url.pathname);
    if (!match) {
      // Not ours: another upgrade handler may want it; without one, refuse.
      if (server.listenerCount('upgrade') === 1) reject(socket, 404, 'Not Found');
      return;
    }
    // Checked first: someone not logged in learns nothing about the token either.
    if (opts.isLoggedIn && !opts.isLoggedIn(req)) return reject(socket, 401, 'Unauthorized');
    const token = match[1]!;
    const first = runningSession(socket, token);
    if (!first) return;
    // Before the upgrade: a launcher that cannot say where the VNC is (a Slurm job
    // dir that cannot be read) gets an HTTP answer, not an exception in ws's callback.
    // Until ws takes the socket (handleUpgrade), an error on it is ours to catch.
    const onEarlyError = () => socket.destroy();
    socket.on('error', onEarlyError);
    manager.vncEndpoint(first.row).then((address) => {
      socket.off('error', onEarlyError);
      if (socket.destroyed) return; // the browser gave up meanwhile
      // The endpoint may take a moment (shared storage): a stop or a revoked link meanwhile is answered as such.
      const found = runningSession(socket, token);
      if (found) upgrade(req, socket, head, token, url, found, address);
    }, (err: unknown) => {
      socket.off('error', onEarlyError);
      log.error({ sessionId: first.row.id, err }, 'the desktop\'s VNC address is not known');
      reject(socket, 503, 'Service Unavailable');
    }).catch((err: unknown) => {
      // A fault of the bridge itself: the viewer gets no desktop, the broker goes on.
      log.error({ sessionId: first.row.id, err }, 'viewer upgrade failed');
      socket.destroy();
    });
  };

  /** The live session a token names when it is running, or null once the refusal has been answered. */
  const runningSession = (socket: Duplex, token: string) => {
    const found = manager.lookupToken(token);
    if (found.kind === 'unknown') return void reject(socket, 404, 'Not Found');
    if (found.kind === 'ended') return void reject(socket, 410, 'Gone');
    if (found.row.state !== 'running' || !found.row.handle) return void reject(socket, 409, 'Conflict');
    return found;
  };

  const upgrade = (
    req: http.IncomingMessage, socket: Duplex, head: Buffer, token: string, url: URL,
    found: Extract<TokenLookup, { kind: 'live' }>, address: VncAddress,
  ) => {
    const row = found.row;
    // Counted and admitted in the same tick: handleUpgrade (no verifyClient) calls back synchronously.
    const admission = decideViewerAdmission(countViewers(row.id), found.access, caps);
    if (!admission.admit) {
      log.info(
        { sessionId: row.id, access: found.access, ...countViewers(row.id) },
        'viewer refused: the link or desktop is full',
      );
      return reject(socket, 503, 'Service Unavailable', { code: 'QWD_VIEWERS_FULL', message: admission.reason });
    }
    if (clipboardConfig.machine(row.machine) === undefined) {
      log.warn(
        { sessionId: row.id, machine: row.machine },
        'the desktop\'s machine is not in the catalog: its viewers get no clipboard',
      );
    }
    const clipboard = clipboardPolicyFor(row.machine, found.access);
    wss.handleUpgrade(req, socket, head, (ws) => {
      // The data path is attached before anything is awaited: QEMU sends its banner at once. The desktop's end does
      // not end the WebSocket: finish() closes it with a code and a reason.
      const vnc: Duplex = readDesktop(address, (chunk) => {
        desktopToViewerBytes += chunk.length;
        return outbox.send(chunk);
      });
      const outbox = new ViewerOutbox(ws, vnc, clock);
      /** Set once a control viewer's stream left framing: QEMU judges what follows, and may drop the viewer. */
      let unframed: Error | null = null;
      // View-only is enforced here: input messages never reach QEMU. Both links get clipboard text capped.
      const filter = new RfbClientFilter({
        access: found.access,
        clipboard,
        onClipboardDropped: (policy) => log.info(
          { sessionId: row.id, access: found.access, clipboard: clipboardModeOf(policy) },
          'viewer clipboard message dropped by the clipboard policy (logged once per viewer)',
        ),
        onPassthrough: (err) => {
          unframed = err;
          log.warn(
            { sessionId: row.id, err: err.message },
            'control viewer sent a message the bridge cannot frame; passed on unframed',
          );
        },
      });
      // Whatever the frame type, a message is bytes of the RFB stream (as noVNC sends them). Once the filter has
      // refused the viewer (an error destroys it), what it sent after that goes nowhere.
      ws.on('message', (data: Buffer) => {
        viewerToDesktopBytes += data.length;
        if (!filter.destroyed && !filter.write(data)) ws.pause();
      });
      filter.on('drain', () => ws.resume());
      filter.pipe(vnc);
      access.set(ws, found.access);
      outbound.set(ws, outbox);
      const name = readViewerTicket(ticketSecret, token, url.searchParams.get('t'));
      if (name) names.set(ws, name);
      const set = viewers.get(row.id) ?? new Set<WebSocket>();
      set.add(ws);
      viewers.set(row.id, set);
      presence.record(row.id, set.size, { change: 'joined', access: found.access, name: name ?? null });
      log.info(
        { sessionId: row.id, viewers: set.size, access: found.access, clipboard: clipboardModeOf(clipboard) },
        'viewer connected',
      );
      let finished = false;
      // A viewer that stops reading: its outbox fills and pauses its VNC connection; it is dropped when that lasts
      // stalledViewerMs without a single drain (a slow link still drains, and each drain starts the count again).
      const watchStall = () => {
        if (finished) return;
        const fullSince = outbox.fullSince;
        if (fullSince !== null && clock.now() - fullSince >= stalledViewerMs) {
          log.warn(
            { sessionId: row.id, access: found.access, stalledMs: clock.now() - fullSince, buffered: buffered(ws) },
            'viewer dropped: it stopped reading',
          );
          // Queued behind what it did not read; ws gives up on the closing handshake after its own timeout.
          return finish('viewer stopped reading', 4008);
        }
        cancelStallWatch = clock.after(STALL_CHECK_MS, watchStall, { background: true });
      };
      let cancelStallWatch = clock.after(STALL_CHECK_MS, watchStall, { background: true });
      const finish = (why: string, code = 1000) => {
        if (finished) return;
        finished = true;
        cancelStallWatch();
        set.delete(ws);
        if (set.size === 0) viewers.delete(row.id);
        // Once the bridge is closing the store may be closed too (broker shutdown); the next start resets viewer
        // counts.
        if (!closing && manager.get(row.id)) {
          presence.record(row.id, set.size, { change: 'left', access: found.access, name: name ?? null, why });
        }
        vnc.destroy();
        // A close frame with the reason. A closing handshake already under way is cut short, unless ws started it
        // after an error of the viewer's: its close frame (1002, 1009: why) is on its way.
        if (ws.readyState === ws.OPEN) ws.close(code, Buffer.from(why).subarray(0, 123).toString());
        else if (ws.readyState === ws.CLOSING && !viewerFailed) ws.terminate();
        log.info({ sessionId: row.id, why, viewers: set.size }, 'viewer disconnected');
      };
      // After an unframed message (a cut text whose length lied, a type nobody knows), QEMU's drop is said as such,
      // whichever comes first: the close, or an EPIPE on the next write.
      const desktopGone = (why: string) => (unframed
        ? finish(`the desktop dropped this viewer after a message it could not read (${unframed.message})`, 4003)
        : finish(why));
      vnc.on('error', (err) => {
        log.warn({ sessionId: row.id, vnc: describe(address), err: err.message }, 'VNC side failed');
        desktopGone('desktop connection lost');
      });
      vnc.on('close', () => desktopGone('desktop connection closed'));
      let viewerFailed = false;
      ws.on('error', () => {
        viewerFailed = true;
        finish('browser connection failed');
      });
      filter.on('error', (err) => {
        const close = err instanceof RfbProtocolError ? {
          code: err.closeCode, reason: err.closeReason,
        } : { code: 4003, reason: 'protocol error' };
        log.warn(
          { sessionId: row.id, access: found.access, err: err.message }, 'viewer sent a message the bridge refuses',
        );
        if (ws.readyState === ws.OPEN) ws.close(close.code, close.reason);
        finish(close.reason);
      });
      ws.on('close', () => finish('browser closed'));
    });
  };
  server.on('upgrade', onUpgrade);

  return {
    viewerCount: (id) => viewers.get(id)?.size ?? 0,
    bufferedBytes: (id) => [...viewers.get(id) ?? []].reduce((sum, ws) => sum + buffered(ws), 0),
    viewerNames: (id) => [...(viewers.get(id) ?? [])].flatMap((ws) => (names.has(ws) ? [names.get(ws)!] : [])),
    viewerCounts: countViewers,
    clipboardMode: (machine, kind) => clipboardModeOf(clipboardPolicyFor(machine, kind)),
    stats: () => {
      const counts = { control: 0, view: 0 };
      for (const set of viewers.values()) for (const ws of set) counts[access.get(ws) ?? 'control']++;
      return { viewers: counts, desktopToViewerBytes, viewerToDesktopBytes };
    },
    close: () => {
      closing = true;
      server.off('upgrade', onUpgrade);
      manager.off('ending', closeViewers);
      manager.off('ended', closeViewers);
      manager.off('revoked', closeRevoked);
      for (const set of viewers.values()) for (const ws of set) ws.terminate();
      viewers.clear();
      wss.close();
    },
  };
}

/** RFC 6455 §4.2.2: pick one the client offered, or none. */
function chooseProtocol(offered: Set<string>): string | false {
  return offered.has('binary') ? 'binary' : false;
}

/** An HTTP answer instead of the upgrade; a QWD_* code goes in X-QWD-Error and, with its message, in the body. */
function reject(socket: Duplex, status: number, text: string, error?: { code: ErrorCode; message: string }): void {
  if (!socket.writable) return void socket.destroy();
  const body = error ? `${status} ${text}\n${error.code}: ${error.message}\n` : `${status} ${text}\n`;
  const extra = error ? `X-QWD-Error: ${error.code}\r\n` : '';
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n${extra}Content-Type: text/plain; ` +
      `charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}
