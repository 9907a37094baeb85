// The `slurm:` section: how the Slurm launcher submits and reaches VMs that
// run as jobs on compute nodes. Read only when `launcher: slurm`, but always
// validated so a typo is reported before anyone switches launchers.
import path from 'node:path';
import {
  Problems, isObject, rejectUnknownKeys, section, readBool, readInt, readString, readOptionalString, type Obj,
} from './check.js';

export interface SlurmSubmitOptions {
  readonly partition: string | null;
  readonly account: string | null;
  readonly qos: string | null;
  /** More sbatch options, one argv element each (e.g. "--constraint=avx2"). */
  readonly extraArgs: readonly string[];
}

export interface SlurmConfig extends SlurmSubmitOptions {
  readonly binaries: {
    readonly sbatch: string; readonly squeue: string; readonly scontrol: string; readonly scancel: string;
  };
  /** Extra environment for the Slurm commands (e.g. SLURM_CONF). */
  readonly env: Readonly<Record<string, string>>;
  /** A directory the broker and every node see at the same path (overlays, VNC secrets, connection files). */
  readonly sharedDir: string;
  /**
   * The address QEMU's VNC listens on, on the node ("0.0.0.0": every interface; the broker connects to the node's
   * NodeAddr).
   */
  readonly vncBind: string;
  readonly vncPortMin: number;
  readonly vncPortMax: number;
  /** How often job states are read while waiting (scontrol) and while running (one squeue for all jobs). */
  readonly pollIntervalMs: number;
  /** Once the job runs, how long QEMU may take to report ready. */
  readonly startTimeoutMs: number;
  /** How long one Slurm command (sbatch, scontrol, squeue, scancel) may take before it counts as failed. */
  readonly commandTimeoutMs: number;
  /** Per-machine overrides of partition, account, qos, extraArgs. */
  readonly machines: Readonly<Record<string, Partial<SlurmSubmitOptions>>>;
  /** The generic resource a GPU desktop asks for (`--gres=<gpuGres>:N`); null: cluster desktops get no GPU. */
  readonly gpuGres: string | null;
  /** Where the job reads sysfs on the node to find its VFIO GPUs ("/" in production; a fixture tree in tests). */
  readonly nodeSysfsRoot: string;
  /** A node-local directory of lock files that makes each GPU (IOMMU group) exclusive to one job on a node. */
  readonly gpuLockDir: string;
  /**
   * With qemu.network: user each job runs QEMU in a network namespace of its
   * own on its node (launcher/slurm-script.ts). true: QEMU shares the node's
   * network instead, and its guest reaches the node's own services; for nodes
   * that cannot run the tools.
   */
  readonly unisolatedGuestNetwork: boolean;
}

const KEYS = [
  'binaries', 'env', 'partition', 'account', 'qos', 'extraArgs', 'sharedDir', 'vncBind', 'vncPortMin', 'vncPortMax',
  'pollIntervalMs', 'startTimeoutMs', 'commandTimeoutMs', 'machines', 'gpuGres', 'nodeSysfsRoot', 'gpuLockDir',
  'unisolatedGuestNetwork',
] as const;
const SUBMIT_KEYS = ['partition', 'account', 'qos', 'extraArgs'] as const;
/** Slurm names: partitions, accounts, QOS. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

export function parseSlurmConfig(p: Problems, top: Obj, baseDir: string, stateDir: string): SlurmConfig {
  const raw = section(p, top, 'slurm');
  rejectUnknownKeys(p, raw, 'slurm.', KEYS);
  const binRaw = section(p, raw, 'binaries', 'slurm.');
  rejectUnknownKeys(p, binRaw, 'slurm.binaries.', ['sbatch', 'squeue', 'scontrol', 'scancel']);
  const bin = (name: string) => readString(p, binRaw, name, name, { prefix: 'slurm.binaries.' });

  const envRaw = section(p, raw, 'env', 'slurm.');
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(envRaw)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) || typeof value !== 'string') {
      p.add(`slurm.env.${key}`, 'a string value under an environment variable name', value);
    } else env[key] = value;
  }

  const vncPortMin = readInt(p, raw, 'vncPortMin', 5900, { prefix: 'slurm.', min: 5900, max: 65535 });
  const vncPortMax = readInt(p, raw, 'vncPortMax', 5999, { prefix: 'slurm.', min: 5900, max: 65535 });
  if (vncPortMax < vncPortMin) {
    p.note(`slurm.vncPortMax (${vncPortMax}) must not be below slurm.vncPortMin (${vncPortMin})`);
  }

  const machinesRaw = section(p, raw, 'machines', 'slurm.');
  const machines: Record<string, Partial<SlurmSubmitOptions>> = {};
  for (const [name, value] of Object.entries(machinesRaw)) {
    const prefix = `slurm.machines.${name}.`;
    if (!isObject(value)) {
      p.add(`slurm.machines.${name}`, 'a mapping of partition, account, qos, extraArgs', value);
      continue;
    }
    rejectUnknownKeys(p, value, prefix, SUBMIT_KEYS);
    const o: { -readonly [K in keyof SlurmSubmitOptions]?: SlurmSubmitOptions[K] } = {};
    for (const key of ['partition', 'account', 'qos'] as const) {
      if (key in value) {
        o[key] = readOptionalString(p, value, key, { prefix, pattern: NAME, expectation: 'a Slurm name' });
      }
    }
    if ('extraArgs' in value) o.extraArgs = readArgs(p, value, prefix);
    machines[name] = o;
  }

  return {
    binaries: { sbatch: bin('sbatch'), squeue: bin('squeue'), scontrol: bin('scontrol'), scancel: bin('scancel') },
    env,
    partition: readOptionalString(
      p, raw, 'partition', { prefix: 'slurm.', pattern: NAME, expectation: 'a Slurm partition name' },
    ),
    account: readOptionalString(
      p, raw, 'account', { prefix: 'slurm.', pattern: NAME, expectation: 'a Slurm account name' },
    ),
    qos: readOptionalString(p, raw, 'qos', { prefix: 'slurm.', pattern: NAME, expectation: 'a Slurm QOS name' }),
    extraArgs: readArgs(p, raw, 'slurm.'),
    sharedDir: path.resolve(
      baseDir, readOptionalString(p, raw, 'sharedDir', { prefix: 'slurm.' }) ?? path.join(stateDir, 'slurm'),
    ),
    vncBind: readString(
      p, raw, 'vncBind', '0.0.0.0', { prefix: 'slurm.', pattern: /^[0-9A-Fa-f.:]+$/, expectation: 'an IP address' },
    ),
    vncPortMin,
    vncPortMax,
    pollIntervalMs: readInt(p, raw, 'pollIntervalMs', 2000, { prefix: 'slurm.', min: 100, max: 600000 }),
    commandTimeoutMs: readInt(p, raw, 'commandTimeoutMs', 30000, { prefix: 'slurm.', min: 1000, max: 600000 }),
    startTimeoutMs: readInt(p, raw, 'startTimeoutMs', 120000, { prefix: 'slurm.', min: 1000, max: 3600000 }),
    machines,
    gpuGres: readOptionalString(p, raw, 'gpuGres', {
      prefix: 'slurm.', pattern: /^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)?$/,
      expectation: 'a gres name such as "gpu" or "gpu:a100"',
    }),
    nodeSysfsRoot: readString(
      p, raw, 'nodeSysfsRoot', '/', { prefix: 'slurm.', pattern: /^\/[^\n\r\0]*$/, expectation: 'an absolute path' },
    ),
    gpuLockDir: readString(
      p, raw, 'gpuLockDir', '/run/lock/qemu-web-desktop',
      { prefix: 'slurm.', pattern: /^\/[^\n\r\0]*$/, expectation: 'an absolute path' },
    ),
    unisolatedGuestNetwork: readBool(p, raw, 'unisolatedGuestNetwork', false, 'slurm.'),
  };
}

/** sbatch options: a list of "--option" or "--option=value" strings, never a shell line. */
function readArgs(p: Problems, obj: Obj, prefix: string): string[] {
  const v = obj.extraArgs;
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((a) => typeof a === 'string' && /^--?[A-Za-z]/.test(a) && !/[\n\r\0]/.test(a))) {
    p.add(`${prefix}extraArgs`, 'a list of sbatch options, one per element, like "--constraint=avx2"', v);
    return [];
  }
  return v as string[];
}

/** The submit options for one machine: its overrides on top of the site's. */
export function submitOptionsFor(config: SlurmConfig, machine: string): SlurmSubmitOptions {
  const o = config.machines[machine] ?? {};
  return {
    partition: o.partition !== undefined ? o.partition : config.partition,
    account: o.account !== undefined ? o.account : config.account,
    qos: o.qos !== undefined ? o.qos : config.qos,
    extraArgs: o.extraArgs ?? config.extraArgs,
  };
}
