// The throughput reader as its own process (see throughput-reader.ts for why).
// Usage: node --import tsx bench/throughput-reader-main.ts '<ReaderJob as JSON>'
// Prints one line: {"ok":true,"result":…} or {"ok":false,"error":"…"}; with
// several connections, {"windowStart":true} first, when the window starts.
import { readFor, readMany, type ReaderJob } from './throughput-reader.js';

const job = JSON.parse(process.argv[2] ?? 'null') as ReaderJob | null;
if (!job) {
  process.stderr.write('usage: throughput-reader-main.ts <job JSON>\n');
  process.exit(2);
}
try {
  const result = (job.connections ?? 1) > 1
    ? await readMany(job, () => process.stdout.write(JSON.stringify({ windowStart: true }) + '\n'))
    : await readFor(job);
  process.stdout.write(JSON.stringify({ ok: true, result }) + '\n');
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: (err as Error).message }) + '\n');
}
process.exit(0);
