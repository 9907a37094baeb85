// How late the broker's event loop runs, for /healthz. Everything the broker
// serves (HTTP, the WebSocket bridge, QMP, the admin socket) shares one event
// loop, so its delay is what every request and every frame waits on top of its
// own work. perf_hooks' monitorEventLoopDelay fires a libuv timer every
// resolutionMs and records how long each interval really took in a fixed-size
// histogram (bounded memory however long the broker runs; ~100 wake-ups a
// second). Every windowMs the histogram is summarised and reset: /healthz shows
// the last complete window (during the first one, the window so far), so a
// spike shows for one window and then ages out. It says the loop was late, not
// why; it holds no request data. Owned by the composition root (src/main.ts).
import { monitorEventLoopDelay } from 'node:perf_hooks';

export interface EventLoopDelay {
  /** Length of the window summarised, in seconds (shorter only during the broker's first window). */
  windowS: number;
  /** When the window ended (ISO 8601), or null while it is the first window, still running. */
  endedAt: string | null;
  /** Timer wake-ups in the window (the percentiles' sample count). */
  samples: number;
  /** How late the loop ran, beyond the timer's interval: median, 99th percentile, worst. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface EventLoopDelayMonitor {
  current(): EventLoopDelay;
  /** Stops sampling; twice is a no-op. */
  stop(): void;
}

/** Nanoseconds of a recorded interval → milliseconds late (the interval itself is the timer's, not a delay). */
function lateMs(intervalNs: number, resolutionMs: number): number {
  return Math.max(0, Math.round((intervalNs / 1e6 - resolutionMs) * 100) / 100);
}

export function watchEventLoopDelay(opts: { windowMs?: number; resolutionMs?: number } = {}): EventLoopDelayMonitor {
  const windowMs = opts.windowMs ?? 10_000;
  const resolutionMs = opts.resolutionMs ?? 10;
  const histogram = monitorEventLoopDelay({ resolution: resolutionMs });
  histogram.enable();
  let windowStart = Date.now();
  const summarize = (endedAt: number | null): EventLoopDelay => {
    const samples = histogram.count;
    const end = endedAt ?? Date.now();
    return {
      windowS: Math.round((end - windowStart) / 100) / 10,
      endedAt: endedAt === null ? null : new Date(endedAt).toISOString(),
      samples,
      // An empty histogram answers NaN / huge sentinels: no wake-up yet means nothing measured, not a delay.
      p50Ms: samples ? lateMs(histogram.percentile(50), resolutionMs) : 0,
      p99Ms: samples ? lateMs(histogram.percentile(99), resolutionMs) : 0,
      maxMs: samples ? lateMs(histogram.max, resolutionMs) : 0,
    };
  };
  let last: EventLoopDelay | null = null;
  const timer = setInterval(() => {
    const now = Date.now();
    last = summarize(now);
    histogram.reset();
    windowStart = now;
  }, windowMs);
  // Monitoring never keeps a closing broker alive.
  timer.unref();
  let stopped = false;
  return {
    current: () => last ?? summarize(null),
    stop: () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      histogram.disable();
    },
  };
}
