// RFC 5424 syslog messages for audit rows, sent over UDP (RFC 5426): one
// datagram per row, so a collector that is down never holds the broker up.
// Pure formatting here; the socket is in sinks.ts.
import type { AuditEntry } from './query.js';
import type { SyslogFacility } from '../config/audit.js';

/** RFC 5424 section 6.2.1, table 1. */
const FACILITY_CODES: Record<SyslogFacility, number> = {
  user: 1, daemon: 3, auth: 4, authpriv: 10,
  local0: 16, local1: 17, local2: 18, local3: 19, local4: 20, local5: 21, local6: 22, local7: 23,
};

/** RFC 5424 section 6.2.1, table 2: warning (4) for refusals and failures, informational (6) for the rest. */
export function severityOf(entry: AuditEntry): number {
  if (entry.kind === 'refused' || entry.kind === 'stop-failed') return 4;
  if (entry.kind === 'login' && entry.detail?.result !== 'success') return 4;
  return 6;
}

/** RFC 5426 section 3.2: receivers must take 480 octets and should take 2048; larger details are cut. */
export const MAX_DATAGRAM = 2048;
const BOM = '\uFEFF';

/** PRINTUSASCII only (RFC 5424 section 6), at most `max` characters; "-" when nothing is left (NILVALUE). */
function header(text: string, max: number): string {
  const clean = text.replace(/[^!-~]/g, '_').slice(0, max);
  return clean === '' ? '-' : clean;
}

/**
 * `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM{json}`: MSGID is the row's kind, no structured data, the
 * message the row as one JSON object (UTF-8, announced by the BOM, section 6.4). A row whose JSON would not fit a
 * datagram is sent without its detail, marked "truncated".
 */
export function syslogMessage(
  entry: AuditEntry, opts: { facility: SyslogFacility; appName: string; hostname: string; procId: number },
): Buffer {
  const pri = FACILITY_CODES[opts.facility] * 8 + severityOf(entry);
  const head = `<${pri}>1 ${entry.at} ${header(opts.hostname, 255)} ${header(opts.appName, 48)} ` +
    `${opts.procId} ${header(entry.kind, 32)} - ${BOM}`;
  const full = Buffer.from(head + JSON.stringify(entry), 'utf8');
  if (full.length <= MAX_DATAGRAM) return full;
  return Buffer.from(head + JSON.stringify({ ...entry, detail: null, truncated: true }), 'utf8');
}
