// The pieces of the login throttle that keep a user's own browser and address in:
// known-device marks and the client key (an IPv6 /64 counts as one client).
import test from 'ava';
import { addMark, deviceMark, isKnownDevice, readMarks } from '../../src/auth/known-device.js';
import { clientKey, loginKeys } from '../../src/auth/rate-limit.js';

const SECRET = 'test-secret';

const NOW = Date.parse('2026-12-04T12:00:00Z');
const DAY = Math.floor(NOW / 86_400_000);

test('a mark is per name (case-insensitive), per day and per secret, and never holds the name', (t) => {
  t.is(deviceMark(SECRET, 'Alice', DAY), deviceMark(SECRET, ' alice ', DAY));
  t.not(deviceMark(SECRET, 'alice', DAY), deviceMark(SECRET, 'bob', DAY));
  t.not(deviceMark(SECRET, 'alice', DAY), deviceMark('other-secret', 'alice', DAY));
  t.not(deviceMark(SECRET, 'alice', DAY), deviceMark(SECRET, 'alice', DAY - 1));
  t.notRegex(addMark(SECRET, null, 'alice', NOW), /alice/);
});

test('a browser is known for the names it logged in as, at most five, newest first', (t) => {
  let cookie: string | null = null;
  for (const name of ['a', 'b', 'c', 'd', 'e', 'f']) cookie = addMark(SECRET, cookie, name, NOW);
  t.is(readMarks(cookie).length, 5);
  t.true(isKnownDevice(SECRET, cookie, 'f', NOW));
  t.false(isKnownDevice(SECRET, cookie, 'a', NOW), 'the oldest mark was dropped');
  t.is(addMark(SECRET, cookie, 'c', NOW).split('.')[0], deviceMark(SECRET, 'c', DAY), 'logging in again moves the mark first');
  t.is(readMarks(addMark(SECRET, cookie, 'c', NOW)).length, 5, 'without a duplicate');
});

test('a mark is honoured for 180 days after the login that issued it, and renewed by the next login', (t) => {
  const cookie = addMark(SECRET, null, 'alice', NOW);
  t.true(isKnownDevice(SECRET, cookie, 'alice', NOW + 180 * 86_400_000));
  t.false(isKnownDevice(SECRET, cookie, 'alice', NOW + 181 * 86_400_000), 'too old');
  t.false(isKnownDevice(SECRET, cookie, 'alice', NOW - 2 * 86_400_000), 'from the future');
  const renewed = addMark(SECRET, cookie, 'alice', NOW + 100 * 86_400_000);
  t.is(readMarks(renewed).length, 1, 'the old mark of the name is replaced');
  t.true(isKnownDevice(SECRET, renewed, 'alice', NOW + 250 * 86_400_000));
});

test('forged, truncated or foreign marks are not known', (t) => {
  t.false(isKnownDevice(SECRET, null, 'alice', NOW));
  t.false(isKnownDevice(SECRET, '', 'alice', NOW));
  t.false(isKnownDevice(SECRET, `${DAY}-${'x'.repeat(22)}`, 'alice', NOW));
  t.false(isKnownDevice(SECRET, deviceMark(SECRET, 'alice', DAY).slice(0, -1), 'alice', NOW));
  t.false(isKnownDevice(SECRET, addMark('other', null, 'alice', NOW), 'alice', NOW));
  t.false(isKnownDevice(SECRET, `${DAY + 1}${deviceMark(SECRET, 'alice', DAY).slice(String(DAY).length)}`, 'alice', NOW), 'a day changed by hand');
  t.true(isKnownDevice(SECRET, `junk.${deviceMark(SECRET, 'alice', DAY)}`, 'alice', NOW));
});

const CLIENTS: Array<[string, string]> = [
  ['192.0.2.7', '192.0.2.7'],
  ['::ffff:192.0.2.7', '192.0.2.7'],
  ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
  ['2001:db8:1:2::99', '2001:db8:1:2::/64'],
  ['2001:DB8:1:2:ffff::1', '2001:db8:1:2::/64'],
  ['2001:db8::1', '2001:db8:0:0::/64'],
  ['::1', '0:0:0:0::/64'],
];
for (const [address, key] of CLIENTS) {
  test(`client ${address} is counted as ${key}`, (t) => t.is(clientKey(address), key));
}

test('a known browser is not counted under the per-name key; others are', (t) => {
  const limits = { maxFailures: 5, maxFailuresPerClient: 20, maxFailuresPerName: 50, windowS: 300 };
  t.deepEqual(loginKeys(limits, 'Alice', '2001:db8::5').map((k) => k.key.split(':')[0]), ['pair', 'client', 'name']);
  t.deepEqual(loginKeys(limits, 'Alice', '2001:db8::5', { knownDevice: true }).map((k) => k.key.split(':')[0]), ['pair', 'client']);
  t.is(loginKeys(limits, 'a', '2001:db8::5')[1]!.key, loginKeys(limits, 'a', '2001:db8::6')[1]!.key, 'one /64, one client');
});
