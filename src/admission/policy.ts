// decideAdmission: pure. Given what is asked, what live sessions already hold,
// the site limits and the host's measured state, admit or refuse with a
// message a scientist understands — which limit, and what they could ask for
// instead. Every limit is inclusive: a limit of 3 allows 3.
import type { Config } from '../config/schema.js';
import type { SessionState } from '../store/session-rows.js';

export interface HostLoad {
  cpus: number;
  totalMemoryMiB: number;
  availableMemoryMiB: number;
  load1: number;
  sampledAt: number;
}

/**
 * What live sessions hold. The service's own limits (global, per user, per
 * machine) count every live session, queued ones too; this host's capacity
 * (cpus, memoryMiB, gpuMemoryMiB) counts only the sessions that run or may run
 * here (starting, running, stopping), not those waiting in a scheduler's queue.
 */
export interface Reserved {
  sessions: number;
  cpus: number;
  memoryMiB: number;
  /** The part of memoryMiB that belongs to GPU guests: pinned by VFIO, never overcommitted. */
  gpuMemoryMiB: number;
  sessionsOfUser: number;
  cpusOfUser: number;
  memoryMiBOfUser: number;
  gpusOfUser: number;
  sessionsOfMachine: number;
}

export interface AdmissionRequest {
  user: string;
  cpus: number;
  memoryMiB: number;
  gpus: number;
  machine: { name: string; maxSessions: number | null };
}

export interface AdmissionInput {
  request: AdmissionRequest;
  reserved: Reserved;
  limits: Config['limits'];
  /** This host's load and size; null when a cluster scheduler (Slurm) owns capacity and queues what does not fit. */
  host: HostLoad | null;
  /** Usable GPUs not claimed by any session. */
  gpusFree: number;
  /** Usable GPUs on this host, free or held (0: the host offers no GPU at all, which is not "try again later"). */
  gpusUsable: number;
}

export type AdmissionDecision =
  | { admit: true }
  | {
    admit: false; status: 429 | 503; code: 'QWD_ADMISSION_LIMIT' | 'QWD_ADMISSION_CAPACITY'; limit: string;
    message: string;
  };

/** The fields of a session row that admission counts. */
export interface HeldSession {
  state: SessionState;
  owner: string;
  machine: string;
  cpus: number;
  memoryMiB: number;
  gpus: number;
}

/** Sums what sessions hold for a request by `user` for `machine`. Pure. */
export function reservedBy(sessions: readonly HeldSession[], user: string, machine: string): Reserved {
  // queued: handed to a scheduler (Slurm) that has not started it; it is a
  // desktop of that user and machine all the same, and will run without asking again.
  const live = sessions.filter(
    (r) => r.state === 'starting' || r.state === 'queued' || r.state === 'running' || r.state === 'stopping'
  );
  const onHost = live.filter((r) => r.state !== 'queued');
  const mine = live.filter((r) => r.owner === user);
  const sum = (rows: readonly HeldSession[], f: (r: HeldSession) => number) => rows.reduce((n, r) => n + f(r), 0);
  return {
    sessions: live.length,
    cpus: sum(onHost, (r) => r.cpus),
    memoryMiB: sum(onHost, (r) => r.memoryMiB),
    gpuMemoryMiB: sum(onHost.filter((r) => r.gpus > 0), (r) => r.memoryMiB),
    sessionsOfUser: mine.length,
    cpusOfUser: sum(mine, (r) => r.cpus),
    memoryMiBOfUser: sum(mine, (r) => r.memoryMiB),
    gpusOfUser: sum(mine, (r) => r.gpus),
    sessionsOfMachine: live.filter((r) => r.machine === machine).length,
  };
}

/**
 * Memory one more desktop can have on this host. Overcommit (limits.memoryOvercommit)
 * relies on the balloon, which cannot take back a GPU guest's memory: VFIO pins all
 * of it for DMA. So GPU guests count at 1x against the physical capacity, the others
 * at 1/overcommit; a GPU request gets physical MiB, any other overcommitted MiB.
 * Also bounded by the memory the host measures as available now.
 */
export function memoryFreeMiB(
  reserved: Pick<Reserved, 'memoryMiB'> & Partial<Pick<Reserved, 'gpuMemoryMiB'>>, limits: Config['limits'],
  host: HostLoad, forGpuGuest: boolean,
): number {
  const physicalMiB = host.totalMemoryMiB - limits.hostReserveMemoryMiB;
  const pinnedMiB = reserved.gpuMemoryMiB ?? 0;
  const balloonedMiB = reserved.memoryMiB - pinnedMiB;
  const capacityLeft = forGpuGuest
    ? Math.floor(physicalMiB - pinnedMiB - balloonedMiB / limits.memoryOvercommit)
    : Math.floor((physicalMiB - pinnedMiB) * limits.memoryOvercommit) - balloonedMiB;
  return Math.max(0, Math.min(capacityLeft, host.availableMemoryMiB - limits.hostReserveMemoryMiB));
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export function decideAdmission(
  { request, reserved, limits, host, gpusFree, gpusUsable }: AdmissionInput
): AdmissionDecision {
  // Per-person limits first: they are the ones a user can act on.
  if (reserved.sessionsOfUser + 1 > limits.maxSessionsPerUser) {
    return refuse(
      429, 'maxSessionsPerUser',
      `You already have ${plural(reserved.sessionsOfUser, 'desktop')} running, the most allowed per person (` +
        `${limits.maxSessionsPerUser}). Stop one to start another.`,
    );
  }
  const userCpusLeft = limits.maxCpusPerUser - reserved.cpusOfUser;
  if (request.cpus > userCpusLeft) {
    return refuse(
      429, 'maxCpusPerUser',
      userCpusLeft > 0
        ? `Your desktops already use ${plural(reserved.cpusOfUser, 'CPU')} of the ${limits.maxCpusPerUser} allowed ` +
          `per person; ask for ${userCpusLeft} or fewer.`
        : `Your desktops already use all ${limits.maxCpusPerUser} CPUs allowed per person. Stop one to start another.`,
    );
  }
  const userMemoryLeft = limits.maxMemoryMiBPerUser - reserved.memoryMiBOfUser;
  if (request.memoryMiB > userMemoryLeft) {
    return refuse(
      429, 'maxMemoryMiBPerUser',
      userMemoryLeft >= 64
        ? `Your desktops already use ${reserved.memoryMiBOfUser} MiB of the ${limits.maxMemoryMiBPerUser} MiB ` +
          `allowed per person; ask for ${userMemoryLeft} MiB or less.`
        : `Your desktops already use all the memory allowed per person (${limits.maxMemoryMiBPerUser} MiB). Stop one ` +
          `to start another.`,
    );
  }
  if (request.gpus > 0 && reserved.gpusOfUser + request.gpus > limits.maxGpusPerUser) {
    return refuse(
      429, 'maxGpusPerUser',
      `You already have ${plural(reserved.gpusOfUser, 'GPU')}, the most allowed per person (${limits.maxGpusPerUser}` +
        `). Start this desktop without a GPU, or stop the other one.`,
    );
  }
  if (reserved.sessions + 1 > limits.maxSessions) {
    return refuse(
      503, 'maxSessions',
      `This server is running its maximum of ${limits.maxSessions} desktops. Please try again later.`,
    );
  }
  if (request.machine.maxSessions !== null && reserved.sessionsOfMachine + 1 > request.machine.maxSessions) {
    return refuse(
      503, 'machine.maxSessions',
      `All ${request.machine.maxSessions} "${request.machine.name}" desktops allowed at once are in use. Please try ` +
        `another machine or try again later.`,
    );
  }
  if (host === null) {
    if (request.gpus > gpusFree) {
      return refuse(503, 'gpu', 'GPUs cannot be given to desktops on this service. Start the desktop without a GPU.');
    }
    return { admit: true };
  }
  const cpuCapacity = Math.floor(host.cpus * limits.cpuOvercommit);
  const cpusFree = Math.max(0, cpuCapacity - reserved.cpus);
  if (request.cpus > cpusFree) {
    return refuse(
      503, 'cpu',
      cpusFree > 0
        ? `Only ${cpusFree === 1 ? '1 CPU is' : `${cpusFree} CPUs are`} free on this server; ask for ${cpusFree} or ` +
          `fewer.`
        : 'All CPUs of this server are in use. Please try again later.',
    );
  }
  const memoryFree = memoryFreeMiB(reserved, limits, host, request.gpus > 0);
  if (request.memoryMiB > memoryFree) {
    return refuse(
      503, 'memory',
      memoryFree >= 64
        ? `Only ${memoryFree} MiB of memory is free on this server; ask for ${memoryFree} MiB or less.`
        : 'The memory of this server is in use. Please try again later.',
    );
  }
  if (request.gpus > 0 && gpusUsable === 0) {
    return refuse(
      503, 'gpu',
      'GPUs are not offered on this server: it has no GPU ready for passthrough. Start the desktop without a GPU.',
    );
  }
  if (request.gpus > gpusFree) {
    return refuse(
      503, 'gpu',
      gpusFree > 0
        ? `Only ${gpusFree === 1 ? '1 GPU is' : `${gpusFree} GPUs are`} free; ask for ${gpusFree} or fewer.`
        : 'No GPU is free right now. Start the desktop without a GPU, or try again later.',
    );
  }
  if (host.cpus > 0 && host.load1 / host.cpus > limits.maxLoadPerCpu) {
    return refuse(503, 'load', 'This server is too busy right now (high load). Please try again in a few minutes.');
  }
  return { admit: true };
}

function refuse(status: 429 | 503, limit: string, message: string): AdmissionDecision {
  return {
    admit: false, status, code: status === 429 ? 'QWD_ADMISSION_LIMIT' : 'QWD_ADMISSION_CAPACITY', limit, message,
  };
}

/**
 * What the form shows: what one more desktop could still get (ignoring per-user limits).
 * gpusUsable (default: gpusFree) tells "all GPUs are held" (0 free of some) from "no GPU here".
 */
export function availability(
  reserved: Pick<Reserved, 'sessions' | 'cpus' | 'memoryMiB'> & Partial<Pick<Reserved, 'gpuMemoryMiB'>>,
  limits: Config['limits'], host: HostLoad | null, gpusFree: number, gpusUsable = gpusFree,
): { sessions: number; cpus: number | null; memoryMiB: number | null; gpus: number; gpusUsable: number } {
  // A cluster's free capacity is the scheduler's to know: only the service's own limit shows.
  if (host === null) {
    return {
      sessions: Math.max(0, limits.maxSessions - reserved.sessions), cpus: null, memoryMiB: null, gpus: gpusFree,
      gpusUsable,
    };
  }
  return {
    sessions: Math.max(0, limits.maxSessions - reserved.sessions),
    cpus: Math.max(0, Math.floor(host.cpus * limits.cpuOvercommit) - reserved.cpus),
    // What a desktop without a GPU could get (the form's common case).
    memoryMiB: memoryFreeMiB(reserved, limits, host, false),
    gpus: gpusFree,
    gpusUsable,
  };
}
