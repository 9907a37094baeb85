// The event-loop delay monitor behind /healthz (src/http/event-loop-delay.ts),
// on this process's own event loop with short windows: a block shows in the
// window it happened in, and is gone from the next one. Serial: a block in one
// test would be a delay in another running beside it.
import test from 'ava';
import { watchEventLoopDelay } from '../../src/http/event-loop-delay.js';
import { waitFor } from '../helpers/env.js';
function block(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until); // a long synchronous task
}

test.serial('a block shows in the window it happened in and ages out with the next window', async (t) => {
  const monitor = watchEventLoopDelay({ windowMs: 1000, resolutionMs: 10 });
  t.teardown(() => monitor.stop());
  await waitFor('the monitor\'s first wake-ups', () => monitor.current().samples >= 5, 5000);
  block(500);
  // The window with the block ends.
  const withBlock = await waitFor('the first window to end', () => {
    const d = monitor.current();
    return d.endedAt !== null && d;
  }, 5000);
  t.true(withBlock.maxMs >= 450, JSON.stringify(withBlock));
  t.true(withBlock.windowS >= 0.9 && withBlock.windowS <= 1.6, JSON.stringify(withBlock));
  // A window with no block.
  const quiet = await waitFor('the next window to end', () => {
    const d = monitor.current();
    return d.endedAt !== withBlock.endedAt && d;
  }, 5000);
  t.true(quiet.maxMs < 450, JSON.stringify(quiet));
  t.true(quiet.samples > 10, JSON.stringify(quiet));
});

test.serial('delays are what the loop ran late beyond the timer interval, not the interval itself', async (t) => {
  const monitor = watchEventLoopDelay({ windowMs: 60_000, resolutionMs: 20 });
  t.teardown(() => monitor.stop());
  const d = await waitFor('ten wake-ups', () => {
    const now = monitor.current();
    return now.samples >= 10 && now;
  }, 5000);
  t.is(d.endedAt, null);
  // An idle loop wakes within a few ms of each 20 ms timer; the interval is not counted as delay.
  t.true(d.p50Ms < 15, JSON.stringify(d));
  t.true(d.p50Ms <= d.p99Ms && d.p99Ms <= d.maxMs, JSON.stringify(d));
});

test.serial('stop twice is a no-op', (t) => {
  const monitor = watchEventLoopDelay();
  monitor.stop();
  t.notThrows(() => monitor.stop());
});
