// The pieces of the login throttle that keep a user's own browser and address in:
// known-device marks and the client key (an IPv6 /64 counts as one client).
import test from 'ava';
import { addMark, deviceMark, isKnownDevice, readMarks } from '../../src/auth/known-device.js';
import { clientKey, loginKeys } from '../../src/auth/rate-limit.js';

const SECRET = 'test-secret';

test('a mark is per name (case-insensitive) and per secret, and never holds the name', (t) => {
  t.is(deviceMark(SECRET, 'Alice'), deviceMark(SECRET, ' alice '));
  t.not(deviceMark(SECRET, 'alice'), deviceMark(SECRET, 'bob'));
  t.not(deviceMark(SECRET, 'alice'), deviceMark('other-secret', 'alice'));
  t.notRegex(addMark(SECRET, null, 'alice'), /alice/);
});

test('a browser is known for the names it logged in as, at most five, newest first', (t) => {
  let cookie: string | null = null;
  for (const name of ['a', 'b', 'c', 'd', 'e', 'f']) cookie = addMark(SECRET, cookie, name);
  t.is(readMarks(cookie).length, 5);
  t.true(isKnownDevice(SECRET, cookie, 'f'));
  t.false(isKnownDevice(SECRET, cookie, 'a'), 'the oldest mark was dropped');
  t.is(addMark(SECRET, cookie, 'c').split('.')[0], deviceMark(SECRET, 'c'), 'logging in again moves the mark first');
  t.is(readMarks(addMark(SECRET, cookie, 'c')).length, 5, 'without a duplicate');
});

test('forged, truncated or foreign marks are not known', (t) => {
  t.false(isKnownDevice(SECRET, null, 'alice'));
  t.false(isKnownDevice(SECRET, '', 'alice'));
  t.false(isKnownDevice(SECRET, 'x'.repeat(22), 'alice'));
  t.false(isKnownDevice(SECRET, deviceMark(SECRET, 'alice').slice(0, 21), 'alice'));
  t.false(isKnownDevice(SECRET, addMark('other', null, 'alice'), 'alice'));
  t.true(isKnownDevice(SECRET, `junk.${deviceMark(SECRET, 'alice')}`, 'alice'));
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
