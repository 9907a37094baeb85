// public/server-clock.js: the pages' estimate of the server's clock, corrected by each API answer.
import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

// The browser module, run in Node (which has fetch and Date as a browser does).
const { serverClock } = await import('../../public/server-clock.js' as string) as {
  serverClock(serverNowMs: number): { now(): number; fetch(url: string): Promise<Response> };
};

/** A server whose answers carry X-Server-Time = our clock + `aheadMs` (or none). */
async function timeServer(t: import('ava').ExecutionContext): Promise<{ url: string; set(aheadMs: number | null): void }> {
  let ahead: number | null = 0;
  const server = http.createServer((_req, res) => {
    if (ahead !== null) res.setHeader('X-Server-Time', new Date(Date.now() + ahead).toISOString());
    res.end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/sessions/x`, set: (ms) => { ahead = ms; } };
}

/** How far the clock's estimate is from the true server time (our clock + aheadMs). */
const error = (clock: { now(): number }, aheadMs: number) => Math.abs(clock.now() - (Date.now() + aheadMs));

test('a page that took seconds to arrive counts late until its first API answer, which puts it right', async (t) => {
  const server = await timeServer(t);
  // The page was made 4 s before its script ran: its estimate is 4 s behind.
  const clock = serverClock(Date.now() - 4000);
  t.true(error(clock, 0) >= 3900);
  let rtt = Date.now();
  await clock.fetch(server.url);
  rtt = Date.now() - rtt;
  t.true(error(clock, 0) <= rtt + 5, `within one round trip (${rtt} ms): off by ${error(clock, 0)} ms`);
});

test('a browser clock ten minutes ahead is corrected both ways, and an answer inside the bounds changes nothing', async (t) => {
  const server = await timeServer(t);
  server.set(-600_000); // the server is ten minutes behind this "browser"
  const clock = serverClock(Date.now()); // a page that claims no skew (it was cached, say)
  await clock.fetch(server.url);
  t.true(error(clock, -600_000) < 1000);
  const settled = clock.now() - Date.now();
  server.set(-600_000);
  await clock.fetch(server.url);
  t.true(Math.abs(clock.now() - Date.now() - settled) <= 50, 'a consistent answer keeps the estimate');
  server.set(null);
  await clock.fetch(server.url);
  t.true(Math.abs(clock.now() - Date.now() - settled) <= 50, 'an answer without the header keeps it too');
});

test('a page without the server\'s time starts on the browser\'s clock', (t) => {
  const clock = serverClock(Number(undefined));
  t.true(Math.abs(clock.now() - Date.now()) <= 5);
});
