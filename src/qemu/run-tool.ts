// Runs a helper program (qemu-img, …) to completion with an argv array, a
// timeout, and a QwdError carrying argv and the stderr tail on failure.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { QwdError, type ErrorCode } from '../errors.js';

export interface ToolResult {
  stdout: string;
  stderr: string;
}

export function runTool(
  file: string, argv: readonly string[],
  opts: { timeoutMs: number; errorCode: ErrorCode; input?: string; installHint?: string },
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const finish = (err: QwdError | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve({ stdout, stderr });
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new QwdError(opts.errorCode, `${file} ${argv.join(' ')}: no answer within ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    child.on('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'ENOENT'
        ? ` (is it installed? ${opts.installHint ?? 'bin/setup installs qemu-utils'})`
        : '';
      finish(new QwdError(opts.errorCode, `cannot run ${file}: ${err.message}${hint}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      if (code === 0) finish(null);
      else finish(
        new QwdError(
          opts.errorCode,
          `${file} ${argv.join(' ')} failed (${signal ?? `exit ${code}`}): ` +
            `${stderr.trim().split('\n').slice(-5).join(' | ')}`,
        )
      );
    });
    child.stdin.on('error', () => {
      // The tool may exit before reading its input; its exit status tells what happened.
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** The executable a program name resolves to (PATH lookup, as execvp does), or null. */
export function findProgram(file: string): string | null {
  const candidates = file.includes('/') ? [file] : (process.env.PATH ?? '').split(':').filter(Boolean)
    .map((dir) => path.join(dir, file));
  for (const candidate of candidates) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return path.resolve(candidate);
    } catch {
      // Not there or not executable: try the next directory, as execvp does.
    }
  }
  return null;
}

/** The last lines of a program's log, joined on one line for an error message. */
export async function readLogTail(file: string, lines = 5): Promise<string> {
  try {
    return (await fs.promises.readFile(file, 'utf8')).trim().split('\n').slice(-lines).join(' | ') || '(no output)';
  } catch {
    return '(no log)';
  }
}
