// Runs the real qwdctl (from the TypeScript sources) as a separate process.
import path from 'node:path';
import { spawn } from 'node:child_process';
import { ROOT } from './env.js';
import { inCliSlot } from './cli-slots.js';

export interface CliResult { code: number; stdout: string; stderr: string }

export function qwdctl(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return inCliSlot(() => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.on('error', () => {
      // EPIPE: qwdctl exited before reading its input (a usage error, say); its exit code tells.
    });
    child.stdin.end(opts.input ?? '');
  }));
}
