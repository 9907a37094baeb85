// qwdctl status: host load, GPUs, version, config, and the session table.
import type { Command } from 'commander';
import { VERSION } from '../../main.js';
import { CliContext } from '../context.js';
import { json } from '../output.js';
import { sessionJson, sessionsTable } from './sessions.js';

/** Counts for the status header: every GPU found, usable ones, free (usable, unheld) and held. */
export function gpuSummary(gpus: ReadonlyArray<{ address: string; usable: boolean; heldBy: string | null }>) {
  return {
    total: gpus.length,
    usable: gpus.filter((g) => g.usable).length,
    free: gpus.filter((g) => g.usable && !g.heldBy).length,
    held: gpus.filter((g) => g.heldBy).length,
    heldBy: gpus.filter((g) => g.heldBy).map((g) => ({ address: g.address, sessionId: g.heldBy! })),
  };
}

export function registerStatus(program: Command, ctx: CliContext): void {
  program.command('status').description('host load, GPUs, version, config and all sessions')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin, config) => {
        const { host, accel, machines, launcher } = await admin.hostStatus();
        const rows = await admin.listSessions();
        // Job columns where the running launcher's VMs are scheduler jobs (Slurm): asked of the launcher, not named.
        const scheduler = launcher?.jobs ? new Map(
          await Promise.all(rows.map(async (r) => [r.id, await admin.schedulerInfo(r.id)] as const))
        ) : null;
        const gpus = gpuSummary(await admin.gpuStatus());
        const reserved = {
          cpus: rows.reduce((n, r) => n + r.cpus, 0), memoryMiB: rows.reduce((n, r) => n + r.memoryMiB, 0),
        };
        const base = ctx.baseUrl(config); // once: it may read the running broker's address file
        const info = {
          version: VERSION,
          config: config.source,
          stateDir: config.stateDir,
          launcher: config.launcher,
          accelerator: { accel: accel.accel, reason: accel.reason },
          host: {
            cpus: host.cpus, load1: Math.round(host.load1 * 100) / 100, totalMemoryMiB: host.totalMemoryMiB,
            availableMemoryMiB: host.availableMemoryMiB,
          },
          reserved,
          gpus,
          limits: { maxSessions: config.limits.maxSessions, maxSessionsPerUser: config.limits.maxSessionsPerUser },
          machines: machines.length,
          sessions: rows.map(
            (r) => ({
              ...sessionJson(r, base),
              ...(
                scheduler ? { jobState: scheduler.get(r.id)?.jobState ?? null, slurm: scheduler.get(r.id) ?? null } : {}
              )
            })
          ),
        };
        if (opts.json) return ctx.print(json(info));
        const heldBy = gpus.heldBy.length
          ? ` (${gpus.heldBy.map((h) => `${h.address} by ${h.sessionId}`).join(', ')})`
          : '';
        ctx.print([
          `qemu-web-desktop ${VERSION} · config ${config.source ?? '(embedded defaults)'} · state ${config.stateDir}`,
          `host: ${host.cpus} CPUs, load ${info.host.load1}, memory ${host.availableMemoryMiB}/${host.totalMemoryMiB}` +
            ` MiB free · ${accel.accel} (${accel.reason})`,
          `sessions: ${rows.length}/${config.limits.maxSessions}, reserved ${reserved.cpus} CPUs and ` +
            `${reserved.memoryMiB} MiB · ${machines.length} machine(s)`,
          `GPUs: ${gpus.total === 0
            ? 'none'
            : `${gpus.usable} usable of ${gpus.total}, ${gpus.free} free, ${gpus.held} held${heldBy}`}`,
          '',
        ].join('\n'));
        ctx.print(sessionsTable(rows, Date.now(), scheduler));
      });
    });
}
