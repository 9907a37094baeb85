// BENCHMARK FAKE, not a VNC server: a Unix-socket server that, to each client,
// sends a 12-byte RFB ProtocolVersion banner (RFC 6143 §7.1.1) and then
// streams one pre-filled buffer over and over, as fast as the reader takes it
// (write until the socket says its buffer is full, then wait for 'drain': no
// rate limit, no unbounded queue). What the client sends is read and dropped.
// It runs as its own process so that the source costs the reader, the bridge
// and websockify the same. Prints {"ready":true} when listening; exits on SIGTERM.
// Usage: node --import tsx bench/fake-vnc-source-main.ts <socket-path> [chunkKiB]
import net from 'node:net';

const socketPath = process.argv[2];
const chunkKiB = Number(process.argv[3] ?? 256);
if (!socketPath || !Number.isInteger(chunkKiB) || chunkKiB < 1) {
  process.stderr.write('usage: fake-vnc-source-main.ts <socket-path> [chunkKiB]\n');
  process.exit(2);
}
// Not zeros: nothing on the path may get to take a shortcut on trivially compressible data.
const chunk = Buffer.alloc(chunkKiB * 1024);
for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;

const server = net.createServer((socket) => {
  socket.on('error', () => socket.destroy()); // The reader went away: that is how every run ends.
  socket.resume();
  socket.write('RFB 003.008\n');
  const pump = () => {
    while (!socket.destroyed) {
      if (!socket.write(chunk)) return void socket.once('drain', pump);
    }
  };
  pump();
});
server.listen(socketPath, () => process.stdout.write(JSON.stringify({ ready: true }) + '\n'));
process.once('SIGTERM', () => {
  server.close();
  process.exit(0);
});
