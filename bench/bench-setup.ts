// The benchmark's broker configuration: a temp dir holding config.yml, a
// machines dir with one machine (the demo guest, or the blank SeaBIOS disk
// while developing) and the state dir. Same shape as test/helpers/env.ts
// makeSetup writes, with limits raised so admission never refuses a benchmark
// session (30 sessions, no load or per-user caps that 10 concurrent 1-CPU
// guests on a small host would hit).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseConfig, type Config } from '../src/config/schema.js';
import { writeBlankMachine, writeDemoMachine, type MachineFixture } from '../test/helpers/env.js';
import type { Cleanup } from './cleanup.js';

export interface BenchSetup {
  dir: string;
  configFile: string;
  config: Config;
  machine: MachineFixture;
}

/** What a part changes in the common config (the scale run: more sessions, no guest network). */
export interface SetupOverrides {
  limits?: Record<string, number>;
  qemu?: Record<string, unknown>;
}

export function makeBenchSetup(cleanup: Cleanup, machineKind: 'demo' | 'blank', overrides: SetupOverrides = {}): BenchSetup {
  // Short path: Unix socket paths (var/run/<id>/vnc.sock) must stay under 108 bytes.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwd-bench-'));
  cleanup.add(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  const machinesDir = path.join(dir, 'machines');
  fs.mkdirSync(machinesDir);
  const machine = machineKind === 'demo' ? writeDemoMachine(machinesDir) : writeBlankMachine(machinesDir);
  const raw = {
    listen: { host: '127.0.0.1', port: 0 },
    stateDir: 'var',
    machinesDir: 'machines',
    qemu: { quitGraceMs: 3000, termGraceMs: 2000, ...overrides.qemu },
    limits: {
      minLifetimeS: 1,
      maxSessions: 30,
      maxSessionsPerUser: 30,
      hostReserveMemoryMiB: 256,
      maxLoadPerCpu: 1000,
      // 10 one-CPU guests at once on a 2-CPU host: 2 × 16 = 32 virtual CPUs allowed.
      cpuOvercommit: 16,
      maxCpusPerUser: 64,
      maxMemoryMiBPerUser: 65536,
      ...overrides.limits,
    },
    // info, not silent: the broker's own timestamps ("qemu spawned", "session
    // running") split POST → ready into its phases. One JSON line per event.
    log: { level: 'info' },
  };
  const configFile = path.join(dir, 'config.yml');
  fs.writeFileSync(configFile, stringify(raw));
  const { config, problems } = parseConfig(raw, configFile, dir);
  if (!config) throw new Error(`benchmark config ${configFile} is invalid:\n${problems.join('\n')}`);
  return { dir, configFile, config, machine };
}
