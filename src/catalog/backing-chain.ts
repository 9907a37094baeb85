// Keeps every file a master image makes QEMU open inside the machines directory.
// A qcow2 (or qed, vmdk) image names other files: a backing file, an external
// data file, extent files. QEMU opens them as the user it starts as (root,
// before -runas drops privileges), and the guest then reads them as its disk,
// so an image whose backing file is /etc/shadow hands that file to a guest.
//
// The walk is done layer by layer so that no file is opened by qemu-img before
// it has been resolved and allowed: the qcow2 header and VMDK descriptors are
// read here (external data files and extents refused first), then
// `qemu-img info` of that single layer (it does not open backing files) gives
// the format and the backing name, which is resolved as QEMU resolves it
// (relative names against the directory of the layer as it was opened, by
// string, with the OS following symlinks and ".."), and checked with every
// symlink followed. Only then does `qemu-img info --backing-chain` open the
// whole chain, and its answer must name the same files.
//
// "Inside" means under realpath(machinesDir), or under the target of a
// directory symlink placed directly in machinesDir by the admin (e.g.
// machines/images -> /srv/images): the admin owns that directory, image
// authors only supply image files. A file symlink is followed like any path.
import fs from 'node:fs/promises';
import path from 'node:path';
import { runTool } from '../qemu/run-tool.js';
import { IMAGE_FORMATS, type ImageFormat } from './descriptor.js';
import { isIso9660 } from './image-format.js';

/** QEMU follows longer chains, but a master deeper than this is a mistake or an attack. */
export const MAX_CHAIN_DEPTH = 16;

export interface ChainLayer {
  /** The path as QEMU opens it (what a relative backing name below it is resolved against). */
  openedAs: string;
  realPath: string;
  format: ImageFormat;
  /** Identity of the file checked, so a later look can tell it is still the same file. */
  dev: number;
  ino: number;
}

export interface ChainCheck {
  /** Empty when the chain may be given to QEMU. */
  violations: string[];
  /** The master first; empty when the master itself was refused. */
  layers: ChainLayer[];
  virtualSizeBytes: number;
}

/**
 * The directories images may live in: realpath(machinesDir) and the targets of
 * its top-level directory symlinks that an administrator placed there (owned by
 * root or by the service's own user). A symlink an image author made (owned by
 * anyone else), or one to "/", gives no root: `machines/x -> /` would otherwise
 * let an image name any host file.
 */
export async function allowedRoots(machinesDir: string): Promise<string[]> {
  const root = await fs.realpath(machinesDir);
  const roots = [root];
  const trusted = new Set([0, process.getuid?.() ?? 0]);
  for (const entry of await fs.readdir(root, { withFileTypes: true })) {
    if (!entry.isSymbolicLink()) continue;
    try {
      const link = path.join(root, entry.name);
      if (!trusted.has((await fs.lstat(link)).uid)) continue;
      const target = await fs.realpath(link);
      if (target !== '/' && (await fs.stat(target)).isDirectory()) roots.push(target);
    } catch {
      // A dangling symlink gives no root; images under it are reported missing.
    }
  }
  return roots;
}

export function isInside(realPath: string, roots: readonly string[]): boolean {
  return roots.some((root) => realPath === root || realPath.startsWith(root.endsWith('/') ? root : `${root}/`));
}

/**
 * QEMU treats a file name as a protocol (json:, nbd:, http:, file: …) when a
 * ":" comes before the first "/" (block.c path_has_protocol). None is allowed.
 */
export function hasProtocol(name: string): boolean {
  const stop = name.search(/[:/]/);
  return stop >= 0 && name[stop] === ':';
}

/** A backing or extent name resolved as QEMU does (block.c path_combine): by string, not normalised. */
export function combineLikeQemu(openedAs: string, name: string): string {
  if (name.startsWith('/')) return name;
  return `${path.dirname(openedAs)}/${name}`;
}

export interface Qcow2Header {
  version: number;
  hasBacking: boolean;
  /** Incompatible feature bit 2: the guest data lives in another file (qcow2 spec, "external data file"). */
  externalDataFile: boolean;
}

/** Pure: the parts of a qcow2 header (QEMU docs/interop/qcow2.txt) that say it names other files; null if not qcow2. */
export function parseQcow2Header(buf: Buffer): Qcow2Header | null {
  if (buf.length < 72 || buf.readUInt32BE(0) !== 0x514649fb) return null;
  const version = buf.readUInt32BE(4);
  const incompatible = version >= 3 && buf.length >= 80 ? buf.readBigUInt64BE(72) : 0n;
  return { version, hasBacking: buf.readBigUInt64BE(8) !== 0n, externalDataFile: (incompatible & 4n) !== 0n };
}

/** Pure: the file names in a VMDK descriptor's extent lines and its parent hint (VMDK spec, "Extent Descriptions"). */
export function vmdkDescriptorFiles(text: string): { extents: string[]; parent: string | null } {
  const extents: string[] = [];
  let parent: string | null = null;
  for (const line of text.split(/\r?\n/)) {
    const extent = /^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"([^"]*)"/.exec(line);
    if (extent) extents.push(extent[1]!);
    const hint = /^\s*parentFileNameHint\s*=\s*"([^"]*)"/.exec(line);
    if (hint) parent = hint[1]!;
  }
  return { extents, parent };
}

async function readPart(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** The VMDK descriptor of a file: the file itself when it is text, or the one embedded in a sparse extent. */
async function vmdkDescriptor(file: string, head: Buffer): Promise<string | null> {
  if (head.subarray(0, 4).toString('latin1') === 'KDMV') {
    const offset = Number(head.readBigUInt64LE(28)) * 512;
    const size = Math.min(Number(head.readBigUInt64LE(36)) * 512, 1 << 20);
    return offset > 0 && size > 0 ? (await readPart(file, offset, size)).toString('latin1') : null;
  }
  const text = head.toString('latin1');
  return /^# Disk DescriptorFile/m.test(text) || /createType\s*=/.test(text) ? text : null;
}

interface LayerInfo {
  format?: string;
  'virtual-size'?: number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  filename?: string;
  'format-specific'?: { type?: string; data?: { 'data-file'?: string; extents?: Array<{ filename?: string }> } };
}

/**
 * Checks the master and every file its chain names. `declaredFormat` is the
 * descriptor's format (null: detected). Never throws for a bad image: every
 * problem is a violation naming the file.
 */
export async function checkBackingChain(
  qemuImg: string, image: string, machinesDir: string, declaredFormat: ImageFormat | null = null,
): Promise<ChainCheck> {
  const violations: string[] = [];
  const layers: ChainLayer[] = [];
  let roots: string[];
  try {
    roots = await allowedRoots(machinesDir);
  } catch (err) {
    return {
      violations: [`cannot read the machines directory ${machinesDir} (${(err as NodeJS.ErrnoException).code ?? err})`],
      layers, virtualSizeBytes: 0,
    };
  }
  const where = `the machines directory ${machinesDir}`;
  let openedAs = image;
  // The master's format is detected (and compared with the descriptor); lower layers are opened as recorded.
  let expectFormat: string | null = null;
  let name = `image ${image}`;
  let virtualSizeBytes = 0;
  for (let depth = 0; ; depth++) {
    if (depth >= MAX_CHAIN_DEPTH) {
      violations.push(`${image}: backing chain deeper than ${MAX_CHAIN_DEPTH} layers`);
      break;
    }
    let realPath: string;
    try {
      realPath = await fs.realpath(openedAs);
    } catch (err) {
      violations.push(`${name} is missing or unreadable (${(err as NodeJS.ErrnoException).code ?? err})`);
      break;
    }
    if (!isInside(realPath, roots)) {
      violations.push(`${name} resolves to ${realPath}, outside ${where}`);
      break;
    }
    if (layers.some((l) => l.realPath === realPath)) {
      violations.push(`${name} resolves to ${realPath}, which is already in the chain (a loop)`);
      break;
    }
    if (depth === 0) openedAs = realPath; // the overlay names the master by its real path (see pinnedOverlayArgv)
    const stat = await fs.stat(realPath);
    if (!stat.isFile()) {
      violations.push(`${name} resolves to ${realPath}, which is not a regular file`);
      break;
    }
    // Before qemu-img opens the layer: the files it would open with it.
    const head = await readPart(realPath, 0, 4096);
    const qcow2 = parseQcow2Header(head);
    if (qcow2?.externalDataFile) {
      violations.push(
        `${realPath} uses an external data file (qcow2 data-file), which is not allowed in a master image`
      );
      break;
    }
    const descriptor = await vmdkDescriptor(realPath, head);
    if (descriptor) {
      const bad: string[] = [];
      for (const extent of vmdkDescriptorFiles(descriptor).extents) {
        bad.push(...(await refusedName(extent, openedAs, roots, where)));
      }
      if (bad.length) {
        violations.push(...bad.map((b) => `${realPath}: VMDK extent ${b}`));
        break;
      }
    }
    const formatArgs = expectFormat ? ['-f', expectFormat] : [];
    let info: LayerInfo;
    try {
      const { stdout } = await runTool(
        qemuImg, ['info', '--output=json', '--force-share', ...formatArgs, realPath],
        { timeoutMs: 30000, errorCode: 'QWD_IMAGE_INVALID' },
      );
      info = JSON.parse(stdout) as LayerInfo;
    } catch (err) {
      violations.push(`${name}: ${(err as Error).message}`);
      break;
    }
    let format = info.format as ImageFormat;
    if (depth === 0 && format === 'raw' && (await isIso9660(realPath))) format = 'iso';
    if (!(IMAGE_FORMATS as readonly string[]).includes(format)) {
      violations.push(
        `${realPath}: image format "${info.format}" is not supported (supported: ${IMAGE_FORMATS.join(', ')})`
      );
      break;
    }
    if (depth === 0 && declaredFormat && declaredFormat !== format) {
      violations.push(`format is "${declaredFormat}" but qemu-img reports "${format}" for ${realPath}`);
      break;
    }
    if (depth === 0) virtualSizeBytes = info['virtual-size'] ?? 0;
    layers.push({ openedAs, realPath, format, dev: stat.dev, ino: stat.ino });
    const dataFile = info['format-specific']?.data?.['data-file'];
    if (dataFile) {
      violations.push(`${realPath} uses an external data file ${dataFile}, which is not allowed in a master image`);
      break;
    }
    const backing = info['backing-filename'];
    if (!backing) break;
    const refused = await refusedName(backing, openedAs, roots, where);
    if (refused.length) {
      violations.push(...refused.map((r) => `${realPath}: backing file ${r}`));
      break;
    }
    // Without a recorded backing format QEMU would probe the backing file's
    // content, which is how a raw layer turns into a qcow2 naming other files.
    const backingFormat = info['backing-filename-format'];
    if (!backingFormat) {
      violations.push(
        `${realPath}: backing file "${backing}" has no recorded format, so QEMU would guess it from its content; ` +
          `record it with qemu-img rebase -u -F <format> -b "${backing}" ${realPath}`
      );
      break;
    }
    openedAs = combineLikeQemu(openedAs, backing);
    expectFormat = backingFormat;
    name = `backing file "${backing}" of ${realPath}`;
  }
  if (violations.length === 0) violations.push(...(await compareWholeChain(qemuImg, layers, roots, where)));
  return { violations, layers, virtualSizeBytes };
}

/** Why a file name inside an image is refused ([] when it is allowed); relative names resolved as QEMU does. */
async function refusedName(
  fileName: string, openedAs: string, roots: readonly string[], where: string,
): Promise<string[]> {
  if (hasProtocol(fileName)) {
    return [`"${fileName.slice(0, 200)}" uses a protocol prefix (json:, nbd:, http: …), not a file`];
  }
  const full = combineLikeQemu(openedAs, fileName);
  return fs.realpath(full).then(
    (real) => (isInside(real, roots) ? [] : [`"${fileName}" resolves to ${real}, outside ${where}`]),
    (err: NodeJS.ErrnoException) => [`"${fileName}" (${full}) is missing (${err.code ?? err})`],
  );
}

/** `qemu-img info --backing-chain` of the master must name exactly the files checked one by one. */
async function compareWholeChain(
  qemuImg: string, layers: readonly ChainLayer[], roots: readonly string[], where: string,
): Promise<string[]> {
  if (!layers.length) return [];
  const master = layers[0]!;
  let chain: LayerInfo[];
  try {
    const formatArgs = ['-f', master.format === 'iso' ? 'raw' : master.format];
    const { stdout } = await runTool(
      qemuImg, ['info', '--backing-chain', '--output=json', '--force-share', ...formatArgs, master.realPath],
      { timeoutMs: 30000, errorCode: 'QWD_IMAGE_INVALID' },
    );
    chain = JSON.parse(stdout) as LayerInfo[];
  } catch (err) {
    return [`backing chain of ${master.realPath}: ${(err as Error).message}`];
  }
  const problems: string[] = [];
  if (chain.length !== layers.length) {
    problems.push(
      `${master.realPath}: qemu-img reports ${chain.length} layer(s), ${layers.length} were checked (did the chain ` +
        `change meanwhile?)`
    );
  }
  for (const [i, layer] of chain.entries()) {
    const file = layer.filename ?? '';
    const real = hasProtocol(file) ? null : await fs.realpath(file).catch(() => null);
    if (!real || !isInside(real, roots)) {
      problems.push(`${master.realPath}: qemu-img opens ${file} in its backing chain, outside ${where}`);
    }
    else if (layers[i] && real !== layers[i]!.realPath) problems.push(
      `${master.realPath}: layer ${i} is ${real}, ${layers[i]!.realPath} was checked`
    );
    for (const extent of layer['format-specific']?.data?.extents ?? []) {
      const extentReal = extent.filename && !hasProtocol(extent.filename)
        ? await fs.realpath(extent.filename).catch(() => null)
        : null;
      if (!extentReal || !isInside(extentReal, roots)) {
        problems.push(`${file}: VMDK extent ${extent.filename} is outside ${where}`);
      }
    }
  }
  return problems;
}

/**
 * After an overlay was created on a checked chain: the chain QEMU will open
 * from the overlay must be the very files checked (same device and inode).
 */
export async function verifyOverlayChain(
  qemuImg: string, overlay: string, checked: readonly ChainLayer[],
): Promise<string[]> {
  let chain: LayerInfo[];
  try {
    const { stdout } = await runTool(
      qemuImg, ['info', '--backing-chain', '--output=json', '--force-share', '-f', 'qcow2', overlay],
      { timeoutMs: 30000, errorCode: 'QWD_OVERLAY_FAILED' },
    );
    chain = JSON.parse(stdout) as LayerInfo[];
  } catch (err) {
    return [`backing chain of ${overlay}: ${(err as Error).message}`];
  }
  const below = chain.slice(1);
  if (below.length !== checked.length) {
    return [
      `${overlay}: ${below.length} layer(s) below the overlay, ${checked.length} were checked (the master changed ` +
        `meanwhile?)`
    ];
  }
  const problems: string[] = [];
  for (const [i, layer] of below.entries()) {
    const stat = await fs.stat(layer.filename ?? '').catch(() => null);
    const want = checked[i]!;
    if (!stat || stat.dev !== want.dev || stat.ino !== want.ino) {
      problems.push(`${overlay}: layer ${i + 1} is ${layer.filename}, not the file checked (${want.realPath})`);
    }
  }
  return problems;
}

/**
 * Where a file that may not exist yet would land, symlinks followed: the real
 * path of its nearest existing ancestor plus the rest. The file itself is not
 * followed (a download replaces it by rename, which never follows it).
 */
export async function resolveFutureFile(file: string): Promise<string> {
  const rest: string[] = [path.basename(file)];
  let dir = path.dirname(path.resolve(file));
  for (;;) {
    try {
      return path.join(await fs.realpath(dir), ...rest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dir === path.dirname(dir)) throw err;
      rest.unshift(path.basename(dir));
      dir = path.dirname(dir);
    }
  }
}
