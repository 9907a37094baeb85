// Converts a DARTS machines.conf (INI: one [section] per machine, "key: value"
// or "key = value" lines, '#' or ';' comments) into our machine descriptors.
// Pure: text in, descriptors and warnings out; the CLI writes the files.
import path from 'node:path';
import { MACHINE_NAME } from './descriptor.js';

export interface ImportedMachine {
  name: string;
  descriptor: Record<string, unknown>;
}

export interface DartsImport {
  machines: ImportedMachine[];
  warnings: string[];
}

const KNOWN = new Set([
  'description', 'url', 'file', 'image', 'checksum', 'sha256', 'cpu', 'cpus', 'mem', 'memory', 'format', 'arch', 'bios',
  'firmware', 'config_script', 'script', 'size',
]);

export function parseIni(text: string, source: string): {
  sections: Map<string, Map<string, string>>; warnings: string[];
} {
  const sections = new Map<string, Map<string, string>>();
  const warnings: string[] = [];
  let current: Map<string, string> | null = null;
  let lastKey: string | null = null;
  text.split(/\r?\n/).forEach((raw, index) => {
    const where = `${source}:${index + 1}`;
    if (/^\s*([#;].*)?$/.test(raw)) return;
    const section = /^\s*\[([^\]]+)\]\s*$/.exec(raw);
    if (section) {
      const name = section[1]!.trim();
      current = new Map();
      if (sections.has(name)) warnings.push(`${where}: section [${name}] appears twice; the later one wins`);
      sections.set(name, current);
      lastKey = null;
      return;
    }
    if (/^\s+\S/.test(raw) && current && lastKey) {
      // Continuation line (indented): appended to the previous value.
      current.set(lastKey, `${current.get(lastKey)} ${raw.trim()}`);
      return;
    }
    const pair = /^\s*([A-Za-z0-9_.-]+)\s*[:=]\s*(.*?)\s*$/.exec(raw);
    if (!pair || !current) {
      warnings.push(`${where}: not understood, skipped: ${raw.trim().slice(0, 60)}`);
      return;
    }
    lastKey = pair[1]!.toLowerCase();
    (current as Map<string, string>).set(lastKey, pair[2]!.replace(/^"(.*)"$/, '$1'));
  });
  return { sections, warnings };
}

/** A section name that is an image file name (DARTS: "the section name is the VM file name"). */
const IMAGE_FILE = /\.(iso|qcow2|qcow|img|raw|vdi|vmdk|vhdx?)$/i;

export function importDartsMachines(text: string, source: string, imagesDir = 'images'): DartsImport {
  const { sections, warnings } = parseIni(text, source);
  const machines: ImportedMachine[] = [];
  for (const [section, keys] of sections) {
    // DARTS names a VM by its file: a section like [slax.iso] with no url/file is that image.
    const sectionFile = IMAGE_FILE.test(section) && !keys.has('url') && !keys.has('file') && !keys.has('image')
      ? section
      : undefined;
    const name = (sectionFile ? section.replace(IMAGE_FILE, '') : section).toLowerCase().replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[-.]+/, '').slice(0, 64);
    if (!MACHINE_NAME.test(name)) {
      warnings.push(`${source}: [${section}] has no usable machine name; skipped`);
      continue;
    }
    if (name !== section) {
      warnings.push(`${source}: [${section}] renamed to "${name}" (lower-case letters, digits, . _ - only)`);
    }
    for (const key of keys.keys()) {
      if (!KNOWN.has(key)) warnings.push(`${source}: [${section}] key "${key}" has no equivalent; ignored`);
    }
    if (keys.has('config_script') || keys.has('script')) {
      warnings.push(`${source}: [${section}] boot scripts are not imported; configure them in the descriptor by hand`);
    }
    const url = keys.get('url');
    if (url !== undefined && !/^https?:\/\/\S+$/i.test(url)) {
      // A file: URL would make "machines download" copy a host file (e.g. /etc/shadow) into images/.
      warnings.push(
        `${source}: [${section}] url ${JSON.stringify(url.slice(0, 200))} must be an http:// or https:// URL ` +
          '(file:, ftp:, data: … are refused); skipped',
      );
      continue;
    }
    const image = imageFileOf(keys, url, sectionFile);
    if ('problem' in image) {
      warnings.push(`${source}: [${section}] ${image.problem}; skipped`);
      continue;
    }
    const fileName = image.fileName;
    const descriptor: Record<string, unknown> = {
      name,
      description: keys.get('description') ?? name,
      image: fileName.includes('/') ? fileName : `${imagesDir}/${fileName}`,
    };
    const format = keys.get('format') ?? (/\.iso$/i.test(fileName) ? 'iso' : undefined);
    if (format) descriptor.format = format.toLowerCase();
    const arch = keys.get('arch');
    if (arch) descriptor.arch = arch === 'amd64' ? 'x86_64' : arch === 'arm64' ? 'aarch64' : arch;
    const firmware = keys.get('firmware') ?? (
      keys.get('bios') && /uefi|ovmf|efi/i.test(keys.get('bios')!) ? 'uefi' : undefined
    );
    if (firmware) descriptor.firmware = firmware;
    const cpus = Number(keys.get('cpus') ?? keys.get('cpu'));
    if (Number.isInteger(cpus) && cpus > 0) descriptor.cpus = { default: Math.min(cpus, 2), max: cpus };
    const memoryMiB = parseMemoryMiB(keys.get('memory') ?? keys.get('mem'));
    if (memoryMiB) descriptor.memoryMiB = { default: Math.min(memoryMiB, 4096), max: memoryMiB };
    if (url) descriptor.url = url;
    const sha = keys.get('sha256') ?? keys.get('checksum')?.replace(/^sha256:/i, '');
    if (sha && /^[0-9a-f]{64}$/i.test(sha)) descriptor.sha256 = sha.toLowerCase();
    else if (sha) warnings.push(`${source}: [${section}] checksum is not a SHA-256 digest; ignored`);
    machines.push({ name, descriptor });
  }
  return { machines, warnings };
}

/**
 * A name that stays inside the images directory when joined to it: not empty,
 * no "/" or "\", not starting with "." (no "." or hidden files), no ".."
 * anywhere, no NUL or other control characters.
 */
export function isPlainFileName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && !/[/\\\x00-\x1f\x7f]/.test(name)
    && !name.startsWith('.') && !name.includes('..');
}

const PLAIN_RULE = 'is not a plain file name (no "/", "\\", "..", NUL or leading ".")';

/**
 * The image of a section: an explicit `file`/`image` (an absolute path as the
 * admin wrote it, or a plain file name in the images directory), else the
 * last segment of the url (percent-decoded, so "..%2F..%2Fx" must be refused
 * here), else the section name itself. Derived names must be plain file names.
 */
function imageFileOf(
  keys: Map<string, string>, url: string | undefined, sectionFile: string | undefined,
): { fileName: string } | { problem: string } {
  const explicit = keys.has('file') ? 'file' : keys.has('image') ? 'image' : null;
  if (explicit) {
    const value = keys.get(explicit)!;
    if (path.posix.isAbsolute(value) && !value.includes('\0')) return { fileName: path.posix.normalize(value) };
    return isPlainFileName(value) ? { fileName: value } : {
      problem: `${explicit} ${JSON.stringify(value)} is neither an absolute path nor a plain file name (no "/", ` +
        `"\\", "..", NUL or leading ".")`
    };
  }
  if (url) {
    let segment: string;
    try {
      segment = decodeURIComponent(path.posix.basename(new URL(url, 'http://x/').pathname));
    } catch {
      return { problem: `url ${JSON.stringify(url)} is not a valid URL (bad percent-encoding?)` };
    }
    if (!segment) return { problem: `url ${JSON.stringify(url)} names no file; add a "file" key` };
    return isPlainFileName(segment) ? { fileName: segment } : {
      problem: `image file name ${JSON.stringify(segment)} taken from the url ${PLAIN_RULE}`
    };
  }
  if (sectionFile) {
    return isPlainFileName(sectionFile) ? { fileName: sectionFile } : {
      problem: `image file name ${JSON.stringify(sectionFile)} taken from the section name ${PLAIN_RULE}`
    };
  }
  return { problem: 'has neither url nor file' };
}

/** "4096", "4G", "512M", "4 GB" → MiB. */
function parseMemoryMiB(value: string | undefined): number | null {
  if (!value) return null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([gGmM])?[iI]?[bB]?\s*$/.exec(value);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = (m[2] ?? 'M').toUpperCase();
  const mib = Math.round(unit === 'G' ? n * 1024 : n);
  return mib >= 64 ? mib : null;
}
