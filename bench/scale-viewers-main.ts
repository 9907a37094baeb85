// The scale run's viewers as their own process (see scale-viewers.ts for why).
// Usage: node --import tsx bench/scale-viewers-main.ts <fullFrameEveryMs>
// Reads one JSON command per line on stdin, answers one JSON line on stdout
// with the same id:
//   {"id":1,"op":"connect","viewers":[{name,url}…],"concurrency":8,"timeoutMs":30000} → {"id":1,"ok":true,"firstFrameMs":[…],"failures":[…]}
//   {"id":2,"op":"totals"}        → {"id":2,"ok":true,"totals":{open,updates,fullRequests,bytes,closedUnexpectedly,errors}}
//   {"id":3,"op":"expect-close"}  → sessions are being stopped: their viewers closing is not a failure
//   {"id":4,"op":"close"}         → closes every viewer
// Exits when stdin ends (the benchmark went away) or on SIGTERM.
import readline from 'node:readline';
import { ViewerPool, type ViewerSpec } from './scale-viewers.js';

const fullFrameEveryMs = Number(process.argv[2]);
if (!Number.isFinite(fullFrameEveryMs) || fullFrameEveryMs < 100) {
  process.stderr.write('usage: scale-viewers-main.ts <fullFrameEveryMs ≥ 100>\n');
  process.exit(2);
}
const pool = new ViewerPool(fullFrameEveryMs);
const answer = (id: unknown, body: Record<string, unknown>) => process.stdout.write(JSON.stringify({ id, ...body }) + '\n');

type Command = { id: number; op: 'connect'; viewers: ViewerSpec[]; concurrency: number; timeoutMs: number } | { id: number; op: 'totals' | 'expect-close' | 'close' };

async function run(cmd: Command): Promise<Record<string, unknown>> {
  switch (cmd.op) {
    case 'connect': return { ok: true, ...(await pool.connect(cmd.viewers, cmd.concurrency, cmd.timeoutMs)) };
    case 'totals': return { ok: true, totals: pool.totals() };
    case 'expect-close':
      pool.expectClosing();
      return { ok: true };
    case 'close':
      pool.closeAll();
      return { ok: true };
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  let cmd: Command;
  try {
    cmd = JSON.parse(line) as Command;
  } catch {
    answer(null, { ok: false, error: `not JSON: ${line.slice(0, 200)}` });
    return;
  }
  run(cmd).then((body) => answer(cmd.id, body), (err: Error) => answer(cmd.id, { ok: false, error: err.message }));
});
lines.on('close', () => {
  pool.closeAll();
  process.exit(0);
});
