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
// - With netnsNodes, slurmctld and each slurmd run in network namespaces of
//   their own (entered with nsenter --net: `ip netns exec` remounts /sys
//   without the cgroup mount slurmd needs), joined by veth pairs to a private
//   bridge whose host side (.1) is how the broker reaches them. SlurmctldHost
//   must be this host's own name ("not a valid controller" otherwise), with
//   the address clients use in parentheses; slurmctld binds what the name
//   resolves to (127.0.0.1) under NoCtldInAddrAny, so namespaced daemons bind
//   every address of their namespace instead (only lo and one veth there).
//   sinfo --Node lists a node once per partition.
// Timings measured here (2 vCPUs): bring-up (mungekey → node idle)
// 0.2–1.5 s, typically ~1.2 s, up to ~1.9 s with 20 clusters starting at once;
// teardown (scancel every job, wait for the steps, stop slurmd + slurmctld +
// munged, check the PIDs) 0.15–0.4 s with a running `sleep` job, plus up to
// KillWait (5 s here) when a job ignores SIGTERM. A job goes PD → R in 1–2 s.
import fs from 'node:fs';
import os from 'node:os';
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
  /**
   * N compute nodes (n1 … nN), each slurmd in its own network namespace with
   * its own address on a private bridge (10.a.b.0/24, the broker's side .1),
   * so a desktop's VNC is really on another host address. Default: the one
   * node `localhost` on 127.0.0.1. Needs root and iproute2 (`ip netns`).
   */
  netnsNodes?: number;
}

/** Where slurmctld runs: SlurmctldHost's name, the address clients use (null: the name's), its network namespace. */
interface Controller {
  name: string;
  addr: string | null;
  netns: string | null;
}

/** One compute node: its name (slurmd -N), address, and network namespace (null: the host's own). */
export interface SlurmNode {
  name: string;
  addr: string;
  netns: string | null;
}

export interface SlurmCluster {
  /** The private slurm.conf; clients find it through SLURM_CONF (see env). */
  conf: string;
  /** Environment for every Slurm client command: { SLURM_CONF }. */
  env: Record<string, string>;
  /** The temp dir that holds everything (job output goes here unless a job says otherwise). */
  dir: string;
  clusterName: string;
  /** The (first) node's name (also its slurmd -N) and its address. */
  nodeName: string;
  nodeAddr: string;
  /** Every node (one unless netnsNodes). */
  nodes: SlurmNode[];
  /** With netnsNodes: the bridge (this host's side, 10.a.b.1/24) the nodes' namespaces are joined to; else null. */
  bridge: string | null;
  /** The default partition 'debug' (MaxTime=INFINITE) and a second one 'other' (MaxTime=60 minutes). */
  partitions: { default: 'debug'; other: 'other' };
  cpus: number;
  memoryMiB: number;
  /** Job ids of this cluster start here (random per cluster, so ids never match another cluster's). */
  firstJobId: number;
  /** Runs a Slurm client command (argv array, no shell, cwd = dir) with SLURM_CONF; rejects with its stderr. */
  run(cmd: string, args: string[], opts?: { input?: string }): Promise<string>;
  pids: { munged: number; slurmctld: number; slurmd: number; slurmds: number[] };
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
  const tag = crypto.randomBytes(3).toString('hex');
  const { nodes, controller, bridge }: { nodes: SlurmNode[]; controller: Controller; bridge: string | null } = opts.netnsNodes
    ? await createNodeNetwork(t, tag, opts.netnsNodes)
    : { nodes: [{ name: NODE_NAME, addr: NODE_ADDR, netns: null }], controller: { name: NODE_NAME, addr: null, netns: null }, bridge: null };
  const multi = nodes.length > 1 || nodes[0]!.netns !== null;
  // One spool dir per node (slurmstepd sockets live there).
  const spoolDirs = multi ? nodes.map((n) => path.join(spoolDir, n.name)) : [spoolDir];
  for (const d of spoolDirs) if (d !== spoolDir) fs.mkdirSync(d, { mode: 0o700 });

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
  let slurmds: PeerProcess[] = [];
  for (let attempt = 1; ; attempt++) {
    const [ctldPort, slurmdPort] = await freePorts(2);
    fs.writeFileSync(conf, slurmConf({
      clusterName, dir, stateDir, spoolDir, mungeSocket, ctldPort: ctldPort!, slurmdPort: slurmdPort!, cpus, memoryMiB, defMemPerCpuMiB, firstJobId,
      enforcePartLimits: opts.enforcePartLimits ?? true, minJobAgeS: opts.minJobAgeS ?? 60, killWaitS: opts.killWaitS ?? 5, gpus, nodes, controller, multi,
    }));
    // gres.conf(5) is read from slurm.conf's directory.
    if (gpus) fs.writeFileSync(file('gres.conf'), opts.gpuFiles!.map((f) => `Name=gpu File=${f}\n`).join(''));
    // SLURM_CONF too: the daemons find gres.conf beside it only through it (-f alone reads /etc/slurm/gres.conf).
    slurmctld = controller.netns
      ? await spawnPeer(t, 'nsenter', [`--net=/run/netns/${controller.netns}`, '--', 'slurmctld', '-D', '-f', conf], { termGraceMs: TERM_GRACE_MS, env })
      : await spawnPeer(t, 'slurmctld', ['-D', '-f', conf], { termGraceMs: TERM_GRACE_MS, env });
    // nsenter enters only the network namespace (`ip netns exec` also remounts
    // /sys, without the cgroup mount slurmd needs) and execs slurmd: its PID is slurmd's.
    slurmds = await Promise.all(nodes.map((n) => n.netns
      ? spawnPeer(t, 'nsenter', [`--net=/run/netns/${n.netns}`, '--', 'slurmd', '-D', '-f', conf, '-N', n.name], { termGraceMs: TERM_GRACE_MS, env })
      : spawnPeer(t, 'slurmd', ['-D', '-f', conf, '-N', n.name], { termGraceMs: TERM_GRACE_MS, env })));
    const names = nodes.map((n) => n.name).join(',');
    let lastSinfo = '';
    try {
      await waitFor(`slurmd to register node${nodes.length > 1 ? 's' : ''} ${names} as idle with slurmctld`, async () => {
        for (const [name, peer] of [['slurmctld', slurmctld!] as const, ...slurmds.map((d, i) => [`slurmd ${nodes[i]!.name}`, d] as const)]) {
          if (peer.exited()) throw new Error(`${name} exited during startup (${peer.exitReason()}): ${peer.stderrTail()}`);
        }
        lastSinfo = await run('sinfo', ['--noheader', '--Node', `--nodes=${names}`, '--format=%N %T %E']).catch((e: Error) => e.message);
        // One line per node and partition: every node must be idle in all of them.
        const lines = lastSinfo.trim().split('\n').map((line) => line.trim().split(/\s+/));
        return nodes.every((n) => lines.some((l) => l[0] === n.name)) && lines.every((l) => l[1] === 'idle');
      }, READY_TIMEOUT_MS);
      break;
    } catch (err) {
      const portTaken = /Address already in use/.test(slurmctld.stderrTail() + slurmds.map((d) => d.stderrTail()).join(''));
      await Promise.all([...slurmds.map((d) => d.stop()), slurmctld.stop()]);
      if (portTaken && attempt < PORT_ATTEMPTS) {
        fs.rmSync(stateDir, { recursive: true, force: true });
        fs.mkdirSync(stateDir, { mode: 0o700 });
        continue;
      }
      throw new Error(`${(err as Error).message}\nsinfo: ${lastSinfo.trim()}\n${logTail('slurmctld.log')}\n${nodes.map((n) => logTail(multi ? `slurmd-${n.name}.log` : 'slurmd.log')).join('\n')}`, { cause: err });
    }
  }
  const bringUpMs = Date.now() - started;

  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    const daemons: Record<string, PeerProcess> = { slurmctld: slurmctld!, munged, ...Object.fromEntries(slurmds.map((d, i) => [`slurmd ${nodes[i]!.name}`, d])) };
    const problems: string[] = [];
    // slurmd leaves running jobs alone when it stops (their slurmstepd lives
    // on, by design): cancel every job first and wait until their steps are gone.
    if (!slurmctld!.exited() && !slurmds.some((d) => d.exited())) {
      await cancelAllJobs(run, spoolDirs, ((opts.killWaitS ?? 5) * 1000) + DRAIN_EXTRA_MS).catch((err: Error) => problems.push(err.message));
    }
    await Promise.all([...slurmds.map((d) => d.stop()), slurmctld!.stop()]);
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
    conf, env, dir, clusterName, nodeName: nodes[0]!.name, nodeAddr: nodes[0]!.addr, nodes, bridge, partitions: { default: 'debug', other: 'other' }, cpus, memoryMiB, firstJobId,
    run, pids: { munged: munged.pid, slurmctld: slurmctld!.pid, slurmd: slurmds[0]!.pid, slurmds: slurmds.map((d) => d.pid) }, stop,
  };
}

interface ConfValues {
  clusterName: string; dir: string; stateDir: string; spoolDir: string; mungeSocket: string; ctldPort: number; slurmdPort: number;
  cpus: number; memoryMiB: number; defMemPerCpuMiB: number; firstJobId: number; enforcePartLimits: boolean; minJobAgeS: number; killWaitS: number;
  gpus: number;
  nodes: SlurmNode[];
  controller: Controller;
  /** Several nodes (or namespaced ones): per-node spool dir, pid and log files (%n). */
  multi: boolean;
}

/** slurm.conf(5) for one private single-node cluster. */
function slurmConf(v: ConfValues): string {
  const f = (name: string) => path.join(v.dir, name);
  return [
    `ClusterName=${v.clusterName}`,
    `SlurmctldHost=${v.controller.name}${v.controller.addr ? `(${v.controller.addr})` : ''}`,
    `SlurmctldPort=${v.ctldPort}`,
    `SlurmdPort=${v.slurmdPort}`,
    // Bind the resolved address (127.0.0.1), not INADDR_ANY; namespaced daemons
    // bind every address of their namespace, which holds only lo and one veth.
    ...(v.multi ? [] : ['CommunicationParameters=NoCtldInAddrAny,NoInAddrAny']),
    'SlurmUser=root',
    'SlurmdUser=root',
    'AuthType=auth/munge',
    'CredType=cred/munge',
    // Read by both plugins (auth and cred) in 22.05.
    `AuthInfo=socket=${v.mungeSocket}`,
    `StateSaveLocation=${v.stateDir}`,
    `SlurmdSpoolDir=${v.multi ? path.join(v.spoolDir, '%n') : v.spoolDir}`,
    `SlurmctldPidFile=${f('slurmctld.pid')}`,
    `SlurmdPidFile=${f(v.multi ? 'slurmd-%n.pid' : 'slurmd.pid')}`,
    `SlurmctldLogFile=${f('slurmctld.log')}`,
    `SlurmdLogFile=${f(v.multi ? 'slurmd-%n.log' : 'slurmd.log')}`,
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
    ...v.nodes.map((n) => `NodeName=${n.name} NodeAddr=${n.addr} CPUs=${v.cpus} RealMemory=${v.memoryMiB}${v.gpus ? ` Gres=gpu:${v.gpus}` : ''} State=UNKNOWN`),
    `PartitionName=debug Nodes=${v.nodes.map((n) => n.name).join(',')} Default=YES MaxTime=INFINITE State=UP`,
    `PartitionName=other Nodes=${v.nodes.map((n) => n.name).join(',')} MaxTime=60 State=UP`,
    '',
  ].join('\n');
}

/**
 * scancel every job of the cluster, then waits until none is RUNNING or
 * COMPLETING and no slurmstepd socket is left in the spool dir (each
 * slurmstepd listens on <spool>/<node>_<job>.<step> and removes it on exit;
 * slurmd itself keeps no socket there).
 */
async function cancelAllJobs(run: SlurmCluster['run'], spoolDirs: string[], timeoutMs: number): Promise<void> {
  const ids = (await run('squeue', ['--noheader', '--format=%i'])).split('\n').map((s) => s.trim()).filter(Boolean);
  if (ids.length > 0) await run('scancel', ids);
  const stepSockets = () => spoolDirs.flatMap((spoolDir) => fs.readdirSync(spoolDir).filter((name) => {
    try {
      return fs.statSync(path.join(spoolDir, name)).isSocket();
    } catch {
      return false; // removed while we looked: that step has ended
    }
  }));
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
    child.stdin!.on('error', () => {
      // EPIPE: the command exited before reading its input (most never read it); its exit status and stderr tell.
    });
    child.stdin!.end(input ?? '');
  });
}

/**
 * A private network for namespaced nodes: a bridge in the host's namespace
 * with 10.a.b.1/24 (the controller's and the broker's side), and per node a
 * network namespace joined to it by a veth pair, 10.a.b.(10+i), loopback up,
 * its default route via the bridge (this host does not forward: the bridge's
 * side is as far as anything from there goes). Removed (namespaces, then the bridge) in
 * teardown, after the daemons that t.teardown registered later have stopped.
 */
async function createNodeNetwork(t: ExecutionContext, tag: string, count: number): Promise<{ nodes: SlurmNode[]; controller: Controller; bridge: string }> {
  requireProgram('ip', 'iproute2');
  requireProgram('nsenter', 'util-linux');
  if (process.getuid?.() !== 0) throw new Error('netnsNodes needs root (ip netns, veth, bridge): run the tests as root');
  if (!Number.isInteger(count) || count < 1 || count > 8) throw new Error(`netnsNodes must be 1 to 8, got ${count}`);
  const a = 100 + crypto.randomInt(150);
  const b = crypto.randomInt(256);
  const net = `10.${a}.${b}`;
  const bridge = `qwb${tag}`;
  const made: { netns: string[]; links: string[] } = { netns: [], links: [] };
  t.teardown(async () => {
    for (const ns of made.netns) await runProgram('ip', ['netns', 'del', ns]).catch(() => {}); // its veth end goes with it, and so the pair
    for (const link of made.links) await runProgram('ip', ['link', 'del', link]).catch(() => {}); // already gone with its namespace
  });
  const ip = (...args: string[]) => runProgram('ip', args).catch((err: Error) => {
    throw new Error(`ip ${args.join(' ')} failed (creating the test's Slurm node network needs root and a kernel with network namespaces): ${err.message}`, { cause: err });
  });
  await ip('link', 'add', bridge, 'type', 'bridge');
  made.links.push(bridge);
  await ip('addr', 'add', `${net}.1/24`, 'dev', bridge);
  await ip('link', 'set', bridge, 'up');
  /** A namespace joined to the bridge by a veth pair, with `addr`/24 and loopback up. */
  const joinBridge = async (ns: string, host: string, peer: string, addr: string) => {
    await ip('netns', 'add', ns);
    made.netns.push(ns);
    await ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    made.links.push(host);
    await ip('link', 'set', host, 'master', bridge);
    await ip('link', 'set', host, 'up');
    await ip('link', 'set', peer, 'netns', ns);
    await ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', peer);
    await ip('-n', ns, 'link', 'set', peer, 'up');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    // Its way out is the bridge, as a node's is its cluster network (pasta copies it into a guest's namespace).
    await ip('-n', ns, 'route', 'add', 'default', 'via', `${net}.1`);
  };
  const nodes: SlurmNode[] = [];
  for (let i = 1; i <= count; i++) {
    const ns = `qwd${tag}n${i}`;
    await joinBridge(ns, `qv${tag}${i}h`, `qv${tag}${i}n`, `${net}.${10 + i}`);
    nodes.push({ name: `n${i}`, addr: `${net}.${10 + i}`, netns: ns });
  }
  // slurmctld too gets a namespace of its own (it binds what this host's name
  // resolves to, 127.0.0.1, or every address: there, only lo and its veth),
  // under this host's own name, the only SlurmctldHost it accepts; clients use the address in parentheses.
  const ctl = `qwd${tag}c`;
  await joinBridge(ctl, `qv${tag}ch`, `qv${tag}cn`, `${net}.2`);
  return { nodes, controller: { name: os.hostname().split('.')[0]!, addr: `${net}.2`, netns: ctl }, bridge };
}
