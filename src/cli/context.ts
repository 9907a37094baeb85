// What every qwdctl command gets: the global options resolved into a config,
// and the administrator's operations (admin/operations.ts) for one command.
// With a broker running they run in the broker, through its admin socket;
// without one, qwdctl is the store's writer for the command: it takes the
// writer lock the broker takes at start, builds what the command needs, and
// closes it all (lock last) when the command ends.
import type { Command } from 'commander';
import { loadConfig, type ConfigOverrides } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../log.js';
import { createServices, type Services } from '../main.js';
import { QwdError } from '../errors.js';
import { openDb, type Db } from '../store/db.js';
import { SessionRows } from '../store/session-rows.js';
import { UserStore } from '../store/users.js';
import { acquireWriterLock } from '../store/writer-lock.js';
import { adminOperations, type Admin } from '../admin/operations.js';
import { connectAdmin } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import { runningBrokerUrl } from '../admin/broker-address.js';

/** How long a qwdctl waits for another qwdctl (or a starting broker) to let go of the store. */
const WRITER_LOCK_WAIT_MS = 60_000;

export interface GlobalOptions {
  config?: string;
  stateDir?: string;
  verbose?: boolean;
}

export class CliContext {
  constructor(
    readonly program: Command, readonly out: NodeJS.WritableStream = process.stdout,
    readonly err: NodeJS.WritableStream = process.stderr,
  ) {}

  get globals(): GlobalOptions {
    return this.program.opts<GlobalOptions>();
  }

  overrides(extra: Partial<ConfigOverrides> = {}): ConfigOverrides {
    return { configFile: this.globals.config, stateDir: this.globals.stateDir, ...extra };
  }

  config(extra: Partial<ConfigOverrides> = {}): Config {
    return loadConfig(this.overrides(extra));
  }

  /** Runs `fn` with the running broker's operations, else with this process's own under the writer lock. */
  async withAdmin<T>(fn: (admin: Admin, config: Config) => Promise<T>): Promise<T> {
    const config = this.config();
    const socketPath = adminSocketPath(config.stateDir);
    let remote = await connectAdmin(socketPath);
    if (remote) return fn(remote, config);
    const lock = await acquireWriterLock(config.stateDir, `qwdctl ${this.program.args.join(' ')}`.trim(), {
      waitMs: WRITER_LOCK_WAIT_MS,
      // A broker that started meanwhile (it held the lock while it started) serves the command.
      shouldStop: async () => (remote = await connectAdmin(socketPath)) !== null,
    });
    if (!lock) return fn(remote!, config);
    const local = new LocalStore(config, this.globals.verbose ?? false);
    try {
      return await fn(local.admin, config);
    } finally {
      try {
        await local.close();
      } finally {
        lock.release();
      }
    }
  }

  print(text: string): void {
    this.out.write(text.endsWith('\n') ? text : text + '\n');
  }

  /**
   * The base URL users reach the broker at: publicUrl; else the address the
   * running broker recorded (its real port, also with listen.port 0); else the
   * config's listen address. A wildcard host becomes localhost.
   */
  baseUrl(config: Config): string {
    if (config.publicUrl) return config.publicUrl;
    const recorded = runningBrokerUrl(config.stateDir);
    if (recorded) return recorded.replace(/^http:\/\/(0\.0\.0\.0|\[::\])(?=:)/, 'http://localhost');
    const host = config.listen.host === '0.0.0.0' || config.listen.host === '::'
      ? 'localhost'
      : config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
    return `http://${host}:${config.listen.port}`;
  }
}

/** A usage error (exit code 1) raised by a command's own argument checks. */
export function usage(message: string): QwdError {
  return new QwdError('QWD_BAD_REQUEST', message, { userMessage: message });
}

/** The store and services of a qwdctl that is the writer itself (no broker runs), made as the command asks for them. */
class LocalStore {
  private db: Db | null = null;
  private services: Promise<Services> | null = null;
  readonly admin: Admin;

  constructor(config: Config, verbose: boolean) {
    const store = () => (this.db ??= openDb(config.stateDir));
    this.admin = adminOperations({
      rows: () => new SessionRows(store()), users: () => new UserStore(store()),
      // Without --verbose, qwdctl itself reports what went wrong (the user message);
      // the services' log lines (operator detail: argv, paths, stderr) only with it.
      services: () => (this.services ??= createServices(config, createLogger(verbose ? 'info' : 'silent'))),
    });
  }

  async close(): Promise<void> {
    this.db?.close();
    // A command whose services failed to build has nothing of them to close (and has reported why).
    const services = await this.services?.catch(() => null);
    if (!services) return;
    // VMs this command started keep running for the next broker to adopt; stop watching them so qwdctl can exit.
    services.manager.detach();
    services.presence.close();
    services.load.stop();
    services.db.close();
  }
}
