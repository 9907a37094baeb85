// qwdctl config check|show|path, and `edit config|machines` (DARTS's edit).
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { Config } from '../../config/schema.js';
import { ConfigError } from '../../errors.js';
import { CliContext, usage } from '../context.js';
import { json } from '../output.js';
import { checkMachines } from './machines.js';

const SECRET = /password|secret|token|key$/i;

/** The effective config with anything secret-looking masked. */
export function maskSecrets(value: unknown, key = ''): unknown {
  if (value === null || value === undefined) return value;
  if (typeof value === 'string' && SECRET.test(key)) return '********';
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v));
  if (typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskSecrets(v, k)]));
  }
  return value;
}

export function registerConfig(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('validate and show the configuration');

  config.command('check').description('validate the config (every problem at once, with file and key)')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      let c: Config;
      try {
        c = ctx.config(); // throws ConfigError listing every problem
      } catch (err) {
        if (!opts.json || !(err instanceof ConfigError)) throw err;
        // Scripts read the problems from stdout; the exit code (6) still says it failed.
        ctx.print(json({ ok: false, problems: err.problems }));
        throw Object.assign(err, { reported: true });
      }
      ctx.print(opts.json ? json({ ok: true, source: c.source }) : `config OK: ${c.source ?? '(embedded defaults)'}`);
    });

  config.command('show').description('the effective config (defaults filled in, secrets masked)')
    .option('--json', 'JSON instead of YAML')
    .action((opts: { json?: boolean }) => {
      const c = maskSecrets(ctx.config()) as Config;
      ctx.print(opts.json ? json(c) : stringify(c));
    });

  config.command('path').description('which config file is used').option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      const source = ctx.config().source;
      ctx.print(
        opts.json
          ? json({ path: source ?? null })
          : source ?? '(embedded defaults: no config file; use --config FILE or QWD_CONFIG)'
      );
    });
}

/** Opens $VISUAL/$EDITOR (argv split on spaces, never a shell) and waits. */
function openEditor(file: string): Promise<void> {
  const editor = (process.env.VISUAL || process.env.EDITOR || 'vi').trim().split(/\s+/);
  return new Promise((resolve, reject) => {
    const child = spawn(editor[0]!, [...editor.slice(1), file], { stdio: 'inherit' });
    child.on('error', (err) => reject(usage(`cannot start the editor ${editor[0]}: ${err.message} (set $EDITOR)`)));
    child.on(
      'exit', (code) => (code === 0 ? resolve() : reject(usage(`the editor exited with ${code}; nothing validated`))),
    );
  });
}

export function registerEdit(program: Command, ctx: CliContext): void {
  program.command('edit <what> [name]').description(
    'DARTS alias: edit the config (edit config) or a machine descriptor (edit machines NAME), then validate'
  )
    .action(async (what: string, name: string | undefined) => {
      if (what === 'config') {
        const file = ctx.config().source;
        if (!file) {
          throw usage(
            'no config file in use: copy etc/qemu-web-desktop/config.example.yml and pass --config or set QWD_CONFIG'
          );
        }
        await openEditor(file);
        ctx.config();
        ctx.print(`config OK: ${file}`);
      } else if (what === 'machines' || what === 'machine') {
        if (!name) throw usage('which machine? qwdctl edit machines NAME (see qwdctl machines list)');
        if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) throw usage(`not a machine name: ${JSON.stringify(name)}`);
        await openEditor(path.join(ctx.config().machinesDir, `${name}.yml`));
        await checkMachines(ctx, {});
      } else throw usage(`edit what? "config" or "machines NAME", got ${JSON.stringify(what)}`);
    });
}
