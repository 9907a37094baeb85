// A test file's tests run at once; each qwdctl is a whole Node process compiling
// TypeScript. Twenty of them on two CPUs all crawl and the slowest miss their
// deadline, so the test helpers start qwdctl a few at a time: a qwdctl waits for a
// slot, and its own timeout starts once it runs.
import os from 'node:os';

const SLOTS = Math.max(2, os.availableParallelism());
let running = 0;
const waiting: Array<() => void> = [];

/** Runs `work` once one of the slots is free; the slot is freed when it settles. */
export async function inCliSlot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= SLOTS) await new Promise<void>((resolve) => waiting.push(resolve));
  else running += 1;
  try {
    return await work();
  } finally {
    const next = waiting.shift();
    if (next) next(); // the slot passes straight to the next waiter
    else running -= 1;
  }
}
