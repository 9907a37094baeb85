// The session manager: the front door and the registry of live sessions. It
// validates and admits requests, creates the row, and hands each session to
// its SessionLife (lifecycle.ts), which owns its life from launch to release:
// every stop, exit and failure goes through that object's dispatch(). The
// manager also answers lookups (tokens, queue, balloon), revokes links,
// extends life-times, and reconciles the store with reality after a restart.
// Viewer presence (presence.ts) and the purge job (purge/service.ts) are
// services of their own that call it.
import { describeValue } from '../describe-value.js';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { AdmissionError, QwdError, ValidationError } from '../errors.js';
import type { Logger } from '../log.js';
import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Catalog } from '../catalog/catalog.js';
import type { LaunchSpec, Launcher, QueueInfo, VmHandle } from '../launcher/types.js';
import type { VncAddress } from '../qemu/rfb-probe.js';
import { resolveShares } from '../guest/shares.js';
import type { GpuDevice } from '../gpu/discover.js';
import { resolveScripts } from '../guest/boot-scripts.js';
import type { LoadSampler } from '../admission/host-load.js';
import { availability, decideAdmission, reservedBy, type Reserved } from '../admission/policy.js';
import { freeGpus, holderOf } from '../gpu/claims.js';
import { storeError } from '../store/db.js';
import { SessionRows, type SessionRow, type EndedRow, type LinkKind } from '../store/session-rows.js';
import { validateCreateRequest } from './request.js';
import { hashToken, isWellFormedToken, newSessionId, newToken, tokensEqual } from './tokens.js';
import { isLive } from './state.js';
import { endReason, type EndReason } from '../store/end-reason.js';
import { SessionLife, type LifeEvent } from './lifecycle.js';
import { ACTORS, boundedText } from '../audit/actor.js';
import type { MetricsRecorder } from '../metrics/recorder.js';

export type { EndedEvent } from './lifecycle.js';

export interface ManagerDeps {
  config: Config;
  rows: SessionRows;
  catalog: Catalog;
  launcher: Launcher;
  load: LoadSampler;
  log: Logger;
  /** VFIO GPUs on this host (re-read at every request: rebinding shows at once). */
  discoverGpus?: () => GpuDevice[];
  clock?: Clock;
  /** Creations, refusals, start latencies and stop outcomes (absent: not counted). */
  metrics?: MetricsRecorder;
}

export type TokenLookup =
  | { kind: 'live'; row: SessionRow; access: LinkKind }
  | { kind: 'ended'; ended: EndedRow }
  | { kind: 'unknown' };

export interface RevokedEvent {
  id: string;
  kind: LinkKind;
}

/** A running session adopted after a restart (viewer presence restarts a one-shot grace period for it). */
export interface AdoptedEvent {
  row: SessionRow;
}

export class SessionManager extends EventEmitter {
  readonly clock: Clock;
  /** The live sessions this process knows, by id; each is forgotten once released. */
  private readonly lives = new Map<string, SessionLife>();

  constructor(private readonly deps: ManagerDeps) {
    super();
    this.clock = deps.clock ?? systemClock;
  }

  private now(): number {
    return this.clock.now();
  }

  get config(): Config {
    return this.deps.config;
  }

  /**
   * Validates, admits (atomically, in one immediate transaction), launches.
   * `who.groups` are the logged-in user's groups as the auth backend reported
   * them (boot-script `when.groups`); never taken from the request body.
   */
  async create(raw: unknown, who: { groups?: readonly string[]; actor?: string } = {}): Promise<SessionRow> {
    let admitted = false;
    try {
      return await this.admitAndLaunch(raw, who, () => { admitted = true; });
    } catch (err) {
      // Thrown before the row was written: a refusal (invalid, over a limit, store busy); after: a failed start,
      // audited as its session's end ('launch-failed').
      if (!admitted) {
        this.deps.metrics?.sessionRefused(err);
        this.auditRefusal(raw, who.actor, err);
      }
      throw err;
    }
  }

  /**
   * A request refused before anything was made (invalid, over a limit, no capacity, no GPU), as an audit row: who,
   * what was asked (known fields only, bounded: never a script, never a token) and the reason code.
   */
  private auditRefusal(raw: unknown, actor: string | undefined, err: unknown): void {
    // Not a refusal (a fault of the broker's own, a store that failed): the log has it.
    if (!(err instanceof QwdError) || !['usage', 'not-found', 'refused'].includes(err.family)) return;
    const body = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
    const asked: Record<string, unknown> = {};
    for (const key of ['machine', 'cpus', 'memoryMiB', 'lifetimeS', 'gpus', 'oneShot'] as const) {
      const v = body[key];
      if (typeof v === 'number' || typeof v === 'boolean') asked[key] = v;
      else if (v !== undefined && v !== null) asked[key] = boundedText(v);
    }
    const owner = typeof body.user === 'string' ? boundedText(body.user) : null;
    const limit = typeof err.details?.limit === 'string' ? err.details.limit : undefined;
    try {
      this.deps.rows.audit(
        null, 'refused', { code: err.code, ...(limit ? { limit } : {}), asked }, this.now(),
        { actor: actor ?? ACTORS.anonymous, owner },
      );
    } catch (auditErr) {
      // The refusal is answered whatever happens here (a full disk refuses the row as it refused the session).
      this.deps.log.error({ err: auditErr }, 'a refusal could not be audited');
    }
  }

  private async admitAndLaunch(
    raw: unknown, who: { groups?: readonly string[]; actor?: string }, onAdmitted: () => void,
  ): Promise<SessionRow> {
    const { config, rows, catalog, log } = this.deps;
    const request = validateCreateRequest(
      raw, (name) => catalog.get(name), config.limits,
      { oneShot: config.sessions.oneShotDefault, gpuMachines: config.gpu.machines },
    );
    const id = newSessionId();
    // Host folders and boot scripts are resolved before anything is created:
    // a folder outside the roots is the request's problem, not a half-made session.
    const values = { user: request.user, sessionId: id, machine: request.machine.name };
    const shares = resolveShares([...config.guest.shares, ...request.machine.shares], config.guest.shareRoots, values);
    const scripts = resolveScripts(
      [...config.guest.bootScripts, ...request.machine.bootScripts.scripts],
      { machine: request.machine.name, user: request.user, groups: who.groups ?? [] }, values, request.script,
    );
    const now = this.now();
    const token = newToken();
    const viewToken = newToken();
    const row: SessionRow = {
      id, token, tokenHash: hashToken(token), viewToken, viewTokenHash: hashToken(viewToken),
      owner: request.user, machine: request.machine.name, cpus: request.cpus, memoryMiB: request.memoryMiB,
      createdAt: now, expiresAt: now + request.lifetimeS * 1000, state: 'starting', handle: null,
      runDir: path.join(this.deps.launcher.runRoot, id), updatedAt: now, viewers: 0,
      oneShot: request.oneShot, email: request.email, warnedBeforeS: null, gpus: request.gpus,
      idleSince: now, balloonTargetMiB: null, hadViewer: false,
    };
    const usableGpus = request.gpus > 0 ? (this.deps.discoverGpus?.() ?? []).filter((g) => g.usable) : [];
    let claimed: GpuDevice[] = [];
    // Check and reserve in one transaction: concurrent requests (web, API and
    // qwdctl through the admin socket) cannot together exceed a limit.
    // The row and its audit line are written together or not at all (a full disk leaves neither).
    try {
      rows.db.transaction(() => {
        // A unit is taken when any of its functions is claimed (an IOMMU group is never shared).
        const free = freeGpus(usableGpus, rows.claimedGpuFunctions());
        const admission = {
          user: request.user, cpus: request.cpus, memoryMiB: request.memoryMiB, gpus: request.gpus,
          machine: { name: request.machine.name, maxSessions: request.machine.maxSessions },
        };
        const decision = decideAdmission({
          request: admission, reserved: this.reserved(request.user, request.machine.name), limits: config.limits,
          host: this.hostCapacity(), gpusFree: this.nodeGpus() || free.length,
          gpusUsable: this.nodeGpus() || usableGpus.length,
        });
        if (!decision.admit) throw new AdmissionError(decision.code, decision.message, { limit: decision.limit });
        rows.insert(row);
        claimed = free.slice(0, request.gpus);
        for (const gpu of claimed) rows.claimGpu(gpu.address, id, gpu.functions.map((f) => f.address), now);
        rows.audit(
          id, 'created',
          {
            owner: row.owner, machine: row.machine, cpus: row.cpus, memoryMiB: row.memoryMiB,
            lifetimeS: request.lifetimeS, gpus: claimed.map((g) => g.address),
            gpuFunctions: claimed.flatMap((g) => g.functions.map((f) => f.address)),
          },
          now, { actor: who.actor ?? ACTORS.anonymous, owner: row.owner },
        );
      }).immediate();
    } catch (err) {
      throw storeError(err);
    }
    log.info({ sessionId: id, owner: row.owner, machine: row.machine }, 'session created');
    onAdmitted();
    this.deps.metrics?.sessionCreated(row.machine);

    // The answer comes when the VM is ready, or as soon as a scheduler has
    // queued it (Slurm): then the session page says "waiting for a node" and
    // the launch goes on in the background.
    let answerQueued!: (row: SessionRow) => void;
    const queued = new Promise<SessionRow>((resolve) => { answerQueued = resolve; });
    const launch = this.lifeOf(row).launch({
      sessionId: row.id, machine: request.machine, cpus: row.cpus, memoryMiB: row.memoryMiB, runDir: row.runDir,
      expiresAt: row.expiresAt, shares, bootScripts: { delivery: request.machine.bootScripts.delivery, scripts },
      gpus: claimed.map((g) => g.functions.map((f) => f.address)), gpuCount: this.nodeGpus() ? request.gpus : 0,
    } satisfies LaunchSpec, answerQueued);
    return Promise.race([launch, queued]);
  }

  /** The life of a session in the store: the one this process holds, or a new one (after a restart, for purge). */
  private lifeOf(row: SessionRow): SessionLife {
    let life = this.lives.get(row.id);
    if (!life) {
      life = new SessionLife(row.id, row.runDir, {
        rows: this.deps.rows, launcher: this.deps.launcher, log: this.deps.log, clock: this.clock,
        metrics: this.deps.metrics,
        emit: (event, payload) => this.emit(event, payload),
        forget: (id) => { if (this.lives.get(id) === life) this.lives.delete(id); },
      });
      this.lives.set(row.id, life);
    }
    return life;
  }

  /**
   * Gives a session an event (lifecycle.ts): how the purge job reports a VM found dead or a stop to finish. Resolves
   * when its effect is done; a session that is gone ignores it.
   */
  dispatch(id: string, event: LifeEvent): Promise<void> {
    const row = this.deps.rows.byId(id);
    return row ? this.lifeOf(row).dispatch(event) : Promise.resolve();
  }

  /** This process is starting or stopping the session right now (the purge job leaves it alone). */
  busy(id: string): boolean {
    return this.lives.get(id)?.busy ?? false;
  }

  /**
   * Reserved resources of live sessions; queued ones count toward the service's limits, not this host's capacity
   * (reservedBy).
   */
  reserved(user: string, machine: string): Reserved {
    return reservedBy(this.deps.rows.all(), user, machine);
  }

  /** What one more desktop could get right now (the form shows it). */
  availability() {
    const r = this.reserved('', '');
    const gpus = this.deps.discoverGpus?.() ?? [];
    const gpusFree = this.nodeGpus() || freeGpus(gpus, this.deps.rows.claimedGpuFunctions()).length;
    return availability(
      r, this.deps.config.limits, this.hostCapacity(), gpusFree, this.nodeGpus() || gpus.filter((g) => g.usable).length,
    );
  }

  /**
   * GPUs a scheduler gives a VM on its node (it counts them and queues what does not fit); 0: this host's GPUs, if any.
   */
  private nodeGpus(): number {
    return this.deps.launcher.capabilities.nodeGpusPerSession;
  }

  /** This host's load for admission; null when a scheduler owns capacity (what does not fit waits in its queue). */
  private hostCapacity() {
    return this.deps.launcher.capabilities.ownsCapacity ? null : this.deps.load.current();
  }

  /** GPUs with who holds them, for qwdctl gpu list and the form. */
  gpuStatus(): Array<GpuDevice & { heldBy: string | null }> {
    const held = this.deps.rows.claimedGpuFunctions();
    return (this.deps.discoverGpus?.() ?? []).map((g) => ({ ...g, heldBy: holderOf(g, held) }));
  }

  lookupToken(token: unknown): TokenLookup {
    if (!isWellFormedToken(token)) return { kind: 'unknown' };
    const hash = hashToken(token);
    const found = this.deps.rows.byTokenHash(hash);
    if (found && tokensEqual(found.kind === 'control' ? found.row.token : found.row.viewToken, token)) {
      const row = found.row;
      if (row.state === 'stopping' || row.expiresAt <= this.now()) {
        // An expired session being stopped ended because its life-time ran out.
        const end = endReason(row.expiresAt <= this.now() ? 'expired' : 'stopping');
        return { kind: 'ended', ended: { sessionId: row.id, endedAt: this.now(), end } };
      }
      return { kind: 'live', row, access: found.kind };
    }
    const ended = this.deps.rows.ended(hash);
    return ended ? { kind: 'ended', ended } : { kind: 'unknown' };
  }

  get(id: string): SessionRow | undefined {
    return this.deps.rows.byId(id);
  }

  list(): SessionRow[] {
    return this.deps.rows.all();
  }

  /** Where a running session's VNC listens (the bridge connects there, authenticating where it must). */
  vncEndpoint(row: SessionRow): Promise<VncAddress> {
    return this.deps.launcher.vncEndpoint(row.handle as VmHandle);
  }

  /** The guest's current memory as the balloon driver reports it (QMP query-balloon). */
  async balloonInfo(id: string): Promise<{ actualMiB: number; targetMiB: number | null; memoryMiB: number }> {
    const row = this.requireRunning(id);
    const info = await this.guestQmp<{ actual: number }>(row, 'query-balloon');
    return { actualMiB: Math.round(info.actual / 1048576), targetMiB: row.balloonTargetMiB, memoryMiB: row.memoryMiB };
  }

  /** Asks the guest's balloon driver to give memory back (or take it again), QMP balloon. */
  async setBalloon(id: string, targetMiB: number, actor: string = ACTORS.balloon): Promise<void> {
    const row = this.requireRunning(id);
    if (!Number.isInteger(targetMiB) || targetMiB < 64 || targetMiB > row.memoryMiB) {
      throw new ValidationError(
        `balloon target must be a whole number of MiB from 64 to ${row.memoryMiB}, got ${describeValue(targetMiB)}`
      );
    }
    await this.guestQmp(row, 'balloon', { value: targetMiB * 1048576 });
    this.deps.rows.setBalloonTarget(id, targetMiB === row.memoryMiB ? null : targetMiB, this.now(), {
      kind: 'balloon', detail: { targetMiB }, actor,
    });
  }

  /** One QMP command to a running session's guest, where the launcher reaches it (capabilities.guestControl). */
  private async guestQmp<T>(row: SessionRow, command: string, args?: Record<string, unknown>): Promise<T> {
    const { launcher } = this.deps;
    if (!launcher.capabilities.guestControl || !launcher.qmp) {
      const userMessage = launcher.capabilities.onBrokerHost
        ? 'This desktop\'s memory (balloon) cannot be managed from here.'
        : 'This desktop runs on a cluster node; its memory (balloon) cannot be managed from here.';
      throw new QwdError(
        'QWD_BAD_REQUEST',
        `QMP ${command} is not available for desktops of the ${launcher.kind} launcher (QMP stays where the VM runs)`,
        { userMessage },
      );
    }
    return launcher.qmp<T>(row.handle as VmHandle, command, args);
  }

  private requireRunning(id: string): SessionRow {
    const row = this.deps.rows.byId(id);
    if (!row) {
      throw new QwdError('QWD_SESSION_NOT_FOUND', `no session ${id}`, { userMessage: `There is no desktop ${id}.` });
    }
    if (row.state !== 'running' || !row.handle) {
      throw new QwdError(
        'QWD_SESSION_ENDED', `session ${id} is ${row.state}`, { userMessage: 'This desktop is not running.' },
      );
    }
    return row;
  }

  /** Revokes a link: a new token replaces it and its open viewers are disconnected. */
  revokeLink(id: string, kind: LinkKind, actor: string = ACTORS.broker): SessionRow {
    const row = this.deps.rows.byId(id);
    if (!row || !isLive(row.state)) {
      throw new QwdError('QWD_SESSION_ENDED', `session ${id} has ended`, { userMessage: 'This desktop has ended.' });
    }
    const token = newToken();
    const now = this.now();
    this.deps.rows.db.transaction(() => {
      this.deps.rows.rotateToken(row, kind, token, hashToken(token), now);
      this.deps.rows.audit(id, 'link-revoked', { kind }, now, { actor });
    })();
    this.emit('revoked', { id, kind } satisfies RevokedEvent);
    return this.deps.rows.byId(id)!;
  }

  /**
   * Adds time to a running session, never beyond limits.maxLifetimeS counted
   * from its creation. Returns the new end time.
   */
  async extend(id: string, byS: number, actor: string = ACTORS.broker): Promise<SessionRow> {
    const { rows, config, launcher } = this.deps;
    if (!Number.isInteger(byS) || byS <= 0) {
      throw new ValidationError(`extension must be a positive whole number of seconds, got ${describeValue(byS)}`);
    }
    const row = rows.byId(id);
    if (!row) {
      throw new QwdError('QWD_SESSION_NOT_FOUND', `no session ${id}`, { userMessage: `There is no desktop ${id}.` });
    }
    const now = this.now();
    if (row.state !== 'running' || row.expiresAt <= now) {
      throw new QwdError(
        'QWD_SESSION_ENDED', `session ${id} is ${row.state}`,
        { userMessage: 'This desktop has ended and cannot be extended.' },
      );
    }
    const ceiling = row.createdAt + config.limits.maxLifetimeS * 1000;
    if (row.expiresAt >= ceiling) {
      throw new AdmissionError(
        'QWD_ADMISSION_LIMIT',
        `This desktop already runs until its maximum life-time (` +
          `${Math.round(config.limits.maxLifetimeS / 3600 * 10) / 10} h after it started); it cannot be extended.`,
        { limit: 'maxLifetimeS' },
      );
    }
    const expiresAt = Math.min(row.expiresAt + byS * 1000, ceiling);
    // Where a scheduler enforces the end (Slurm's time limit), it must agree first.
    if (launcher.extend && row.handle) await launcher.extend(row.handle as VmHandle, expiresAt);
    rows.db.transaction(() => {
      rows.update(id, { expiresAt }, now);
      rows.audit(id, 'extended', { byS, expiresAt }, now, { actor });
    })();
    this.deps.log.info({ sessionId: id, expiresAt, capped: expiresAt === ceiling }, 'session extended');
    return { ...row, expiresAt };
  }

  /**
   * Stops a session and releases everything it holds (SessionLife.end). Twice is a no-op. A reason in words is a stop
   * on request ('stopped'), the words saying by whom.
   */
  stop(id: string, reason: EndReason | string = endReason('stopped')): Promise<void> {
    const end = typeof reason === 'string' ? endReason('stopped', reason) : reason;
    return this.dispatch(id, { type: 'stop-requested', reason: end });
  }

  /** After a broker restart: adopt VMs that still run, clean up the rest. */
  async reconcile(): Promise<{ adopted: string[]; cleaned: string[] }> {
    this.deps.rows.resetViewers();
    const adopted: string[] = [];
    const cleaned: string[] = [];
    for (const row of this.deps.rows.all()) {
      if (this.busy(row.id)) continue;
      // A launcher that cannot tell right now (Slurm's controller down) counts as alive:
      // never clean up on a hiccup; the watch and the purge look again.
      const alive = row.handle !== null
        && await this.deps.launcher.isAlive(row.handle as VmHandle).catch((err: Error) => {
          this.deps.log.warn(
            { sessionId: row.id, err: err.message }, 'cannot tell whether the VM still runs; adopting it for now',
          );
          return true;
        });
      if (row.state === 'running' && alive) {
        this.lifeOf(row).adopt(row);
        this.emit('adopted', { row } satisfies AdoptedEvent);
        adopted.push(row.id);
        continue;
      }
      if (row.state === 'queued' && alive && this.deps.launcher.capabilities.queues) {
        this.lifeOf(row).resumeQueued(row);
        adopted.push(row.id);
        continue;
      }
      // A start this process did not make was made by a writer that is gone (the store has one writer at a
      // time, under the writer lock): it can never finish, so it is cleaned up now, its QEMU found by its run dir.
      const why = endReason(row.state === 'starting' ? 'start-abandoned' : 'ended-while-down');
      await this.lifeOf(row).dispatch(
        alive ? { type: 'stop-requested', reason: endReason('reconciled') } : { type: 'exited', reason: why },
      );
      cleaned.push(row.id);
    }
    this.deps.log.info({ adopted, cleaned }, 'sessions reconciled');
    return { adopted, cleaned };
  }

  /** Why a VM that is gone ended, for its tombstone: the launcher's account when it has one. */
  async exitReason(row: SessionRow): Promise<EndReason> {
    const handle = row.handle as VmHandle | null;
    if (!handle || !this.deps.launcher.exitReason) return endReason('vm-exited');
    // A scheduler that cannot be asked right now does not keep the session alive: the generic reason will do.
    const words = await this.deps.launcher.exitReason(handle).catch(() => null);
    return endReason('vm-exited', words ?? undefined);
  }

  /** Stops watching (the VMs keep running and are adopted by the next start). */
  detach(): void {
    for (const life of this.lives.values()) life.stopWatching();
  }

  /** Where a queued session waits (Slurm job state, reason, position); null when not queued. */
  async queueInfo(id: string): Promise<QueueInfo | null> {
    const row = this.deps.rows.byId(id);
    const { launcher } = this.deps;
    if (!row || row.state !== 'queued' || !row.handle || !launcher.capabilities.queues || !launcher.queueInfo) {
      return null;
    }
    return launcher.queueInfo(row.handle as VmHandle).catch(() => null);
  }

  /** Scheduler details for status displays (Slurm job id, node, state); {} for local VMs. */
  async schedulerInfo(row: SessionRow): Promise<Record<string, string | number | null>> {
    if (!row.handle || !this.deps.launcher.describe) return {};
    return this.deps.launcher.describe(row.handle as VmHandle).catch((err) => ({ error: (err as Error).message }));
  }

  liveCount(): number {
    return this.deps.rows.all().filter((r) => isLive(r.state)).length;
  }
}
