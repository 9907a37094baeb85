// One stop at a time per VM, shared by every launcher: a second stop() of a
// VM that is being stopped gets the first one's promise (STYLE.md: "stop()
// twice is a no-op"), and the entry is gone once that stop has settled, so a
// later stop looks again. It holds no other state and never retries.
import type { StopOutcome } from './types.js';

export class StopOnce {
  private readonly running = new Map<string, Promise<StopOutcome>>();

  /** Runs stop for this key unless a stop of it is running, whose promise is then returned. */
  run(key: string, stop: () => Promise<StopOutcome>): Promise<StopOutcome> {
    const running = this.running.get(key);
    if (running) return running;
    const promise = stop().finally(() => this.running.delete(key));
    this.running.set(key, promise);
    return promise;
  }
}
