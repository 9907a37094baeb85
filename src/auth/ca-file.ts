// Reads a backend's CA file once, when the service starts: a missing or
// unreadable file is a configuration error, reported before any login.
import fs from 'node:fs';
import { ConfigError } from '../errors.js';

export function readCaFile(file: string | null, backend: string): Buffer[] | undefined {
  if (!file) return undefined;
  try {
    return [fs.readFileSync(file)];
  } catch (err) {
    throw new ConfigError([
      `auth backend "${backend}": caFile ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? err})`
    ]);
  }
}
