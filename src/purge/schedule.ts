// Runs the purge on a cron schedule (node-cron). A run never overlaps the
// previous one; failures are logged and the next tick tries again.
import cron from 'node-cron';
import type { Logger } from '../log.js';

export interface PurgeSchedule {
  stop(): void;
}

export function schedulePurge(expression: string, run: () => Promise<void>, log: Logger): PurgeSchedule {
  let running = false;
  const task = cron.schedule(expression, async () => {
    if (running) return;
    running = true;
    try {
      await run();
    } catch (err) {
      log.error({ err }, 'purge failed');
    } finally {
      running = false;
    }
  }, { name: 'purge', noOverlap: true });
  return { stop: () => void task.stop() };
}
