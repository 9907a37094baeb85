// What every qwdctl command gets: the global options resolved into a config,
// and services built for the duration of one command (then closed).
import type { Command } from 'commander';
import { loadConfig, type ConfigOverrides } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../log.js';
import { createServices, type Services } from '../main.js';
import { QwdError } from '../errors.js';
import { runningBrokerUrl } from './broker-address.js';

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

  async withServices<T>(fn: (services: Services) => Promise<T>): Promise<T> {
    const config = this.config();
    // Without --verbose, qwdctl itself reports what went wrong (the user message);
    // the services' log lines (operator detail: argv, paths, stderr) only with it.
    const services = await createServices(config, createLogger(this.globals.verbose ? 'info' : 'silent'));
    try {
      return await fn(services);
    } finally {
      // VMs this command started keep running for the broker; stop watching them so the CLI can exit.
      services.manager.detach();
      services.load.stop();
      services.db.close();
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
