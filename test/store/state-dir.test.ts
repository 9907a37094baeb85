// The store's files are 0600 whatever the umask, and neither the broker nor
// qwdctl opens a store in a directory others can write (or under a parent
// others can write without the sticky bit, as sshd's StrictModes): the real
// broker (`qwdctl serve`) and the real qwdctl in their own processes.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { openDb, assertSafeStateDir } from '../../src/store/db.js';
import { ROOT, makeSetup, tempDir, waitFor } from '../helpers/env.js';
import { qwdctl } from '../helpers/cli.js';
import { umaskEnv } from '../helpers/umask.js';

const DB_FILES = ['qwd.sqlite', 'qwd.sqlite-wal', 'qwd.sqlite-shm'];

test('the broker started with umask 000 keeps the database, -wal and -shm 0600', async (t) => {
  const setup = makeSetup(t);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), '--config', setup.configFile, 'serve'], {
    cwd: ROOT, env: { ...process.env, ...umaskEnv(setup.dir, 0o000) }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  await waitFor('the broker to listen', () => /listening on http/.test(out), 60_000);
  for (const name of DB_FILES) t.is(fs.statSync(path.join(setup.stateDir, name)).mode & 0o777, 0o600, name);
  t.is(fs.statSync(setup.stateDir).mode & 0o777, 0o700);
  child.kill('SIGTERM');
  await exited;
});

test('an existing database with another mode is set back to 0600', (t) => {
  const dir = path.join(tempDir(t), 'state');
  fs.mkdirSync(dir, { mode: 0o700 });
  openDb(dir).close();
  fs.chmodSync(path.join(dir, 'qwd.sqlite'), 0o644);
  const db = openDb(dir);
  t.teardown(() => db.close());
  for (const name of DB_FILES) t.is(fs.statSync(path.join(dir, name)).mode & 0o777, 0o600, name);
});

test('a state dir others can write is refused, naming the path, and nothing is created', async (t) => {
  const setup = makeSetup(t);
  fs.mkdirSync(setup.stateDir);
  fs.chmodSync(setup.stateDir, 0o777);
  const err = t.throws(() => openDb(setup.stateDir));
  t.is((err as { code?: string }).code, 'QWD_STATE_DIR_UNSAFE');
  t.is(err!.message, `${setup.stateDir} (the state dir) is writable by others (mode 0777); fix it (e.g. chmod go-w ${setup.stateDir}) or choose another stateDir`);
  const cli = await qwdctl(['--config', setup.configFile, 'users', 'list']);
  t.not(cli.code, 0);
  t.regex(cli.stderr, new RegExp(`${setup.stateDir} \\(the state dir\\) is writable by others`));
  fs.chmodSync(setup.stateDir, 0o1777);
  t.throws(() => openDb(setup.stateDir), { message: /is writable by others \(mode 1777\)/ }, 'the sticky bit does not make the state dir itself safe');
  t.deepEqual(fs.readdirSync(setup.stateDir), []);
});

test('a parent others can write is refused unless it has the sticky bit (as /tmp)', (t) => {
  const base = tempDir(t);
  const open = path.join(base, 'open');
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o777);
  const stateDir = path.join(open, 'deeper', 'state');
  t.throws(() => openDb(stateDir), { message: `${open} (a parent of the state dir ${stateDir}) is writable by others (mode 0777); fix it (e.g. chmod go-w ${open}) or choose another stateDir` });
  t.false(fs.existsSync(path.join(open, 'deeper')), 'nothing created');
  fs.chmodSync(open, 0o1777);
  const db = openDb(stateDir);
  db.close();
  t.is(fs.statSync(stateDir).mode & 0o777, 0o700);
});

test('a state dir owned by another (non-root) user is refused; symlinks are followed to what is checked', (t) => {
  const base = tempDir(t);
  const theirs = path.join(base, 'theirs');
  fs.mkdirSync(theirs, { mode: 0o700 });
  fs.chownSync(theirs, 65534, 65534);
  t.throws(() => assertSafeStateDir(theirs), { message: /theirs \(the state dir\) is owned by another user \(uid 65534\)/ });
  const open = path.join(base, 'open');
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o777);
  fs.symlinkSync(open, path.join(base, 'link'));
  t.throws(() => assertSafeStateDir(path.join(base, 'link')), { message: new RegExp(`^${open} \\(the state dir\\) is writable by others`) });
  t.notThrows(() => assertSafeStateDir(path.join(base, 'fresh')), 'a state dir yet to be made under a safe parent');
});
