// Downloads a machine image: into "<image>.part", resuming a partial file with
// an HTTP Range request, verifying SHA-256 when the descriptor has one, and
// renaming to the final name only when complete and verified — an image under
// its final name is never half-written.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import crypto from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { QwdError } from '../errors.js';

export interface DownloadProgress {
  receivedBytes: number;
  totalBytes: number | null;
}

export interface DownloadResult {
  bytes: number;
  resumedFrom: number;
  sha256: string;
}

export async function downloadImage(url: string, dest: string, opts: { sha256?: string | null; onProgress?: (p: DownloadProgress) => void; timeoutMs?: number } = {}): Promise<DownloadResult> {
  const part = `${dest}.part`;
  let resumedFrom = 0;
  if (url.startsWith('file://')) {
    await pipeline(fs.createReadStream(fileURLToPath(url)), fs.createWriteStream(part));
  } else {
    resumedFrom = await sizeOf(part);
    const controller = new AbortController();
    const idle = new IdleTimer(opts.timeoutMs ?? 60000, () => controller.abort());
    let res: Response;
    try {
      res = await fetch(url, { headers: resumedFrom > 0 ? { range: `bytes=${resumedFrom}-` } : {}, signal: controller.signal, redirect: 'follow' });
    } catch (err) {
      idle.stop();
      throw new QwdError('QWD_DOWNLOAD_FAILED', `${url}: ${(err as Error).message}${(err as Error).cause ? ` (${String((err as { cause: unknown }).cause)})` : ''}`, { cause: err, userMessage: `Cannot download ${url}: ${(err as Error).message}` });
    }
    if (res.status === 416 && resumedFrom > 0) {
      // The partial file is already complete (or bigger than the source): start over.
      await fsp.rm(part, { force: true });
      idle.stop();
      return downloadImage(url, dest, opts);
    }
    if (res.status !== 200 && res.status !== 206) {
      idle.stop();
      throw new QwdError('QWD_DOWNLOAD_FAILED', `${url}: HTTP ${res.status}`, { userMessage: `Cannot download ${url}: the server answered HTTP ${res.status}.` });
    }
    if (res.status === 200) resumedFrom = 0; // the server ignored the Range: rewrite from the start
    const length = Number(res.headers.get('content-length'));
    const totalBytes = Number.isFinite(length) && length > 0 ? length + resumedFrom : null;
    let received = resumedFrom;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        idle.touch();
        opts.onProgress?.({ receivedBytes: received, totalBytes });
        done(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), counter, fs.createWriteStream(part, { flags: resumedFrom > 0 ? 'a' : 'w' }));
    } catch (err) {
      throw new QwdError('QWD_DOWNLOAD_FAILED', `${url}: interrupted after ${received} bytes (${(err as Error).message}); run the download again to resume`, { cause: err, userMessage: `The download of ${url} was interrupted after ${received} bytes; run it again to resume.` });
    } finally {
      idle.stop();
    }
    if (totalBytes !== null && received !== totalBytes) {
      throw new QwdError('QWD_DOWNLOAD_FAILED', `${url}: got ${received} of ${totalBytes} bytes; run the download again to resume`, { userMessage: `The download of ${url} is incomplete; run it again to resume.` });
    }
  }
  const digest = await sha256Of(part);
  if (opts.sha256 && digest !== opts.sha256.toLowerCase()) {
    await fsp.rm(part, { force: true });
    throw new QwdError('QWD_CHECKSUM_MISMATCH', `${url}: SHA-256 is ${digest}, expected ${opts.sha256}; the download was deleted`, { userMessage: `The downloaded image does not match its SHA-256 checksum; nothing was kept.` });
  }
  await fsp.rename(part, dest);
  return { bytes: await sizeOf(dest), resumedFrom, sha256: digest };
}

export async function sha256Of(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  await pipeline(fs.createReadStream(file), hash);
  return hash.digest('hex');
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

/** Aborts a transfer that makes no progress for `ms`. */
class IdleTimer {
  private timer: NodeJS.Timeout;
  constructor(ms: number, onIdle: () => void) {
    this.timer = setTimeout(onIdle, ms);
  }
  touch(): void {
    this.timer.refresh();
  }
  stop(): void {
    clearTimeout(this.timer);
  }
}

/** A progress line: a bar on a terminal, plain lines every 10% otherwise. */
export function progressReporter(out: NodeJS.WriteStream | NodeJS.WritableStream, label: string): (p: DownloadProgress) => void {
  const tty = 'isTTY' in out && out.isTTY;
  let lastDecile = -1;
  let lastDraw = 0;
  return ({ receivedBytes, totalBytes }) => {
    const mib = (receivedBytes / 1048576).toFixed(1);
    if (tty) {
      const now = Date.now();
      if (now - lastDraw < 100 && receivedBytes !== totalBytes) return;
      lastDraw = now;
      if (totalBytes) {
        const ratio = receivedBytes / totalBytes;
        const bar = '#'.repeat(Math.round(ratio * 30)).padEnd(30, '.');
        out.write(`\r${label} [${bar}] ${(ratio * 100).toFixed(0).padStart(3)}% ${mib} MiB`);
      } else out.write(`\r${label} ${mib} MiB`);
      if (receivedBytes === totalBytes) out.write('\n');
      return;
    }
    if (!totalBytes) return;
    const decile = Math.floor((receivedBytes / totalBytes) * 10);
    if (decile !== lastDecile) {
      lastDecile = decile;
      out.write(`${label}: ${decile * 10}% (${mib} MiB)\n`);
    }
  };
}
