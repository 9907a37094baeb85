// Boot scripts and host folders through the whole create path, on real QEMU.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { stringify } from 'yaml';
import { api, localPid, startTestBroker } from '../helpers/broker.js';
import { makeSetup, pidsMentioning, requireProgram, requireQemu } from '../helpers/env.js';

test.before(() => {
  requireQemu();
  requireProgram('genisoimage', 'genisoimage');
  requireProgram('isoinfo', 'genisoimage');
});

function scriptedMachine(dir: string, bootScripts: object, extra: object = {}) {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'scripted.qcow2'), '64M']);
  fs.writeFileSync(path.join(dir, 'setup.sh'), '#!/bin/sh\necho "welcome @USER@ to @VM@ (@SESSION_NAME@)" > /etc/motd\n');
  fs.writeFileSync(path.join(dir, 'scripted.yml'), stringify({ name: 'scripted', image: 'scripted.qcow2', memoryMiB: { default: 128, max: 256 }, bootScripts, ...extra }));
}

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const isoFile = (iso: string, name: string) => execFileSync('isoinfo', ['-R', '-i', iso, '-x', `/${name}`], { encoding: 'utf8' });

test('boot scripts reach the guest in a cloud-init seed with placeholders substituted; the master is unchanged', async (t) => {
  const setup = makeSetup(t, { guest: { bootScripts: { scripts: [{ exec: 'echo site-wide @USER@', when: { machines: ['scripted'] } }, { exec: 'echo not for ada', when: { users: ['bob'] } }] } } }, {
    machines: (d) => scriptedMachine(d, { delivery: 'cloud-init', allowUserScripts: true, scripts: [{ file: 'setup.sh' }] }),
  });
  const master = path.join(setup.machinesDir, 'scripted.qcow2');
  const before = sha(master);
  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'scripted', user: 'ada', script: 'touch /home/@USER@/from-the-form' });
  t.is(res.status, 201, res.text);
  const row = broker.services.manager.get(res.json.id)!;
  const iso = path.join(row.runDir, 'seed.iso');
  t.true(fs.existsSync(iso));
  t.regex(execFileSync('isoinfo', ['-d', '-i', iso], { encoding: 'utf8' }), /Volume id: cidata/);
  const userData = isoFile(iso, 'user-data');
  t.regex(userData, /echo site-wide ada/);
  t.regex(userData, new RegExp(`welcome ada to scripted \\(${res.json.id}\\)`));
  t.regex(userData, /touch \/home\/ada\/from-the-form/);
  t.notRegex(userData, /not for ada/);
  t.notRegex(userData, /@USER@|@VM@|@SESSION_NAME@/);
  t.regex(isoFile(iso, 'meta-data'), new RegExp(`instance-id: qwd-${res.json.id}`));
  const argv = fs.readFileSync(`/proc/${localPid(row.handle)}/cmdline`, 'utf8').split('\0');
  t.true(argv.some((a) => a.startsWith(`file=${iso},`) && a.includes('media=cdrom') && a.includes('readonly=on')));
  t.is(sha(master), before, 'the master image is not written');
});

test('user scripts are refused unless the machine allows them, and nothing is created', async (t) => {
  const setup = makeSetup(t, {}, { machines: (d) => scriptedMachine(d, { scripts: [] }) });
  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'scripted', user: 'ada', script: 'rm -rf /' });
  t.is(res.status, 400);
  t.regex(res.json.error.message, /does not accept boot scripts from users/);
  const bad = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', script: 'x' });
  t.is(bad.status, 404, 'blank is not in this machines dir');
  t.deepEqual(broker.services.rows.all(), []);
  t.deepEqual(pidsMentioning(setup.stateDir), []);
});

test('a host folder outside the share roots refuses the session before anything is created', async (t) => {
  const setup = makeSetup(t, {}, { machines: (d) => scriptedMachine(d, { scripts: [] }, { shares: [{ path: '/etc', tag: 'etc' }] }) });
  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'scripted', user: 'ada' });
  t.is(res.status, 400);
  t.regex(res.json.error.message, /outside the allowed roots/);
  t.deepEqual(broker.services.rows.all(), []);
  t.false(fs.existsSync(path.join(setup.stateDir, 'sessions')) && fs.readdirSync(path.join(setup.stateDir, 'sessions')).length > 0);
});

test('virt-customize delivery says what to install when guestfs-tools is missing, and leaves nothing', async (t) => {
  const setup = makeSetup(t, { guest: { virtCustomize: 'virt-customize-not-installed' } }, { machines: (d) => scriptedMachine(d, { delivery: 'virt-customize', scripts: [{ exec: 'echo hi' }] }) });
  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'scripted', user: 'ada' });
  t.is(res.status, 500);
  t.deepEqual(broker.services.rows.all(), []);
  t.deepEqual(pidsMentioning(setup.stateDir), []);
  t.deepEqual(fs.readdirSync(path.join(setup.stateDir, 'sessions')), []);
});
