// `qwdctl serve` as a user runs it: the real bin/qwdctl in its own process,
// port and state dir from the command line or from QWD_PORT / QWD_STATE_DIR.
// It prints where it listens, answers /healthz, keeps its state where it was
// told, and ends on SIGTERM (sent to the PID we started, and only to it).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { ROOT, tempDir, waitFor } from '../helpers/env.js';
import { isRunning } from '../../src/qemu/process.js';

interface Served {
  child: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

async function serve(t: ExecutionContext, args: string[], env: Record<string, string> = {}): Promise<Served> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('QWD_')));
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'qwdctl'), ...args], { cwd: ROOT, env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const url = await Promise.race([
    // A condition, not a speed: on a CI host busy with other test files' CLI processes, start-up
    // (tsx or the compiled CLI, the catalog's image checks, the store) has taken over 30 s.
    waitFor('qwdctl serve to print where it listens', () => /listening on (http:\/\/\S+)/.exec(stdout)?.[1], 90_000),
    exited.then(({ code, signal }) => { throw new Error(`qwdctl serve ended (${code ?? signal}) before listening: ${stderr.slice(-2000)}`); }),
  ]);
  return { child, url, exited, stderr: () => stderr };
}

async function assertServesAndStops(t: ExecutionContext, served: Served, stateDir: string) {
  const port = Number(new URL(served.url).port);
  t.true(port > 0 && port !== 8080, `a kernel-chosen port, got ${port}`);
  t.is(new URL(served.url).hostname, '127.0.0.1', 'loopback by default');
  const health = await fetch(`${served.url}/healthz`);
  t.is(health.status, 200);
  const json = await health.json() as { status: string; machines: number; accelerator: { accel: string } };
  t.is(json.status, 'ok');
  t.true(['kvm', 'tcg'].includes(json.accelerator.accel));
  t.true(json.machines >= 1, 'the bundled demo machine is served');
  t.true(fs.existsSync(path.join(stateDir, 'qwd.sqlite')), 'the store lives in the given state dir');
  t.regex(served.stderr(), new RegExp(`"stateDir":"${stateDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`), 'and the log says so');

  const pid = served.child.pid!;
  process.kill(pid, 'SIGTERM');
  t.deepEqual(await served.exited, { code: 0, signal: null }, 'a clean exit on SIGTERM');
  await waitFor(`pid ${pid} to be gone`, () => !isRunning(pid), 5000);
  await t.throwsAsync(fetch(`${served.url}/healthz`), undefined, 'nothing listens any more');
}

test('qwdctl serve -p 0 --state-dir listens on a free port, answers /healthz and keeps its state there', async (t) => {
  t.timeout(150_000);
  const stateDir = path.join(tempDir(t), 'state');
  const served = await serve(t, ['serve', '-p', '0', '--state-dir', stateDir]);
  await assertServesAndStops(t, served, stateDir);
});

test('qwdctl serve takes its port and state dir from QWD_PORT and QWD_STATE_DIR', async (t) => {
  t.timeout(150_000);
  const stateDir = path.join(tempDir(t), 'env-state');
  const served = await serve(t, ['serve'], { QWD_PORT: '0', QWD_STATE_DIR: stateDir });
  await assertServesAndStops(t, served, stateDir);
});
