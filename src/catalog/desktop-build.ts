// Builds the "debian-desktop" machine (Debian 12 + XFCE) from Debian packages:
// checks the tools and the free space, runs bin/build-desktop-image (spawned with
// an argv array, in its own process group) in a fresh work directory under the
// state dir, then moves the qcow2 into machinesDir/images/ and writes the
// descriptor — each by rename, so machinesDir never holds a half-written file.
// Not here: refusing while sessions use the master (the caller passes a check,
// machines.ts owns it) and printing (the caller gets phases through onProgress).
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { QwdError } from '../errors.js';
import { findProgram } from '../qemu/run-tool.js';

export const DESKTOP_MACHINE = 'debian-desktop';
/** The unprivileged user the desktop logs in automatically. */
export const DESKTOP_USER = 'user';

export const BUILD_PHASES = ['packages', 'rootfs', 'disk', 'compress'] as const;
export type BuildPhase = (typeof BUILD_PHASES)[number];

const PHASE_TEXT: Record<BuildPhase, string> = {
  packages: 'packages (mmdebstrap: Debian 12 packages into a root file system)',
  rootfs: 'root fs (kernel, initrd, fstab)',
  disk: 'disk (MBR, FAT + SYSLINUX, ext4 filled by mkfs.ext4 -d)',
  compress: 'compress (qemu-img convert -c -O qcow2)',
};

export function phaseText(phase: BuildPhase): string {
  return PHASE_TEXT[phase];
}

/** A program the build runs, and the Debian package that provides it. */
export interface BuildTool {
  readonly program: string;
  readonly debianPackage: string;
}

/** What the builder needs besides qemu-img (config.qemu.img, from qemu-utils). */
export const DESKTOP_BUILD_TOOLS: readonly BuildTool[] = [
  { program: 'bash', debianPackage: 'bash' },
  { program: 'mmdebstrap', debianPackage: 'mmdebstrap' },
  { program: 'sfdisk', debianPackage: 'fdisk' },
  { program: 'mkfs.vfat', debianPackage: 'dosfstools' },
  { program: 'mcopy', debianPackage: 'mtools' },
  { program: 'mdir', debianPackage: 'mtools' },
  { program: 'syslinux', debianPackage: 'syslinux' },
  { program: 'mkfs.ext4', debianPackage: 'e2fsprogs' },
  { program: 'dpkg', debianPackage: 'dpkg' },
];

/** Files (not programs) the build copies into the disk. */
export const DESKTOP_BUILD_FILES: readonly { file: string; debianPackage: string }[] = [
  { file: '/usr/lib/syslinux/mbr/mbr.bin', debianPackage: 'syslinux-common' },
  { file: '/usr/lib/syslinux/modules/bios/ldlinux.c32', debianPackage: 'syslinux-common' },
];

/** Free space the build needs: the work dir holds the root fs (~1 GiB), the .debs and the raw disk's written blocks. */
export const WORK_SPACE_BYTES = 4 * 1024 ** 3;
export const IMAGE_SPACE_BYTES = 1024 ** 3;

/** Pure: the descriptor the build writes (machines/debian-desktop.yml). */
export function desktopDescriptor(): Record<string, unknown> {
  return {
    name: DESKTOP_MACHINE,
    description: 'Debian 12 + XFCE desktop (terminal, text editor, clipboard); built by qwdctl machines build',
    image: `images/${DESKTOP_MACHINE}.qcow2`,
    format: 'qcow2',
    arch: 'x86_64',
    firmware: 'bios',
    diskInterface: 'virtio',
    // Keys of issue 11 part 2: virtio-vga (remote resize) and the qemu-vdagent clipboard channel.
    display: 'virtio',
    agent: 'spice-vdagent',
    // qemu-guest-agent's port (<runDir>/qga.sock): tests and the broker reach the guest through it.
    guestAgent: true,
    cpus: { default: 2, max: 4 },
    memoryMiB: { default: 2048, max: 8192 },
    // Sessions of the default size resume a desktop saved once it was drawn (qwdctl machines prepare debian-desktop);
    // until then, and for other sizes, they boot.
    resume: { sizes: [{ cpus: 2, memoryMiB: 2048 }], ready: { guestAgent: true, process: 'xfdesktop' } },
  };
}

export function desktopDescriptorText(now: Date): string {
  return `# Written by "qwdctl machines build ${DESKTOP_MACHINE}" on ${now.toISOString()}; rebuild with --force.\n`
    + `# Guest: XFCE 4.18, automatic login of user "${DESKTOP_USER}", spice-vdagent, qemu-guest-agent, cloud-init ` +
      `(NoCloud),\n`
    + '# virtio-9p shares at /mnt/<tag>. See INSTALL.md, "The desktop machine".\n'
    + stringify(desktopDescriptor());
}

export interface DesktopPaths {
  readonly descriptor: string;
  readonly image: string;
}

export function desktopPaths(machinesDir: string): DesktopPaths {
  return {
    descriptor: path.join(machinesDir, `${DESKTOP_MACHINE}.yml`),
    image: path.join(machinesDir, 'images', `${DESKTOP_MACHINE}.qcow2`),
  };
}

/** Pure: the first missing tool or file, with the package to install; null when all are there. */
export function findMissingTool(
  present: (program: string) => boolean, exists: (file: string) => boolean, qemuImg: string,
): string | null {
  const missing: string[] = [];
  const packages = new Set<string>();
  for (const tool of [...DESKTOP_BUILD_TOOLS, { program: qemuImg, debianPackage: 'qemu-utils' }]) {
    if (!present(tool.program)) {
      missing.push(tool.program);
      packages.add(tool.debianPackage);
    }
  }
  for (const f of DESKTOP_BUILD_FILES) {
    if (!exists(f.file)) {
      missing.push(f.file);
      packages.add(f.debianPackage);
    }
  }
  if (!missing.length) return null;
  const list = [...packages].join(' ');
  return `building ${DESKTOP_MACHINE} needs ${missing.join(', ')}, which ${missing.length > 1 ? 'are' : 'is'} ` +
    `missing: install the Debian package${packages.size > 1 ? 's' : ''} ${list} (apt-get install ${list}, or run ` +
    `bin/setup --desktop)`;
}

/** apt's and mmdebstrap's words for a mirror that cannot be reached or does not have what is asked. */
const MIRROR_FAILURE = new RegExp([
  'Failed to fetch', 'Could not connect', 'Unable to connect', 'Could not resolve', 'Temporary failure resolving',
  'Connection refused', 'Connection timed out', 'Unable to fetch some archives', '404\\s+Not Found',
  'Release file .* is not valid yet', 'does not have a Release file',
].join('|'), 'i');

/**
 * Pure: what a failed build run means for the operator, from the end of its
 * output. Mirror problems and a full disk get their own words; anything else
 * is reported with the last lines of output.
 */
export function explainBuildFailure(outputTail: string, mirror: string | null): {
  code: 'QWD_DOWNLOAD_FAILED' | 'QWD_BUILD_FAILED'; message: string;
} {
  const lines = outputTail.trim().split('\n').filter((l) => l.trim() !== '');
  const last = lines.slice(-6).join(' | ');
  if (/No space left on device|ENOSPC|not enough free space|Disk full/i.test(outputTail)) {
    return {
      code: 'QWD_BUILD_FAILED',
      message: `the disk filled up while building ${DESKTOP_MACHINE} (no space left on device): free some space and ` +
        `run the build again (${last})`,
    };
  }
  const fetch = lines.filter((l) => MIRROR_FAILURE.test(l));
  if (fetch.length) {
    const where = mirror ?? "this host's apt sources (/etc/apt/sources.list*)";
    return {
      code: 'QWD_DOWNLOAD_FAILED',
      message: `cannot download Debian packages: the mirror is unreachable or incomplete (${where}): ` +
        `${fetch.slice(-2).join(' | ').trim()}`,
    };
  }
  return { code: 'QWD_BUILD_FAILED', message: `building ${DESKTOP_MACHINE} failed: ${last || '(no output)'}` };
}

export interface BuildOptions {
  readonly machinesDir: string;
  readonly stateDir: string;
  readonly qemuImg: string;
  /** A mirror URL ("http://…/debian") instead of the host's apt sources. */
  readonly mirror?: string | null;
  readonly force?: boolean;
  /** Throws if sessions use the current master; asked before the build and again before the swap. */
  readonly refuseIfInUse?: () => void | Promise<void>;
  readonly onProgress?: (event: { phase: BuildPhase } | { info: string }) => void;
  /** The build script (default: bin/build-desktop-image of this checkout). */
  readonly script?: string;
  readonly now?: () => number;
}

export type BuildResult =
  | { status: 'present'; descriptor: string; image: string }
  | {
    status: 'built'; descriptor: string; image: string; diskBytes: number; virtualBytes: number | null;
    elapsedMs: number; log: string;
  };

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEFAULT_SCRIPT = path.resolve(HERE, '..', '..', 'bin', 'build-desktop-image');

export async function buildDesktopMachine(opts: BuildOptions): Promise<BuildResult> {
  const now = opts.now ?? Date.now;
  const started = now();
  const paths = desktopPaths(opts.machinesDir);
  const exists = fs.existsSync(paths.descriptor) || fs.existsSync(paths.image);
  if (exists && !opts.force) return { status: 'present', ...paths };
  if (exists) await opts.refuseIfInUse?.();

  const missing = findMissingTool((p) => findProgram(p) !== null, (f) => fs.existsSync(f), opts.qemuImg);
  if (missing) throw new QwdError('QWD_BUILD_TOOL_MISSING', missing, { userMessage: missing });
  const script = opts.script ?? DEFAULT_SCRIPT;
  if (!fs.existsSync(script)) {
    throw buildError('QWD_BUILD_FAILED', `the build script ${script} is missing from this installation`);
  }
  if (process.getuid?.() !== 0) {
    throw buildError(
      'QWD_BUILD_FAILED',
      `building ${DESKTOP_MACHINE} needs root (mmdebstrap gives the guest's files their owners): run it as root or ` +
        `with sudo`,
    );
  }

  const buildRoot = path.join(opts.stateDir, 'build');
  await fsp.mkdir(buildRoot, { recursive: true, mode: 0o700 });
  // Root works here: a symlink or a directory someone else owns or may write to could
  // point root's writes (log, work dir) anywhere. Files below are created, never followed.
  const rootStat = await fsp.lstat(buildRoot);
  if (!rootStat.isDirectory() || rootStat.uid !== 0 || (rootStat.mode & 0o022) !== 0) {
    const found = rootStat.isSymbolicLink()
      ? 'a symlink'
      : `owned by uid ${rootStat.uid}, mode ${(rootStat.mode & 0o777).toString(8)}`;
    throw buildError(
      'QWD_BUILD_FAILED',
      `${buildRoot} must be a directory owned by root that no one else can write to (it is ${found}); ` +
        'remove it and build again',
    );
  }
  const imagesDir = path.dirname(paths.image);
  await fsp.mkdir(imagesDir, { recursive: true });
  await requireSpace(buildRoot, WORK_SPACE_BYTES, 'the build work directory');
  await requireSpace(imagesDir, IMAGE_SPACE_BYTES, 'the machines images directory');

  const work = await fsp.mkdtemp(path.join(buildRoot, `${DESKTOP_MACHINE}-`));
  const log = path.join(buildRoot, `${DESKTOP_MACHINE}.log`);
  const built = path.join(work, `${DESKTOP_MACHINE}.qcow2`);
  const partImage = path.join(imagesDir, `.${DESKTOP_MACHINE}.qcow2.part-${process.pid}`);
  const partDescriptor = path.join(opts.machinesDir, `.${DESKTOP_MACHINE}.yml.part-${process.pid}`);
  try {
    await runBuildScript(
      script, ['--work', work, '--out', built, ...(opts.mirror ? ['--mirror', opts.mirror] : [])], log,
      opts.mirror ?? null, opts.onProgress,
    );
    // A build takes minutes: sessions may have started on the old master meanwhile.
    if (exists) await opts.refuseIfInUse?.();
    await moveInto(built, partImage, paths.image);
    await fsp.writeFile(partDescriptor, desktopDescriptorText(new Date(now())), { mode: 0o644, flag: 'wx' });
    await fsp.rename(partDescriptor, paths.descriptor);
  } finally {
    await removeWorkDir(work);
    await fsp.rm(partImage, { force: true });
    await fsp.rm(partDescriptor, { force: true });
  }
  const st = await fsp.stat(paths.image);
  return { status: 'built', ...paths, diskBytes: st.blocks * 512, virtualBytes: null, elapsedMs: now() - started, log };
}

function buildError(code: 'QWD_BUILD_FAILED' | 'QWD_DOWNLOAD_FAILED', message: string, cause?: unknown): QwdError {
  return new QwdError(code, message, { userMessage: message, cause });
}

async function requireSpace(dir: string, bytes: number, what: string): Promise<void> {
  const st = await fsp.statfs(dir);
  const free = st.bavail * st.bsize;
  if (free < bytes) {
    throw buildError(
      'QWD_BUILD_FAILED',
      `not enough free space for ${what} ${dir}: ${formatMiB(free)} free, the build needs ${formatMiB(bytes)}`,
    );
  }
}

/**
 * Mount points at or below dir (from /proc/self/mountinfo, whose paths escape space, tab, newline and backslash in
 * octal).
 */
export function mountsUnder(dir: string, mountinfo: string): string[] {
  const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return mountinfo.split('\n').map((l) => l.split(' ')[4]).filter((m): m is string => m !== undefined)
    .map(unescape).filter((m) => m === dir || m.startsWith(dir + '/'));
}

/**
 * The work dir goes, unless something is still mounted inside it (mmdebstrap mounts
 * /proc, /sys and /dev in the root fs while it runs): a recursive delete would cross
 * into them, so it is left for the operator with a message instead.
 */
async function removeWorkDir(work: string): Promise<void> {
  const mounts = mountsUnder(work, await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
  if (mounts.length) {
    process.emitWarning(
      `${work} not removed: still mounted inside it: ${mounts.join(', ')} (umount them, then delete it)`
    );
    return;
  }
  await fsp.rm(work, { recursive: true, force: true });
}

/** Into place by rename; across file systems via a hidden part file next to the target, then rename. */
async function moveInto(from: string, part: string, to: string): Promise<void> {
  try {
    await fsp.rename(from, to);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
  }
  await fsp.copyFile(from, part, fs.constants.COPYFILE_EXCL);
  await fsp.rename(part, to);
}

/** Terminal signals end the build's whole process group (mmdebstrap, apt, dpkg…) before qwdctl exits. */
function runBuildScript(
  script: string, args: string[], logFile: string, mirror: string | null, onProgress: BuildOptions['onProgress'],
): Promise<void> {
  return new Promise((resolve, reject) => {
    // Never through a symlink planted where the log goes.
    let logStream: fs.WriteStream;
    try {
      const fd = fs.openSync(
        logFile, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600,
      );
      logStream = fs.createWriteStream(logFile, { fd });
    } catch (err) {
      reject(buildError('QWD_BUILD_FAILED', `cannot write the build log ${logFile}: ${(err as Error).message}`, err));
      return;
    }
    const child = spawn(
      'bash', [script, ...args],
      { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C.UTF-8' } },
    );
    let tail = '';
    let stdoutRest = '';
    let settled = false;
    const keep = (text: string) => {
      logStream.write(text);
      tail = (tail + text).slice(-8000);
    };
    // On a signal, the whole group is asked to stop, and the promise settles only once the
    // script has exited: mmdebstrap unmounts what it mounted in the root fs before that.
    let interrupted: string | null = null;
    const stopGroup = (signal: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        // The group has already exited.
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const onSignal = (signal: NodeJS.Signals | 'timeout') => {
      interrupted ??= signal === 'timeout' ? 'no end after 90 minutes' : signal;
      stopGroup('SIGTERM');
      killTimer ??= setTimeout(() => stopGroup('SIGKILL'), 30_000);
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    // A stalled mirror must not hang the build for ever.
    const timer = setTimeout(() => onSignal('timeout'), 90 * 60 * 1000);
    const finish = (err: QwdError | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      for (const s of signals) process.off(s, onSignal);
      logStream.end(() => (err ? reject(err) : resolve()));
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      keep(d);
      const lines = (stdoutRest + d).split('\n');
      stdoutRest = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^phase (\S+)$/.exec(line);
        if (m && (BUILD_PHASES as readonly string[]).includes(m[1]!)) onProgress?.({ phase: m[1] as BuildPhase });
        else if (line.startsWith('info ')) onProgress?.({ info: line.slice(5) });
      }
    });
    child.stderr.setEncoding('utf8').on('data', keep);
    child.on('error', (err) => finish(buildError('QWD_BUILD_FAILED', `cannot run ${script}: ${err.message}`, err)));
    child.on('close', (code, signal) => {
      if (interrupted) {
        return finish(
          buildError(
            'QWD_BUILD_FAILED', `the build was stopped (${interrupted}); nothing was installed (output in ${logFile})`,
          )
        );
      }
      if (code === 0) return finish(null);
      const { code: errorCode, message } = explainBuildFailure(tail, mirror);
      finish(buildError(errorCode, `${message} (exit ${signal ?? code}; full output in ${logFile})`));
    });
  });
}

export function formatMiB(bytes: number): string {
  return `${Math.round(bytes / 1024 / 1024)} MiB`;
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}
