// A real rsyslogd for the audit trail's syslog tests: its own config in a temp
// dir (imudp on a loopback port, RFC 5424 parsed by rsyslog's own parser, each
// message with app-name "qwd-test" or "probe" written as one line of chosen
// fields to a file), in the foreground (-n, so the PID is rsyslogd's), ready
// once a probe datagram shows in that file, stopped by that PID in teardown.
// Debian package: rsyslog (bin/setup installs it; no system daemon is started).
import fs from 'node:fs';
import dgram from 'node:dgram';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { requireProgram, tempDir } from './env.js';
import { startPeerOnFreePorts } from './peer-process.js';

export interface RsyslogLine {
  appName: string;
  msgId: string;
  facility: string;
  severity: string;
  procId: string;
  /** The message as rsyslog parsed it (RFC 5424 MSG). */
  msg: string;
}

export interface Rsyslog {
  port: number;
  pid: number;
  /** What rsyslogd wrote so far, one entry per message of app-name qwd-test. */
  lines(): RsyslogLine[];
}

const SEP = '\t';

export async function startRsyslog(t: ExecutionContext): Promise<Rsyslog> {
  requireProgram('rsyslogd', 'rsyslog');
  const dir = tempDir(t, 'qwd-rsyslog-');
  const out = path.join(dir, 'received.log');
  const confFile = path.join(dir, 'rsyslog.conf');
  const writeConf = (port: number) => fs.writeFileSync(confFile, [
    `global(workDirectory="${dir}" maxMessageSize="8k")`,
    'module(load="imudp")',
    `input(type="imudp" address="127.0.0.1" port="${port}")`,
    // One line per message, fields separated by tabs: none can be in a field (rsyslog escapes control characters
    // it receives, and JSON has none raw).
    'template(name="fields" type="string" ' +
      'string="%app-name%\\t%msgid%\\t%syslogfacility-text%\\t%syslogseverity-text%\\t%procid%\\t%msg%\\n")',
    `if ($app-name == "qwd-test" or $app-name == "probe") then { action(type="omfile" file="${out}" template="fields") }`,
    '',
  ].join('\n'));
  const read = (): RsyslogLine[] => {
    if (!fs.existsSync(out)) return [];
    return fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).map((line) => {
      const [appName, msgId, facility, severity, procId, ...msg] = line.split(SEP);
      return { appName: appName!, msgId: msgId!, facility: facility!, severity: severity!, procId: procId!,
        msg: msg.join(SEP) };
    });
  };
  const probe = dgram.createSocket('udp4');
  t.teardown(() => probe.close());
  let probes = 0;
  const { peer, ports: [port] } = await startPeerOnFreePorts(t, {
    file: 'rsyslogd',
    portCount: 1,
    argsFor: ([p]) => {
      writeConf(p!);
      return ['-n', '-f', confFile, '-i', path.join(dir, 'rsyslogd.pid')];
    },
    readyWhat: 'rsyslogd to write a probe it received over UDP',
    isReady: async ([p]) => {
      if (read().some((l) => l.appName === 'probe')) return true;
      probes++;
      probe.send(`<14>1 2026-01-01T00:00:00Z host probe - probe${probes} - ready?`, p!, '127.0.0.1');
      return false;
    },
    readyTimeoutMs: 15_000,
    termGraceMs: 5_000,
    failureDetail: () => `config:\n${fs.readFileSync(confFile, 'utf8')}`,
  });
  return { port: port!, pid: peer.pid, lines: () => read().filter((l) => l.appName === 'qwd-test') };
}
