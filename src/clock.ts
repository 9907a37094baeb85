// Time as a dependency. The session lifecycle, viewer presence, the purge job
// and the launchers ask a Clock for the time and for timers instead of calling
// Date.now and setTimeout, so that tests can run them on a fake clock
// (test/helpers/fake-clock.ts) and prove "not yet" and "now" without sleeping.
// It is not a scheduler: cron-like runs stay with node-cron (purge/schedule.ts).

/** Cancels a timer; calling it after the timer fired, or twice, does nothing. */
export type CancelTimer = () => void;

export interface Clock {
  /** Milliseconds since the epoch, as Date.now. */
  now(): number;
  /**
   * Runs fn once after ms. Like setTimeout, the timer keeps the process alive unless opts.background says it must
   * not (a watch, a grace period: a broker that is closing does not wait for them).
   */
  after(ms: number, fn: () => void, opts?: { background?: boolean }): CancelTimer;
  /** Resolves after ms (polling loops: a wait for a socket, a process, a job). */
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn, opts) {
    const timer = setTimeout(fn, ms);
    if (opts?.background) timer.unref();
    return () => clearTimeout(timer);
  },
  sleep: (ms) => new Promise((resolve) => { setTimeout(resolve, ms); }),
};

/** The system clock shifted by offsetMs (a broker whose clock runs ahead or behind, in tests of expiry). */
export function offsetClock(now: () => number): Clock {
  return { ...systemClock, now };
}
