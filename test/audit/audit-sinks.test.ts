// The audit trail's copies on a real broker (real QEMU, the blank machine):
// a JSON-lines file that cannot be written loses no store row, blocks no
// session, is logged once, and gets every row it missed once it can be
// written; syslog (RFC 5424 over UDP) reaches a UDP receiver this test owns
// (the exact bytes), and a real rsyslogd (test/helpers/rsyslog.ts) parses
// what the broker sends as RFC 5424: app-name, msgid, facility, severity.
import test, { type ExecutionContext } from 'ava';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { startBroker, type Broker } from '../../src/main.js';
import { createLogger } from '../../src/log.js';
import type { Config } from '../../src/config/schema.js';
import { makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { api, stopAllVms } from '../helpers/broker.js';
import { qwdctl } from '../helpers/cli.js';
import { queryAudit, type AuditEntry } from '../../src/audit/query.js';
import { startRsyslog } from '../helpers/rsyslog.js';

test.before(() => requireQemu());

/** A broker whose log goes to a file the test reads; stopped with its VMs in teardown. */
async function brokerWithLog(t: ExecutionContext, dir: string, config: Config): Promise<{ broker: Broker; logFile: string }> {
  const logFile = path.join(dir, 'broker.log');
  const broker = await startBroker(config, createLogger('info', fs.createWriteStream(logFile)));
  t.teardown(async () => {
    await stopAllVms(broker);
    await broker.close();
  });
  return { broker, logFile };
}

async function createAndStop(broker: Broker, user: string): Promise<string> {
  const created = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user });
  if (created.status !== 201) throw new Error(`create: ${created.status} ${created.text}`);
  const stopped = await api(broker, 'DELETE', `/api/v1/sessions/${created.json.token}`);
  if (stopped.status !== 204) throw new Error(`stop: ${stopped.status} ${stopped.text}`);
  return created.json.id as string;
}

test('a JSON-lines file that cannot be written loses no row and blocks no session; it gets every missed row later',
  async (t) => {
    const setup = makeSetup(t);
    // Its directory is a regular file: every append fails with ENOTDIR (root can write anywhere else).
    const blocker = path.join(setup.dir, 'logs');
    fs.writeFileSync(blocker, 'not a directory\n');
    const jsonFile = path.join(blocker, 'audit.jsonl');
    const { broker, logFile } = await brokerWithLog(t, setup.dir, {
      ...setup.config, audit: { ...setup.config.audit, jsonFile },
    });
    const db = broker.services.db;
    const first = await createAndStop(broker, 'ada');
    const second = await createAndStop(broker, 'bea');
    // Every row is in the store whatever the sink did.
    for (const id of [first, second]) {
      t.deepEqual(queryAudit(db, { sessionId: id }).map((e) => e.kind), ['created', 'started', 'ended']);
    }
    const failures = await waitFor('the sink failure logged', () => {
      const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('audit sink failed'));
      return lines.length > 0 && lines;
    });
    t.is(failures.length, 1, 'logged once, not once per row');
    t.regex(failures[0]!, /"code":"ENOTDIR"/);
    // The site fixes it: the next row wakes the sink, which sends everything from its mark on.
    fs.rmSync(blocker);
    fs.mkdirSync(blocker);
    const third = await createAndStop(broker, 'cid');
    const expected = queryAudit(db, { limit: 1000 });
    const lines = await waitFor('the file caught up', () => {
      if (!fs.existsSync(jsonFile)) return false;
      const got = fs.readFileSync(jsonFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as AuditEntry);
      return got.length >= expected.length && got;
    });
    t.deepEqual(lines, expected);
    t.deepEqual(new Set(lines.filter((e) => e.kind === 'ended').map((e) => e.sessionId)), new Set([first, second, third]));
    await waitFor('the recovery logged', () => fs.readFileSync(logFile, 'utf8').includes('audit sink works again'));
  });

test('syslog: each row is one RFC 5424 datagram with the row as JSON; qwdctl\'s stop is audited as cli:qwdctl',
  async (t) => {
    const receiver = dgram.createSocket('udp4');
    const datagrams: Buffer[] = [];
    receiver.on('message', (msg) => datagrams.push(msg));
    await new Promise<void>((resolve) => receiver.bind(0, '127.0.0.1', resolve));
    t.teardown(() => receiver.close());
    const port = receiver.address().port;
    const setup = makeSetup(t);
    const { broker } = await brokerWithLog(t, setup.dir, {
      ...setup.config,
      audit: { ...setup.config.audit, syslog: { host: '127.0.0.1', port, protocol: 'udp', facility: 'local3', appName: 'qwd-test' } },
    });
    const created = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada' });
    t.is(created.status, 201);
    // An administrator stops it with qwdctl (through the running broker's admin socket).
    const stop = await qwdctl(['--config', setup.configFile, 'sessions', 'stop', created.json.id, '--yes']);
    t.is(stop.code, 0, stop.stderr);
    const expected = queryAudit(broker.services.db, { sessionId: created.json.id });
    t.deepEqual(expected.map((e) => [e.kind, e.actor]), [
      ['created', 'web:anonymous'], ['started', 'system:broker'], ['ended', 'cli:qwdctl'],
    ]);
    await waitFor('three datagrams', () => datagrams.length >= 3);
    const parsed = datagrams.map((d) => {
      const text = d.toString('utf8');
      const m = /^<(\d{1,3})>1 (\S+) (\S+) qwd-test (\d+) (\S+) - \uFEFF(\{.*\})$/s.exec(text);
      if (!m) throw new Error(`not RFC 5424 as expected: ${text.slice(0, 200)}`);
      return { pri: Number(m[1]), timestamp: m[2], procId: Number(m[4]), msgId: m[5], entry: JSON.parse(m[6]!) };
    });
    // local3 (19) * 8 + informational (6)
    t.deepEqual(parsed.map((p) => p.pri), [158, 158, 158]);
    t.deepEqual(parsed.map((p) => p.msgId), ['created', 'started', 'ended']);
    t.deepEqual(parsed.map((p) => p.entry), expected);
    t.deepEqual(parsed.map((p) => p.timestamp), expected.map((e) => e.at));
    t.is(parsed[0]!.procId, process.pid);
    for (const d of datagrams) t.false(d.toString().includes(created.json.token), 'no token in a datagram');
  });

test('a real rsyslogd parses the broker\'s datagrams as RFC 5424: app-name, msgid, facility, severity, the row',
  async (t) => {
    const rsyslog = await startRsyslog(t);
    const setup = makeSetup(t);
    const { broker } = await brokerWithLog(t, setup.dir, {
      ...setup.config,
      audit: {
        ...setup.config.audit,
        syslog: { host: '127.0.0.1', port: rsyslog.port, protocol: 'udp', facility: 'authpriv', appName: 'qwd-test' },
      },
    });
    const refused = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', cpus: 64 });
    t.is(refused.status, 400);
    const id = await createAndStop(broker, 'ada');
    const expected = [...queryAudit(broker.services.db, { kind: 'refused' }), ...queryAudit(broker.services.db, { sessionId: id })];
    const lines = await waitFor('rsyslogd wrote four messages', () => rsyslog.lines().length >= 4 && rsyslog.lines());
    t.deepEqual(lines.map((l) => [l.msgId, l.facility, l.severity, l.procId]), [
      ['refused', 'authpriv', 'warning', String(process.pid)],
      ['created', 'authpriv', 'info', String(process.pid)],
      ['started', 'authpriv', 'info', String(process.pid)],
      ['ended', 'authpriv', 'info', String(process.pid)],
    ]);
    // rsyslog keeps the BOM that announces UTF-8 (RFC 5424 section 6.4) at the start of MSG.
    t.deepEqual(lines.map((l) => JSON.parse(l.msg.replace(/^\uFEFF/, ''))), expected);
  });
