// Samples the host's CPU count, memory and load in the background
// (systeminformation) so a request never waits on a measurement.
import si from 'systeminformation';
import os from 'node:os';
import type { HostLoad } from './policy.js';
import type { Logger } from '../log.js';

export interface LoadSampler {
  current(): HostLoad;
  stop(): void;
}

export async function sampleHostLoad(): Promise<HostLoad> {
  const [mem, load] = await Promise.all([si.mem(), si.currentLoad()]);
  return {
    cpus: os.availableParallelism(),
    totalMemoryMiB: Math.floor(mem.total / 1048576),
    availableMemoryMiB: Math.floor(mem.available / 1048576),
    load1: os.loadavg()[0] ?? load.avgLoad,
    sampledAt: Date.now(),
  };
}

export async function startLoadSampler(intervalMs: number, log?: Logger): Promise<LoadSampler> {
  let latest = await sampleHostLoad();
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    sampleHostLoad()
      .then((sample) => (latest = sample))
      .catch((err) => log?.warn({ err }, 'host load sample failed; keeping the previous one'))
      .finally(() => (running = false));
  }, intervalMs);
  timer.unref();
  return { current: () => latest, stop: () => clearInterval(timer) };
}

/** A fixed load, for qwdctl one-shots and tests that need a deterministic host. */
export function fixedLoad(load: HostLoad): LoadSampler {
  return { current: () => load, stop: () => {} };
}
