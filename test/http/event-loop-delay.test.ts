// The event-loop delay monitor behind /healthz (src/http/event-loop-delay.ts),
// on this process's own event loop with short windows: a block shows in the
// window it happened in, and is gone from the next one. Serial: a block in one
// test would be a delay in another running beside it.
import test from 'ava';
import { watchEventLoopDelay } from '../../src/http/event-loop-delay.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function block(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until); // a long synchronous task
}

test.serial('a block shows in the window it happened in and ages out with the next window', async (t) => {
  const monitor = watchEventLoopDelay({ windowMs: 1000, resolutionMs: 10 });
  t.teardown(() => monitor.stop());
  await sleep(200);
  block(500);
  await sleep(1000); // the window with the block ends
  const withBlock = monitor.current();
  t.not(withBlock.endedAt, null, JSON.stringify(withBlock));
  t.true(withBlock.maxMs >= 450, JSON.stringify(withBlock));
  t.true(withBlock.windowS >= 0.9 && withBlock.windowS <= 1.6, JSON.stringify(withBlock));
  await sleep(1100); // a window with no block
  const quiet = monitor.current();
  t.true(quiet.maxMs < 450, JSON.stringify(quiet));
  t.true(quiet.samples > 10, JSON.stringify(quiet));
});

test.serial('delays are what the loop ran late beyond the timer interval, not the interval itself', async (t) => {
  const monitor = watchEventLoopDelay({ windowMs: 60_000, resolutionMs: 20 });
  t.teardown(() => monitor.stop());
  await sleep(300);
  const d = monitor.current();
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
