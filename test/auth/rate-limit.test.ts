import test from 'ava';
import { LoginRateLimiter } from '../../src/auth/rate-limit.js';

test('limits are per key, inclusive, and lift when failures leave the window', (t) => {
  let now = 0;
  const limiter = new LoginRateLimiter(3, 60, () => now);
  const keys = ['ip:1.2.3.4', 'user:ada'];
  limiter.fail(keys);
  limiter.fail(keys);
  t.is(limiter.retryAfterS(keys), 0, 'two failures of three allowed');
  now = 10_000;
  limiter.fail(keys);
  t.is(limiter.retryAfterS(keys), 50, 'the oldest failure leaves the window in 50 s');
  t.is(limiter.retryAfterS(['ip:5.6.7.8', 'user:bob']), 0, 'other keys are not affected');
  t.is(limiter.retryAfterS(['ip:9.9.9.9', 'user:ada']), 50, 'the user name is limited from any address');
  now = 60_001;
  t.is(limiter.retryAfterS(keys), 0);
  limiter.fail(keys);
  limiter.succeed(keys);
  t.is(limiter.retryAfterS(['ip:0.0.0.0', 'user:ada']), 0, 'a success clears the user name');
});

test('a spray of distinct names does not grow memory without bound', (t) => {
  let now = 0;
  const limiter = new LoginRateLimiter(3, 1, () => now);
  for (let i = 0; i < 10001; i++) limiter.fail([`user:u${i}`]);
  now = 5000;
  limiter.fail(['user:last']);
  t.is((limiter as unknown as { failures: Map<string, number[]> }).failures.size, 1);
});

test('an admitted attempt counts at once, so concurrent attempts beyond the limit are refused; forgiving takes it back', (t) => {
  let now = 1000;
  const limiter = new LoginRateLimiter(3, 60, () => now);
  const keys = ['ip:1.2.3.4', 'user:ada'];
  const admitted = [limiter.admit(keys), limiter.admit(keys), limiter.admit(keys)];
  t.true(admitted.every((a) => a.admitted), 'three in flight, none finished');
  t.deepEqual(limiter.admit(keys), { admitted: false, retryAfterS: 60 }, 'the fourth waits though no failure was recorded yet');
  now = 2000;
  const first = admitted[0]!;
  if (first.admitted) limiter.forgive(first.attempt);
  t.true(limiter.admit(keys).admitted, 'a forgiven attempt (success, or backend down) frees its place');
  t.false(limiter.admit(keys).admitted);
  const other = limiter.admit(['ip:5.6.7.8', 'user:bob']);
  t.true(other.admitted, 'other keys are not affected');
  if (other.admitted) {
    limiter.forgive(other.attempt);
    limiter.forgive(other.attempt);
  }
  t.is(limiter.retryAfterS(['ip:5.6.7.8', 'user:bob']), 0, 'forgiving twice is harmless');
});
