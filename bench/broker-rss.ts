// Measurement 2: memory. The broker runs as its own process (broker-process.ts),
// so its VmRSS (/proc/<pid>/status) is the broker's alone. N demo sessions are
// started one after the other, each with one viewer connected through the
// bridge (RFB handshake done, one full frame read), and the broker's RSS is
// read: right away, and again once every guest has printed "QWD: boot ok" on
// its serial port (bounded wait) and each viewer has read another full frame.
// One qemu's VmRSS is given for context (all of them: min, median, max).
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { connectRfb, type RfbSession } from '../test/helpers/rfb-client.js';
import { pidsMentioning } from '../test/helpers/env.js';
import type { Config } from '../src/config/schema.js';
import { qemuProcessName } from '../src/qemu/argv.js';
import type { Cleanup } from './cleanup.js';
import { createSession, deleteSession, type CreatedSession } from './api.js';
import type { BrokerProcess } from './broker-process.js';
import { readStatusKiB, readVmRssKiB } from './processes.js';
import { median } from './stats.js';

export interface RssResult {
  sessions: number;
  memoryMiB: number;
  brokerBeforeKiB: number;
  /** N sessions running, one viewer each, one full frame read by each. */
  brokerWithViewersKiB: number;
  /** Same, once the guests booted and each viewer read another full frame. */
  brokerAfterBootKiB: number;
  brokerPeakKiB: number;
  /** All sessions stopped, viewers gone. */
  brokerAfterStopKiB: number;
  booted: number;
  bootWaitS: number;
  bootWaitLimitS: number;
  qemuAtReadyKiB: { min: number; median: number; max: number };
  qemuAfterBootKiB: { min: number; median: number; max: number };
  /** One qemu, as the headline: the first session's. */
  oneQemuAfterBootKiB: number;
}

function brokerRss(broker: BrokerProcess): number {
  const kib = readVmRssKiB(broker.pid);
  if (kib === null) throw new Error(`the broker (pid ${broker.pid}) is gone: ${broker.tracked.stderr.slice(-10).join('\n')}`);
  return kib;
}

/** The qemu of a session: the process whose command line carries its -name (qwd-<id>). */
function qemuPid(sessionId: string): number {
  const pids = pidsMentioning(qemuProcessName(sessionId)).filter((pid) => {
    try {
      return path.basename(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!).startsWith('qemu-system');
    } catch {
      return false;
    }
  });
  if (pids.length !== 1) throw new Error(`expected one qemu for session ${sessionId}, found ${pids.length} (${pids.join(', ')})`);
  return pids[0]!;
}

function spread(values: number[]): { min: number; median: number; max: number } {
  return { min: Math.min(...values), median: median(values), max: Math.max(...values) };
}

export async function measureBrokerRss(cleanup: Cleanup, broker: BrokerProcess, config: Config, opts: { machine: string; sessions: number; memoryMiB: number; bootWaitMs: number; log: (line: string) => void }): Promise<RssResult> {
  const brokerBeforeKiB = brokerRss(broker);
  const sessions: Array<{ session: CreatedSession; viewer: RfbSession; qemu: number; unregister: () => void }> = [];
  // On failure, the registered steps close the viewers and DELETE the sessions in the final cleanup.
  const closeViewers = cleanup.add('close the RSS viewers', () => {
    for (const s of sessions) s.viewer.close();
  });
  for (let i = 0; i < opts.sessions; i++) {
    const session = await createSession(broker.url, { machine: opts.machine, cpus: 1, memoryMiB: opts.memoryMiB, lifetimeS: 3600, user: 'bench-rss' });
    const unregister = cleanup.add(`DELETE session ${session.id}`, () => deleteSession(broker.url, session.token));
    const viewer = await connectRfb(session.wsUrl, { timeoutMs: 20000 });
    sessions.push({ session, viewer, qemu: qemuPid(session.id), unregister });
    await viewer.update(false, 20000);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const brokerWithViewersKiB = brokerRss(broker);
  const qemuAtReady = sessions.map((s) => readVmRssKiB(s.qemu) ?? 0);
  opts.log(`  ${opts.sessions} sessions + viewers: broker RSS ${(brokerWithViewersKiB / 1024).toFixed(1)} MiB; waiting for the guests to boot (at most ${opts.bootWaitMs / 1000} s)`);

  const bootStart = performance.now();
  const booted = new Set<string>();
  while (booted.size < sessions.length && performance.now() - bootStart < opts.bootWaitMs) {
    for (const s of sessions) {
      if (booted.has(s.session.id)) continue;
      try {
        if (fs.readFileSync(path.join(config.runDir, s.session.id, 'serial.log'), 'utf8').includes('QWD: boot ok')) booted.add(s.session.id);
      } catch {
        // No serial output yet.
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const bootWaitS = (performance.now() - bootStart) / 1000;
  await Promise.all(sessions.map((s) => s.viewer.update(false, 30000)));
  await new Promise((r) => setTimeout(r, 1000));
  const brokerAfterBootKiB = brokerRss(broker);
  const brokerPeakKiB = readStatusKiB(broker.pid, 'VmHWM') ?? 0;
  const qemuAfterBoot = sessions.map((s) => readVmRssKiB(s.qemu) ?? 0);

  for (const s of sessions) s.viewer.close();
  for (const s of sessions) {
    await deleteSession(broker.url, s.session.token);
    s.unregister();
  }
  closeViewers();
  await new Promise((r) => setTimeout(r, 1000));
  return {
    sessions: opts.sessions, memoryMiB: opts.memoryMiB,
    brokerBeforeKiB, brokerWithViewersKiB, brokerAfterBootKiB, brokerPeakKiB, brokerAfterStopKiB: brokerRss(broker),
    booted: booted.size, bootWaitS, bootWaitLimitS: opts.bootWaitMs / 1000,
    qemuAtReadyKiB: spread(qemuAtReady), qemuAfterBootKiB: spread(qemuAfterBoot), oneQemuAfterBootKiB: qemuAfterBoot[0]!,
  };
}
