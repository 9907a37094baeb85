// Where audit rows go besides the store: a JSON-lines file and syslog over
// UDP (audit.jsonFile, audit.syslog). A sink only ships what the shipper hands
// it and says whether that worked; it never decides what was lost (nothing is:
// the rows stay in the store and the shipper tries again from its mark).
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import type { AuditConfig } from '../config/audit.js';
import type { AuditEntry } from './query.js';
import { syslogMessage } from './syslog.js';

export interface AuditSink {
  /** Stable while its target is the same: the shipper's mark for it is kept under this name. */
  readonly name: string;
  /** Ships rows in order; rejects when none or only some arrived (the shipper sends from the first again). */
  ship(entries: readonly AuditEntry[]): Promise<void>;
  close(): void;
}

/**
 * One JSON object per line, appended. The file is opened for each batch and closed again, so logrotate's rename
 * (or its copytruncate) needs no signal: the next batch creates the file anew. Created 0600.
 */
export function jsonLinesSink(file: string): AuditSink {
  return {
    name: jsonLinesSinkName(file),
    ship: async (entries) => {
      await fs.promises.appendFile(file, entries.map((e) => JSON.stringify(e) + '\n').join(''), { mode: 0o600 });
    },
    close: () => {},
  };
}

/** RFC 5424 over UDP to host:port (syslog.ts), one datagram per row. */
export function syslogUdpSink(target: NonNullable<AuditConfig['syslog']>): AuditSink {
  const socket = dgram.createSocket(net.isIPv6(target.host) ? 'udp6' : 'udp4');
  socket.unref(); // a sink never keeps the process alive
  // Errors are the send callbacks' to report; without a listener an ICMP error on the socket would throw.
  socket.on('error', () => {});
  const hostname = os.hostname();
  const send = (message: Buffer) => new Promise<void>((resolve, reject) => {
    socket.send(message, target.port, target.host, (err) => (err ? reject(err) : resolve()));
  });
  return {
    name: syslogSinkName(target),
    ship: async (entries) => {
      for (const entry of entries) {
        await send(syslogMessage(entry, {
          facility: target.facility, appName: target.appName, hostname, procId: process.pid,
        }));
      }
    },
    close: () => socket.close(),
  };
}

const jsonLinesSinkName = (file: string) => `jsonFile:${file}`;
const syslogSinkName = (target: NonNullable<AuditConfig['syslog']>) => `syslog:${target.host}:${target.port}`;

/** The names (shipper marks) of the configured sinks, without opening anything (retention checks the marks). */
export function configuredSinkNames(audit: AuditConfig): string[] {
  return [
    ...(audit.jsonFile ? [jsonLinesSinkName(audit.jsonFile)] : []),
    ...(audit.syslog ? [syslogSinkName(audit.syslog)] : []),
  ];
}

export function configuredSinks(audit: AuditConfig): AuditSink[] {
  const sinks: AuditSink[] = [];
  if (audit.jsonFile) sinks.push(jsonLinesSink(audit.jsonFile));
  if (audit.syslog) sinks.push(syslogUdpSink(audit.syslog));
  return sinks;
}
