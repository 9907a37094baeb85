// Watches for the ends of the Slurm launcher's jobs with one poll for all of
// them: every slurm.pollIntervalMs on the launcher's clock, one `squeue` for
// every watched job (SlurmCli.jobStates), then `scontrol show job` only for a
// job squeue no longer shows alive, whose final state and exit code say why it
// ended. A poll is scheduled when the previous one has its answer, and none
// while nothing is watched. Each job used to have a poll of its own: N
// sessions cost N `scontrol` processes on the broker and N RPCs to slurmctld
// per interval (BENCHMARKS.md, the scale section on paper); now 1 + those that
// ended. Owned by the SlurmLauncher; no state elsewhere.
import type { Logger } from '../log.js';
import type { CancelTimer, Clock } from '../clock.js';
import type { JobInfo, SlurmCli } from './slurm-cli.js';

/** Called once, when the job has ended: its last `scontrol` view, or null once Slurm has forgotten it. */
export type JobEndHandler = (info: JobInfo | null) => void;

export interface JobWatchDeps {
  cli: Pick<SlurmCli, 'jobStates' | 'jobInfo'>;
  clock: Clock;
  intervalMs: number;
  log: Logger;
  /** Whether a job in this state exists or may still come. */
  alive: (state: string) => boolean;
}

export class JobWatch {
  private readonly handlers = new Map<string, Set<JobEndHandler>>();
  private cancelTimer: CancelTimer | null = null;
  private polling = false;

  constructor(private readonly deps: JobWatchDeps) {}

  /** Calls onEnd once when the job has ended; the returned function stops watching. */
  watch(jobId: string, onEnd: JobEndHandler): () => void {
    // A function of its own per call: the same handler watched twice is two watches.
    const handler: JobEndHandler = (info) => onEnd(info);
    let set = this.handlers.get(jobId);
    if (!set) this.handlers.set(jobId, (set = new Set()));
    set.add(handler);
    this.schedule();
    return () => {
      const current = this.handlers.get(jobId);
      current?.delete(handler);
      if (current?.size === 0) this.handlers.delete(jobId);
      if (this.handlers.size === 0) this.stopTimer();
    };
  }

  /** Jobs watched right now. */
  get watching(): number {
    return this.handlers.size;
  }

  private schedule(): void {
    if (this.cancelTimer || this.polling || this.handlers.size === 0) return;
    this.cancelTimer = this.deps.clock.after(this.deps.intervalMs, () => {
      this.cancelTimer = null;
      void this.poll();
    }, { background: true });
  }

  private stopTimer(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  private async poll(): Promise<void> {
    const { cli, log, alive } = this.deps;
    this.polling = true;
    try {
      const ids = [...this.handlers.keys()];
      let states: Map<string, string>;
      try {
        states = await cli.jobStates(ids);
      } catch (err) {
        log.warn({ jobs: ids.length, err: (err as Error).message }, 'cannot read the jobs\' states; trying again');
        return;
      }
      for (const id of ids) {
        const state = states.get(id);
        if ((state !== undefined && alive(state)) || !this.handlers.has(id)) continue;
        let info: JobInfo | null;
        try {
          info = await cli.jobInfo(id);
        } catch (err) {
          log.warn({ jobId: id, err: (err as Error).message }, 'cannot read the job state; trying again');
          continue;
        }
        // squeue and scontrol asked a moment apart: a requeued job may be alive again.
        if (info && alive(info.state)) continue;
        const ended = this.handlers.get(id);
        this.handlers.delete(id);
        for (const handler of ended ?? []) {
          try {
            handler(info);
          } catch (err) {
            log.error({ jobId: id, err }, 'handling the end of a job failed');
          }
        }
      }
    } finally {
      this.polling = false;
      this.schedule();
    }
  }
}
