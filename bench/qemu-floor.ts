// The floor under "POST → ready": how long QEMU itself takes, with exactly the
// argv the broker used (taken from its "qemu spawned" log line, the run dir
// swapped for a fresh temp dir), to answer QMP query-status and send its RFB
// banner — polled every millisecond, where the broker's readiness loop backs
// off 5 → 10 → 20 → 40 → 50 ms (src/launcher/local.ts waitReady). Also times
// the qcow2 overlay (`qemu-img create`, same argv as src/snapshot/overlay.ts).
// The difference to the broker's phases is the broker's own overhead.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Config } from '../src/config/schema.js';
import type { Machine } from '../src/catalog/descriptor.js';
import { overlayArgv } from '../src/snapshot/overlay.js';
import { vmPaths } from '../src/launcher/local.js';
import { QmpClient } from '../src/qemu/qmp-client.js';
import { readRfbBanner } from '../src/qemu/rfb-probe.js';
import type { Cleanup } from './cleanup.js';
import { spawnTracked } from './processes.js';

export interface FloorSample {
  /** qemu-img create of the overlay (ms). */
  overlayMs: number;
  /** spawn → QMP query-status answered (ms). */
  qmpMs: number;
  /** spawn → QMP answered and RFB banner read (ms). */
  readyMs: number;
}

export async function measureQemuFloor(cleanup: Cleanup, config: Config, template: { sessionId: string; argv: string[] }, image: string, runs: number): Promise<FloorSample[]> {
  const templateRunDir = path.join(config.runDir, template.sessionId);
  let [binary, ...templateArgv] = template.argv;
  // The broker runs QEMU through nsenter, in the session's network namespace: the floor is QEMU on its own.
  const dashes = templateArgv.indexOf('--');
  if (binary && path.basename(binary) === 'nsenter' && dashes >= 0) [binary, ...templateArgv] = templateArgv.slice(dashes + 1);
  if (!binary || !templateArgv.some((a) => a.includes(templateRunDir))) throw new Error(`the logged qemu argv does not mention the run dir ${templateRunDir}: ${template.argv.join(' ')}`);
  const samples: FloorSample[] = [];
  for (let i = 0; i < runs; i++) {
    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-bench-floor-'));
    const removeDir = cleanup.add(`remove ${runDir}`, () => fs.rmSync(runDir, { recursive: true, force: true }));
    fs.chmodSync(runDir, 0o700);
    try {
      const paths = vmPaths(runDir);
      // Only what overlayArgv reads of a machine: a qcow2 master.
      const machine = { name: 'floor', format: 'qcow2', image } as unknown as Machine;
      const overlayStart = performance.now();
      execFileSync(config.qemu.img, overlayArgv(machine, paths.overlay, config.qemu.isoDiskGiB), { stdio: 'ignore', timeout: 30000 });
      const overlayMs = performance.now() - overlayStart;
      const argv = templateArgv.map((a) => a.replaceAll(templateRunDir, runDir));
      const start = performance.now();
      const qemu = spawnTracked(cleanup, 'qemu (start-up floor)', binary, argv);
      try {
        let qmpMs = 0;
        for (;;) {
          if (performance.now() - start > 20000) throw new Error(`qemu (pid ${qemu.pid}) not ready within 20 s: ${qemu.stderr.join('\n')}`);
          try {
            if (!qmpMs && fs.existsSync(paths.qmpSocket)) {
              const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 2000 });
              try {
                await qmp.execute('query-status');
              } finally {
                qmp.close();
              }
              qmpMs = performance.now() - start;
            }
            if (qmpMs && fs.existsSync(paths.vncSocket)) {
              await readRfbBanner({ kind: 'unix', path: paths.vncSocket }, 2000);
              samples.push({ overlayMs, qmpMs, readyMs: performance.now() - start });
              break;
            }
          } catch {
            // Not listening yet: poll again.
          }
          await new Promise((r) => setTimeout(r, 1));
        }
      } finally {
        await qemu.stop();
      }
    } finally {
      fs.rmSync(runDir, { recursive: true, force: true });
      removeDir();
    }
  }
  return samples;
}
