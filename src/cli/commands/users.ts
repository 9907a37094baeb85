// qwdctl users add|passwd|del|list|admin — local accounts (scrypt hashes in
// the store). Passwords are read from the terminal (not echoed) or from
// standard input, never from the command line where ps would show them.
// qwdctl tokens issue|list|revoke — API tokens for scripts.
import readline from 'node:readline';
import type { Command } from 'commander';
import { hashPassword } from '../../auth/password-hash.js';
import { USER_NAME } from '../../auth/types.js';
import { hashToken, newApiToken } from '../../auth/service.js';
import { EMAIL } from '../../sessions/request.js';
import { QwdError } from '../../errors.js';
import { CliContext, usage } from '../context.js';
import { json, shortTime, table } from '../output.js';

const MIN_PASSWORD = 8;

/** Reads one password: hidden prompt (twice) on a terminal, else the first line of stdin. */
export async function readPassword(prompt: string): Promise<string> {
  if (!process.stdin.isTTY) {
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
      rl.close();
      return line;
    }
    return '';
  }
  const ask = (q: string) => new Promise<string>((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    const out = rl as unknown as { _writeToOutput: (s: string) => void; output: NodeJS.WritableStream };
    out._writeToOutput = (s: string) => {
      // Echo the prompt, hide what is typed.
      if (s.includes(q)) out.output.write(s);
    };
    rl.question(q, (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
  });
  const first = await ask(prompt);
  const again = await ask('Again: ');
  if (first !== again) throw usage('the two passwords differ; nothing changed');
  return first;
}

function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD) {
    throw usage(`the password must have at least ${MIN_PASSWORD} characters; nothing changed`);
  }
  if (password.length > 1024) throw usage('the password is too long (at most 1024 characters); nothing changed');
}

function checkName(name: string): void {
  if (!USER_NAME.test(name)) {
    throw usage(
      `user name must be 1 to 64 letters, digits or . _ @ + - (starting with a letter or digit), got ` +
        `${JSON.stringify(name.slice(0, 64))}`
    );
  }
}

export function registerUsers(program: Command, ctx: CliContext): void {
  const users = program.command('users')
    .description('local accounts (auth backend "local"): add, passwd, del, list, admin');

  users.command('add <name>').description('create an account; the password is read from a prompt or standard input')
    .option('--email <address>', 'address for end-of-life warnings').option('--admin', 'give administrator rights')
    .action(async (name: string, opts: { email?: string; admin?: boolean }) => {
      checkName(name);
      if (opts.email !== undefined && !EMAIL.test(opts.email)) {
        throw usage(`--email must be an e-mail address, got ${JSON.stringify(opts.email)}`);
      }
      await ctx.withAdmin(async (admin) => {
        if (await admin.hasUser(name)) throw usage(`user ${name} already exists (use: qwdctl users passwd ${name})`);
        const password = await readPassword(`Password for ${name}: `);
        checkPassword(password);
        await admin.addUser({
          name, hash: await hashPassword(password), email: opts.email ?? null, admin: Boolean(opts.admin),
          createdAt: Date.now(),
        });
        ctx.print(`added user ${name}${opts.admin ? ' (admin)' : ''}`);
      });
    });

  users.command('passwd <name>').description("change an account's password (prompt or standard input)")
    .action(async (name: string) => {
      checkName(name);
      await ctx.withAdmin(async (admin) => {
        if (!await admin.hasUser(name)) {
          throw new QwdError('QWD_NOT_FOUND', `no user ${name}`, { userMessage: `There is no local user ${name}.` });
        }
        const password = await readPassword(`New password for ${name}: `);
        checkPassword(password);
        await admin.setUserHash(name, await hashPassword(password));
        ctx.print(`password of ${name} changed`);
      });
    });

  users.command('del <name>').alias('remove').description('delete an account')
    .action(async (name: string) => {
      checkName(name);
      await ctx.withAdmin(async (admin) => {
        const removed = await admin.removeUser(name); // its API tokens go with it
        if (!removed) {
          throw new QwdError('QWD_NOT_FOUND', `no user ${name}`, { userMessage: `There is no local user ${name}.` });
        }
        ctx.print(
          `deleted user ${name}` +
            `${removed.tokens ? ` and its ${removed.tokens} API token${removed.tokens === 1 ? '' : 's'}` : ''}`
        );
      });
    });

  users.command('admin <name> <onOff>').description('give (on) or take (off) administrator rights')
    .action(async (name: string, onOff: string) => {
      checkName(name);
      if (onOff !== 'on' && onOff !== 'off') throw usage(`admin takes "on" or "off", got ${JSON.stringify(onOff)}`);
      await ctx.withAdmin(async (admin) => {
        if (!await admin.setUserAdmin(name, onOff === 'on')) {
          throw new QwdError('QWD_NOT_FOUND', `no user ${name}`, { userMessage: `There is no local user ${name}.` });
        }
        ctx.print(`${name} is ${onOff === 'on' ? 'now' : 'no longer'} an administrator`);
      });
    });

  users.command('list').alias('ls').description('accounts (never passwords)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin) => {
        const list = (await admin.listUsers()).map(
          (u) => ({ name: u.name, email: u.email, admin: u.admin, createdAt: new Date(u.createdAt).toISOString() })
        );
        if (opts.json) return ctx.print(json(list));
        ctx.print(list.length ? table(list, [
          { header: 'NAME', value: (u) => u.name },
          { header: 'ADMIN', value: (u) => (u.admin ? 'yes' : ''), keep: true },
          { header: 'CREATED', value: (u) => u.createdAt.slice(0, 10), keep: true },
          { header: 'EMAIL', value: (u) => u.email ?? '' },
        ]) : 'no local users');
      });
    });

  const tokens = program.command('tokens')
    .description('API tokens for scripts (Authorization: Bearer …): issue, list, revoke');
  tokens.command('issue <user>')
    .description('print a new API token that acts as USER (shown once, stored only as a hash)')
    .option('--admin', 'the token has administrator rights').option('--json', 'machine-readable output')
    .action(async (user: string, opts: { admin?: boolean; json?: boolean }) => {
      checkName(user);
      await ctx.withAdmin(async (admin) => {
        const { id, token } = newApiToken();
        await admin.addApiToken({
          id, hash: hashToken(token), user, admin: Boolean(opts.admin), createdAt: Date.now(),
        });
        ctx.print(opts.json ? json({ id, user, admin: Boolean(opts.admin), token }) : token);
        if (!opts.json) {
          ctx.err.write(
            `token ${id} for ${user}${opts.admin ? ' (admin)' : ''}: keep it secret; revoke with: qwdctl tokens ` +
              `revoke ${id}\n`
          );
        }
      });
    });
  tokens.command('list').alias('ls').description('issued tokens (never the tokens themselves)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      await ctx.withAdmin(async (admin) => {
        const list = await admin.listApiTokens();
        if (opts.json) {
          return ctx.print(
            json(
              list.map(
                (k) => ({
                  ...k, createdAt: new Date(k.createdAt).toISOString(),
                  lastUsedAt: k.lastUsedAt ? new Date(k.lastUsedAt).toISOString() : null,
                })
              )
            )
          );
        }
        ctx.print(list.length ? table(list, [
          { header: 'ID', value: (k) => k.id, keep: true },
          { header: 'USER', value: (k) => k.user },
          { header: 'ADMIN', value: (k) => (k.admin ? 'yes' : ''), keep: true },
          { header: 'CREATED', value: (k) => shortTime(k.createdAt), keep: true },
          { header: 'LAST USED', value: (k) => (k.lastUsedAt ? shortTime(k.lastUsedAt) : 'never'), keep: true },
        ]) : 'no API tokens');
      });
    });
  tokens.command('revoke <id>').description('revoke a token')
    .action(async (id: string) => {
      if (!/^[0-9a-f]{8}$/.test(id)) {
        throw usage(
          `token id must be the 8-character id shown by "qwdctl tokens list", got ${JSON.stringify(id.slice(0, 20))}`
        );
      }
      await ctx.withAdmin(async (admin) => {
        if (!await admin.revokeApiToken(id)) {
          throw new QwdError('QWD_NOT_FOUND', `no token ${id}`, { userMessage: `There is no token ${id}.` });
        }
        ctx.print(`revoked token ${id}`);
      });
    });
}
