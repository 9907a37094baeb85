// Test environment helpers: required programs (a missing one fails the test
// with what to install — never a skip), temp dirs cleaned in teardown, and a
// config + machines directory for a broker under test.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import { parseConfig, type Config } from '../../src/config/schema.js';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
export const DEMO_IMAGE = path.join(ROOT, 'machines', 'images', 'demo.qcow2');

const found = new Map<string, boolean>();

/** Fails (throws) with an install hint when a program is missing. */
export function requireProgram(program: string, debianPackage: string): void {
  if (!found.has(program)) found.set(program, spawnSync('sh', ['-c', 'command -v "$1"', 'sh', program]).status === 0);
  if (!found.get(program)) throw new Error(`${program} is not installed: install the Debian package "${debianPackage}" (bin/setup does this)`);
}

export function requireQemu(): void {
  requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  requireProgram('qemu-img', 'qemu-utils');
}

export function requireDemoImage(): string {
  if (!fs.existsSync(DEMO_IMAGE)) throw new Error(`the demo guest ${DEMO_IMAGE} is missing: run bin/build-demo-image (bin/setup does this)`);
  return DEMO_IMAGE;
}

/** A temp dir (short path: Unix socket paths must stay under 108 bytes), removed in teardown. */
export function tempDir(t: ExecutionContext, prefix = 'qwd-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface MachineFixture {
  name: string;
  image: string;
  format?: string;
  cpus?: { default: number; max: number };
  memoryMiB?: { default: number; max: number };
}

/**
 * A blank 64 MiB qcow2 disk: SeaBIOS finds nothing to boot and shows text on
 * the VGA screen within ~0.1 s under TCG — a real, visible screen for fast tests.
 */
export function writeBlankMachine(machinesDir: string, name = 'blank'): MachineFixture {
  fs.mkdirSync(machinesDir, { recursive: true });
  const image = path.join(machinesDir, `${name}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  const fixture = { name, image, cpus: { default: 1, max: 2 }, memoryMiB: { default: 128, max: 512 } };
  fs.writeFileSync(path.join(machinesDir, `${name}.yml`), stringify({ name, description: 'Blank disk: SeaBIOS only', image: `${name}.qcow2`, cpus: fixture.cpus, memoryMiB: fixture.memoryMiB }));
  return fixture;
}

/** The bundled demo machine's descriptor, pointing at the built image. */
export function writeDemoMachine(machinesDir: string): MachineFixture {
  const image = requireDemoImage();
  fs.mkdirSync(machinesDir, { recursive: true });
  const fixture = { name: 'demo', image, cpus: { default: 1, max: 2 }, memoryMiB: { default: 256, max: 1024 } };
  // Master images must stay inside the machines directory: the built image is
  // reached through a directory symlink placed there, as a site links machines/images.
  const images = path.join(machinesDir, 'demo-images');
  if (!fs.existsSync(images)) fs.symlinkSync(path.dirname(image), images);
  fs.writeFileSync(path.join(machinesDir, 'demo.yml'), stringify({ name: 'demo', description: 'Demo guest', image: `demo-images/${path.basename(image)}`, format: 'qcow2', cpus: fixture.cpus, memoryMiB: fixture.memoryMiB }));
  return fixture;
}

export interface TestSetup {
  dir: string;
  stateDir: string;
  machinesDir: string;
  configFile: string;
  config: Config;
}

/** Writes a config file for a broker under test (port 0, quick grace timers). */
export function makeSetup(t: ExecutionContext, raw: Record<string, unknown> = {}, opts: { machines?: (dir: string) => void } = {}): TestSetup {
  const dir = tempDir(t);
  const machinesDir = path.join(dir, 'machines');
  fs.mkdirSync(machinesDir);
  (opts.machines ?? ((d) => writeBlankMachine(d)))(machinesDir);
  const full = {
    listen: { host: '127.0.0.1', port: 0 },
    stateDir: 'var',
    machinesDir: 'machines',
    ...raw,
    qemu: { quitGraceMs: 3000, termGraceMs: 2000, ...(raw.qemu as object | undefined) },
    limits: { minLifetimeS: 1, maxSessionsPerUser: 10, hostReserveMemoryMiB: 256, maxLoadPerCpu: 1000, ...(raw.limits as object | undefined) },
    log: { level: 'silent', ...(raw.log as object | undefined) },
  };
  const configFile = path.join(dir, 'config.yml');
  fs.writeFileSync(configFile, stringify(full));
  const { config, problems } = parseConfig(full, configFile, dir);
  if (!config) throw new Error(problems.join('\n'));
  return { dir, stateDir: config.stateDir, machinesDir, configFile, config };
}

/**
 * A tmpfs of `size` (mount(8)'s size=, e.g. '1m') at `dir` (0700, owned by root), unmounted in
 * teardown; needs root. A small one is a full or nearly full file system; statfs reports `size`.
 */
export function mountTmpfs(t: ExecutionContext, dir: string, size = '1m'): void {
  fs.mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  } catch (err) {
    throw new Error(`cannot mount a tmpfs at ${dir} (these tests need root and mount(8)): ${(err as Error).message}`);
  }
  t.teardown(() => execFileSync('umount', ['-l', dir]));
}

/** PIDs of processes whose command line mentions `needle` (read from /proc; nothing is signalled). */
export function pidsMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (cmd.includes(needle) && state !== 'Z') pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends a raw WebSocket upgrade request and resolves with the HTTP answer head. */
export async function rawUpgrade(httpUrl: string, extraHeaders: Record<string, string> = {}): Promise<string> {
  const net = await import('node:net');
  const url = new URL(httpUrl);
  const headers = { Host: url.host, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...extraHeaders };
  return new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(`GET ${url.pathname} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    });
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const end = got.indexOf('\r\n\r\n');
      if (end >= 0) {
        socket.destroy();
        resolve(got.slice(0, end));
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}
