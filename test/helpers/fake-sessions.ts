// The session services on the fake launcher (src/launcher/fake.ts) and a fake
// clock (fake-clock.ts): a real store, a real manager, viewer presence and
// purge service, real session dirs; no QEMU, no Slurm, no timers that run by
// themselves. The real launchers stay tested against real QEMU and a real
// Slurm (test/launcher, test/http).
import type { ExecutionContext } from 'ava';
import fs from 'node:fs';
import { once } from 'node:events';
import { openDb } from '../../src/store/db.js';
import { SessionRows } from '../../src/store/session-rows.js';
import { fixedLoad } from '../../src/admission/host-load.js';
import { parseMachine, type Machine } from '../../src/catalog/descriptor.js';
import type { Catalog } from '../../src/catalog/catalog.js';
import { FakeLauncher, type FakeLauncherOptions } from '../../src/launcher/fake.js';
import { SessionManager, type EndedEvent } from '../../src/sessions/manager.js';
import { ViewerPresence } from '../../src/sessions/presence.js';
import { PurgeService } from '../../src/purge/service.js';
import { createMailer } from '../../src/notify/mailer.js';
import { silentLogger } from '../../src/log.js';
import { makeSetup } from './env.js';
import { FakeClock } from './fake-clock.js';

export const REQUEST = { machine: 'blank', user: 'ada', lifetimeS: 600 };

function blankMachine(dir: string): Machine {
  const { machine, problems } = parseMachine(
    { name: 'blank', description: 'never booted', image: 'blank.qcow2', format: 'qcow2' }, `${dir}/blank.yml`,
  );
  if (!machine) throw new Error(problems.join('\n'));
  return machine;
}

export interface FakeSessionsOptions {
  fake?: Omit<FakeLauncherOptions, 'runRoot'>;
  /** Config keys over the test defaults. */
  config?: Record<string, unknown>;
  /** Mail life-time warnings through config.mail (a real SMTP server the test runs). */
  mail?: boolean;
  baseUrl?: string;
}

export type FakeSessions = ReturnType<typeof fakeSessions>;

/** A manager with its services over one store; restart() gives a second one on the same store and VMs. */
export function fakeSessions(t: ExecutionContext, opts: FakeSessionsOptions = {}) {
  const { config, machinesDir } = makeSetup(t, opts.config ?? {}, { machines: () => {} });
  const clock = new FakeClock();
  const launcher = new FakeLauncher({ runRoot: config.runDir, ...opts.fake });
  const machine = blankMachine(machinesDir);
  const catalog: Catalog = {
    machines: new Map([[machine.name, machine]]), problems: [], get: (n) => (n === machine.name ? machine : undefined),
    list: () => [machine],
  };
  const mailer = opts.mail ? createMailer(config.mail) : null;
  if (opts.mail && !mailer) throw new Error('fakeSessions: mail asked for without config.mail.smtpHost');
  if (mailer) t.teardown(() => mailer.close());
  const load = fixedLoad({ cpus: 64, totalMemoryMiB: 65536, availableMemoryMiB: 65536, load1: 0, sampledAt: 0 });
  const start = () => {
    const db = openDb(config.stateDir);
    const rows = new SessionRows(db);
    const log = silentLogger();
    const manager = new SessionManager({ config, rows, catalog, launcher, load, log, discoverGpus: () => [], clock });
    const presence = new ViewerPresence({ manager, rows, config, log });
    const purge = new PurgeService({
      manager, rows, launcher, config, log, mailer, baseUrl: opts.baseUrl,
    });
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      manager.detach();
      presence.close();
      db.close();
    };
    t.teardown(close);
    const audit = (id: string) => (db.prepare('SELECT kind, detail FROM events WHERE session_id = ? ORDER BY id')
      .all(id) as Array<{ kind: string; detail: string | null }>);
    return { manager, presence, purge, rows, db, audit, close };
  };
  const first = start();
  const sessionDirs = () => (fs.existsSync(config.runDir) ? fs.readdirSync(config.runDir) : []);
  /** A broker restart: this one closes (its VMs keep running), a new one opens the same store and reconciles. */
  const restart = async () => {
    first.close();
    const second = start();
    await second.manager.reconcile();
    return second;
  };
  return { ...first, launcher, clock, config, sessionDirs, restart };
}

export function endedOnce(manager: SessionManager): Promise<EndedEvent> {
  return once(manager, 'ended').then(([event]) => event as EndedEvent);
}
