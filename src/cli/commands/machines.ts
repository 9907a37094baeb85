// qwdctl machines list|show|check|add|import|download|build|remove.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { ConfigError, QwdError } from '../../errors.js';
import { readDescriptor, readDescriptors, checkImage, loadCatalog } from '../../catalog/catalog.js';
import { parseMachine, type Machine } from '../../catalog/descriptor.js';
import { parse as parseYaml } from 'yaml';
import { inspectImage } from '../../catalog/image-format.js';
import { allowedRoots, checkBackingChain, isInside, resolveFutureFile } from '../../catalog/backing-chain.js';
import { importDartsMachines } from '../../catalog/darts-import.js';
import { downloadImage, progressReporter } from '../../catalog/download.js';
import { runTool } from '../../qemu/run-tool.js';
import {
  DESKTOP_MACHINE, buildDesktopMachine, desktopPaths, formatDuration, formatMiB, phaseText, BUILD_PHASES,
} from '../../catalog/desktop-build.js';
import type { Config } from '../../config/schema.js';
import { CliContext, usage } from '../context.js';
import { json, table } from '../output.js';
import { prepareMachine } from '../../resume/prepare.js';
import { PREPARED_DIR, SLURM_BOOTS, checkPreparedState } from '../../resume/prepared.js';
import { chooseAccelerator, probeHostAccel, type AccelChoice } from '../../qemu/accel.js';
import { sessionAccel } from '../../launcher/local.js';
import { createLogger } from '../../log.js';

function machineJson(m: Machine) {
  return {
    name: m.name, description: m.description, image: m.image, format: m.format, arch: m.arch, firmware: m.firmware,
    diskInterface: m.diskInterface, cpus: m.cpus, memoryMiB: m.memoryMiB, url: m.url, sha256: m.sha256,
    display: m.display ?? null, agent: m.agent ?? null, guestAgent: m.guestAgent ?? false,
    clipboard: m.clipboard ?? 'both', file: m.file,
  };
}

/** Deep check of one machine: descriptor, image readable, format, backing chain inside machinesDir. */
export async function checkMachine(config: Config, machine: Machine): Promise<string[]> {
  const problems: string[] = [];
  const checked = await checkImage(machine, config.qemu.img, problems, config.machinesDir);
  if (!checked) return problems;
  if (checked.format === 'qcow2') {
    try {
      await runTool(
        config.qemu.img, ['check', '-q', '--force-share', machine.image],
        { timeoutMs: 120000, errorCode: 'QWD_IMAGE_INVALID' },
      );
    } catch (err) {
      problems.push(`${machine.file}: qemu-img check found problems in ${machine.image}: ${(err as Error).message}`);
    }
  }
  if (checked.arch === 'aarch64' || checked.firmware === 'uefi') {
    const firmware = config.qemu.uefi[checked.arch];
    if (!fs.existsSync(firmware)) {
      problems.push(`${machine.file}: needs UEFI firmware ${firmware} (qemu.uefi.${checked.arch}), which is missing`);
    }
  }
  return problems;
}

async function findDescriptor(config: Config, name: string) {
  const { files } = await readDescriptors(config.machinesDir);
  const found = files.find((f) => f.machine?.name === name);
  if (!found?.machine) {
    throw new QwdError(
      'QWD_UNKNOWN_MACHINE', `no machine "${name}" in ${config.machinesDir}`,
      { userMessage: `There is no machine "${name}" (see qwdctl machines list).` },
    );
  }
  return found.machine;
}

/**
 * Refuses (exit 4) to remove or replace what sessions use: their disks are
 * overlays whose backing file is the master image, so replacing it under them
 * corrupts what they see, and removing the descriptor strands them.
 * `sharingImageWith`: also count sessions of other machines with the same image.
 */
export async function refuseWhileInUse(
  ctx: CliContext, machine: Pick<Machine, 'name' | 'image'>, what: string,
  sharingImageWith: readonly Pick<Machine, 'name' | 'image'>[] = [],
): Promise<void> {
  const names = new Set([
    machine.name, ...sharingImageWith.filter((m) => m.image === machine.image).map((m) => m.name)
  ]);
  // The sessions as the store's writer knows them (the running broker, else this qwdctl under the writer lock).
  const users = (await ctx.withAdmin((admin) => admin.listSessions())).filter((r) => names.has(r.machine));
  if (!users.length) return;
  const ids = users.map((r) => (r.machine === machine.name ? r.id : `${r.id} (machine "${r.machine}", same image)`));
  const message = `machine "${machine.name}" is used by ${users.length} running session(s): ${ids.join(', ')}; stop ` +
    `them first (${what})`;
  throw new QwdError(
    'QWD_MACHINE_IN_USE', message,
    { userMessage: message, details: { machine: machine.name, sessions: users.map((r) => r.id) } },
  );
}

export async function downloadMachines(
  ctx: CliContext, name: string | undefined, opts: { force?: boolean; json?: boolean },
): Promise<void> {
  const config = ctx.config();
  const { files } = await readDescriptors(config.machinesDir);
  const all = files.map((f) => f.machine).filter((m): m is Machine => m !== null);
  const machines = all.filter((m) => name === undefined || m.name === name);
  if (name !== undefined && machines.length === 0) await findDescriptor(config, name); // throws "no machine"
  const results: Array<{ name: string; status: string; bytes?: number }> = [];
  let failure: unknown = null;
  for (const machine of machines) {
    if (!machine.url) {
      if (name !== undefined) throw usage(`machine "${machine.name}" has no url to download from`);
      continue;
    }
    if (fs.existsSync(machine.image) && !opts.force) {
      results.push({ name: machine.name, status: 'present' });
      if (!opts.json) ctx.print(`${machine.name}: ${machine.image} is present (--force to fetch again)`);
      continue;
    }
    try {
      // Written only inside the machines directory (symlinks followed), and checked before it takes the image's name.
      const roots = await allowedRoots(config.machinesDir);
      const landing = await resolveFutureFile(machine.image);
      if (!isInside(landing, roots)) {
        const message = `${machine.file}: image ${machine.image} resolves to ${landing}, outside the machines ` +
          `directory ${config.machinesDir}; not downloaded`;
        throw new QwdError('QWD_IMAGE_UNSAFE', message, { userMessage: message });
      }
      await fsp.mkdir(path.dirname(machine.image), { recursive: true });
      // --force replaces a master image: not while sessions' overlays are built on it.
      // Asked again just before the new image goes into place, as a download takes a while.
      const replacing = fs.existsSync(machine.image);
      const refuseIfReplacingUsed = () => (
        replacing ? refuseWhileInUse(
          ctx, machine, `--force would replace ${machine.image}, the backing file of their disks`, all,
        ) : undefined
      );
      await refuseIfReplacingUsed();
      const result = await downloadImage(machine.url, machine.image, {
        sha256: machine.sha256, onProgress: opts.json ? undefined : progressReporter(ctx.err, machine.name),
        beforeReplace: async () => {
          const chain = await checkBackingChain(
            config.qemu.img, `${machine.image}.part`, config.machinesDir, machine.format,
          );
          const message = `${machine.file}: the downloaded image was deleted: ${chain.violations.join('; ')}`;
          if (chain.violations.length) throw new QwdError('QWD_IMAGE_UNSAFE', message, { userMessage: message });
          await refuseIfReplacingUsed();
        },
      });
      results.push({ name: machine.name, status: 'downloaded', bytes: result.bytes });
      if (!opts.json) {
        ctx.print(
          `${machine.name}: ${result.bytes} bytes${result.resumedFrom ? ` (resumed at ${result.resumedFrom})` : ''}` +
            `${result.restartReason ? ` (partial download not continued: ${result.restartReason})` : ''}, sha256 ` +
            `${result.sha256}${machine.sha256 ? ' (verified)' : ''} → ${machine.image}`
        );
      }
    } catch (err) {
      const refused = ['QWD_MACHINE_IN_USE', 'QWD_IMAGE_UNSAFE'].includes((err as QwdError).code);
      results.push({
        name: machine.name,
        status: `${refused ? 'refused' : 'failed'}: ${(err as QwdError).userMessage ?? (err as Error).message}`,
      });
      failure ??= err;
    }
  }
  if (opts.json) ctx.print(json(results));
  else if (results.length === 0) ctx.print('no machine has a url to download');
  if (failure) throw failure;
}

/**
 * qwdctl machines build debian-desktop: the XFCE desktop machine from Debian
 * packages (catalog/desktop-build.ts). Present and no --force: nothing to do.
 * --force never replaces a master that sessions use (asked before and after the build).
 */
export async function buildMachine(
  ctx: CliContext, name: string, opts: { force?: boolean; mirror?: string; json?: boolean },
): Promise<void> {
  if (name !== DESKTOP_MACHINE) {
    throw usage(`qwdctl machines build knows one machine, "${DESKTOP_MACHINE}"; got "${name}"`);
  }
  if (opts.mirror !== undefined && !/^https?:\/\/\S+$/i.test(opts.mirror)) {
    throw usage(`--mirror must be an http:// or https:// URL of a Debian mirror, got ${JSON.stringify(opts.mirror)}`);
  }
  const config = ctx.config();
  const paths = desktopPaths(config.machinesDir);
  const refuseIfInUse = () => {
    // Other machines' descriptors on the same image count too; this machine's own may not
    // parse in this version (newer keys), so it is named by its paths.
    const { files } = readDescriptorsSync(config.machinesDir);
    return refuseWhileInUse(
      ctx, { name: DESKTOP_MACHINE, image: paths.image },
      `--force would replace ${paths.image}, the backing file of their disks`, files,
    );
  };
  const started = Date.now();
  let phaseStarted = started;
  let phaseIndex = 0;
  const progress = opts.json ? undefined : (event: { phase: (typeof BUILD_PHASES)[number] } | { info: string }) => {
    const t = Date.now();
    if ('phase' in event) {
      if (phaseIndex === 0) {
        ctx.err.write(
          `building ${DESKTOP_MACHINE} into ${config.machinesDir} (several minutes; the tools' output goes to ` +
            `${path.join(config.stateDir, 'build', `${DESKTOP_MACHINE}.log`)})\n`
        );
      }
      if (phaseIndex > 0) ctx.err.write(`      done in ${formatDuration(t - phaseStarted)}\n`);
      phaseIndex = BUILD_PHASES.indexOf(event.phase) + 1;
      phaseStarted = t;
      ctx.err.write(`[${phaseIndex}/${BUILD_PHASES.length}] ${phaseText(event.phase)}\n`);
    } else {
      ctx.err.write(`      ${event.info}\n`);
    }
  };
  const result = await buildDesktopMachine({
    machinesDir: config.machinesDir, stateDir: config.stateDir, qemuImg: config.qemu.img, mirror: opts.mirror ?? null,
    force: opts.force, refuseIfInUse, onProgress: progress,
  });
  if (result.status === 'present') {
    if (opts.json) {
      return ctx.print(
        json({ name: DESKTOP_MACHINE, status: 'present', descriptor: result.descriptor, image: result.image })
      );
    }
    return ctx.print(`${DESKTOP_MACHINE}: already built (${result.descriptor}, ${result.image}); --force rebuilds it`);
  }
  if (progress && phaseIndex > 0) ctx.err.write(`      done in ${formatDuration(Date.now() - phaseStarted)}\n`);
  if (opts.json) {
    return ctx.print(
      json({
        name: DESKTOP_MACHINE, status: 'built', descriptor: result.descriptor, image: result.image,
        diskBytes: result.diskBytes, elapsedMs: result.elapsedMs,
      })
    );
  }
  ctx.print(
    `built ${DESKTOP_MACHINE}: ${result.image} (${formatMiB(result.diskBytes)} on disk) and ${result.descriptor} in ` +
      `${formatDuration(result.elapsedMs)}`
  );
}

function readDescriptorsSync(dir: string): { files: Machine[] } {
  // Read again just before the swap, quickly: descriptors are few and small.
  const files: Machine[] = [];
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  } catch {
    return { files };
  }
  for (const entry of entries) {
    const file = path.join(dir, entry);
    try {
      const { machine } = parseMachine(parseYaml(fs.readFileSync(file, 'utf8')), file);
      if (machine) files.push(machine);
    } catch {
      // An unreadable or invalid descriptor names no image that sessions could use.
    }
  }
  return { files };
}

export async function checkMachines(ctx: CliContext, opts: { json?: boolean }): Promise<void> {
  const config = ctx.config();
  const { files, problems } = await readDescriptors(config.machinesDir);
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel());
  const report: Array<{
    file: string; name: string | null; ok: boolean; problems: string[]; resume?: ResumeStatus[];
  }> = [];
  const names = new Map<string, string>();
  for (const f of files) {
    const found = [...f.problems];
    if (f.machine) {
      const previous = names.get(f.machine.name);
      if (previous) found.push(`${f.file}: name "${f.machine.name}" is already used by ${previous}`);
      else names.set(f.machine.name, f.file);
      found.push(...(await checkMachine(config, f.machine)));
    }
    const resume = f.machine?.resume && found.length === 0 ? await resumeStatus(config, f.machine, accel) : undefined;
    report.push({
      file: f.file, name: f.machine?.name ?? null, ok: found.length === 0, problems: found,
      ...(resume ? { resume } : {}),
    });
  }
  if (opts.json) {
    ctx.print(json({ ok: problems.length === 0 && report.every((r) => r.ok), problems, machines: report }));
  }
  else {
    for (const p of problems) ctx.print(`✗ ${p}`);
    for (const r of report) {
      if (r.ok) ctx.print(`✓ ${r.name} (${path.basename(r.file)})`);
      else for (const p of r.problems) ctx.print(`✗ ${p}`);
      // Not problems: a size without a usable state boots, as every machine did before.
      for (const s of r.resume ?? []) {
        const what = s.usable ? `resumes its prepared state${s.except ? ` (${s.except})` : ''}` : `boots (${s.reason})`;
        ctx.print(`  ${s.cpus} CPU(s), ${s.memoryMiB} MiB: ${what}`);
      }
    }
    if (files.length === 0 && problems.length === 0) ctx.print(`no machine descriptors in ${config.machinesDir}`);
  }
  const all = [...problems, ...report.flatMap((r) => r.problems)];
  if (all.length) {
    const err = new ConfigError(all, 'QWD_MACHINE_INVALID');
    (err as ConfigError & { reported?: boolean }).reported = true;
    throw err;
  }
}

interface ResumeStatus {
  cpus: number;
  memoryMiB: number;
  usable: boolean;
  reason: string | null;
  /** Sessions that boot although the state is usable (a boot script applies to them), or null. */
  except: string | null;
}

/**
 * Per resume size: whether sessions of that size would resume, or why they boot. The descriptor as declared is
 * enough: its image was checked just before (checkMachine), and the device key does not depend on a detected format.
 */
async function resumeStatus(config: Config, machine: Machine, accel: AccelChoice): Promise<ResumeStatus[]> {
  // As the launcher decides for each session (LocalLauncher.resumeChoice): folders go to every session of the
  // machine; boot scripts only to those their conditions pick.
  const scripts = config.guest.bootScripts.length + machine.bootScripts.scripts.length;
  const except = scripts > 0 ? 'sessions that get a boot script boot' : null;
  return Promise.all((machine.resume?.sizes ?? []).map(async (size): Promise<ResumeStatus> => {
    if (config.launcher === 'slurm') return { ...size, usable: false, reason: SLURM_BOOTS, except: null };
    if (config.guest.shares.length + machine.shares.length > 0) {
      const reason = 'its sessions get host folders (guest.shares or the machine\'s shares), which a saved state lacks';
      return { ...size, usable: false, reason, except: null };
    }
    const choice = await checkPreparedState(config, machine, size, sessionAccel(machine, accel))
      .catch((err: Error) => ({ resume: false as const, reason: err.message }));
    return choice.resume ? { ...size, usable: true, reason: null, except } : {
      ...size, usable: false, reason: choice.reason, except: null,
    };
  }));
}

export async function prepareMachines(
  ctx: CliContext, name: string, opts: { cpus?: string; memory?: string; force?: boolean; json?: boolean },
): Promise<void> {
  const config = ctx.config();
  const catalog = await loadCatalog(config.machinesDir, config.qemu.img);
  const machine = catalog.get(name);
  if (!machine) {
    const why = catalog.problems.filter((p) => p.includes(name)).join('; ');
    throw new QwdError(
      'QWD_UNKNOWN_MACHINE', `no usable machine "${name}" in ${config.machinesDir}${why ? `: ${why}` : ''}`,
      { userMessage: `There is no usable machine "${name}" (see qwdctl machines check).` },
    );
  }
  if (!machine.resume) throw usage(`machine ${name} has no resume: profile in ${machine.file} (INSTALL.md, Resume)`);
  if (config.launcher === 'slurm') throw usage(`${SLURM_BOOTS}; nothing would use a state prepared here`);
  const cpus = opts.cpus === undefined ? undefined : Number(opts.cpus);
  const memoryMiB = opts.memory === undefined ? undefined : Number(opts.memory);
  for (const [flag, value] of [['--cpus', cpus], ['--memory', memoryMiB]] as const) {
    if (value !== undefined && (!Number.isInteger(value) || value <= 0)) {
      const given = flag === '--cpus' ? opts.cpus : opts.memory;
      throw usage(`${flag} must be a positive whole number, got ${JSON.stringify(given)}`);
    }
  }
  const sizes = machine.resume.sizes.filter(
    (s) => (cpus === undefined || s.cpus === cpus) && (memoryMiB === undefined || s.memoryMiB === memoryMiB),
  );
  if (sizes.length === 0) {
    const listed = machine.resume.sizes.map((s) => `--cpus ${s.cpus} --memory ${s.memoryMiB}`).join(', ');
    throw usage(`machine ${name} has no resume size with those values; its sizes: ${listed}`);
  }
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel());
  const log = createLogger('silent');
  const reports = [];
  // Ctrl-C (or a TERM) stops the prepare's VM and removes its work, instead of leaving QEMU running detached.
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    ctx.err.write(`${signal}: stopping the VM being prepared…\n`);
    interrupt.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    for (const size of sizes) {
      const report = await prepareMachine({ config, accel, log }, machine, size, {
        force: opts.force, onProgress: opts.json ? undefined : (line) => ctx.err.write(`${line}\n`),
        signal: interrupt.signal,
      });
      reports.push(report);
      if (!opts.json) {
        ctx.print(
          `prepared ${name} (${size.cpus} CPU(s), ${size.memoryMiB} MiB) in ${formatDuration(report.prepareMs)}: ` +
            `state ${formatMiB(report.stateBytes)}, disk ${formatMiB(report.diskBytes)}; resumed in ` +
            `${formatDuration(report.resumeMs)} (${report.dir})`,
        );
      }
    }
  } catch (err) {
    // The administrator gets what went wrong, not a viewer's "could not be started".
    if (err instanceof QwdError && err.code === 'QWD_PREPARE_FAILED') {
      throw new QwdError(err.code, err.message, { userMessage: err.message, cause: err });
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (opts.json) ctx.print(json({ prepared: reports }));
}

export function registerMachines(program: Command, ctx: CliContext): void {
  const machines = program.command('machines')
    .description('the machine catalog: list, check, prepare, add, import, download, build, remove');

  machines.command('list').alias('ls').description('machines the form offers')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const config = ctx.config();
      const catalog = await loadCatalog(config.machinesDir, config.qemu.img);
      const list = catalog.list();
      if (opts.json) return ctx.print(json({ machines: list.map(machineJson), problems: catalog.problems }));
      ctx.print(list.length ? table(list, [
        { header: 'NAME', value: (m) => m.name, keep: true },
        { header: 'ARCH', value: (m) => m.arch, keep: true },
        { header: 'FORMAT', value: (m) => m.format ?? '?', keep: true },
        { header: 'CPUS', value: (m) => `${m.cpus.default}/${m.cpus.max}`, keep: true },
        { header: 'MEMORY', value: (m) => `${m.memoryMiB.default}/${m.memoryMiB.max}M`, keep: true },
        { header: 'DESCRIPTION', value: (m) => m.description },
      ]) : 'no usable machine');
      if (catalog.problems.length) {
        ctx.err.write(`${catalog.problems.length} descriptor(s) skipped: run "qwdctl machines check"\n`);
      }
    });

  machines.command('show <name>').description('one machine: descriptor and image details')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const config = ctx.config();
      const machine = await findDescriptor(config, name);
      let image: unknown = 'missing';
      if (fs.existsSync(machine.image)) {
        image = await inspectImage(config.qemu.img, machine.image).catch((err: Error) => `unreadable: ${err.message}`);
      }
      const info = { ...machineJson(machine), imageInfo: image };
      ctx.print(
        opts.json ? json(info) : Object.entries(info)
          .map(([k, v]) => `${k.padEnd(13)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v ?? '-'}`)
          .join('\n')
      );
    });

  machines.command('check')
    .description('validate every descriptor and image (qemu-img info, format, backing chain, qemu-img check)')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => checkMachines(ctx, opts));

  machines.command('prepare <name>')
    .description('boot a machine with resume: once, save its state, and let sessions of that size resume it')
    .option('--cpus <n>', 'only the resume sizes with this many CPUs').option('--memory <MiB>', 'only this memory')
    .option('--force', 'prepare again a size that is already prepared').option('--json', 'machine-readable output')
    .action((name: string, opts: { cpus?: string; memory?: string; force?: boolean; json?: boolean }) =>
      prepareMachines(ctx, name, opts));

  machines.command('add <file>').description('validate a descriptor and copy it into the machines directory')
    .action(async (file: string) => {
      const config = ctx.config();
      const source = await readDescriptor(path.resolve(file));
      if (!source.machine) throw new ConfigError(source.problems, 'QWD_MACHINE_INVALID');
      const problems = await checkMachine(config, source.machine);
      if (problems.length) throw new ConfigError(problems, 'QWD_MACHINE_INVALID');
      const { files } = await readDescriptors(config.machinesDir);
      if (files.some((f) => f.machine?.name === source.machine!.name)) {
        throw usage(`a machine named "${source.machine.name}" already exists in ${config.machinesDir}`);
      }
      const dest = path.join(config.machinesDir, `${source.machine.name}.yml`);
      // Written with an absolute image path, so the copy points at the same image.
      const raw = (await import('yaml')).parse(await fsp.readFile(source.file, 'utf8')) as Record<string, unknown>;
      await fsp.mkdir(config.machinesDir, { recursive: true });
      await fsp.writeFile(dest, stringify({ ...raw, image: source.machine.image }), { flag: 'wx' });
      ctx.print(`added machine ${source.machine.name} → ${dest}`);
    });

  machines.command('import <machinesConf>')
    .description("convert DARTS's machines.conf into descriptors (then: qwdctl machines download)")
    .option('-n, --dry-run', 'print what would be written').option('--json', 'machine-readable output')
    .action(async (conf: string, opts: { dryRun?: boolean; json?: boolean }) => {
      const config = ctx.config();
      let text: string;
      try {
        text = await fsp.readFile(conf, 'utf8');
      } catch (err) {
        throw usage(`cannot read ${conf}: ${(err as NodeJS.ErrnoException).code ?? err}`);
      }
      const { machines: imported, warnings } = importDartsMachines(text, conf);
      const { files } = await readDescriptors(config.machinesDir);
      const existing = new Set(files.map((f) => f.machine?.name).filter(Boolean));
      const written: string[] = [];
      const skipped: string[] = [];
      for (const m of imported) {
        if (existing.has(m.name)) {
          skipped.push(m.name);
          warnings.push(`${m.name}: a machine of that name exists; not overwritten`);
          continue;
        }
        const dest = path.join(config.machinesDir, `${m.name}.yml`);
        if (!opts.dryRun) {
          await fsp.mkdir(config.machinesDir, { recursive: true });
          await fsp.writeFile(
            dest, `# Imported from ${path.resolve(conf)} by qwdctl machines import\n${stringify(m.descriptor)}`,
            { flag: 'wx' },
          );
        }
        written.push(dest);
      }
      if (opts.json) return ctx.print(json({ written, skipped, warnings, dryRun: Boolean(opts.dryRun) }));
      for (const w of warnings) ctx.err.write(`warning: ${w}\n`);
      for (const f of written) ctx.print(`${opts.dryRun ? 'would write' : 'wrote'} ${f}`);
      ctx.print(
        `${written.length} machine(s) ${opts.dryRun ? 'to import' : 'imported'}` +
          `${written.length ? '; fetch their images with: qwdctl machines download' : ''}`
      );
    });

  machines.command('download [name]')
    .description('fetch images that have a url (resumes partial downloads, verifies sha256)')
    .option('-f, --force', 'download again even if the image exists').option('--json', 'machine-readable output')
    .action((name: string | undefined, opts: { force?: boolean; json?: boolean }) => downloadMachines(ctx, name, opts));

  machines.command('build <name>')
    .description(`build a machine from Debian packages ("${DESKTOP_MACHINE}": Debian 12 + XFCE desktop)`)
    .option('-f, --force', 'rebuild even if it exists (refused while sessions use its image)')
    .option('--mirror <url>', "a Debian mirror to build from (default: this host's apt sources)")
    .option('--json', 'machine-readable output')
    .action(
      (name: string, opts: { force?: boolean; mirror?: string; json?: boolean }) => buildMachine(ctx, name, opts)
    );

  machines.command('remove <name>').description('remove a machine descriptor (and with --image, its image)')
    .option('--image', 'also delete the image file')
    .action(async (name: string, opts: { image?: boolean }) => {
      const config = ctx.config();
      const machine = await findDescriptor(config, name);
      const { files } = await readDescriptors(config.machinesDir);
      // With --image, sessions of other machines on the same image count too.
      await refuseWhileInUse(
        ctx, machine,
        opts.image ? `remove would delete ${machine.file} and ${machine.image}` : `remove would delete ${machine.file}`,
        opts.image ? files.map((f) => f.machine).filter((m): m is Machine => m !== null) : [],
      );
      await fsp.rm(machine.file);
      ctx.print(`removed ${machine.file}`);
      // Its prepared states (hundreds of MB each) serve nothing once the machine is gone.
      const prepared = path.join(config.machinesDir, PREPARED_DIR, machine.name);
      if (fs.existsSync(prepared)) {
        await fsp.rm(prepared, { recursive: true, force: true });
        ctx.print(`removed ${prepared}`);
      }
      if (opts.image) {
        await fsp.rm(machine.image, { force: true });
        ctx.print(`removed ${machine.image}`);
      }
    });
}
