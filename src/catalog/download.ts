// Downloads a machine image: into "<image>.part", resuming a partial file with
// an HTTP Range request, verifying SHA-256 when the descriptor has one, and
// renaming to the final name only when complete and verified — an image under
// its final name is never half-written, and never two files spliced together:
// the partial's validator (ETag / Last-Modified) is kept in "<image>.part.json"
// and sent as If-Range, and a 206 is used only when its Content-Range continues
// the partial exactly (decisions in resume.ts).
//
// Only http(s) URLs: a file: URL let a descriptor copy any host file (e.g.
// /etc/shadow) into the images directory. The partial is created 0640 with
// O_NOFOLLOW (a symlink planted at "<image>.part" is not followed), and the
// final rename replaces whatever is at the image's name, a symlink included,
// without following it.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import crypto from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { QwdError } from '../errors.js';
import { decideResponse, planRequest, type PartialMeta } from './resume.js';

export interface DownloadProgress {
  receivedBytes: number;
  totalBytes: number | null;
}

export interface DownloadResult {
  bytes: number;
  resumedFrom: number;
  sha256: string;
  /** Why a partial download was not continued but fetched again from the start (null: it was not). */
  restartReason: string | null;
}

export interface DownloadOptions {
  sha256?: string | null;
  onProgress?: (p: DownloadProgress) => void;
  timeoutMs?: number;
  /**
   * Called once the new image is complete and verified, just before it replaces `dest`; throwing keeps `dest` as it is
   * (the download is deleted).
   */
  beforeReplace?: () => Promise<void>;
}

/** Images are fetched over http(s) only (descriptor url, DARTS import, download). */
export function isHttpUrl(url: string): boolean {
  return /^https?:\/\/\S+$/i.test(url);
}

/** Downloaded images are readable by the broker's group, by nobody else. */
export const IMAGE_MODE = 0o640;

const NOFOLLOW_CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;

export async function downloadImage(url: string, dest: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const part = `${dest}.part`;
  const metaFile = `${part}.json`;
  let resumedFrom = 0;
  let restartReason: string | null = null;
  if (!isHttpUrl(url)) {
    throw new QwdError('QWD_DOWNLOAD_FAILED', `${url}: only http:// and https:// URLs are downloaded`, {
      userMessage: `Cannot download ${url}: only http:// and https:// URLs are allowed.`,
    });
  }
  const fetched = await fetchIntoPart(url, part, metaFile, opts, null);
  resumedFrom = fetched.resumedFrom;
  restartReason = fetched.restartReason;
  const digest = await sha256Of(part);
  if (opts.sha256 && digest !== opts.sha256.toLowerCase()) {
    await discardPartial(part, metaFile);
    throw new QwdError(
      'QWD_CHECKSUM_MISMATCH', `${url}: SHA-256 is ${digest}, expected ${opts.sha256}; the download was deleted`,
      { userMessage: `The downloaded image does not match its SHA-256 checksum; nothing was kept.` },
    );
  }
  try {
    await opts.beforeReplace?.();
  } catch (err) {
    await discardPartial(part, metaFile);
    throw err;
  }
  await fsp.rename(part, dest);
  await fsp.rm(metaFile, { force: true });
  return { bytes: await sizeOf(dest), resumedFrom, sha256: digest, restartReason };
}

/** One HTTP attempt into the partial file; restarts once from zero when the partial cannot be continued. */
async function fetchIntoPart(
  url: string, part: string, metaFile: string, opts: DownloadOptions, restartedBecause: string | null,
): Promise<{ resumedFrom: number; restartReason: string | null }> {
  const meta = await readMeta(metaFile);
  const plan = planRequest(url, await sizeOf(part), meta);
  let restartReason = restartedBecause ?? plan.discardReason;
  if (plan.discardReason) await discardPartial(part, metaFile);
  const controller = new AbortController();
  const idle = new IdleTimer(opts.timeoutMs ?? 60000, () => controller.abort());
  let res: Response;
  try {
    res = await fetch(url, { headers: plan.headers, signal: controller.signal, redirect: 'follow' });
  } catch (err) {
    idle.stop();
    throw new QwdError(
      'QWD_DOWNLOAD_FAILED',
      `${url}: ${(err as Error).message}` +
        `${(err as Error).cause ? ` (${String((err as { cause: unknown }).cause)})` : ''}`,
      { cause: err, userMessage: `Cannot download ${url}: ${(err as Error).message}` },
    );
  }
  const length = res.headers.get('content-length');
  const decision = decideResponse(plan, meta, {
    status: res.status,
    contentRange: res.headers.get('content-range'),
    contentLengthBytes: length !== null && /^\d+$/.test(length.trim()) ? Number(length) : null,
    etag: res.headers.get('etag'),
  });
  if (decision.action !== 'write') {
    idle.stop();
    // The body is not wanted: cancelling it frees the connection. A failure
    // to cancel changes nothing about what we decided, hence ignored.
    await res.body?.cancel().catch(() => undefined);
    if (decision.action === 'restart' && plan.fromBytes > 0 && restartedBecause === null) {
      await discardPartial(part, metaFile);
      return fetchIntoPart(url, part, metaFile, opts, decision.reason);
    }
    if (decision.action === 'restart' || (plan.fromBytes > 0 && res.status === 206)) {
      // The server's 206 does not continue the partial: drop it, so the next
      // attempt starts clean instead of failing the same way. (Other answers,
      // e.g. a passing HTTP 503, keep the partial for a later resume.)
      await discardPartial(part, metaFile);
      throw new QwdError(
        'QWD_DOWNLOAD_FAILED',
        `${url}: cannot resume at byte ${plan.fromBytes}: ${decision.reason}; the partial download was deleted`,
        {
          userMessage: `Cannot resume the download of ${url}: ${decision.reason}. The partial download was deleted; ` +
            `run the download again to start over.`
        },
      );
    }
    throw new QwdError(
      'QWD_DOWNLOAD_FAILED', `${url}: ${decision.reason}`,
      { userMessage: `Cannot download ${url}: ${decision.reason}.` },
    );
  }
  if (decision.note) restartReason ??= decision.note;
  const resumedFrom = decision.fromBytes;
  const totalBytes = decision.totalBytes;
  if (resumedFrom === 0) {
    // A new partial: record which file it is part of before any byte is written.
    await writeMeta(
      metaFile, { url, etag: res.headers.get('etag'), lastModified: res.headers.get('last-modified'), totalBytes },
    );
  }
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
    const handle = await fsp.open(
      part, NOFOLLOW_CREATE | (resumedFrom > 0 ? fs.constants.O_APPEND : fs.constants.O_TRUNC), IMAGE_MODE,
    );
    await handle.chmod(IMAGE_MODE); // a partial left by an older version may have another mode
    await pipeline(
      Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), counter, handle.createWriteStream(),
    );
  } catch (err) {
    throw new QwdError(
      'QWD_DOWNLOAD_FAILED',
      `${url}: interrupted after ${received} bytes (${(err as Error).message}); run the download again to resume`,
      {
        cause: err,
        userMessage: `The download of ${url} was interrupted after ${received} bytes; run it again to resume.`,
      },
    );
  } finally {
    idle.stop();
  }
  if (totalBytes !== null && received !== totalBytes) {
    throw new QwdError(
      'QWD_DOWNLOAD_FAILED', `${url}: got ${received} of ${totalBytes} bytes; run the download again to resume`,
      { userMessage: `The download of ${url} is incomplete; run it again to resume.` },
    );
  }
  const onDisk = await sizeOf(part);
  if (onDisk !== received) {
    // Someone else wrote to the partial meanwhile: its content is not what we fetched.
    await discardPartial(part, metaFile);
    throw new QwdError(
      'QWD_DOWNLOAD_FAILED',
      `${url}: ${part} is ${onDisk} bytes, expected ${received}; it was changed during the download and was deleted`,
      { userMessage: `The download of ${url} was disturbed; run it again.` },
    );
  }
  return { resumedFrom, restartReason };
}

async function readMeta(file: string): Promise<PartialMeta | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return null; // no meta: planRequest treats the partial as unknown
  }
  try {
    const raw = JSON.parse(text) as Partial<PartialMeta>;
    if (typeof raw.url !== 'string') return null;
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    return {
      url: raw.url, etag: str(raw.etag), lastModified: str(raw.lastModified),
      totalBytes: Number.isSafeInteger(raw.totalBytes) ? raw.totalBytes! : null,
    };
  } catch {
    return null; // a truncated meta (crash while writing) is as good as none
  }
}

async function writeMeta(file: string, meta: PartialMeta): Promise<void> {
  const tmp = `${file}.tmp`;
  const handle = await fsp.open(tmp, NOFOLLOW_CREATE | fs.constants.O_TRUNC, 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(meta)}\n`);
  } finally {
    await handle.close();
  }
  await fsp.rename(tmp, file);
}

async function discardPartial(part: string, metaFile: string): Promise<void> {
  await fsp.rm(part, { force: true });
  await fsp.rm(metaFile, { force: true });
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
export function progressReporter(
  out: NodeJS.WriteStream | NodeJS.WritableStream, label: string,
): (p: DownloadProgress) => void {
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
