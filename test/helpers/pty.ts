// Runs the real qwdctl on a pseudo-terminal, for the paths that only exist on a
// terminal (progress bars, confirmation prompts). Python's pty module gives the
// child a real tty (stdin, stdout and stderr are all that tty, so the output is
// one stream as a user sees it); the argv goes through without a shell.
// Test code only: the product never needs a pty.
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { ROOT } from './env.js';
import { inCliSlot } from './cli-slots.js';

export interface TerminalResult {
  code: number;
  /** Everything the terminal showed (the tty turns "\n" into "\r\n"). */
  output: string;
}

/** Type `send` once the output matches `when` (each answer at most once, in order). */
export interface TerminalAnswer { when: RegExp; send: string }

// pty.spawn copies our stdin to the terminal and the terminal to our stdout;
// the exit status is passed on.
const PTY_RUNNER = 'import os, pty, sys\nsys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))';

export function requirePython3(): void {
  const r = spawnSync('python3', ['-c', 'import pty'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`python3 (with its pty module) is needed to run qwdctl on a terminal: apt-get install python3 (${r.error?.message ?? r.stderr.trim()})`);
}

export function qwdctlOnTerminal(args: string[], opts: { answers?: TerminalAnswer[]; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<TerminalResult> {
  requirePython3();
  const answers = [...(opts.answers ?? [])];
  return inCliSlot(() => new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', PTY_RUNNER, process.execPath, '--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], {
      cwd: ROOT, env: { ...process.env, TERM: 'xterm', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // our own child (python3), by PID; its qwdctl gets SIGHUP when the pty closes
      reject(new Error(`qwdctl ${args.join(' ')} on a terminal did not finish in ${opts.timeoutMs ?? 60_000} ms; output so far: ${JSON.stringify(output)}`));
    }, opts.timeoutMs ?? 60_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      output += d;
      if (answers.length && answers[0]!.when.test(output)) child.stdin.write(answers.shift()!.send);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {
      // EPIPE: the runner exited before reading what we typed; the exit code and output tell.
    });
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code) => {
      clearTimeout(timer);
      child.stdin.destroy();
      if (stderr.trim()) output += stderr; // python's own complaints (pty unavailable, …)
      resolve({ code: code ?? -1, output });
    });
  }));
}
