// The server's clock as a page sees it. Countdowns and warnings follow the
// server's clock, not the browser's (which may be minutes off): a page carries
// the server's time when it was made, which puts the browser's estimate behind
// by however long the page took to arrive (seconds on a slow phone network).
// Each API answer carries the server's time again, and the round trip bounds
// the true offset: the server stamped it after we sent and before we received.
export function serverClock(serverNowMs) {
  let offsetMs = serverNowMs > 0 ? serverNowMs - Date.now() : 0;
  return {
    now: () => Date.now() + offsetMs,
    /** Fetches an API answer and learns the offset from its `serverTime`; resolves with the Response. */
    async fetch(url) {
      const sent = Date.now();
      const res = await fetch(url, { cache: 'no-store' });
      const received = Date.now();
      const stamped = Date.parse(res.headers.get('x-server-time') || '');
      if (Number.isFinite(stamped)) {
        // Narrow to [stamped - received, stamped - sent]: only ever as far as the evidence says.
        offsetMs = Math.min(Math.max(offsetMs, stamped - received), stamped - sent);
      }
      return res;
    },
  };
}
