// qwdctl: the administrator's command line and the broker's entry point
// (`qwdctl serve`). A composition root: it loads the config, and each command
// asks the running broker (admin socket) or, when none runs, builds what it
// needs itself under the store's writer lock (context.ts). `qwdctl <noun>
// <verb>`, --json on every read command, and DARTS's verbs as aliases. Exit
// codes: 0 ok, 1 usage, then one per error family (EXIT_CODES, in INSTALL.md).
import { Command, CommanderError } from 'commander';
import { ConfigError, QwdError, describeCauses, type ErrorFamily } from '../errors.js';
import { createLogger } from '../log.js';
import { VERSION, startBroker } from '../main.js';
import { CliContext } from './context.js';
import { registerSessions, startSession, stopSessions, type StartOptions } from './commands/sessions.js';
import { registerMachines, checkMachines, downloadMachines } from './commands/machines.js';
import { registerConfig, registerEdit } from './commands/config.js';
import { registerStatus } from './commands/status.js';
import { registerCompletion } from './commands/completion.js';
import { registerGpu } from './commands/gpu.js';
import { registerUsers } from './commands/users.js';
import { registerAudit } from './commands/audit.js';
import { json } from './output.js';

export const EXIT_CODES: Record<ErrorFamily, number> = {
  usage: 1,
  'not-found': 3,
  gone: 3,
  refused: 4,
  launch: 5,
  config: 6,
  download: 7,
  internal: 70,
};

export function buildProgram(ctx?: CliContext): { program: Command; ctx: CliContext } {
  const program = new Command('qwdctl')
    .description('qemu-web-desktop: virtual-machine desktops in the browser')
    .version(VERSION, '-V, --version')
    .option('-c, --config <file>', 'config file (default: $QWD_CONFIG, else the embedded defaults)')
    .option('--state-dir <dir>', 'state directory (default: $QWD_STATE_DIR, else ./var)')
    .option('-v, --verbose', 'show operator detail and the cause chain of errors')
    .showHelpAfterError()
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => (ctx?.out ?? process.stdout).write(s), writeErr: (s) => (ctx?.err ?? process.stderr).write(s),
    });
  const context = ctx ?? new CliContext(program);
  if (ctx) Object.assign(ctx, { program });

  program.command('serve').description('run the broker (web form, API, WebSocket bridge, purge job)')
    .option('-p, --port <port>', 'listen port (default: $QWD_PORT, else 8080)')
    .action(async (opts: { port?: string }) => {
      const config = context.config({ port: opts.port });
      const log = createLogger(config.log.level);
      const broker = await startBroker(config, log);
      context.print(`qemu-web-desktop ${VERSION} listening on ${broker.url}`);
      const shutdown = (signal: string) => {
        log.info({ signal }, 'shutting down; running desktops keep running');
        broker.close().then(() => process.exit(0), () => process.exit(1));
      };
      process.once('SIGINT', () => shutdown('SIGINT'));
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      await new Promise(() => {}); // serve until a signal
    });

  registerStatus(program, context);
  registerSessions(program, context);
  registerMachines(program, context);
  registerGpu(program, context);
  registerUsers(program, context);
  registerAudit(program, context);

  program.command('purge')
    .description('stop expired sessions, clean up dead ones, delete orphan run dirs (what the cron job does)')
    .option('-n, --dry-run', 'only print what would be done').option('--json', 'machine-readable output')
    .action(async (opts: { dryRun?: boolean; json?: boolean }) => {
      await context.withAdmin(async (admin) => {
        const report = await admin.purge({ dryRun: opts.dryRun ?? false });
        if (opts.json) return context.print(json(report));
        const verb = report.dryRun ? 'would' : 'did';
        for (const a of report.actions) {
          // Logged by the broker (purge action failed); the next run finds the session again. A broker older than
          // qwdctl sends no failedActions.
          const failed = (report.failedActions ?? []).some((f) => f.id === a.id) ? ': FAILED, see the log' : '';
          context.print(`${verb} ${a.action} session ${a.id} (${a.reason})${failed}`);
        }
        for (const d of report.orphanDirs) context.print(`${verb} delete orphan run dir ${d}`);
        if (!report.actions.length && !report.orphanDirs.length) context.print('nothing to purge');
      });
    });

  registerConfig(program, context);
  program.command('version').description('print the version').option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => context.print(opts.json ? json({ version: VERSION }) : VERSION));
  registerCompletion(program, context);

  // DARTS compatibility: the verbs its admins already type.
  program.command('start <machine>').description('DARTS alias of "sessions start"')
    .option('--cpus <n>', 'CPUs').option('--memory <MiB>', 'memory in MiB')
      .option('--lifetime <duration>', 'life-time, e.g. 2h')
    .option('--user <name>', 'owner').option('--json', 'machine-readable output')
    .action((machine: string, opts: StartOptions) => startSession(context, machine, opts));
  program.command('stop [ids...]')
    .description('DARTS alias of "sessions stop" (no id: all sessions, after confirmation)')
    .option('-y, --yes', 'do not ask for confirmation').option('--json', 'machine-readable output')
    .action(
      (
        ids: string[], opts: { yes?: boolean; json?: boolean }
      ) => stopSessions(context, ids, { ...opts, all: ids.length === 0 })
    );
  program.command('download [name]').description('DARTS alias of "machines download"')
    .option('-f, --force', 'download again').option('--json', 'machine-readable output')
    .action(
      (name: string | undefined, opts: { force?: boolean; json?: boolean }) => downloadMachines(context, name, opts)
    );
  program.command('refresh').description('DARTS alias of "machines check"').option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => checkMachines(context, opts));
  registerEdit(program, context);

  // Help on every level: "qwdctl sessions" alone shows the verbs.
  for (const noun of program.commands) {
    if (noun.commands.length) noun.action(() => noun.help({ error: true }));
  }
  return { program, ctx: context };
}

export async function run(argv: string[], ctx?: CliContext): Promise<number> {
  const { program, ctx: context } = buildProgram(ctx);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit through here with code 0; usage errors with 1.
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
        ? 0
        : EXIT_CODES.usage;
    }
    const verbose = argv.includes('-v') || argv.includes('--verbose');
    if (err instanceof ConfigError) {
      if (!(err as ConfigError & { reported?: boolean }).reported) {
        context.err.write(
          `qwdctl: ${err.code === 'QWD_MACHINE_INVALID' ? 'machine problems' : 'configuration problems'}:\n` +
            `${err.problems.map((p) => `  - ${p}`).join('\n')}\n`
        );
      }
      return EXIT_CODES.config;
    }
    if (err instanceof QwdError) {
      context.err.write(`qwdctl: ${err.userMessage}\n`);
      if ((err as QwdError & { reported?: boolean }).reported) return EXIT_CODES[err.family];
      if (verbose) context.err.write(describeCauses(err).map((l) => `  ${l}`).join('\n') + '\n');
      return EXIT_CODES[err.family];
    }
    context.err.write(`qwdctl: ${(err as Error)?.message ?? String(err)}\n`);
    if (verbose) context.err.write(((err as Error)?.stack ?? '') + '\n');
    return EXIT_CODES.internal;
  }
}
