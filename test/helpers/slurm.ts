// A real private Slurm 22.05 for tests: one cluster with one node, all of it in
// a temp dir — its own munge key and munged (own socket), a slurm.conf on two
// free loopback ports, slurmctld and slurmd in the foreground — stopped by the
// PIDs we spawned in teardown. Several test files may each run one at once (ava
// runs files in parallel workers): every path, port and the cluster name are
// private, and job ids start at a random FirstJobId so two clusters never hand
// out the same ids. Not a fixture for the product's config: the test decides
// how the product talks to it (SLURM_CONF in `env`). Its state (key, spool,
// state save dir, job output) belongs to one test and goes with its temp dir.
//
// Facts this relies on (checked here, Debian 12, Slurm 22.05.8, munge 0.5.15,
// as root; see /work/shared/TEST-PEERS.md):
// - munged runs as root (no need for user munge) with --foreground and
//   private --socket, --key-file, --pid-file, --seed-file; it takes the 0600
//   root-owned key mungekey --create writes, and it refuses a socket whose
//   directories are not executable by all (the 0700 temp dir becomes 0711).
// - AuthInfo=socket=… is read by both auth/munge and cred/munge in 22.05.
// - CommunicationParameters=NoCtldInAddrAny,NoInAddrAny makes slurmctld and
//   slurmd bind 127.0.0.1 (what localhost / NodeAddr resolve to) instead of
//   0.0.0.0: nothing listens beyond loopback.
// - proctrack/linuxproc, task/none, jobacct_gather/none: no cgroups needed.
//   linuxproc follows the parent chain only: a job process whose parent dies
//   first (a signal sent to the batch step alone) escapes Slurm; stop() finds
//   such processes by SLURM_CLUSTER_NAME, kills them by PID and fails.
//   SlurmdParameters=config_overrides lets the node claim more CPUs/memory
//   than the host has (slurm.conf wins, the node is not drained).
// - Two clusters on one host with the same NodeName=localhost do not interfere
//   (each slurmd has its own port, spool dir and pid file; slurmstepd sockets
//   live in the spool dir) — test/launcher/slurm-cli.test.ts runs two at once.
// - EnforcePartLimits=ALL (the default here) makes sbatch refuse at submit
//   what the partition can never satisfy (too many CPUs, a time limit over
//   MaxTime); with enforcePartLimits: false such a job stays PENDING with
//   Reason=PartitionConfig / PartitionTimeLimit, as on Slurm's own default.
// - Slurm checks time limits about every 30 s: a --time=1 job ends TIMEOUT
//   60–90 s after it started (measured twice: 87 s).
// - If a test worker dies before its teardown, peer-process.ts kills the
//   daemons by PID; processes of jobs still running then are not caught
//   (slurmstepd detaches from slurmd), so tests end their jobs in teardown.
// Timings measured here (2 vCPUs): bring-up (mungekey → node idle)
// 0.2–1.5 s, typically ~1.2 s, up to ~1.9 s with 20 clusters starting at once;
// teardown (scancel every job, wait for the steps, stop slurmd + slurmctld +
// munged, check the PIDs) 0.15–0.4 s with a running `sleep` job, plus up to
// KillWait (5 s here) when a job ignores SIGTERM. A job goes PD → R in 1–2 s.
import fs from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import { execFile } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { requireProgram, tempDir, waitFor } from './env.js';
import { freePorts, isRunning, runProgram, spawnPeer, type PeerProcess } from './peer-process.js';

export interface SlurmOptions {
  /** CPUs of the single node (default 2); may exceed the host's. */
  cpus?: number;
  /** RealMemory of the node in MiB (default 2048). */
  memoryMiB?: number;
  /** DefMemPerCPU in MiB (default 256): what a job without --mem gets per CPU. */
  defMemPerCpuMiB?: number;
  /** EnforcePartLimits=ALL when true (default): sbatch refuses what the partition can never run. */
  enforcePartLimits?: boolean;
  /** MinJobAge in seconds (default 60): how long an ended job stays visible to scontrol/squeue, plus the purge's delay (measured: MinJobAge=10 → gone 18 s after EndTime). */
  minJobAgeS?: number;
  /** KillWait in seconds (default 5): SIGTERM → SIGKILL when a job is cancelled or times out. */
  killWaitS?: number;
  /**
   * GPU device files of the node (`gres/gpu`, one per GPU, as a site lists its
   * /dev/vfio/<group> files in gres.conf). Slurm 22.05 drops a file-less GPU
   * gres ("Removing file-less GPU"), so tests give it character devices.
   */
  gpuFiles?: string[];
}

export interface SlurmCluster {
  /** The private slurm.conf; clients find it through SLURM_CONF (see env). */
  conf: string;
  /** Environment for every Slurm client command: { SLURM_CONF }. */
  env: Record<string, string>;
  /** The temp dir that holds everything (job output goes here unless a job says otherwise). */
  dir: string;
  clusterName: string;
  /** The node's name (also its slurmd -N) and its address. */
  nodeName: string;
  nodeAddr: string;
  /** The default partition 'debug' (MaxTime=INFINITE) and a second one 'other' (MaxTime=60 minutes). */
  partitions: { default: 'debug'; other: 'other' };
  cpus: number;
  memoryMiB: number;
  /** Job ids of this cluster start here (random per cluster, so ids never match another cluster's). */
  firstJobId: number;
  /** Runs a Slurm client command (argv array, no shell, cwd = dir) with SLURM_CONF; rejects with its stderr. */
  run(cmd: string, args: string[], opts?: { input?: string }): Promise<string>;
  pids: { munged: number; slurmctld: number; slurmd: number };
  /** Cancels every job, waits for their steps to end, stops slurmd, slurmctld and munged by PID and checks they are gone. Twice is a no-op. */
  stop(): Promise<void>;
}

const NODE_NAME = 'localhost';
const NODE_ADDR = '127.0.0.1';
const RUN_TIMEOUT_MS = 30000;
const MUNGE_READY_TIMEOUT_MS = 5000;
const READY_TIMEOUT_MS = 20000;
const TERM_GRACE_MS = 10000;
const PORT_ATTEMPTS = 3;
/** After scancel, how long jobs may take to leave RUNNING/COMPLETING beyond KillWait. */
const DRAIN_EXTRA_MS = 10000;
const LOG_TAIL_LINES = 20;

export async function startSlurm(t: ExecutionContext, opts: SlurmOptions = {}): Promise<SlurmCluster> {
  for (const program of ['slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol', 'scancel', 'sinfo']) requireProgram(program, 'slurm-wlm');
  for (const program of ['munged', 'mungekey', 'munge']) requireProgram(program, 'munge');
  const cpus = opts.cpus ?? 2;
  const memoryMiB = opts.memoryMiB ?? 2048;
  const defMemPerCpuMiB = opts.defMemPerCpuMiB ?? 256;
  const gpus = opts.gpuFiles?.length ?? 0;
  if (!Number.isInteger(cpus) || cpus < 1) throw new Error(`startSlurm: cpus must be a positive integer, got ${cpus}`);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64) throw new Error(`startSlurm: memoryMiB must be an integer >= 64, got ${memoryMiB}`);

  const started = Date.now();
  const dir = tempDir(t, 'qwd-slurm-');
  // munged checks that everything above its socket is executable by all
  // ("Socket is inaccessible: execute permissions for all required").
  fs.chmodSync(dir, 0o711);
  const stateDir = path.join(dir, 'state');
  const spoolDir = path.join(dir, 'spool');
  fs.mkdirSync(stateDir, { mode: 0o700 });
  fs.mkdirSync(spoolDir, { mode: 0o700 });
  const file = (name: string) => path.join(dir, name);
  const mungeSocket = file('munge.sock');
  const conf = file('slurm.conf');
  const clusterName = `qwd${crypto.randomBytes(4).toString('hex')}`;
  const firstJobId = 1000 + crypto.randomInt(900000);
  const env = { SLURM_CONF: conf };

  const run = (cmd: string, args: string[], runOpts: { input?: string } = {}) => runWithEnv(cmd, args, env, dir, runOpts.input);
  const logTail = (name: string) => {
    try {
      return `${name}:\n${fs.readFileSync(file(name), 'utf8').trim().split('\n').slice(-LOG_TAIL_LINES).join('\n')}`;
    } catch {
      return `${name}: (none)`;
    }
  };

  // ---- munged ----
  // mungekey creates the key 0600, owned by us (root here): munged runs as
  // the same user, so that is what it requires.
  await runProgram('mungekey', ['--create', '--bits=1024', `--keyfile=${file('munge.key')}`]);
  const munged = await spawnPeer(t, 'munged', ['--foreground', `--socket=${mungeSocket}`, `--key-file=${file('munge.key')}`,
    `--pid-file=${file('munged.pid')}`, `--seed-file=${file('munged.seed')}`, `--log-file=${file('munged.log')}`], { termGraceMs: TERM_GRACE_MS });
  await waitFor('munged to encode a credential', async () => {
    if (munged.exited()) throw new Error(`munged exited during startup (${munged.exitReason()}): ${munged.stderrTail()}`);
    if (!fs.existsSync(mungeSocket)) return false;
    return runProgram('munge', ['--no-input', `--socket=${mungeSocket}`]).then(() => true, () => false);
  }, MUNGE_READY_TIMEOUT_MS);

  // ---- slurmctld + slurmd on fresh ports (new ones if the picked were taken meanwhile) ----
  let slurmctld: PeerProcess | undefined;
  let slurmd: PeerProcess | undefined;
  for (let attempt = 1; ; attempt++) {
    const [ctldPort, slurmdPort] = await freePorts(2);
    fs.writeFileSync(conf, slurmConf({
      clusterName, dir, stateDir, spoolDir, mungeSocket, ctldPort: ctldPort!, slurmdPort: slurmdPort!, cpus, memoryMiB, defMemPerCpuMiB, firstJobId,
      enforcePartLimits: opts.enforcePartLimits ?? true, minJobAgeS: opts.minJobAgeS ?? 60, killWaitS: opts.killWaitS ?? 5, gpus,
    }));
    // gres.conf(5) is read from slurm.conf's directory.
    if (gpus) fs.writeFileSync(file('gres.conf'), opts.gpuFiles!.map((f) => `Name=gpu File=${f}\n`).join(''));
    // SLURM_CONF too: the daemons find gres.conf beside it only through it (-f alone reads /etc/slurm/gres.conf).
    slurmctld = await spawnPeer(t, 'slurmctld', ['-D', '-f', conf], { termGraceMs: TERM_GRACE_MS, env });
    slurmd = await spawnPeer(t, 'slurmd', ['-D', '-f', conf, '-N', NODE_NAME], { termGraceMs: TERM_GRACE_MS, env });
    try {
      await waitFor(`slurmd to register node ${NODE_NAME} as idle with slurmctld`, async () => {
        for (const [name, peer] of [['slurmctld', slurmctld!], ['slurmd', slurmd!]] as const) {
          if (peer.exited()) throw new Error(`${name} exited during startup (${peer.exitReason()}): ${peer.stderrTail()}`);
        }
        const state = await run('sinfo', ['--noheader', `--nodes=${NODE_NAME}`, '--format=%T']).catch(() => '');
        return state.trim().split('\n').includes('idle');
      }, READY_TIMEOUT_MS);
      break;
    } catch (err) {
      const portTaken = /Address already in use/.test(slurmctld.stderrTail() + slurmd.stderrTail());
      await Promise.all([slurmd.stop(), slurmctld.stop()]);
      if (portTaken && attempt < PORT_ATTEMPTS) {
        fs.rmSync(stateDir, { recursive: true, force: true });
        fs.mkdirSync(stateDir, { mode: 0o700 });
        continue;
      }
      throw new Error(`${(err as Error).message}\n${logTail('slurmctld.log')}\n${logTail('slurmd.log')}`, { cause: err });
    }
  }
  const bringUpMs = Date.now() - started;

  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    const daemons = { slurmd: slurmd!, slurmctld: slurmctld!, munged };
    const problems: string[] = [];
    // slurmd leaves running jobs alone when it stops (their slurmstepd lives
    // on, by design): cancel every job first and wait until their steps are gone.
    if (!slurmctld!.exited() && !slurmd!.exited()) {
      await cancelAllJobs(run, spoolDir, ((opts.killWaitS ?? 5) * 1000) + DRAIN_EXTRA_MS).catch((err: Error) => problems.push(err.message));
    }
    await Promise.all([slurmd!.stop(), slurmctld!.stop()]);
    await munged.stop();
    const left = Object.entries(daemons).filter(([, peer]) => isRunning(peer.pid));
    if (left.length > 0) problems.push(`still running after stop: ${left.map(([name, peer]) => `${name} (PID ${peer.pid})`).join(', ')}`);
    // proctrack/linuxproc follows only the parent chain: a job process whose
    // parent died first (e.g. the batch shell killed by a signal sent with
    // --batch) is reparented away and outlives its job. Slurm puts
    // SLURM_CLUSTER_NAME (random per cluster) in every job's environment:
    // whatever still carries ours is such an escapee — killed by PID, then reported.
    const escaped = jobProcessesOf(clusterName);
    for (const p of escaped) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // It exited between the scan and the kill: what we wanted.
      }
    }
    if (escaped.length > 0) {
      await waitFor('escaped job processes to die', () => !escaped.some((p) => isRunning(p.pid)), 5000);
      problems.push(`job processes of cluster ${clusterName} outlived their jobs and were killed: ${escaped.map((p) => `${p.pid} (${p.cmd})`).join(', ')}`);
    }
    if (problems.length > 0) throw new Error(`private Slurm ${clusterName}: ${problems.join('; ')}`);
  })());
  t.teardown(stop);
  t.log(`private Slurm ${clusterName} up in ${bringUpMs} ms (${dir})`);
  return {
    conf, env, dir, clusterName, nodeName: NODE_NAME, nodeAddr: NODE_ADDR, partitions: { default: 'debug', other: 'other' }, cpus, memoryMiB, firstJobId,
    run, pids: { munged: munged.pid, slurmctld: slurmctld!.pid, slurmd: slurmd!.pid }, stop,
  };
}

interface ConfValues {
  clusterName: string; dir: string; stateDir: string; spoolDir: string; mungeSocket: string; ctldPort: number; slurmdPort: number;
  cpus: number; memoryMiB: number; defMemPerCpuMiB: number; firstJobId: number; enforcePartLimits: boolean; minJobAgeS: number; killWaitS: number;
  gpus: number;
}

/** slurm.conf(5) for one private single-node cluster. */
function slurmConf(v: ConfValues): string {
  const f = (name: string) => path.join(v.dir, name);
  return [
    `ClusterName=${v.clusterName}`,
    `SlurmctldHost=${NODE_NAME}`,
    `SlurmctldPort=${v.ctldPort}`,
    `SlurmdPort=${v.slurmdPort}`,
    // Bind the resolved address (127.0.0.1), not INADDR_ANY.
    'CommunicationParameters=NoCtldInAddrAny,NoInAddrAny',
    'SlurmUser=root',
    'SlurmdUser=root',
    'AuthType=auth/munge',
    'CredType=cred/munge',
    // Read by both plugins (auth and cred) in 22.05.
    `AuthInfo=socket=${v.mungeSocket}`,
    `StateSaveLocation=${v.stateDir}`,
    `SlurmdSpoolDir=${v.spoolDir}`,
    `SlurmctldPidFile=${f('slurmctld.pid')}`,
    `SlurmdPidFile=${f('slurmd.pid')}`,
    `SlurmctldLogFile=${f('slurmctld.log')}`,
    `SlurmdLogFile=${f('slurmd.log')}`,
    'SlurmctldDebug=info',
    'SlurmdDebug=info',
    // No cgroups here: plain /proc process tracking, no task containment.
    'ProctrackType=proctrack/linuxproc',
    'TaskPlugin=task/none',
    'JobAcctGatherType=jobacct_gather/none',
    'SlurmdParameters=config_overrides',
    'AccountingStorageType=accounting_storage/none',
    'JobCompType=jobcomp/none',
    'MpiDefault=none',
    'SwitchType=switch/none',
    'MailProg=/bin/true',
    'SelectType=select/cons_tres',
    'SelectTypeParameters=CR_Core_Memory',
    // Without it a job with no --mem takes the whole node's memory.
    `DefMemPerCPU=${v.defMemPerCpuMiB}`,
    `EnforcePartLimits=${v.enforcePartLimits ? 'ALL' : 'NO'}`,
    'ReturnToService=2',
    `FirstJobId=${v.firstJobId}`,
    `MinJobAge=${v.minJobAgeS}`,
    `KillWait=${v.killWaitS}`,
    'SlurmctldTimeout=30',
    'SlurmdTimeout=30',
    'InactiveLimit=0',
    // Start a submitted job at once instead of up to 3 s later (the default
    // batch_sched_delay batches submissions on busy clusters).
    'SchedulerParameters=batch_sched_delay=0',
    'Waittime=0',
    ...(v.gpus ? ['GresTypes=gpu'] : []),
    `NodeName=${NODE_NAME} NodeAddr=${NODE_ADDR} CPUs=${v.cpus} RealMemory=${v.memoryMiB}${v.gpus ? ` Gres=gpu:${v.gpus}` : ''} State=UNKNOWN`,
    `PartitionName=debug Nodes=${NODE_NAME} Default=YES MaxTime=INFINITE State=UP`,
    `PartitionName=other Nodes=${NODE_NAME} MaxTime=60 State=UP`,
    '',
  ].join('\n');
}

/**
 * scancel every job of the cluster, then waits until none is RUNNING or
 * COMPLETING and no slurmstepd socket is left in the spool dir (each
 * slurmstepd listens on <spool>/<node>_<job>.<step> and removes it on exit;
 * slurmd itself keeps no socket there).
 */
async function cancelAllJobs(run: SlurmCluster['run'], spoolDir: string, timeoutMs: number): Promise<void> {
  const ids = (await run('squeue', ['--noheader', '--format=%i'])).split('\n').map((s) => s.trim()).filter(Boolean);
  if (ids.length > 0) await run('scancel', ids);
  const stepSockets = () => fs.readdirSync(spoolDir).filter((name) => {
    try {
      return fs.statSync(path.join(spoolDir, name)).isSocket();
    } catch {
      return false; // removed while we looked: that step has ended
    }
  });
  try {
    await waitFor('cancelled jobs to end', async () => {
      const live = (await run('squeue', ['--noheader', '--states=RUNNING,COMPLETING,CONFIGURING,SUSPENDED', '--format=%i'])).trim();
      return live === '' && stepSockets().length === 0;
    }, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}: jobs still running: ${(await run('squeue', ['--noheader']).catch((e: Error) => e.message)).trim()}; step sockets left: ${stepSockets().join(', ')}`, { cause: err });
  }
}

/** Live processes whose environment holds SLURM_CLUSTER_NAME=<clusterName> (read from /proc; nothing is signalled). */
function jobProcessesOf(clusterName: string): Array<{ pid: number; cmd: string }> {
  const marker = `\0SLURM_CLUSTER_NAME=${clusterName}\0`;
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || !isRunning(Number(entry))) continue;
    try {
      if (!`\0${fs.readFileSync(`/proc/${entry}/environ`, 'latin1')}`.includes(marker)) continue;
      found.push({ pid: Number(entry), cmd: fs.readFileSync(`/proc/${entry}/cmdline`, 'latin1').replaceAll('\0', ' ').trim() });
    } catch {
      // The process ended while we looked, or is not ours to read.
    }
  }
  return found;
}

function runWithEnv(cmd: string, args: string[], env: Record<string, string>, cwd: string, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', timeout: RUN_TIMEOUT_MS, env: { ...process.env, ...env }, cwd }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(stdout);
    });
    child.stdin!.end(input ?? '');
  });
}
