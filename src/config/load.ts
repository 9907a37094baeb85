// Loads the configuration once: file (from --config, QWD_CONFIG, or none = the
// embedded defaults), then the few deployment overrides from flags and env.
// Returns a frozen Config or throws a ConfigError listing every problem.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { parseConfig, type Config } from './schema.js';

/** The directory the service is installed in (holds package.json, machines/, var/). */
export const INSTALL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ConfigOverrides {
  configFile?: string | undefined;
  port?: string | number | undefined;
  stateDir?: string | undefined;
}

export function loadConfig(overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const file = overrides.configFile ?? (env.QWD_CONFIG || undefined);
  let raw: Record<string, unknown> = {};
  let baseDir = INSTALL_DIR;
  let source: string | null = null;
  if (file) {
    source = path.resolve(file);
    baseDir = path.dirname(source);
    let text: string;
    try {
      text = fs.readFileSync(source, 'utf8');
    } catch (err) {
      throw new ConfigError([
        `${source}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? String(err)})`
      ]);
    }
    try {
      raw = (parseYaml(text) as Record<string, unknown> | null) ?? {};
    } catch (err) {
      throw new ConfigError([`${source}: not valid YAML: ${(err as Error).message}`]);
    }
  }
  raw = applyOverrides(raw, overrides, env, source ?? '(embedded defaults)');
  const { config, problems } = parseConfig(raw, source, baseDir);
  if (!config) throw new ConfigError(problems);
  return config;
}

function applyOverrides(
  raw: Record<string, unknown>, overrides: ConfigOverrides, env: NodeJS.ProcessEnv, file: string,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...raw };
  const port = overrides.port ?? (env.QWD_PORT || undefined);
  if (port !== undefined) {
    const n = Number(port);
    if (!Number.isInteger(n) || n < 0 || n > 65535) {
      throw new ConfigError([
        `${overrides.port !== undefined ? '--port' : 'QWD_PORT'}: must be a port number from 0 to 65535, got "${port}` +
          `" (config: ${file})`
      ]);
    }
    const listen = typeof out.listen === 'object' && out.listen !== null ? out.listen : {};
    out.listen = { ...listen, port: n };
  }
  const stateDir = overrides.stateDir ?? (env.QWD_STATE_DIR || undefined);
  // A state dir given on the command line or in the environment is relative to the cwd.
  if (stateDir !== undefined) out.stateDir = path.resolve(stateDir);
  return out;
}
