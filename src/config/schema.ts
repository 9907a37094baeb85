// The configuration model: every key, its default, and how it is validated.
// parseConfig turns raw YAML data into a frozen Config (or every problem); it reads nothing but a configured caFile (to
// report an unreadable one at check time).
// The example config in etc/qemu-web-desktop/config.example.yml documents the
// same keys; keep both in step.
import path from 'node:path';
import { readBootScripts, readShares, type ShareDecl, type ScriptDecl } from './guest.js';
import { parseAuthConfig, readTrustProxy, type AuthConfig, type TrustProxy } from './auth.js';
import { parseSlurmConfig, type SlurmConfig } from './slurm.js';
import { parseAuditConfig, type AuditConfig } from './audit.js';
import { parseMetricsConfig, type MetricsConfig } from './metrics.js';
import { DEFAULT_DENY, parseCidr, type Cidr } from './cidr.js';
import {
  Problems, isObject, rejectUnknownKeys, section, readInt, readNumber, readString,
  readOptionalString, readBool, readEnum, readIntList, type Obj,
} from './check.js';

export type Accel = 'auto' | 'kvm' | 'tcg';
export type Arch = 'x86_64' | 'aarch64';
export const ARCHES: readonly Arch[] = ['x86_64', 'aarch64'];

/**
 * Which way clipboard text may move between a viewer and the guest, per site
 * (bridge.clipboard) and per machine (clipboard in machines/*.yml): `to-guest`
 * is pasting into the desktop, `from-guest` is copying out of it. The bridge
 * enforces the stricter of the two (src/bridge/clipboard-policy.ts).
 */
export type ClipboardMode = 'both' | 'to-guest' | 'from-guest' | 'off';
export const CLIPBOARD_MODES: readonly ClipboardMode[] = ['both', 'to-guest', 'from-guest', 'off'];

export interface Config {
  /** The file this came from, or null for the embedded defaults. */
  readonly source: string | null;
  readonly listen: { readonly host: string; readonly port: number };
  /** Base URL used in share links and QR codes; null = derived from each request. */
  readonly publicUrl: string | null;
  /** Which reverse proxies may set X-Forwarded-* (see readTrustProxy in auth.ts). */
  readonly trustProxy: TrustProxy;
  readonly stateDir: string;
  readonly runDir: string;
  readonly machinesDir: string;
  readonly launcher: 'local' | 'slurm';
  readonly slurm: SlurmConfig;
  readonly qemu: {
    readonly binaries: Readonly<Record<Arch, string>>;
    readonly img: string;
    /** zstd, which compresses saved machine states and reads them back (machines with resume). */
    readonly zstd: string;
    readonly accel: Accel;
    readonly runAs: string | null;
    readonly sandbox: boolean;
    readonly readyTimeoutMs: number;
    readonly quitGraceMs: number;
    readonly termGraceMs: number;
    readonly isoDiskGiB: number;
    readonly uefi: Readonly<Record<Arch, string>>;
    readonly network: 'user' | 'none';
  };
  /** What guests with qemu.network: user may reach (see guest/network-policy.ts), and the tools that enforce it. */
  readonly guestNetwork: {
    readonly allow: readonly Cidr[];
    readonly deny: readonly Cidr[];
    readonly ip: string;
    readonly nsenter: string;
    readonly unshare: string;
    readonly umount: string;
    readonly nft: string;
    readonly pasta: string;
    /** Slurm jobs only: forwards a node's VNC port to QEMU's socket in its namespace. */
    readonly socat: string;
  };
  readonly limits: {
    readonly maxSessions: number;
    readonly maxSessionsPerUser: number;
    readonly maxCpusPerSession: number;
    readonly maxMemoryMiBPerSession: number;
    readonly minLifetimeS: number;
    readonly defaultLifetimeS: number;
    readonly maxLifetimeS: number;
    readonly hostReserveMemoryMiB: number;
    readonly cpuOvercommit: number;
    readonly maxLoadPerCpu: number;
    readonly memoryOvercommit: number;
    readonly maxCpusPerUser: number;
    readonly maxMemoryMiBPerUser: number;
    readonly maxGpusPerSession: number;
    readonly maxGpusPerUser: number;
  };
  readonly gpu: {
    /** Where sysfs is read from ("/" on a real host; a fixture tree in tests). */
    readonly sysfsRoot: string;
    /** PCI addresses never given to sessions. */
    readonly exclude: readonly string[];
    /** Machines that may have a GPU; null: every machine. */
    readonly machines: readonly string[] | null;
  };
  /** Viewer caps and clipboard policy of the WebSocket bridge (src/bridge/viewer-caps.ts, clipboard-policy.ts). */
  readonly bridge: {
    readonly maxViewersPerLink: number;
    readonly maxViewersPerSession: number;
    readonly reservedControlViewers: number;
    /** A viewer that reads nothing for this long while frames wait for it is dropped (its buffer stays bounded). */
    readonly stalledViewerS: number;
    /** The site's clipboard policy; a machine may only make it stricter. */
    readonly clipboard: ClipboardMode;
    /** Whether view-only viewers receive the guest's clipboard (where copying is allowed); they never paste. */
    readonly viewOnlyClipboard: boolean;
  };
  readonly balloon: {
    /** Shrink the balloon of guests nobody has watched for idleAfterS (0: never). */
    readonly idleAfterS: number;
    /** Target size for idle guests, in percent of their memory. */
    readonly idleTargetPercent: number;
  };
  readonly purge: { readonly schedule: string; readonly endedRetentionS: number };
  readonly sessions: {
    readonly oneShotDefault: boolean;
    readonly oneShotGraceS: number;
    readonly warnBeforeS: readonly number[];
    readonly extendStepS: number;
  };
  readonly guest: {
    /** Host folders may only be shared from inside these directories. */
    readonly shareRoots: readonly string[];
    /** Folders shared into every machine's guests (in addition to the machine's own). */
    readonly shares: readonly ShareDecl[];
    /** Boot scripts for every machine (filtered by their when: conditions). */
    readonly bootScripts: readonly ScriptDecl[];
    readonly genisoimage: string;
    readonly virtCustomize: string;
  };
  readonly auth: AuthConfig;
  readonly mail: {
    readonly smtpHost: string | null;
    readonly smtpPort: number;
    readonly smtpSecure: boolean;
    readonly smtpStartTls: boolean;
    readonly smtpUser: string | null;
    readonly smtpPassword: string | null;
    readonly from: string;
  };
  readonly log: { readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /** The audit trail's retention and where else it is shipped (config/audit.ts). */
  readonly audit: AuditConfig;
  /** Prometheus metrics (GET /metrics): off by default (config/metrics.ts). */
  readonly metrics: MetricsConfig;
}

const TOP_KEYS = [
  'listen', 'publicUrl', 'trustProxy', 'stateDir', 'runDir', 'machinesDir', 'launcher', 'slurm', 'qemu', 'guestNetwork',
  'limits', 'purge', 'sessions', 'guest', 'gpu', 'balloon', 'bridge', 'auth', 'mail', 'log',
  'metrics', 'audit',
] as const;
const QEMU_KEYS = [
  'binaries', 'img', 'zstd', 'accel', 'runAs', 'sandbox', 'readyTimeoutMs', 'quitGraceMs', 'termGraceMs', 'isoDiskGiB',
  'uefi', 'network',
] as const;
const LIMIT_KEYS = [
  'maxSessions', 'maxSessionsPerUser', 'maxCpusPerSession', 'maxMemoryMiBPerSession', 'minLifetimeS',
  'defaultLifetimeS', 'maxLifetimeS', 'hostReserveMemoryMiB', 'cpuOvercommit', 'maxLoadPerCpu', 'memoryOvercommit',
  'maxCpusPerUser', 'maxMemoryMiBPerUser', 'maxGpusPerSession', 'maxGpusPerUser',
] as const;

export interface ParseResult {
  config: Config | null;
  problems: string[];
}

/**
 * Validates raw config data. Relative paths resolve against `baseDir` (the config
 * file's directory, or the install directory for the embedded defaults).
 */
export function parseConfig(raw: unknown, file: string | null, baseDir: string): ParseResult {
  const p = new Problems(file ?? '(embedded defaults)');
  const top: Obj = raw === null || raw === undefined ? {} : isObject(raw) ? raw : (
    p.note('the file must contain a YAML mapping'), {}
  );
  rejectUnknownKeys(p, top, '', TOP_KEYS);

  const listenRaw = section(p, top, 'listen');
  rejectUnknownKeys(p, listenRaw, 'listen.', ['host', 'port']);
  const listen = {
    host: readString(p, listenRaw, 'host', '127.0.0.1', { prefix: 'listen.' }),
    port: readInt(p, listenRaw, 'port', 8080, { min: 0, max: 65535, prefix: 'listen.' }),
  };

  const publicUrl = readOptionalString(p, top, 'publicUrl', {
    pattern: /^https?:\/\/[^\s]+$/, expectation: 'an http:// or https:// URL',
  });
  const resolve = (value: string) => path.resolve(baseDir, value);
  const stateDir = resolve(readString(p, top, 'stateDir', 'var'));
  const runDirRaw = readOptionalString(p, top, 'runDir');
  const runDir = runDirRaw ? resolve(runDirRaw) : path.join(stateDir, 'sessions');
  // Unix socket paths are limited to 108 bytes (sun_path); leave room for "/<id>/qmp.sock".
  if (runDir.length > 80) {
    p.note(
      `runDir resolves to "${runDir}" (${runDir.length} characters); Unix socket paths inside it would exceed the ` +
        `108-byte limit: use a shorter path (at most 80 characters)`
    );
  }

  const qemuRaw = section(p, top, 'qemu');
  rejectUnknownKeys(p, qemuRaw, 'qemu.', QEMU_KEYS);
  const binariesRaw = section(p, qemuRaw, 'binaries', 'qemu.');
  rejectUnknownKeys(p, binariesRaw, 'qemu.binaries.', ARCHES);
  const uefiRaw = section(p, qemuRaw, 'uefi', 'qemu.');
  rejectUnknownKeys(p, uefiRaw, 'qemu.uefi.', ARCHES);
  const qemu = {
    binaries: {
      x86_64: readString(p, binariesRaw, 'x86_64', 'qemu-system-x86_64', { prefix: 'qemu.binaries.' }),
      aarch64: readString(p, binariesRaw, 'aarch64', 'qemu-system-aarch64', { prefix: 'qemu.binaries.' }),
    },
    img: readString(p, qemuRaw, 'img', 'qemu-img', { prefix: 'qemu.' }),
    zstd: readString(p, qemuRaw, 'zstd', 'zstd', { prefix: 'qemu.' }),
    accel: readEnum<Accel>(p, qemuRaw, 'accel', ['auto', 'kvm', 'tcg'], 'auto', 'qemu.'),
    runAs: qemuRaw.runAs === false ? null : readString(
      p, qemuRaw, 'runAs', 'nobody',
      { prefix: 'qemu.', pattern: /^[a-z_][a-z0-9_-]{0,31}$/, expectation: 'a user name, or false' },
    ),
    sandbox: readBool(p, qemuRaw, 'sandbox', true, 'qemu.'),
    readyTimeoutMs: readInt(p, qemuRaw, 'readyTimeoutMs', 20000, { min: 100, max: 600000, prefix: 'qemu.' }),
    quitGraceMs: readInt(p, qemuRaw, 'quitGraceMs', 5000, { min: 0, max: 600000, prefix: 'qemu.' }),
    termGraceMs: readInt(p, qemuRaw, 'termGraceMs', 5000, { min: 0, max: 600000, prefix: 'qemu.' }),
    isoDiskGiB: readInt(p, qemuRaw, 'isoDiskGiB', 10, { min: 1, max: 65536, prefix: 'qemu.' }),
    uefi: {
      x86_64: readString(p, uefiRaw, 'x86_64', '/usr/share/ovmf/OVMF.fd', { prefix: 'qemu.uefi.' }),
      aarch64: readString(p, uefiRaw, 'aarch64', '/usr/share/AAVMF/AAVMF_CODE.fd', { prefix: 'qemu.uefi.' }),
    },
    network: readEnum(p, qemuRaw, 'network', ['user', 'none'] as const, 'user', 'qemu.'),
  };

  const netRaw = section(p, top, 'guestNetwork');
  const netKeys = ['allow', 'deny', 'ip', 'nsenter', 'unshare', 'umount', 'nft', 'pasta', 'socat'];
  rejectUnknownKeys(p, netRaw, 'guestNetwork.', netKeys);
  const cidrList = (key: string, fallback: readonly string[]): Cidr[] => {
    const v = netRaw[key] ?? fallback;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
      p.add(`guestNetwork.${key}`, 'a list of addresses or CIDR blocks (e.g. 10.0.0.0/8, 2001:db8::/32)', v);
      return [];
    }
    return v.flatMap((text: string) => {
      const c = parseCidr(text);
      if (!c) p.add(`guestNetwork.${key}`, 'addresses or CIDR blocks (e.g. 10.0.0.0/8, 2001:db8::/32)', text);
      return c ? [c] : [];
    });
  };
  // Absolute paths: a PATH lookup could find another program of the same name first
  // (npm puts node_modules/.bin first, where an unrelated "nft" lives) and the rules would not load.
  const tool = (key: string, fallback: string) =>
    readString(p, netRaw, key, fallback, { prefix: 'guestNetwork.', pattern: /^\//, expectation: 'an absolute path' });
  const guestNetwork = {
    allow: cidrList('allow', []),
    deny: cidrList('deny', DEFAULT_DENY),
    ip: tool('ip', '/usr/sbin/ip'),
    nsenter: tool('nsenter', '/usr/bin/nsenter'),
    unshare: tool('unshare', '/usr/bin/unshare'),
    umount: tool('umount', '/usr/bin/umount'),
    nft: tool('nft', '/usr/sbin/nft'),
    pasta: tool('pasta', '/usr/bin/pasta'),
    socat: tool('socat', '/usr/bin/socat'),
  };

  const limitsRaw = section(p, top, 'limits');
  rejectUnknownKeys(p, limitsRaw, 'limits.', LIMIT_KEYS);
  const lp = { prefix: 'limits.' };
  const limits = {
    maxSessions: readInt(p, limitsRaw, 'maxSessions', 10, { ...lp, min: 0, max: 10000 }),
    maxSessionsPerUser: readInt(p, limitsRaw, 'maxSessionsPerUser', 3, { ...lp, min: 0, max: 10000 }),
    maxCpusPerSession: readInt(p, limitsRaw, 'maxCpusPerSession', 4, { ...lp, min: 1, max: 1024 }),
    maxMemoryMiBPerSession: readInt(
      p, limitsRaw, 'maxMemoryMiBPerSession', 8192, { ...lp, min: 16, max: 16 * 1024 * 1024 },
    ),
    minLifetimeS: readInt(p, limitsRaw, 'minLifetimeS', 300, { ...lp, min: 1, max: 365 * 86400 }),
    defaultLifetimeS: readInt(p, limitsRaw, 'defaultLifetimeS', 4 * 3600, { ...lp, min: 1, max: 365 * 86400 }),
    maxLifetimeS: readInt(p, limitsRaw, 'maxLifetimeS', 24 * 3600, { ...lp, min: 1, max: 365 * 86400 }),
    hostReserveMemoryMiB: readInt(p, limitsRaw, 'hostReserveMemoryMiB', 1024, { ...lp, min: 0 }),
    cpuOvercommit: readNumber(p, limitsRaw, 'cpuOvercommit', 2, { ...lp, min: 0.1, max: 64 }),
    maxLoadPerCpu: readNumber(p, limitsRaw, 'maxLoadPerCpu', 1.5, { ...lp, min: 0, max: 1000 }),
    memoryOvercommit: readNumber(p, limitsRaw, 'memoryOvercommit', 1, { ...lp, min: 0.1, max: 16 }),
    maxCpusPerUser: readInt(p, limitsRaw, 'maxCpusPerUser', 8, { ...lp, min: 1, max: 100000 }),
    maxMemoryMiBPerUser: readInt(p, limitsRaw, 'maxMemoryMiBPerUser', 16384, { ...lp, min: 16 }),
    maxGpusPerSession: readInt(p, limitsRaw, 'maxGpusPerSession', 1, { ...lp, min: 0, max: 16 }),
    maxGpusPerUser: readInt(p, limitsRaw, 'maxGpusPerUser', 1, { ...lp, min: 0, max: 64 }),
  };
  if (limits.minLifetimeS > limits.maxLifetimeS) {
    p.note(`limits.minLifetimeS (${limits.minLifetimeS}) must not exceed limits.maxLifetimeS (${limits.maxLifetimeS})`);
  }
  if (limits.defaultLifetimeS < limits.minLifetimeS || limits.defaultLifetimeS > limits.maxLifetimeS) {
    p.note(
      `limits.defaultLifetimeS (${limits.defaultLifetimeS}) must lie between limits.minLifetimeS (` +
        `${limits.minLifetimeS}) and limits.maxLifetimeS (${limits.maxLifetimeS})`
    );
  }

  const purgeRaw = section(p, top, 'purge');
  rejectUnknownKeys(p, purgeRaw, 'purge.', ['schedule', 'endedRetentionS']);
  const purge = {
    schedule: readString(
      p, purgeRaw, 'schedule', '* * * * *',
      { prefix: 'purge.', pattern: /^[\d*/,\- ]+$/, expectation: 'a cron expression (5 or 6 fields)' },
    ),
    endedRetentionS: readInt(p, purgeRaw, 'endedRetentionS', 7 * 86400, { prefix: 'purge.', min: 0 }),
  };
  const fields = purge.schedule.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) p.add('purge.schedule', 'a cron expression with 5 or 6 fields', purge.schedule);

  const sessionsRaw = section(p, top, 'sessions');
  rejectUnknownKeys(p, sessionsRaw, 'sessions.', ['oneShotDefault', 'oneShotGraceS', 'warnBeforeS', 'extendStepS']);
  const sessions = {
    oneShotDefault: readBool(p, sessionsRaw, 'oneShotDefault', false, 'sessions.'),
    oneShotGraceS: readInt(p, sessionsRaw, 'oneShotGraceS', 30, { prefix: 'sessions.', min: 0, max: 86400 }),
    warnBeforeS: [
      ...readIntList(p, sessionsRaw, 'warnBeforeS', [3600, 900, 300], { prefix: 'sessions.', min: 1, max: 30 * 86400 })
    ].sort((a, b) => b - a),
    extendStepS: readInt(p, sessionsRaw, 'extendStepS', 3600, { prefix: 'sessions.', min: 60, max: 30 * 86400 }),
  };

  const guestRaw = section(p, top, 'guest');
  rejectUnknownKeys(p, guestRaw, 'guest.', ['shareRoots', 'shares', 'bootScripts', 'genisoimage', 'virtCustomize']);
  const rootsRaw = guestRaw.shareRoots;
  let shareRoots: string[] = [];
  if (rootsRaw !== undefined && rootsRaw !== null) {
    if (!Array.isArray(rootsRaw) || !rootsRaw.every((r) => typeof r === 'string' && r.length > 0)) {
      p.add('guest.shareRoots', 'a list of directories', rootsRaw);
    }
    else shareRoots = rootsRaw.map((r: string) => path.resolve(baseDir, r));
  }
  const guestScripts = readBootScripts(p, guestRaw, baseDir, file ?? '(embedded defaults)', 'guest.');
  const guest = {
    shareRoots,
    shares: readShares(p, guestRaw, 'shares', 'guest.'),
    bootScripts: guestScripts.scripts,
    genisoimage: readString(p, guestRaw, 'genisoimage', 'genisoimage', { prefix: 'guest.' }),
    virtCustomize: readString(p, guestRaw, 'virtCustomize', 'virt-customize', { prefix: 'guest.' }),
  };

  const gpuRaw = section(p, top, 'gpu');
  rejectUnknownKeys(p, gpuRaw, 'gpu.', ['sysfsRoot', 'exclude', 'machines']);
  const stringList = (raw: Obj, key: string, prefix: string, pattern: RegExp, expectation: string): string[] | null => {
    const v = raw[key];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && pattern.test(x))) {
      p.add(prefix + key, expectation, v);
      return null;
    }
    return v as string[];
  };
  const gpu = {
    sysfsRoot: path.resolve(baseDir, readString(p, gpuRaw, 'sysfsRoot', '/', { prefix: 'gpu.' })),
    exclude: stringList(
      gpuRaw, 'exclude', 'gpu.', /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/,
      'a list of PCI addresses like 0000:01:00.0',
    ) ?? [],
    machines: stringList(
      gpuRaw, 'machines', 'gpu.', /^[a-z0-9][a-z0-9._-]{0,63}$/, 'a list of machine names, or null for all',
    ),
  };

  const balloonRaw = section(p, top, 'balloon');
  rejectUnknownKeys(p, balloonRaw, 'balloon.', ['idleAfterS', 'idleTargetPercent']);
  const balloon = {
    idleAfterS: readInt(p, balloonRaw, 'idleAfterS', 0, { prefix: 'balloon.', min: 0, max: 30 * 86400 }),
    idleTargetPercent: readInt(p, balloonRaw, 'idleTargetPercent', 50, { prefix: 'balloon.', min: 10, max: 100 }),
  };

  const bridgeRaw = section(p, top, 'bridge');
  rejectUnknownKeys(
    p, bridgeRaw, 'bridge.',
    ['maxViewersPerLink', 'maxViewersPerSession', 'reservedControlViewers', 'stalledViewerS', 'clipboard',
      'viewOnlyClipboard'],
  );
  // QEMU's VNC server takes at most 32 clients per display; the session cap stays below that.
  const bridge = {
    maxViewersPerLink: readInt(p, bridgeRaw, 'maxViewersPerLink', 8, { prefix: 'bridge.', min: 1, max: 31 }),
    maxViewersPerSession: readInt(p, bridgeRaw, 'maxViewersPerSession', 24, { prefix: 'bridge.', min: 1, max: 31 }),
    reservedControlViewers: readInt(p, bridgeRaw, 'reservedControlViewers', 4, { prefix: 'bridge.', min: 1, max: 31 }),
    stalledViewerS: readInt(p, bridgeRaw, 'stalledViewerS', 30, { prefix: 'bridge.', min: 1, max: 3600 }),
    clipboard: readEnum<ClipboardMode>(p, bridgeRaw, 'clipboard', CLIPBOARD_MODES, 'both', 'bridge.'),
    viewOnlyClipboard: readBool(p, bridgeRaw, 'viewOnlyClipboard', false, 'bridge.'),
  };
  if (bridge.reservedControlViewers >= bridge.maxViewersPerSession) {
    p.note(
      `bridge.reservedControlViewers (${bridge.reservedControlViewers}) must be less than ` +
        `bridge.maxViewersPerSession (${bridge.maxViewersPerSession}), or no view-only viewer could ever connect`
    );
  }

  const auth = parseAuthConfig(p, top, baseDir);

  const mailRaw = section(p, top, 'mail');
  rejectUnknownKeys(
    p, mailRaw, 'mail.', ['smtpHost', 'smtpPort', 'smtpSecure', 'smtpStartTls', 'smtpUser', 'smtpPassword', 'from'],
  );
  const mail = {
    smtpHost: readOptionalString(p, mailRaw, 'smtpHost', { prefix: 'mail.' }),
    smtpPort: readInt(p, mailRaw, 'smtpPort', 25, { prefix: 'mail.', min: 1, max: 65535 }),
    smtpSecure: readBool(p, mailRaw, 'smtpSecure', false, 'mail.'),
    smtpStartTls: readBool(p, mailRaw, 'smtpStartTls', true, 'mail.'),
    smtpUser: readOptionalString(p, mailRaw, 'smtpUser', { prefix: 'mail.' }),
    smtpPassword: readOptionalString(p, mailRaw, 'smtpPassword', { prefix: 'mail.' }),
    from: readString(p, mailRaw, 'from', 'qemu-web-desktop <noreply@localhost>', { prefix: 'mail.' }),
  };

  const logRaw = section(p, top, 'log');
  rejectUnknownKeys(p, logRaw, 'log.', ['level']);
  const log = {
    level: readEnum(
      p, logRaw, 'level', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info', 'log.',
    )
  };

  const config: Config = {
    source: file,
    listen,
    publicUrl: publicUrl ? publicUrl.replace(/\/+$/, '') : null,
    trustProxy: readTrustProxy(p, top),
    stateDir,
    runDir,
    machinesDir: resolve(readString(p, top, 'machinesDir', 'machines')),
    launcher: readEnum(p, top, 'launcher', ['local', 'slurm'] as const, 'local'),
    slurm: parseSlurmConfig(p, top, baseDir, stateDir),
    qemu,
    guestNetwork,
    limits,
    purge,
    sessions,
    guest,
    gpu,
    balloon,
    bridge,
    auth,
    mail,
    log,
    metrics: parseMetricsConfig(p, top, baseDir),
    audit: parseAuditConfig(p, top, baseDir),
  };
  if (!p.ok) return { config: null, problems: p.list };
  return { config: deepFreeze(config), problems: [] };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
