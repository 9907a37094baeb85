// The `audit:` section: how long the audit trail is kept in the store and
// where else its rows are shipped (a JSON-lines file, syslog over UDP). The
// trail itself is always written to the store (src/audit/).
import path from 'node:path';
import { Problems, isObject, rejectUnknownKeys, section, readInt, readEnum, readString, type Obj } from './check.js';

/** RFC 5424 section 6.2.1 facilities a site may pick (their numeric codes are in src/audit/syslog.ts). */
export const SYSLOG_FACILITIES = [
  'user', 'daemon', 'auth', 'authpriv', 'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7',
] as const;
export type SyslogFacility = typeof SYSLOG_FACILITIES[number];

export interface AuditSyslogConfig {
  readonly host: string;
  readonly port: number;
  /** Only UDP (RFC 5426): one datagram per row, nothing waits for a collector that is down. */
  readonly protocol: 'udp';
  readonly facility: SyslogFacility;
  /** RFC 5424 APP-NAME. */
  readonly appName: string;
}

export interface AuditConfig {
  /** Rows older than this many days are deleted by the purge job; 0 keeps them forever. */
  readonly retentionDays: number;
  /** Each row also appended as one JSON object per line to this file (opened for each write: logrotate works). */
  readonly jsonFile: string | null;
  readonly syslog: AuditSyslogConfig | null;
}

const KEYS = ['retentionDays', 'jsonFile', 'syslog'] as const;
const SYSLOG_KEYS = ['host', 'port', 'protocol', 'facility', 'appName'] as const;

export function parseAuditConfig(p: Problems, top: Obj, baseDir: string): AuditConfig {
  const raw = section(p, top, 'audit');
  rejectUnknownKeys(p, raw, 'audit.', KEYS);
  const retentionDays = readInt(p, raw, 'retentionDays', 400, { prefix: 'audit.', min: 0, max: 100_000 });
  let jsonFile: string | null = null;
  if (raw.jsonFile !== undefined && raw.jsonFile !== null) {
    if (typeof raw.jsonFile !== 'string' || raw.jsonFile.trim() === '' || raw.jsonFile.includes('\0')) {
      p.add('audit.jsonFile', 'a file path', raw.jsonFile);
    } else {
      jsonFile = path.resolve(baseDir, raw.jsonFile);
    }
  }
  let syslog: AuditSyslogConfig | null = null;
  if (raw.syslog !== undefined && raw.syslog !== null) {
    if (!isObject(raw.syslog)) {
      p.add('audit.syslog', 'a mapping (host, port, facility, appName) or nothing', raw.syslog);
    } else {
      const s = raw.syslog;
      rejectUnknownKeys(p, s, 'audit.syslog.', SYSLOG_KEYS);
      if (s.host === undefined || s.host === null) p.note('audit.syslog.host is required when audit.syslog is set');
      syslog = {
        host: readString(p, s, 'host', '127.0.0.1', {
          prefix: 'audit.syslog.', pattern: /^[A-Za-z0-9.:-]{1,253}$/, expectation: 'a host name or IP address',
        }),
        port: readInt(p, s, 'port', 514, { prefix: 'audit.syslog.', min: 1, max: 65535 }),
        protocol: readEnum(p, s, 'protocol', ['udp'] as const, 'udp', 'audit.syslog.'),
        facility: readEnum(p, s, 'facility', SYSLOG_FACILITIES, 'authpriv', 'audit.syslog.'),
        // RFC 5424 section 6.2.5: APP-NAME is 1*48 PRINTUSASCII.
        appName: readString(p, s, 'appName', 'qemu-web-desktop', {
          prefix: 'audit.syslog.', pattern: /^[!-~]{1,48}$/, expectation: 'up to 48 printable ASCII characters',
        }),
      };
    }
  }
  return { retentionDays, jsonFile, syslog };
}
