// The login limiter, pure: an injected clock, no sleeps. Failures count per
// (name, client), per client and per name, each with its own limit, so a
// stranger failing with a victim's name does not lock the victim out.
import test from 'ava';
import { LoginRateLimiter, loginKeys, type LoginLimits } from '../../src/auth/rate-limit.js';

const LIMITS: LoginLimits = { maxFailures: 3, maxFailuresPerClient: 6, maxFailuresPerName: 10, windowS: 60 };

/** One row: failures to record first (name, client, at ms), then one attempt and the wait it must get. */
interface Row {
  title: string;
  failures: Array<[name: string, client: string, atMs: number]>;
  attempt: [name: string, client: string, atMs: number];
  retryAfterS: number;
}

const failuresFrom = (name: string, client: string, n: number, atMs = 0): Row['failures'] => Array.from({ length: n }, () => [name, client, atMs]);

const rows: Row[] = [
  { title: 'nothing failed yet: allowed', failures: [], attempt: ['alice', '10.0.0.1', 0], retryAfterS: 0 },
  { title: 'two failures of three for a pair: allowed', failures: failuresFrom('alice', '10.0.0.9', 2), attempt: ['alice', '10.0.0.9', 0], retryAfterS: 0 },
  { title: 'three failures for a pair: that pair waits for the window', failures: failuresFrom('alice', '10.0.0.9', 3), attempt: ['alice', '10.0.0.9', 0], retryAfterS: 60 },
  { title: 'the attacker\'s three failures do not lock the victim at her own address', failures: failuresFrom('alice', '10.0.0.9', 3), attempt: ['alice', '10.0.0.1', 0], retryAfterS: 0 },
  { title: 'the name is compared without case and spaces', failures: failuresFrom('Alice ', '10.0.0.9', 3), attempt: ['alice', '10.0.0.9', 0], retryAfterS: 60 },
  { title: 'the wait shrinks as time passes', failures: failuresFrom('alice', '10.0.0.9', 3), attempt: ['alice', '10.0.0.9', 45_000], retryAfterS: 15 },
  { title: 'the limit lifts when the failures leave the window', failures: failuresFrom('alice', '10.0.0.9', 3), attempt: ['alice', '10.0.0.9', 60_001], retryAfterS: 0 },
  { title: 'one client guessing many names is stopped at the per-client limit', failures: ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => [n, '10.0.0.9', 0] as [string, string, number]), attempt: ['g', '10.0.0.9', 0], retryAfterS: 60 },
  { title: 'five names from one client: still under the per-client limit', failures: ['a', 'b', 'c', 'd', 'e'].map((n) => [n, '10.0.0.9', 0] as [string, string, number]), attempt: ['g', '10.0.0.9', 0], retryAfterS: 0 },
  { title: 'many addresses failing with one name reach the slower per-name back-off', failures: Array.from({ length: 10 }, (_, i) => ['alice', `10.0.1.${i}`, 0] as [string, string, number]), attempt: ['alice', '10.0.0.1', 0], retryAfterS: 60 },
  { title: 'nine addresses, one failure each: the name is still open', failures: Array.from({ length: 9 }, (_, i) => ['alice', `10.0.1.${i}`, 0] as [string, string, number]), attempt: ['alice', '10.0.0.1', 0], retryAfterS: 0 },
  { title: 'the per-name wait ends when enough of its failures have left the window', failures: [...Array.from({ length: 5 }, (_, i) => ['alice', `10.0.1.${i}`, 0] as [string, string, number]), ...Array.from({ length: 5 }, (_, i) => ['alice', `10.0.2.${i}`, 30_000] as [string, string, number])], attempt: ['alice', '10.0.0.1', 40_000], retryAfterS: 20 },
];

for (const row of rows) {
  test(`login limiter: ${row.title}`, (t) => {
    let now = 0;
    const limiter = new LoginRateLimiter(LIMITS.windowS, () => now);
    for (const [name, client, at] of row.failures) {
      now = at;
      limiter.fail(loginKeys(LIMITS, name, client));
    }
    const [name, client, at] = row.attempt;
    now = at;
    t.is(limiter.retryAfterS(loginKeys(LIMITS, name, client)), row.retryAfterS);
  });
}

test('a success clears what counted against the name, not against the address', (t) => {
  let now = 0;
  const limiter = new LoginRateLimiter(60, () => now);
  const attacker = loginKeys(LIMITS, 'alice', '10.0.0.9');
  for (let i = 0; i < 3; i++) limiter.fail(attacker);
  for (let i = 0; i < 3; i++) limiter.fail(loginKeys(LIMITS, `x${i}`, '10.0.0.9'));
  limiter.succeed(attacker);
  t.is(limiter.retryAfterS(attacker), 60, 'six failures from the address still count against it');
  t.is(limiter.retryAfterS(loginKeys(LIMITS, 'alice', '10.0.0.1')), 0);
});

test('a spray of distinct names does not grow memory without bound', (t) => {
  let now = 0;
  const limiter = new LoginRateLimiter(1, () => now);
  for (let i = 0; i < 10001; i++) limiter.fail([{ key: `name:u${i}`, max: 3 }]);
  now = 5000;
  limiter.fail([{ key: 'name:last', max: 3 }]);
  t.is((limiter as unknown as { failures: Map<string, number[]> }).failures.size, 1);
});

test('an admitted attempt counts at once, so concurrent attempts beyond the limit are refused; forgiving takes it back', (t) => {
  let now = 1000;
  const limiter = new LoginRateLimiter(60, () => now);
  const keys = loginKeys(LIMITS, 'ada', '1.2.3.4');
  const admitted = [limiter.admit(keys), limiter.admit(keys), limiter.admit(keys)];
  t.true(admitted.every((a) => a.admitted), 'three in flight, none finished');
  t.deepEqual(limiter.admit(keys), { admitted: false, retryAfterS: 60 }, 'the fourth waits though no failure was recorded yet');
  now = 2000;
  const first = admitted[0]!;
  if (first.admitted) limiter.forgive(first.attempt);
  t.true(limiter.admit(keys).admitted, 'a forgiven attempt (success, or backend down) frees its place');
  t.false(limiter.admit(keys).admitted);
  const other = limiter.admit(loginKeys(LIMITS, 'bob', '5.6.7.8'));
  t.true(other.admitted, 'other keys are not affected');
  if (other.admitted) {
    limiter.forgive(other.attempt);
    limiter.forgive(other.attempt);
  }
  t.is(limiter.retryAfterS(loginKeys(LIMITS, 'bob', '5.6.7.8')), 0, 'forgiving twice is harmless');
});
