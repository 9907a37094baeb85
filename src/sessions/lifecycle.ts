// One live session's life, owned by one object. Everything that happens to a
// session (a scheduler queued it, its VM is ready, its start failed, a stop
// was asked for, its VM went away) is an event given to dispatch(), which
// checks the transition table (state.ts), stores the new state and runs the
// side effect in one place, in the way of noVNC's connection state and QEMU's
// python qmp runstate. Where does a session stop? In end(): the stop ladder,
// then release(), which frees everything the session held whatever the
// launcher said.
// The manager (manager.ts) creates these, keeps them in its registry and
// forgets them once released; nothing else holds one. The row in the store is
// the state; this object holds only what lives in this process: the launch it
// runs, the end under way, the exit watch.
import { QwdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import { exitWords, type LaunchSpec, type Launcher, type VmHandle } from '../launcher/types.js';
import type { AuditLine, SessionRow, SessionRows } from '../store/session-rows.js';
import { nextState } from './state.js';
import { endReason, type EndReason } from '../store/end-reason.js';
import { ACTORS, boundedText, endActor } from '../audit/actor.js';
import type { MetricsRecorder } from '../metrics/recorder.js';

export type LifeEvent =
  /** A scheduler has queued the VM: the handle says where. */
  | { type: 'submitted'; handle: VmHandle }
  /** The VM is ready (its VNC answers). */
  | { type: 'launched'; handle: VmHandle }
  /** The start failed; the error is the launcher's. */
  | { type: 'launch-failed'; error: unknown }
  /** Somebody (a user, an admin, the purge job, a one-shot timer) wants it stopped. */
  | { type: 'stop-requested'; reason: EndReason }
  /** The VM is gone by itself (or was found gone): nothing to stop, only to release. */
  | { type: 'exited'; reason: EndReason }
  /** The stop ladder failed (the VM may survive): the session is released all the same. */
  | { type: 'cleaned-up'; reason: EndReason };

/** What the manager tells the world: 'ending' when a stop begins, 'ended' once everything is released. */
export interface EndedEvent {
  id: string;
  end: EndReason;
}

export interface LifeDeps {
  rows: SessionRows;
  launcher: Launcher;
  log: Logger;
  clock: Clock;
  emit(event: 'ending' | 'ended', payload: EndedEvent): void;
  /** The registry forgets a life once it is released. */
  forget(id: string): void;
  /** Start latencies, failed starts and stop outcomes (absent: not counted). */
  metrics?: MetricsRecorder;
}

export class SessionLife {
  /** The start this process runs (launcher.start or awaitReady), while it runs. */
  private launching: Promise<unknown> | null = null;
  /** The end under way: every later stop request joins it. */
  private ending: Promise<void> | null = null;
  private released: Promise<void> | null = null;
  private unwatch: (() => void) | null = null;
  /** Why it ends, once a stop was asked for (a VM that comes up after that is stopped for the same reason). */
  private reason: EndReason | null = null;

  constructor(readonly id: string, private readonly runDir: string, private readonly deps: LifeDeps) {}

  /** This process is starting or ending it (the purge job and the reconciler leave it alone). */
  get busy(): boolean {
    return this.launching !== null || this.ending !== null;
  }

  /**
   * Starts the VM. Resolves with the running row; rejects with the launcher's error, or QWD_SESSION_ENDED when a
   * stop came first. onQueued is called once if a scheduler queues it.
   */
  launch(spec: LaunchSpec, onQueued: (row: SessionRow) => void): Promise<SessionRow> {
    return this.track(this.deps.launcher.start(spec, {
      onQueued: (handle) => {
        this.dispatch({ type: 'submitted', handle })
          .catch((err) => this.deps.log.error({ err, sessionId: this.id }, 'a queued start could not be recorded'));
        const row = this.deps.rows.byId(this.id);
        if (row?.state === 'queued') onQueued(row);
      },
    }));
  }

  /** After a broker restart: goes on waiting for a VM a scheduler still holds. */
  resumeQueued(row: SessionRow): void {
    const { launcher } = this.deps;
    if (!launcher.awaitReady || !row.handle) return;
    // Failures are logged and released by dispatch('launch-failed'); nobody waits on this promise.
    this.track(launcher.awaitReady(row.handle as VmHandle, row.runDir, row.expiresAt)).catch(() => {});
  }

  /** After a broker restart: a running VM is watched again. */
  adopt(row: SessionRow): void {
    this.watch(row.handle as VmHandle);
  }

  private async track(start: Promise<VmHandle>): Promise<SessionRow> {
    const run = (async () => {
      let handle: VmHandle;
      try {
        handle = await start;
      } catch (error) {
        await this.dispatch({ type: 'launch-failed', error });
        throw error;
      }
      await this.dispatch({ type: 'launched', handle });
      const row = this.deps.rows.byId(this.id);
      if (row?.state === 'running') return row;
      throw new QwdError(
        'QWD_SESSION_ENDED', `session ${this.id} was stopped while starting`,
        { userMessage: 'This desktop was stopped while it was starting.' },
      );
    })();
    this.launching = run;
    const done = () => { if (this.launching === run) this.launching = null; };
    run.then(done, done);
    return run;
  }

  /**
   * The one entry point. Checks the event against the transition table and runs its effect; resolves when the
   * effect is done (for a stop: when everything is released). A session already released ignores every event,
   * except a VM that comes up after it: that one is stopped.
   */
  dispatch(event: LifeEvent): Promise<void> {
    const row = this.deps.rows.byId(this.id);
    // Released (or being released): every event joins that, except a VM that comes up after it, which is stopped.
    if (this.released || !row) {
      return event.type === 'launched' ? this.stopLeftover(event.handle) : (this.released ?? Promise.resolve());
    }
    if (row.state === 'stopping') {
      // Events that meet a stop under way are the stop's business, not transitions.
      if (event.type === 'launched') return this.stopWhatCameUp(event.handle);
      if (event.type === 'submitted') return this.cancelWhatQueued(event.handle);
      if (event.type === 'launch-failed') return Promise.resolve(); // end() waits for the launch, then releases
      if ((event.type === 'stop-requested' || event.type === 'exited') && this.ending) return this.ending;
    }
    // A row left failed or stopped by a writer that died while releasing it (stopped and failed are terminal):
    // whatever the event, what is left is the release.
    if (row.state === 'failed' || row.state === 'stopped') {
      if (event.type === 'launched') return this.stopWhatCameUp(event.handle);
      if (event.type === 'stop-requested' && row.handle) {
        this.ending ??= this.stopAndRelease(row.handle as VmHandle, event.reason);
        return this.ending;
      }
      return this.release(reasonOf(event));
    }
    return this.apply(row, event);
  }

  private apply(row: SessionRow, event: LifeEvent): Promise<void> {
    // A stop its writer abandoned (found by the purge job) is asked for again: this process finishes it.
    const restop = row.state === 'stopping' && event.type === 'stop-requested';
    const next = restop ? 'stopping' : nextState(row.state, event.type);
    if (!next) {
      const message = `session ${this.id}: no transition from ${row.state} on ${event.type}`;
      return Promise.reject(new QwdError('QWD_INTERNAL', message));
    }
    switch (event.type) {
      case 'submitted':
        this.store(next, event.handle, { kind: 'queued', detail: null, actor: ACTORS.broker });
        this.deps.log.info({ sessionId: this.id, handle: event.handle }, 'session queued');
        return Promise.resolve();
      case 'launched': {
        const now = this.deps.clock.now();
        // Ready: its VNC answers. startMs is from the request's row to ready (a queue's wait included).
        this.store(next, event.handle, {
          kind: 'started', detail: { startMs: now - row.createdAt }, actor: ACTORS.broker,
        });
        this.watch(event.handle);
        this.deps.log.info({ sessionId: this.id, handle: event.handle }, 'session running');
        this.deps.metrics?.sessionReady(row.machine, (this.deps.clock.now() - row.createdAt) / 1000);
        return Promise.resolve();
      }
      case 'launch-failed':
        this.deps.log.error({ sessionId: this.id, err: event.error }, 'launch failed');
        this.deps.metrics?.sessionStartFailed(event.error);
        this.store(next);
        return this.release(failureReason(event.error));
      case 'stop-requested':
        if (!restop) this.store(next);
        this.reason = event.reason;
        this.deps.emit('ending', { id: this.id, end: event.reason });
        this.ending = this.end(row, event.reason);
        return this.ending;
      case 'exited':
        if (row.state === 'running') {
          this.deps.log.warn({ sessionId: this.id, reason: event.reason.detail }, 'qemu exited on its own');
        }
        return this.release(event.reason);
      case 'cleaned-up':
        return this.release(event.reason);
    }
  }

  /**
   * Where a session stops. A running VM goes down the launcher's ladder (ask → SIGTERM → SIGKILL, or scancel); a
   * queued one is cancelled; one being started is stopped by its launch when it comes up (stopWhatCameUp). Then the
   * session is released whatever happened: a VM the launcher could not stop is reported (audited 'stop-failed', the
   * error reaches the caller) and its resources are freed all the same ('cleaned-up').
   */
  private async end(row: SessionRow, reason: EndReason): Promise<void> {
    this.stopWatching();
    const handle = row.handle as VmHandle | null;
    let failure: unknown = null;
    try {
      if (row.state === 'starting' || row.state === 'queued') {
        // A queued VM may wait for hours: cancel it now (its awaited start then fails).
        if (row.state === 'queued' && handle) await this.stopVm(handle);
      } else if (handle) {
        await this.stopVm(handle);
      }
    } catch (err) {
      failure = err;
    }
    // A launch under way settles by itself now (cancelled, or stopped as it comes up). A cancel that failed is
    // not waited on: the job may stay queued for hours.
    if (!failure && this.launching) await this.launching.catch(() => {});
    const now = this.deps.rows.byId(this.id);
    if (now) await this.apply(now, failure ? { type: 'cleaned-up', reason } : { type: 'exited', reason });
    if (failure) throw failure;
  }

  /** Stopped while starting: the VM came up anyway, so it is stopped now, and the session released. */
  private async stopWhatCameUp(handle: VmHandle): Promise<void> {
    this.deps.rows.update(this.id, { handle }, this.deps.clock.now());
    await this.stopAndRelease(handle, this.reason ?? endReason('stopped'));
  }

  /** The VM down the ladder, then the release, whatever the ladder said. */
  private async stopAndRelease(handle: VmHandle, reason: EndReason): Promise<void> {
    try {
      await this.stopVm(handle);
    } finally {
      await this.release(reason);
    }
  }

  /**
   * Stopped while a scheduler was being asked: the job it queued is cancelled at once (its awaited start then
   * fails and end() releases the session). A cancel that fails is reported; the job is stopped when it comes up.
   */
  private async cancelWhatQueued(handle: VmHandle): Promise<void> {
    this.deps.rows.update(this.id, { handle }, this.deps.clock.now());
    await this.stopVm(handle).catch(() => {
      // stopVm has logged and audited it ('stop-failed'); stopWhatCameUp stops the job if it ever runs.
    });
  }

  /** A VM that came up after its session was released (a cancel that failed): stopped, its files removed. */
  private async stopLeftover(handle: VmHandle): Promise<void> {
    try {
      await this.stopVm(handle);
    } finally {
      await this.deps.launcher.cleanup(handle, this.runDir);
    }
  }

  /**
   * The launcher's stop. A VM that could not be stopped (survived SIGKILL, scancel refused) is logged as an error
   * and audited as 'stop-failed' with its handle, so an operator can find it; the error is rethrown.
   */
  private async stopVm(handle: VmHandle): Promise<void> {
    try {
      const outcome = await this.deps.launcher.stop(handle);
      this.deps.log.info({ sessionId: this.id, outcome }, 'qemu stopped');
      this.deps.metrics?.vmStopped(outcome);
    } catch (err) {
      this.deps.log.error(
        { sessionId: this.id, handle, err },
        'the VM could not be stopped and may still be running: its session is cleaned up anyway; check the host',
      );
      this.deps.rows.audit(
        // The launcher's message may carry a scheduler's or QEMU's output: bounded and escaped like text from outside.
        this.id, 'stop-failed', { error: boundedText((err as Error).message, 500), handle }, this.deps.clock.now(),
        { actor: ACTORS.broker },
      );
      this.deps.metrics?.vmStopped('failed');
      throw err;
    }
  }

  /**
   * Always runs once the VM is gone (or could not be stopped): the launcher's cleanup (run dir, sockets, overlay,
   * logs), then the row, its GPU claims and its viewers, a tombstone with the reason, an audit line. Once.
   */
  private release(reason: EndReason): Promise<void> {
    if (this.released) return this.released;
    const attempt = (async () => {
      this.stopWatching();
      const row = this.deps.rows.byId(this.id);
      if (!row) return;
      try {
        try {
          await this.deps.launcher.cleanup(row.handle as VmHandle | null, row.runDir);
        } finally {
          try {
            // The removal and its 'ended' row are one transaction: a crash or a full store keeps both or neither.
            const now = this.deps.clock.now();
            this.deps.rows.remove(row, reason, now, {
              kind: 'ended', detail: { reason: reason.detail, code: reason.code }, actor: endActor(reason),
            });
            this.deps.log.info({ sessionId: this.id, reason: reason.detail, code: reason.code }, 'session ended');
            // Counted once, when the row is gone: a release that failed and is retried is not counted twice.
            this.deps.metrics?.sessionEnded(reason.code);
          } finally {
            // Whatever the store did: the VM is gone (or given up on), so its viewers and listeners are told.
            this.deps.emit('ended', { id: this.id, end: reason });
          }
        }
      } finally {
        // Forgotten either way: a release that failed (the store full or busy) leaves its row for the purge job
        // (stop-abandoned) or the next stop, which start again from a new life.
        this.deps.forget(this.id);
      }
    })();
    this.released = attempt;
    attempt.catch(() => {
      if (this.released === attempt) this.released = null;
      this.ending = null;
    });
    return attempt;
  }

  private store(state: SessionRow['state'], handle?: VmHandle, audit?: AuditLine): void {
    this.deps.rows.update(this.id, handle ? { state, handle } : { state }, this.deps.clock.now(), audit);
  }

  private watch(handle: VmHandle): void {
    this.stopWatching();
    this.unwatch = this.deps.launcher.watchExit(handle, (info) => {
      this.unwatch = null;
      this.dispatch({ type: 'exited', reason: endReason('vm-exited', exitWords(info)) })
        .catch((err) => this.deps.log.error({ err, sessionId: this.id }, 'cleanup after exit failed'));
    });
  }

  /** Stops watching the VM (a stop does its own cleanup; a broker that closes leaves its VMs running). */
  stopWatching(): void {
    this.unwatch?.();
    this.unwatch = null;
  }
}

/** The end reason an event carries (the release of a row left failed or stopped says it). */
function reasonOf(event: LifeEvent): EndReason {
  switch (event.type) {
    case 'stop-requested':
    case 'exited':
    case 'cleaned-up':
      return event.reason;
    case 'launch-failed':
      return failureReason(event.error);
    default:
      return endReason('start-abandoned');
  }
}

/** What the tombstone says about a failed start: the user-facing message when there is one. */
function failureReason(err: unknown): EndReason {
  if (err instanceof QwdError && err.userMessage) {
    return endReason('launch-failed', `failed to start: ${err.userMessage}`);
  }
  return endReason('launch-failed');
}
