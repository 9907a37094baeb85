// BENCHMARK HARNESS process: runs bench/bridge-harness.ts (the real bridge in
// front of a given VNC Unix socket) on its own, so that in the throughput
// measurement the bridge has a process — and an event loop — of its own, as
// websockify has. Prints {"wsUrl": …} on stdout when listening; exits on SIGTERM.
// Usage: node --import tsx bench/bridge-harness-main.ts <vnc-unix-socket>
import { startHarnessBridge } from './bridge-harness.js';

const vncPath = process.argv[2];
if (!vncPath) {
  process.stderr.write('usage: bridge-harness-main.ts <vnc-unix-socket>\n');
  process.exit(2);
}
const harness = await startHarnessBridge({ kind: 'unix', path: vncPath });
process.stdout.write(JSON.stringify({ wsUrl: harness.wsUrl }) + '\n');
process.once('SIGTERM', () => {
  harness.close().then(() => process.exit(0), () => process.exit(1));
});
