// What machine the numbers were taken on: CPU model and count, RAM, kernel,
// Node, QEMU and websockify versions. Read from /proc and from the programs'
// own --version; the accelerator comes from the broker's /healthz.
import fs from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';

export interface HostInfo {
  cpuModel: string;
  logicalCpus: number;
  memTotalMiB: number;
  kernel: string;
  node: string;
  qemu: string;
  websockify: string;
}

function firstLine(file: string, argv: string[]): string {
  const r = spawnSync(file, argv, { encoding: 'utf8', timeout: 10000 });
  if (r.error || r.status !== 0) return `unknown (${file} ${argv.join(' ')} failed: ${r.error?.message ?? r.stderr.trim()})`;
  return r.stdout.split('\n')[0]!.trim();
}

export function readHostInfo(qemuBinary: string): HostInfo {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const memKiB = Number(/^MemTotal:\s+(\d+) kB$/m.exec(meminfo)?.[1] ?? 0);
  // websockify has no --version; the Debian package says which it is.
  const dpkg = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'websockify'], { encoding: 'utf8', timeout: 10000 });
  return {
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown (no "model name" in /proc/cpuinfo)',
    logicalCpus: os.availableParallelism(),
    memTotalMiB: Math.round(memKiB / 1024),
    kernel: `${os.type()} ${os.release()} ${os.machine()}`,
    node: process.version,
    qemu: firstLine(qemuBinary, ['--version']),
    websockify: dpkg.status === 0 && dpkg.stdout ? `${dpkg.stdout.trim()} (Debian package)` : 'unknown version',
  };
}

/** Total time (µs) some runnable task waited for a CPU, from /proc/pressure/cpu (PSI); null where the kernel has no PSI. */
export function readCpuPressureUs(): number | null {
  try {
    const m = /^some .* total=(\d+)$/m.exec(fs.readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Measures CPU pressure over a stretch of time: call the returned function at its end. */
export function startPressureWatch(): () => { pct: number | null; load1: number } {
  const startUs = readCpuPressureUs();
  const startMs = Date.now();
  return () => {
    const endUs = readCpuPressureUs();
    const wallUs = (Date.now() - startMs) * 1000;
    return { pct: startUs === null || endUs === null || wallUs <= 0 ? null : ((endUs - startUs) / wallUs) * 100, load1: os.loadavg()[0]! };
  };
}

/** The 10-second average of CPU pressure (PSI "some avg10", %), or null without PSI. */
export function readCpuPressureAvg10(): number | null {
  try {
    const m = /^some avg10=([\d.]+)/m.exec(fs.readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Waits (at most maxMs) until other work on the host leaves the CPUs alone:
 * PSI "some avg10" under thresholdPct. Resolves with how long it waited and
 * whether the host got quiet; without PSI it does not wait.
 */
export async function waitForQuietHost(maxMs: number, thresholdPct: number, log: (line: string) => void): Promise<{ waitedS: number; quiet: boolean; avg10: number | null }> {
  const start = Date.now();
  let said = false;
  for (;;) {
    const avg10 = readCpuPressureAvg10();
    if (avg10 === null || avg10 < thresholdPct) return { waitedS: (Date.now() - start) / 1000, quiet: true, avg10 };
    if (Date.now() - start >= maxMs) return { waitedS: (Date.now() - start) / 1000, quiet: false, avg10 };
    if (!said) {
      log(`bench: the host is busy (CPU pressure avg10 ${avg10} % ≥ ${thresholdPct} %); waiting up to ${Math.round(maxMs / 1000)} s for it to calm down`);
      said = true;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
