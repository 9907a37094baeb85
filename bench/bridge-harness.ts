// BENCHMARK HARNESS, not the broker: the real bridge (attachBridge from
// src/bridge/ws-bridge.ts) on its own HTTP server, in front of a VNC address
// chosen by the benchmark instead of a session's QEMU. The "manager" passed to
// it is a stand-in with only what attachBridge uses (lookupToken, vncEndpoint,
// get, recordViewers, on/off): one running session whose VNC is `vnc`.
import crypto from 'node:crypto';
import http from 'node:http';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { attachBridge } from '../src/bridge/ws-bridge.js';
import type { SessionManager } from '../src/sessions/manager.js';
import type { ViewerPresence } from '../src/sessions/presence.js';
import type { VncAddress } from '../src/qemu/rfb-probe.js';
import { silentLogger } from '../src/log.js';

export const HARNESS_TOKEN = 'bench-harness-token';

export interface HarnessBridge {
  /** ws://127.0.0.1:<port>/ws/<token> */
  wsUrl: string;
  close(): Promise<void>;
}

/** Viewer counts go nowhere: the harness has no store. */
const HARNESS_PRESENCE = { record: () => {} } as unknown as ViewerPresence;

/** A stand-in for SessionManager: one session, always running, never ending. */
function harnessManager(vnc: VncAddress): SessionManager {
  const row = { id: 'bench-harness', state: 'running', handle: { kind: 'harness' } };
  const stub = Object.assign(new EventEmitter(), {
    lookupToken: (token: unknown) => (token === HARNESS_TOKEN ? { kind: 'live', row, access: 'control' } : { kind: 'unknown' }),
    vncEndpoint: async () => vnc,
    get: (id: string) => (id === row.id ? row : undefined),
  });
  return stub as unknown as SessionManager;
}

export async function startHarnessBridge(vnc: VncAddress): Promise<HarnessBridge> {
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  // Viewer tickets (?t=…) only name logged-in viewers; the harness has none, so any secret will do.
  const bridge = attachBridge(server, harnessManager(vnc), HARNESS_PRESENCE, silentLogger(), crypto.randomBytes(32).toString('base64url'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    wsUrl: `ws://127.0.0.1:${port}/ws/${HARNESS_TOKEN}`,
    close: async () => {
      bridge.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
