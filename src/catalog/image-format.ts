// Detects a master image's format: ISO 9660 by its signature, everything else
// by `qemu-img info --output=json` (never by trusting the file name alone).
import fs from 'node:fs/promises';
import { QwdError } from '../errors.js';
import { runTool } from '../qemu/run-tool.js';
import { IMAGE_FORMATS, type ImageFormat } from './descriptor.js';

export interface ImageInfo {
  format: ImageFormat;
  virtualSizeBytes: number;
  backingFile: string | null;
}

export async function isIso9660(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    // ISO 9660 primary volume descriptor: "CD001" at byte 0x8001 (ECMA-119 §8.4).
    const buf = Buffer.alloc(5);
    const { bytesRead } = await handle.read(buf, 0, 5, 0x8001);
    return bytesRead === 5 && buf.toString('latin1') === 'CD001';
  } finally {
    await handle.close();
  }
}

export async function inspectImage(qemuImg: string, file: string): Promise<ImageInfo> {
  const { stdout } = await runTool(
    qemuImg, ['info', '--output=json', '--force-share', file], { timeoutMs: 30000, errorCode: 'QWD_IMAGE_INVALID' },
  );
  let info: { format?: string; 'virtual-size'?: number; 'backing-filename'?: string; 'full-backing-filename'?: string };
  try {
    info = JSON.parse(stdout);
  } catch (err) {
    throw new QwdError('QWD_IMAGE_INVALID', `${qemuImg} info ${file}: unreadable output`, { cause: err });
  }
  let format = info.format as ImageFormat;
  if (format === 'raw' && (await isIso9660(file))) format = 'iso';
  if (!(IMAGE_FORMATS as readonly string[]).includes(format)) {
    throw new QwdError(
      'QWD_IMAGE_INVALID',
      `${file}: image format "${info.format}" is not supported (supported: ${IMAGE_FORMATS.join(', ')})`,
    );
  }
  return {
    format, virtualSizeBytes: info['virtual-size'] ?? 0,
    backingFile: info['full-backing-filename'] ?? info['backing-filename'] ?? null,
  };
}
