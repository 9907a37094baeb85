// Saving a running VM's RAM and device state to a file, and feeding it back.
// QEMU 7.2 has no file: migration URI, and exec: would run a command string
// through a shell: so saving is a migration to a Unix socket this process
// listens on, piped into zstd; loading is `-incoming fd:3`, fd 3 being zstd's
// output (localLauncher). QMP commands and states as in qapi/migration.json.
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { QwdError } from '../errors.js';
import { QmpClient } from '../qemu/qmp-client.js';
import type { Clock } from '../clock.js';

/** QMP migrate-set-parameters max-bandwidth, bytes/s: the default (32 MiB/s) would take a minute for 2 GiB. */
const SAVE_BANDWIDTH = 8 * 1024 * 1024 * 1024;

export interface SavedState {
  bytes: number;
}

/**
 * Pauses the VM (QMP stop) and writes its state, zstd-compressed, to stateFile (created, never overwritten). The
 * VM stays paused: the caller quits it. The migration socket is in a 0700 temp dir of its own, owned by `owner`
 * when QEMU runs as another user (-runas: it connects after dropping its privileges).
 */
export async function saveState(
  qmpSocket: string, stateFile: string,
  opts: { zstd: string; timeoutMs: number; clock: Clock; owner?: { uid: number; gid: number } | null },
): Promise<SavedState> {
  const out = await fsp.open(stateFile, 'wx', 0o600);
  let zstd: ChildProcess | null = null;
  let socketDir: string | null = null;
  const server = net.createServer();
  let qmp: QmpClient | null = null;
  try {
    socketDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'qwd-save-'));
    const socketPath = path.join(socketDir, 'migrate.sock');
    qmp = await QmpClient.connect(qmpSocket);
    zstd = spawn(opts.zstd, ['-1', '-q', '-c'], { stdio: ['pipe', out.fd, 'pipe'] });
    const compressed = exitOf(zstd, opts.zstd);
    // Awaited at the end; a zstd that cannot run fails the save then (or the migration, its pipe gone) — never the
    // process, with an unhandled rejection while the steps below wait.
    compressed.catch(() => {});
    let stderr = '';
    zstd.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-2000); });
    // A zstd that dies mid-stream (disk full): its stdin errors (EPIPE); the exit code says why below.
    zstd.stdin!.on('error', () => {});
    // One connection: QEMU's. The stream ends when the migration does.
    server.once('connection', (conn) => {
      server.close();
      conn.on('error', () => {});
      conn.pipe(zstd!.stdin!);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    if (opts.owner) {
      await fsp.chown(socketDir, opts.owner.uid, opts.owner.gid);
      await fsp.chown(socketPath, opts.owner.uid, opts.owner.gid);
    }
    await qmp.execute('stop');
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_BANDWIDTH });
    await qmp.execute('migrate', { uri: `unix:${socketPath}` });
    const deadline = opts.clock.now() + opts.timeoutMs;
    for (;;) {
      const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (info.status === 'completed') break;
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new QwdError('QWD_PREPARE_FAILED', `saving the VM's state ${info.status}: ${info['error-desc'] ?? ''}`);
      }
      if (opts.clock.now() > deadline) {
        throw new QwdError('QWD_PREPARE_FAILED', `saving the VM's state took more than ${opts.timeoutMs} ms`);
      }
      await opts.clock.sleep(100);
    }
    const code = await compressed;
    if (code !== 0) throw new QwdError('QWD_PREPARE_FAILED', `${opts.zstd} failed (exit ${code}): ${stderr.trim()}`);
  } catch (err) {
    zstd?.kill('SIGKILL');
    await fsp.rm(stateFile, { force: true });
    throw err;
  } finally {
    qmp?.close();
    server.close();
    await out.close();
    if (socketDir) await fsp.rm(socketDir, { recursive: true, force: true });
  }
  return { bytes: (await fsp.stat(stateFile)).size };
}

/** zstd -d reading a saved state: its stdout is what QEMU reads as fd 3 (-incoming fd:3). */
export function stateReader(zstd: string, stateFile: string): { child: ChildProcess; done: Promise<number | null> } {
  const child = spawn(zstd, ['-d', '-q', '-c', stateFile], { stdio: ['ignore', 'pipe', 'ignore'] });
  return { child, done: exitOf(child, zstd) };
}

function exitOf(child: ChildProcess, file: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) => reject(new QwdError(
      'QWD_PREPARE_FAILED',
      `cannot run ${file}: ${err.message}${err.code === 'ENOENT' ? ' (install zstd: bin/setup does)' : ''}`,
      { cause: err },
    )));
    child.once('exit', (code) => resolve(code));
  });
}
