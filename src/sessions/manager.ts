// The session manager: the only writer of session state. It validates and
// admits requests, creates the row, asks the launcher for a VM, watches it,
// stops it (always ending with postStop, which releases everything the session
// held), reconciles the store with reality after a restart, and purges.
import { describeValue } from '../describe-value.js';
import { EventEmitter } from 'node:events';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { AdmissionError, QwdError, ValidationError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Catalog } from '../catalog/catalog.js';
import { exitWords, type LaunchSpec, type Launcher, type QueueInfo, type VmHandle } from '../launcher/types.js';
import type { VncAddress } from '../qemu/rfb-probe.js';
import { resolveShares } from '../guest/shares.js';
import type { GpuDevice } from '../gpu/discover.js';
import { resolveScripts } from '../guest/boot-scripts.js';
import type { LoadSampler } from '../admission/host-load.js';
import { availability, decideAdmission, reservedBy, type Reserved } from '../admission/policy.js';
import { selectIdleReclaims } from '../admission/idle-reclaim.js';
import { freeGpus, holderOf } from '../gpu/claims.js';
import { storeError } from '../store/db.js';
import { SessionRows, type SessionRow, type EndedRow, type LinkKind } from '../store/session-rows.js';
import { selectOrphanDirs, selectPurge, type PurgeAction } from '../purge/select.js';
import { selectWarnings, type Warning } from '../purge/warnings.js';
import type { Mailer } from '../notify/mailer.js';
import { validateCreateRequest } from './request.js';
import { hashToken, isWellFormedToken, newSessionId, newToken, tokensEqual } from './tokens.js';
import { isLive, nextState, type SessionEvent } from './state.js';

export interface ManagerDeps {
  config: Config;
  rows: SessionRows;
  catalog: Catalog;
  launcher: Launcher;
  load: LoadSampler;
  log: Logger;
  /** VFIO GPUs on this host (re-read at every request: rebinding shows at once). */
  discoverGpus?: () => GpuDevice[];
  /** Sends life-time warnings; absent when no mail is configured. */
  mailer?: Mailer | null;
  /** Base URL for links in mails (the broker's public address). */
  baseUrl?: string;
  now?: () => number;
}

export type TokenLookup =
  | { kind: 'live'; row: SessionRow; access: LinkKind }
  | { kind: 'ended'; ended: EndedRow }
  | { kind: 'unknown' };

export interface PurgeReport {
  actions: PurgeAction[];
  warnings: Warning[];
  orphanDirs: string[];
  forgottenTombstones: number;
  dryRun: boolean;
}

export interface EndedEvent {
  id: string;
  reason: string;
}

export interface RevokedEvent {
  id: string;
  kind: LinkKind;
}

export class SessionManager extends EventEmitter {
  private readonly now: () => number;
  private readonly starting = new Map<string, Promise<SessionRow>>();
  private readonly stops = new Map<string, Promise<void>>();
  /** The end of the last purge run asked for (runs go one after the other). */
  private purgeQueue: Promise<void> = Promise.resolve();
  private readonly watchers = new Map<string, () => void>();
  private readonly oneShotTimers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly deps: ManagerDeps) {
    super();
    this.now = deps.now ?? Date.now;
  }

  get config(): Config {
    return this.deps.config;
  }

  /**
   * Validates, admits (atomically, in one immediate transaction), launches.
   * `who.groups` are the logged-in user's groups as the auth backend reported
   * them (boot-script `when.groups`); never taken from the request body.
   */
  async create(raw: unknown, who: { groups?: readonly string[] } = {}): Promise<SessionRow> {
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
          now,
        );
      }).immediate();
    } catch (err) {
      throw storeError(err);
    }
    log.info({ sessionId: id, owner: row.owner, machine: row.machine }, 'session created');

    // The answer comes when the VM is ready, or as soon as a scheduler has
    // queued it (Slurm): then the session page says "waiting for a node" and
    // the launch goes on in the background.
    let answerQueued!: (row: SessionRow) => void;
    const queued = new Promise<SessionRow>((resolve) => { answerQueued = resolve; });
    const launch = this.launch(
      row, request.machine,
      {
        shares, bootScripts: { delivery: request.machine.bootScripts.delivery, scripts },
        gpus: claimed.map((g) => g.functions.map((f) => f.address)), gpuCount: this.nodeGpus() ? request.gpus : 0,
      },
      answerQueued,
    );
    this.track(id, launch);
    return Promise.race([launch, queued]);
  }

  private track(id: string, launch: Promise<SessionRow>): void {
    this.starting.set(id, launch);
    const done = () => { if (this.starting.get(id) === launch) this.starting.delete(id); };
    launch.then(done, done);
  }

  private async launch(
    row: SessionRow, machine: LaunchSpec['machine'],
    guest: Pick<LaunchSpec, 'shares' | 'bootScripts' | 'gpus' | 'gpuCount'>, onQueued?: (row: SessionRow) => void,
  ): Promise<SessionRow> {
    const { launcher, rows, log } = this.deps;
    let handle: VmHandle;
    try {
      handle = await launcher.start({
        sessionId: row.id, machine, cpus: row.cpus, memoryMiB: row.memoryMiB, runDir: row.runDir,
        expiresAt: row.expiresAt, ...guest
      }, {
        onQueued: (queuedHandle) => {
          const current = rows.byId(row.id);
          if (current?.state !== 'starting') return;
          this.transition(current, 'submitted', { handle: queuedHandle });
          log.info({ sessionId: row.id, handle: queuedHandle }, 'session queued');
          onQueued?.(rows.byId(row.id)!);
        },
      });
    } catch (err) {
      return this.launchFailed(row, err);
    }
    return this.launched(row, handle);
  }

  /** After a broker restart: goes on waiting for a VM a scheduler still holds. */
  private resumeQueued(row: SessionRow): void {
    const { launcher } = this.deps;
    if (!launcher.capabilities.queues || !launcher.awaitReady || !row.handle) return;
    const launch = launcher.awaitReady(row.handle as VmHandle, row.runDir, row.expiresAt)
      .then((handle) => this.launched(row, handle), (err) => this.launchFailed(row, err));
    launch.catch(() => {}); // failures are logged and cleaned up by launchFailed
    this.track(row.id, launch);
  }

  private async launchFailed(row: SessionRow, err: unknown): Promise<never> {
    const { rows, log } = this.deps;
    const current = rows.byId(row.id);
    if (this.stops.has(row.id) || current?.state === 'stopping') {
      // A stop (cancel) made the launch fail: the stop cleans up.
      throw err;
    }
    log.error({ sessionId: row.id, err }, 'launch failed');
    if (current && (current.state === 'starting' || current.state === 'queued')) {
      this.transition(current, 'launch-failed');
    }
    await this.postStop({ ...(current ?? row), state: 'failed' }, failureReason(err));
    throw err;
  }

  private async launched(row: SessionRow, handle: VmHandle): Promise<SessionRow> {
    const { rows, log } = this.deps;
    const current = rows.byId(row.id);
    if (!current || (current.state !== 'starting' && current.state !== 'queued')) {
      // Stopped while starting: finish the stop now that there is a VM to stop.
      // postStop runs even when the VM cannot be stopped (reported by stopVm).
      try {
        await this.stopVm(row.id, handle);
      } finally {
        await this.postStop({ ...row, handle, state: 'stopping' }, 'stopped');
      }
      throw new QwdError(
        'QWD_SESSION_ENDED', `session ${row.id} was stopped while starting`,
        { userMessage: 'This desktop was stopped while it was starting.' },
      );
    }
    const running: SessionRow = { ...current, handle, state: this.transition(current, 'launched', { handle }) };
    this.watch(running);
    log.info({ sessionId: row.id, handle }, 'session running');
    return running;
  }

  private transition(row: SessionRow, event: SessionEvent, changes: { handle?: VmHandle } = {}) {
    const next = nextState(row.state, event);
    if (!next) throw new QwdError('QWD_INTERNAL', `session ${row.id}: no transition from ${row.state} on ${event}`);
    this.deps.rows.update(row.id, { state: next, ...changes }, this.now());
    return next;
  }

  private watch(row: SessionRow): void {
    const handle = row.handle as VmHandle;
    this.watchers.get(row.id)?.();
    const unsubscribe = this.deps.launcher.watchExit(handle, (info) => {
      this.watchers.delete(row.id);
      if (this.stops.has(row.id)) return; // a stop in progress does its own cleanup
      const current = this.deps.rows.byId(row.id);
      if (!current) return;
      const reason = exitWords(info);
      this.deps.log.warn({ sessionId: row.id, ...info }, 'qemu exited on its own');
      this.runStop(current.id, () => this.postStop(current, reason))
        .catch((err) => this.deps.log.error({ err, sessionId: row.id }, 'cleanup after exit failed'));
    });
    this.watchers.set(row.id, unsubscribe);
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
        return {
          kind: 'ended',
          ended: {
            sessionId: row.id, endedAt: this.now(), reason: row.expiresAt <= this.now() ? 'expired' : 'stopping',
          },
        }; // an expired session being stopped ended because its life-time ran out
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

  /**
   * Records how many viewers the bridge has for a session (for status pages
   * and qwdctl). A one-shot session ends when its last viewer has been gone for
   * sessions.oneShotGraceS (a page reload does not end it).
   */
  recordViewers(id: string, viewers: number): void {
    const row = this.deps.rows.byId(id);
    if (!row) return;
    this.deps.rows.setViewers(id, viewers, this.now());
    // Somebody is back on a guest whose memory was taken for idleness: give it back.
    if (
      viewers > 0 && row.balloonTargetMiB !== null && row.balloonTargetMiB < row.memoryMiB && row.state === 'running'
    ) {
      this.setBalloon(id, row.memoryMiB)
        .catch((err) => this.deps.log.warn({ sessionId: id, err: (err as Error).message }, 'balloon restore failed'));
    }
    if (!row.oneShot) return;
    if (viewers > 0) {
      // (setViewers has recorded in the row that it had a viewer: that survives a restart)
      clearTimeout(this.oneShotTimers.get(id));
      this.oneShotTimers.delete(id);
      return;
    }
    if (row.hadViewer) this.endOneShotAfterGrace(id);
  }

  /** A one-shot session nobody watches: it ends after sessions.oneShotGraceS unless a viewer comes back. */
  private endOneShotAfterGrace(id: string): void {
    if (this.oneShotTimers.has(id)) return;
    const timer = setTimeout(() => {
      this.oneShotTimers.delete(id);
      const current = this.deps.rows.byId(id);
      if (current && current.viewers === 0) {
        this.stop(id, 'one-shot desktop: its last viewer left')
          .catch((err) => this.deps.log.error({ err, sessionId: id }, 'one-shot stop failed'));
      }
    }, this.deps.config.sessions.oneShotGraceS * 1000);
    timer.unref();
    this.oneShotTimers.set(id, timer);
  }

  /** The guest's current memory as the balloon driver reports it (QMP query-balloon). */
  async balloonInfo(id: string): Promise<{ actualMiB: number; targetMiB: number | null; memoryMiB: number }> {
    const row = this.requireRunning(id);
    const info = await this.guestQmp<{ actual: number }>(row, 'query-balloon');
    return { actualMiB: Math.round(info.actual / 1048576), targetMiB: row.balloonTargetMiB, memoryMiB: row.memoryMiB };
  }

  /** Asks the guest's balloon driver to give memory back (or take it again), QMP balloon. */
  async setBalloon(id: string, targetMiB: number): Promise<void> {
    const row = this.requireRunning(id);
    if (!Number.isInteger(targetMiB) || targetMiB < 64 || targetMiB > row.memoryMiB) {
      throw new ValidationError(
        `balloon target must be a whole number of MiB from 64 to ${row.memoryMiB}, got ${describeValue(targetMiB)}`
      );
    }
    await this.guestQmp(row, 'balloon', { value: targetMiB * 1048576 });
    this.deps.rows.setBalloonTarget(id, targetMiB === row.memoryMiB ? null : targetMiB);
    this.deps.rows.audit(id, 'balloon', { targetMiB }, this.now());
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
  revokeLink(id: string, kind: LinkKind): SessionRow {
    const row = this.deps.rows.byId(id);
    if (!row || !isLive(row.state)) {
      throw new QwdError('QWD_SESSION_ENDED', `session ${id} has ended`, { userMessage: 'This desktop has ended.' });
    }
    const token = newToken();
    const now = this.now();
    this.deps.rows.rotateToken(row, kind, token, hashToken(token), now);
    this.deps.rows.audit(id, 'link-revoked', { kind }, now);
    this.emit('revoked', { id, kind } satisfies RevokedEvent);
    return this.deps.rows.byId(id)!;
  }

  /**
   * Adds time to a running session, never beyond limits.maxLifetimeS counted
   * from its creation. Returns the new end time.
   */
  async extend(id: string, byS: number): Promise<SessionRow> {
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
    rows.update(id, { expiresAt }, now);
    rows.audit(id, 'extended', { byS, expiresAt }, now);
    this.deps.log.info({ sessionId: id, expiresAt, capped: expiresAt === ceiling }, 'session extended');
    return { ...row, expiresAt };
  }

  /** Stops a session and releases everything it holds. Twice is a no-op. */
  stop(id: string, reason = 'stopped'): Promise<void> {
    return this.runStop(id, async () => {
      const row = this.deps.rows.byId(id);
      if (!row) return;
      const starting = this.starting.get(id);
      if (row.state === 'starting' || row.state === 'queued') {
        this.transition(row, 'stop-requested');
        this.emit('ending', { id, reason } satisfies EndedEvent);
        try {
          // A queued VM may wait for hours: cancel it now (its awaited start then fails).
          // A cancel that fails (scancel refused) is reported by stopVm and not waited on.
          if (row.state === 'queued' && row.handle) await this.stopVm(id, row.handle as VmHandle);
          // Otherwise launch() sees 'stopping' when the VM is up, stops it and cleans up.
          if (starting) await starting.catch(() => {});
        } finally {
          const left = this.deps.rows.byId(id);
          if (left) await this.postStop(left, reason); // a failed start leaves it to us
        }
        return;
      }
      if (row.state === 'running') this.transition(row, 'stop-requested');
      this.emit('ending', { id, reason } satisfies EndedEvent);
      this.watchers.get(id)?.();
      this.watchers.delete(id);
      // House rule: stop escalates, then postStop always runs and releases
      // everything (row, run dir, GPU claim, viewers), even when the launcher
      // could not stop the VM; that failure still reaches the caller.
      try {
        if (row.handle) await this.stopVm(id, row.handle as VmHandle);
      } finally {
        await this.postStop(row, reason);
      }
    });
  }

  /**
   * The launcher's stop (ask → SIGTERM → SIGKILL, or scancel). A VM that could
   * not be stopped (survived SIGKILL, scancel refused) is logged as an error and
   * audited as 'stop-failed' with its handle, so an operator can find it; the
   * error is rethrown for the caller, whose finally still runs postStop.
   */
  private async stopVm(id: string, handle: VmHandle): Promise<void> {
    try {
      const outcome = await this.deps.launcher.stop(handle);
      this.deps.log.info({ sessionId: id, outcome }, 'qemu stopped');
    } catch (err) {
      this.deps.log.error(
        { sessionId: id, handle, err },
        'the VM could not be stopped and may still be running: its session is cleaned up anyway; check the host',
      );
      this.deps.rows.audit(id, 'stop-failed', { error: (err as Error).message, handle }, this.now());
      throw err;
    }
  }

  private runStop(id: string, work: () => Promise<void>): Promise<void> {
    const existing = this.stops.get(id);
    if (existing) return existing;
    const promise = work().finally(() => this.stops.delete(id));
    this.stops.set(id, promise);
    return promise;
  }

  /** Always runs after a VM is gone: run dir (sockets, overlay, logs), row, viewers. */
  private async postStop(row: SessionRow, reason: string): Promise<void> {
    this.watchers.get(row.id)?.();
    this.watchers.delete(row.id);
    clearTimeout(this.oneShotTimers.get(row.id));
    this.oneShotTimers.delete(row.id);
    try {
      await this.deps.launcher.cleanup(row.handle as VmHandle | null, row.runDir);
    } finally {
      const now = this.now();
      this.deps.rows.remove(row, reason, now);
      this.deps.rows.audit(row.id, 'ended', { reason }, now);
      this.deps.log.info({ sessionId: row.id, reason }, 'session ended');
      this.emit('ended', { id: row.id, reason } satisfies EndedEvent);
    }
  }

  /** After a broker restart: adopt VMs that still run, clean up the rest. */
  async reconcile(): Promise<{ adopted: string[]; cleaned: string[] }> {
    this.deps.rows.resetViewers();
    const adopted: string[] = [];
    const cleaned: string[] = [];
    for (const row of this.deps.rows.all()) {
      if (this.starting.has(row.id) || this.stops.has(row.id)) continue;
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
        this.watch(row);
        // Nobody is connected after a restart: a one-shot session whose viewer
        // had already been gets the usual grace period for a viewer to come back.
        if (row.oneShot && row.hadViewer) this.endOneShotAfterGrace(row.id);
        adopted.push(row.id);
        continue;
      }
      if (row.state === 'queued' && alive && this.deps.launcher.capabilities.queues) {
        this.resumeQueued(row);
        adopted.push(row.id);
        continue;
      }
      // A start this process did not make was made by a writer that is gone (the store has one writer at a
      // time, under the writer lock): it can never finish, so it is cleaned up now, its QEMU found by its run dir.
      const why = row.state === 'starting' ? 'start-abandoned' : 'the virtual machine ended while the service was down';
      if (alive) await this.stop(row.id, 'reconciled after restart');
      else await this.runStop(row.id, () => this.postStop(row, why));
      cleaned.push(row.id);
    }
    this.deps.log.info({ adopted, cleaned }, 'sessions reconciled');
    return { adopted, cleaned };
  }

  /**
   * What the cron job does: expired → stop; dead → clean up; orphan run dirs → delete.
   * One run at a time: a run asked for while another runs (the cron job and an admin's
   * purge, say) starts when it ends, so two runs never both mail the same warning.
   */
  purge(opts: { dryRun?: boolean } = {}): Promise<PurgeReport> {
    const run = this.purgeQueue.then(() => this.purgeOnce(opts));
    this.purgeQueue = run.then(() => undefined, () => undefined);
    return run;
  }

  private async purgeOnce(opts: { dryRun?: boolean }): Promise<PurgeReport> {
    const { rows, launcher, config, log } = this.deps;
    const now = this.now();
    const all = rows.all();
    const candidates = await Promise.all(all.map(async (r) => ({
      id: r.id, state: r.state, expiresAt: r.expiresAt, updatedAt: r.updatedAt,
      alive: r.handle !== null && await launcher.isAlive(r.handle as VmHandle)
        .catch(() => true), // unknown: assume alive, never clean up on a hiccup
      busy: this.starting.has(r.id) || this.stops.has(r.id),
    })));
    const actions = selectPurge(
      candidates, now, config.qemu.readyTimeoutMs * 2 + config.qemu.quitGraceMs + config.qemu.termGraceMs + 10000,
    );
    let dirs: string[] = [];
    try {
      dirs = await fsp.readdir(launcher.runRoot);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const orphanDirs = selectOrphanDirs(dirs, new Set(all.map((r) => r.id)));
    const warnings = this.deps.mailer ? selectWarnings(
      all.filter((r) => !actions.some((a) => a.id === r.id)), now, config.sessions.warnBeforeS,
    ) : [];
    if (opts.dryRun) return { actions, warnings, orphanDirs, forgottenTombstones: 0, dryRun: true };
    await this.sendWarnings(warnings, all);
    await this.reclaimIdleMemory(all, actions, now);
    for (const action of actions) {
      try {
        if (action.action === 'stop') await this.stop(action.id, action.reason);
        else {
          const row = rows.byId(action.id);
          if (row) {
            const handle = row.handle as VmHandle | null;
            const why = action.reason === 'vm-exited' ? await this.exitReason(handle) : action.reason;
            try {
              if (handle && await launcher.isAlive(handle)) await this.stopVm(row.id, handle);
            } finally {
              // As in stop(): whatever the launcher says, the session's resources are released.
              await this.runStop(row.id, () => this.postStop(row, why));
            }
          }
        }
      } catch (err) {
        log.error({ err, sessionId: action.id }, 'purge action failed');
      }
    }
    for (const dir of orphanDirs) {
      // Re-check: a session may have been created since the listing.
      if (rows.byId(dir)) continue;
      await launcher.cleanup(null, path.join(launcher.runRoot, dir));
      log.info({ dir }, 'orphan run dir removed');
    }
    const releasedClaims = rows.releaseOrphanGpuClaims();
    if (releasedClaims) log.warn({ releasedClaims }, 'GPU claims without a session released');
    const forgottenTombstones = rows.forgetEndedBefore(now - config.purge.endedRetentionS * 1000);
    if (actions.length || orphanDirs.length) log.info({ actions, orphanDirs }, 'purge done');
    return { actions, warnings, orphanDirs, forgottenTombstones, dryRun: false };
  }

  /** Why a dead VM ended, in words for its tombstone: the launcher's account when it has one. */
  private async exitReason(handle: VmHandle | null): Promise<string> {
    const fallback = 'the virtual machine stopped';
    if (!handle || !this.deps.launcher.exitReason) return fallback;
    // A scheduler that cannot be asked right now does not keep the session alive: the generic reason will do.
    return (await this.deps.launcher.exitReason(handle).catch(() => null)) ?? fallback;
  }

  /**
   * Shrinks the balloon of guests nobody has watched for balloon.idleAfterS (never GPU guests: see selectIdleReclaims).
   */
  private async reclaimIdleMemory(rows: SessionRow[], actions: PurgeAction[], now: number): Promise<void> {
    for (
      const { id, targetMiB } of selectIdleReclaims(
        rows, new Set(actions.map((a) => a.id)), now, this.deps.config.balloon,
      )
    ) {
      try {
        await this.setBalloon(id, targetMiB);
        this.deps.log.info({ sessionId: id, targetMiB }, 'memory reclaimed from an idle guest');
      } catch (err) {
        this.deps.log.warn({ sessionId: id, err: (err as Error).message }, 'balloon reclaim failed');
      }
    }
  }

  private async sendWarnings(warnings: Warning[], rows: SessionRow[]): Promise<void> {
    const { mailer, log, rows: store } = this.deps;
    if (!mailer) return;
    for (const w of warnings) {
      const row = rows.find((r) => r.id === w.id)!;
      const minutes = Math.max(1, Math.round(w.remainingS / 60));
      const link = this.deps.baseUrl ? `${this.deps.baseUrl}/s/${row.token}` : null;
      try {
        await mailer.send({
          to: row.email!,
          subject: `Your desktop ${row.machine} ends in ${minutes} minute${minutes === 1 ? '' : 's'}`,
          text: [
            `Hello ${row.owner},`,
            '',
            `your ${row.machine} desktop ends at ${new Date(row.expiresAt).toUTCString()} (in about ${minutes} minute` +
              `${minutes === 1 ? '' : 's'}).`,
            'Save your work before then: the virtual machine and its disk are deleted at the end.',
            // No link (no public address configured): the line is left out; the '' lines are blank lines.
            link ? `You can extend it (up to the maximum life-time) from its page: ${link}` : null,
            '',
            '-- qemu-web-desktop',
          ].filter((l): l is string => l !== null).join('\n'),
        });
        store.setWarned(row.id, w.beforeS);
        store.audit(row.id, 'warned', { beforeS: w.beforeS, to: row.email }, this.now());
        log.info({ sessionId: row.id, beforeS: w.beforeS }, 'life-time warning mailed');
      } catch (err) {
        // Not recorded as sent: the next purge run tries again.
        log.warn({ sessionId: row.id, err: (err as Error).message }, 'life-time warning not sent');
      }
    }
  }

  /** Stops watching (the VMs keep running and are adopted by the next start). */
  detach(): void {
    for (const unsubscribe of this.watchers.values()) unsubscribe();
    this.watchers.clear();
    for (const timer of this.oneShotTimers.values()) clearTimeout(timer);
    this.oneShotTimers.clear();
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

/** What the tombstone says about a failed start: the user-facing message when there is one. */
function failureReason(err: unknown): string {
  if (err instanceof QwdError && err.userMessage) return `failed to start: ${err.userMessage}`;
  return 'failed to start';
}
