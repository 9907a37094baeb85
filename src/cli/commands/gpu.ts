// qwdctl gpu list|check: passthrough-ready GPUs, their IOMMU groups, whether
// usable (and why not), who holds each; and the host prerequisites.
import type { Command } from 'commander';
import { checkVfioHost, readBrokerMemlock, readProcessIdentity, systemdMainPid } from '../../gpu/check-host.js';
import { CliContext, usage } from '../context.js';
import { runningBroker } from '../../admin/broker-address.js';
import { json, table } from '../output.js';
import { QwdError } from '../../errors.js';

export function registerGpu(program: Command, ctx: CliContext): void {
  const gpu = program.command('gpu').description('VFIO GPUs: list devices and check the host (see GPU.md)');

  gpu.command('list').alias('ls')
    .description('GPUs, their IOMMU groups, usable or why not, and which session holds each')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin, config) => {
        const gpus = await admin.gpuStatus();
        if (opts.json) {
          return ctx.print(
            json(
              gpus.map(
                (g) => ({
                  address: g.address, vendor: g.vendor, device: g.device, driver: g.driver, iommuGroup: g.iommuGroup,
                  displayFunctions: g.displayFunctions, functions: g.functions.map((f) => f.address), usable: g.usable,
                  reason: g.reason || null, heldBy: g.heldBy,
                })
              )
            )
          );
        }
        if (gpus.length === 0) {
          return ctx.print(
            `no GPU (PCI display device) found under ${config.gpu.sysfsRoot}: the GPU option is not offered`
          );
        }
        ctx.print(table(gpus, [
          { header: 'ADDRESS', value: (g) => g.address, keep: true },
          { header: 'ID', value: (g) => `${g.vendor.replace('0x', '')}:${g.device.replace('0x', '')}`, keep: true },
          { header: 'GROUP', value: (g) => g.iommuGroup ?? '-', keep: true },
          // Functions on the GPU's own bus as "00.1"; others of the group (a second card) as "02:00.0".
          {
            header: 'FUNCTIONS',
            value: (g) => g.functions.map(
              (f) => (f.address.slice(0, 7) === g.address.slice(0, 7) ? f.address.slice(-4) : f.address.slice(5))
            ).join(','),
          },
          {
            header: 'STATE', value: (g) => (g.heldBy ? `held by ${g.heldBy}` : g.usable ? 'free' : 'not usable'),
            keep: true,
          },
        ]));
        for (const g of gpus.filter((x) => !x.usable)) ctx.print(`${g.address}: ${g.reason}`);
      });
    });

  gpu.command('check')
    .description('is this host ready for passthrough? (IOMMU, vfio modules, /dev/vfio, memlock) and what to change')
    .option('--json', 'machine-readable output')
    .option(
      '--pid <pid>',
      `the running broker's pid, whose memlock limit and user are checked (default: the pid the broker recorded in ` +
        `the state dir, else the MainPID of qemu-web-desktop.service, else its installed unit file)`,
    )
    .action(async (opts: { json?: boolean; pid?: string }) => {
      if (opts.pid !== undefined && !/^[1-9]\d*$/.test(opts.pid)) {
        throw usage(`--pid must be a process id, got ${JSON.stringify(opts.pid)}`);
      }
      await ctx.withAdmin(async (admin, config) => {
        const largest = Math.max(
          0,
          ...(await admin.hostStatus()).machines
            .map((m) => Math.min(m.maxMemoryMiB, config.limits.maxMemoryMiBPerSession))
        );
        const gpus = await admin.gpuStatus();
        // QEMU inherits the broker's limits: read them from the broker, not from this qwdctl.
        const brokerPid = opts.pid ? Number(opts.pid) : recordedBrokerPid(config.stateDir) ?? systemdMainPid();
        const checks = checkVfioHost(config.gpu.sysfsRoot, largest, readBrokerMemlock({ brokerPid }), {
          usableGroups: [...new Set(gpus.filter((g) => g.usable && g.iommuGroup !== null).map((g) => g.iommuGroup!))],
          broker: brokerPid ? readProcessIdentity(brokerPid) : null,
        });
        const ok = checks.every((c) => c.ok) && gpus.some((g) => g.usable);
        if (opts.json) ctx.print(json({ ok, checks, usableGpus: gpus.filter((g) => g.usable).map((g) => g.address) }));
        else {
          for (const c of checks) {
            ctx.print(`${c.ok ? '✓' : '✗'} ${c.name}: ${c.detail}${c.ok ? '' : `\n    fix: ${c.fix}`}`);
          }
          const unusable = gpus.length
            ? `: ${gpus.map((g) => `${g.address} ${g.reason}`).join('; ')}`
            : ' (no PCI display device bound to vfio-pci)';
          ctx.print(
            gpus.some((g) => g.usable)
              ? `✓ usable GPUs: ${gpus.filter((g) => g.usable).map((g) => g.address).join(', ')}`
              : `✗ no usable GPU${unusable}\n` +
                '    fix: bind the GPU and its group to vfio-pci (GPU.md, "Bind the GPU to vfio-pci")',
          );
        }
        if (!ok) {
          throw Object.assign(
            new QwdError(
              'QWD_CONFIG_INVALID', 'the host is not ready for GPU passthrough',
              { userMessage: 'This host is not ready for GPU passthrough (see above and GPU.md).' },
            ),
            { reported: true },
          );
        }
      });
    });
}

/** The pid a running broker recorded in the state dir (admin/broker-address.ts), if that process is still there. */
function recordedBrokerPid(stateDir: string): number | null {
  return runningBroker(stateDir)?.pid ?? null;
}
