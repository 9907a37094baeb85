// The running broker's real listening address, recorded in the state dir so
// qwdctl prints links that work when listen.port is 0 or differs from the
// config (serve --port, $QWD_PORT). Written by startBroker() once it listens,
// removed by its close(); qwdctl only reads it. Not used when publicUrl is set
// (links then go through the proxy the administrator configured).
import fs from 'node:fs';
import path from 'node:path';

export const BROKER_ADDRESS_FILE = 'broker.json';

export interface BrokerAddress {
  url: string;
  pid: number;
}

function fileOf(stateDir: string): string {
  return path.join(stateDir, BROKER_ADDRESS_FILE);
}

/** Records `url` for this process (atomically: written aside, then renamed). */
export function recordBrokerAddress(stateDir: string, url: string, pid = process.pid): void {
  const file = fileOf(stateDir);
  const tmp = `${file}.${pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ url, pid } satisfies BrokerAddress) + '\n', { mode: 0o644 });
  fs.renameSync(tmp, file);
}

/** Removes the record if it is still ours (a newer broker on the same state dir keeps its own). */
export function forgetBrokerAddress(stateDir: string, url: string, pid = process.pid): void {
  const current = readRecord(stateDir);
  if (current && current.url === url && current.pid === pid) fs.rmSync(fileOf(stateDir), { force: true });
}

function readRecord(stateDir: string): BrokerAddress | null {
  let text: string;
  try {
    text = fs.readFileSync(fileOf(stateDir), 'utf8');
  } catch {
    return null; // no broker has recorded an address (or it closed)
  }
  try {
    const parsed = JSON.parse(text) as Partial<BrokerAddress>;
    if (typeof parsed.url === 'string' && /^https?:\/\/[^/\s]+$/.test(parsed.url)
      && Number.isInteger(parsed.pid) && parsed.pid! > 0) return { url: parsed.url, pid: parsed.pid! };
  } catch {
    // A torn or foreign file: treated as no record, the config's address is used.
  }
  return null;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: existence check only, nothing is sent
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What a live broker recorded (address and pid), or null (none, or its process is gone: a crash left the file). */
export function runningBroker(stateDir: string): BrokerAddress | null {
  const record = readRecord(stateDir);
  return record && isAlive(record.pid) ? record : null;
}

/** The address a live broker recorded, or null. */
export function runningBrokerUrl(stateDir: string): string | null {
  return runningBroker(stateDir)?.url ?? null;
}
