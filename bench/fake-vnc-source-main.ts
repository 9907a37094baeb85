// BENCHMARK FAKE, not a VNC server: a server on a Unix socket and on
// 127.0.0.1 TCP (port chosen by the kernel) that, to each client on either,
// sends a 12-byte RFB ProtocolVersion banner (RFC 6143 §7.1.1) and then
// streams one pre-filled buffer over and over, as fast as the reader takes it
// (write until the socket says its buffer is full, then wait for 'drain': no
// rate limit, no unbounded queue). What the client sends is read and dropped.
// It runs as its own process so that the source costs the reader, the bridge
// and websockify the same. Prints {"ready":true,"tcpPort":N} when listening on
// both; exits on SIGTERM.
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

const serve = (socket: net.Socket) => {
  socket.on('error', () => socket.destroy()); // The reader went away: that is how every run ends.
  socket.resume();
  socket.write('RFB 003.008\n');
  const pump = () => {
    while (!socket.destroyed) {
      if (!socket.write(chunk)) return void socket.once('drain', pump);
    }
  };
  pump();
};
const listening = (server: net.Server) =>
  new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => resolve());
  });
// The same source on both: the Unix socket is what QEMU's VNC offers the
// relays; plain TCP on loopback is the reader's ceiling with no relay and no
// WebSocket framing, over the transport the relays' clients use.
const unixServer = net.createServer(serve);
const tcpServer = net.createServer(serve);
const ready = Promise.all([listening(unixServer), listening(tcpServer)]);
unixServer.listen(socketPath);
tcpServer.listen(0, '127.0.0.1');
await ready;
const tcpPort = (tcpServer.address() as net.AddressInfo).port;
process.stdout.write(JSON.stringify({ ready: true, tcpPort }) + '\n');
process.once('SIGTERM', () => {
  unixServer.close();
  tcpServer.close();
  process.exit(0);
});
