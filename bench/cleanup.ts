// The benchmark's cleanup stack: every resource it creates (temp dir, child
// process, VM session, server) registers how to release itself here, and
// runAll() releases them last-in first-out — on success, on error and on
// SIGINT/SIGTERM. Each step is bounded by a timeout so one stuck step cannot
// keep the others from running; a failed step is reported, never swallowed.

export interface CleanupStep {
  name: string;
  run: () => void | Promise<void>;
}

export class Cleanup {
  private readonly steps: CleanupStep[] = [];
  private running: Promise<string[]> | null = null;

  /** Registers a step; the returned function removes it (the resource was released normally). */
  add(name: string, run: () => void | Promise<void>): () => void {
    const step = { name, run };
    this.steps.push(step);
    return () => {
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  /** Runs every step once, newest first; resolves with the failures (as messages). Twice is a no-op. */
  runAll(stepTimeoutMs = 120000): Promise<string[]> {
    this.running ??= (async () => {
      const failures: string[] = [];
      while (this.steps.length) {
        const step = this.steps.pop()!;
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(step.run),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`timed out after ${stepTimeoutMs} ms`)), stepTimeoutMs);
            }),
          ]);
        } catch (err) {
          failures.push(`${step.name}: ${(err as Error).message}`);
        } finally {
          clearTimeout(timer);
        }
      }
      return failures;
    })();
    return this.running;
  }
}
