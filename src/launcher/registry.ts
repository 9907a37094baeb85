// The launchers by name, each with the factory that builds it from the
// broker's config: the composition roots (main.ts, and through it qwdctl) ask
// here instead of testing the name themselves. Adding a scheduler is one file
// beside this one and one line below. A site chooses among the names the
// config schema accepts (`launcher: local | slurm`); `fake` (fake.ts) is here
// for tests, which name it in code, and the schema refuses it in a config file.
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { AccelChoice } from '../qemu/accel.js';
import { FakeLauncher } from './fake.js';
import { LocalLauncher } from './local.js';
import { SlurmLauncher } from './slurm.js';
import type { Launcher } from './types.js';
import type { Clock } from '../clock.js';
import type { MetricsRecorder } from '../metrics/recorder.js';

export interface LauncherDeps {
  config: Config;
  accel: AccelChoice;
  log: Logger;
  /** Polls, deadlines and watches; the system clock by default (VMs run in real time). */
  clock?: Clock;
  /** Launcher metrics (Slurm queue waits); absent: not counted. */
  metrics?: MetricsRecorder;
}

export type LauncherFactory = (deps: LauncherDeps) => Launcher;

/** The names a config file may give (config/schema.ts), and the fake of the tests. */
export type LauncherName = Config['launcher'] | 'fake';

/** Typed by name: a name the config schema accepts without a factory here does not compile. */
export const LAUNCHERS: Readonly<Record<LauncherName, LauncherFactory>> = {
  local: ({ config, accel, log, clock }) => new LocalLauncher({
    config, accel, clock, log: log.child({ module: 'launcher' }),
  }),
  slurm: ({ config, log, clock, metrics }) => new SlurmLauncher({
    config, clock, metrics, log: log.child({ module: 'launcher', launcher: 'slurm' }),
  }),
  fake: ({ config }) => new FakeLauncher({ runRoot: config.runDir }),
};

export function createLauncher(name: LauncherName, deps: LauncherDeps): Launcher {
  return LAUNCHERS[name](deps);
}
