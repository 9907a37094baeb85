// Client-to-server RFB messages (RFC 6143 §7.5) that the broker's own RFB
// clients send: prepare's screen watch (src/resume/screen-watch.ts), and the
// tests' and benchmarks' viewers.

/** §7.5.1 SetPixelFormat: 32 bits per pixel, depth 24, little endian, true colour, 8 bits each at 16/8/0 (RGBX). */
export function setPixelFormatRgbx32(): Buffer {
  const msg = Buffer.alloc(20);
  msg.set([32, 24, 0, 1], 4);
  msg.writeUInt16BE(255, 8);
  msg.writeUInt16BE(255, 10);
  msg.writeUInt16BE(255, 12);
  msg.set([16, 8, 0], 14);
  return msg;
}

/** §7.5.3 FramebufferUpdateRequest for the whole screen; not incremental, the server sends all of it. */
export function framebufferUpdateRequest(incremental: boolean, width: number, height: number): Buffer {
  const msg = Buffer.alloc(10);
  msg.writeUInt8(3, 0);
  msg.writeUInt8(incremental ? 1 : 0, 1);
  msg.writeUInt16BE(width, 6);
  msg.writeUInt16BE(height, 8);
  return msg;
}
