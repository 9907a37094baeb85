// Measurement 5: input latency. A demo session is started and left to boot to
// its shell on the VGA console; then two viewers connect at once (both shared,
// RFC 6143 §7.3.1): one through the broker's bridge (/ws/<token>) and one
// straight to QEMU's VNC Unix socket in the session's run dir. Each keeps an
// incremental update request outstanding, as noVNC does (rfb-timing-client.ts).
//   key → screen: a key press (down + up) is sent by one viewer, and the time
//     until the first FramebufferUpdate that changes a pixel arrives at that same
//     viewer is taken. Keys alternate between a letter and BackSpace, so the
//     shell's line never grows; pairs alternate between the two paths; a random
//     pause (30–130 ms) before each key puts it at a random point of QEMU's
//     display refresh. The text cursor is hidden first (`printf '\033[?25l'`),
//     so nothing but the echo changes the screen; the benchmark checks that.
//   echo: what the bridge itself adds, without the guest and QEMU's refresh
//     timer in the way: a SetEncodings that lists the QEMU Extended Key Event
//     pseudo-encoding is answered by QEMU at once, from its protocol handler,
//     with a FramebufferUpdate holding that pseudo-rectangle (ui/vnc.c,
//     send_ext_key_event_ack). Round trips of that, through the bridge, through
//     websockify on the same socket (for scale: what any relay process costs
//     here) and straight; paced (a random 5–25 ms apart, paths alternating: each
//     relay wakes up for every message, as for a user's keys) and back to back
//     (bursts per path: the relay's own processing). Through a relay minus
//     straight is that relay's share, both directions together.
import path from 'node:path';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Config } from '../src/config/schema.js';
import { vmPaths } from '../src/launcher/local.js';
import type { Cleanup } from './cleanup.js';
import { createSession, deleteSession } from './api.js';
import type { BrokerProcess } from './broker-process.js';
import { startWebsockify } from './bridge-throughput.js';
import { ENCODING, RfbTimingClient, unixSocketTransport, webSocketTransport, type TimedUpdate } from './rfb-timing-client.js';

export type InputPath = 'bridge' | 'direct';
const PATHS: InputPath[] = ['bridge', 'direct'];
export type EchoPath = InputPath | 'websockify';
const ECHO_PATHS: EchoPath[] = ['bridge', 'websockify', 'direct'];

export interface InputLatencyResult {
  machine: string;
  /** POST → "QWD: boot ok" on the serial port. */
  bootS: number;
  /** Key → first update that changes the screen, ms, per path. */
  keyMs: Record<InputPath, number[]>;
  /** SetEncodings → QEMU's Extended Key Event answer, ms, per path: paced, and back to back. */
  echoMs: Record<EchoPath, number[]>;
  echoBackToBackMs: Record<EchoPath, number[]>;
  /** Screen changes seen in a quiet second before the keys (should be 0: the cursor is hidden). */
  quietChanges: number;
}

const ENCODINGS = [ENCODING.raw, ENCODING.desktopSize, ENCODING.extKeyEvent];
const BACKSPACE = 0xff08;

export async function measureInputLatency(
  cleanup: Cleanup, broker: BrokerProcess, config: Config,
  opts: { machine: string; memoryMiB: number; keysPerPath: number; echoesPerPath: number; bootTimeoutMs: number; websockify: string; log: (line: string) => void },
): Promise<InputLatencyResult> {
  const start = performance.now();
  const session = await createSession(broker.url, { machine: opts.machine, cpus: 1, memoryMiB: opts.memoryMiB, lifetimeS: 3600, user: 'bench-input' });
  const unregister = cleanup.add(`DELETE session ${session.id}`, () => deleteSession(broker.url, session.token));
  const paths = vmPaths(path.join(config.runDir, session.id));
  const clients: RfbTimingClient[] = [];
  try {
    await waitForSerial(paths.serialLog, 'QWD: boot ok', opts.bootTimeoutMs);
    const bootS = (performance.now() - start) / 1000;
    const { port } = await startWebsockify(cleanup, opts.websockify, paths.vncSocket);
    const viewers: Record<EchoPath, RfbTimingClient> = {
      bridge: await RfbTimingClient.connect(await webSocketTransport(session.wsUrl), ENCODINGS),
      websockify: await RfbTimingClient.connect(await webSocketTransport(`ws://127.0.0.1:${port}/`), ENCODINGS),
      direct: await RfbTimingClient.connect(await unixSocketTransport(paths.vncSocket), ENCODINGS),
    };
    clients.push(viewers.bridge, viewers.websockify, viewers.direct);
    const updates: Record<EchoPath, TimedUpdate[]> = { bridge: [], websockify: [], direct: [] };
    for (const p of ECHO_PATHS) {
      viewers[p].onUpdate = (u) => updates[p].push(u);
      viewers[p].requestUpdate(false);
    }
    // A clean screen and no blinking cursor: then only the echo of a key changes pixels.
    await viewers.bridge.type(`clear; printf '\\033[?25l'; echo qwd-input-ready > /dev/ttyS0\n`);
    await waitForSerial(paths.serialLog, 'qwd-input-ready', 30000);
    await sleep(1000);
    const quietFrom = performance.now();
    await sleep(1000);
    const quietChanges = PATHS.reduce((n, p) => n + updates[p].filter((u) => u.at > quietFrom && u.changedPixels > 0).length, 0);

    /** The first update at `p` after `since` that satisfies `ok` (waits without polling: the CPUs are QEMU's). */
    const firstUpdate = (p: EchoPath, since: number, ok: (u: TimedUpdate) => boolean, what: string) => new Promise<TimedUpdate>((resolve, reject) => {
      const found = updates[p].find((x) => x.at > since && ok(x));
      if (found) return resolve(found);
      const timer = setTimeout(() => {
        viewers[p].onUpdate = (u) => updates[p].push(u);
        const err = viewers[p].error;
        reject(new Error(`input latency, ${p}: no ${what} within 5 s${err ? ` (the viewer's connection ended: ${err.message})` : ''}`));
      }, 5000);
      viewers[p].onUpdate = (u) => {
        updates[p].push(u);
        if (u.at > since && ok(u)) {
          clearTimeout(timer);
          viewers[p].onUpdate = (v) => updates[p].push(v);
          resolve(u);
        }
      };
    });

    // keysPerPath pairs (a letter, then BackSpace), alternating paths: keysPerPath keys on each.
    const keyMs: Record<InputPath, number[]> = { bridge: [], direct: [] };
    for (let pair = 0; pair < opts.keysPerPath; pair++) {
      const p = PATHS[pair % 2]!;
      for (const sym of [0x61 + (pair % 26), BACKSPACE]) {
        await sleep(30 + Math.random() * 100);
        updates[p].length = 0;
        const sent = performance.now();
        viewers[p].keyPress(sym);
        const u = await firstUpdate(p, sent, (x) => x.changedPixels > 0, 'screen change after a key press');
        keyMs[p].push(u.at - sent);
      }
    }
    const echo = async (p: EchoPath) => {
      updates[p].length = 0;
      const sent = performance.now();
      viewers[p].setEncodings(ENCODINGS);
      const u = await firstUpdate(p, sent, (x) => x.rects.some((r) => r.encoding === ENCODING.extKeyEvent), 'Extended Key Event answer');
      return u.at - sent;
    };
    const echoMs: Record<EchoPath, number[]> = { bridge: [], websockify: [], direct: [] };
    for (let i = 0; i < ECHO_PATHS.length * opts.echoesPerPath; i++) {
      const p = ECHO_PATHS[i % ECHO_PATHS.length]!;
      await sleep(5 + Math.random() * 20);
      echoMs[p].push(await echo(p));
    }
    // Back to back: bursts of 20 per path, the paths taking turns, the first of each burst (a wake-up) not counted.
    const echoBackToBackMs: Record<EchoPath, number[]> = { bridge: [], websockify: [], direct: [] };
    while (echoBackToBackMs.direct.length < opts.echoesPerPath) {
      for (const p of ECHO_PATHS) {
        await echo(p);
        for (let i = 0; i < 20; i++) echoBackToBackMs[p].push(await echo(p));
      }
    }
    opts.log(`  ${keyMs.bridge.length + keyMs.direct.length} keys and ${3 * (echoMs.bridge.length + echoBackToBackMs.bridge.length)} echoes timed; ${quietChanges} screen change(s) in the quiet second before`);
    return { machine: opts.machine, bootS, keyMs, echoMs, echoBackToBackMs, quietChanges };
  } finally {
    for (const c of clients) c.close();
    await deleteSession(broker.url, session.token);
    unregister();
  }
}

async function waitForSerial(file: string, text: string, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    let content = '';
    try {
      content = fs.readFileSync(file, 'utf8');
    } catch {
      // Not written yet.
    }
    if (content.includes(text)) return;
    if (performance.now() > deadline) throw new Error(`no "${text}" in ${file} within ${timeoutMs} ms; last output: ${JSON.stringify(content.slice(-300))}`);
    await sleep(50);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
