// qwdctl gpu list|check against fixture sysfs trees (no GPU on these machines).
import test from 'ava';
import { qwdctl } from '../helpers/cli.js';
import fs from 'node:fs';
import path from 'node:path';
import { makeSetup, requireQemu, tempDir } from '../helpers/env.js';
import { AUDIO, GPU, makeSysfs } from '../helpers/sysfs.js';

test.before(() => requireQemu());

test('gpu list shows devices, groups, usability with the reason, and the holder', async (t) => {
  const sysfs = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1'), AUDIO('0000:01:00.1', '1'), GPU('0000:02:00.0', '7', 'nouveau')]);
  const setup = makeSetup(t, { gpu: { sysfsRoot: sysfs } });
  const listed = await qwdctl(['--config', setup.configFile, 'gpu', 'list']);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /0000:01:00\.0\s+10de:1eb8\s+1\s+00\.0,00\.1\s+free/);
  t.regex(listed.stdout, /0000:02:00\.0.*not usable/);
  t.regex(listed.stdout, /0000:02:00\.0: IOMMU group 7 has 0000:02:00\.0 bound to nouveau/);
  const asJson = JSON.parse((await qwdctl(['--config', setup.configFile, 'gpu', 'list', '--json'])).stdout);
  t.deepEqual(asJson[0], { address: '0000:01:00.0', vendor: '0x10de', device: '0x1eb8', driver: 'vfio-pci', iommuGroup: '1', displayFunctions: ['0000:01:00.0'], functions: ['0000:01:00.0', '0000:01:00.1'], usable: true, reason: null, heldBy: null });
});

test('gpu check says what to change on an unprepared host and passes on a prepared one', async (t) => {
  const bare = makeSysfs(tempDir(t), [GPU('0000:01:00.0', null)]);
  const setup = makeSetup(t, { gpu: { sysfsRoot: bare } });
  const bad = await qwdctl(['--config', setup.configFile, 'gpu', 'check']);
  t.is(bad.code, 6);
  t.regex(bad.stdout, /✗ IOMMU enabled: no IOMMU groups/);
  t.regex(bad.stdout, /fix: enable VT-d/);
  t.regex(bad.stdout, /✗ vfio-pci module loaded/);
  t.regex(bad.stdout, /✗ no usable GPU/);
  const ready = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1')], { modules: ['vfio_pci', 'vfio_iommu_type1'], devVfio: true });
  fs.writeFileSync(path.join(ready, 'dev/vfio/1'), '');
  const setup2 = makeSetup(t, { gpu: { sysfsRoot: ready } });
  const good = await qwdctl(['--config', setup2.configFile, 'gpu', 'check', '--json']);
  const report = JSON.parse(good.stdout);
  t.deepEqual(report.usableGpus, ['0000:01:00.0']);
  // memlock depends on how this test runs; every other check passes.
  t.true(report.checks.filter((c: { name: string }) => c.name !== 'memlock limit').every((c: { ok: boolean }) => c.ok));
  t.true(report.checks.some((c: { name: string }) => c.name === '/dev/vfio/<group> access'));
  // The memlock check names what it read: a broker given by --pid here (this test process stands for it).
  const byPid = JSON.parse((await qwdctl(['--config', setup2.configFile, 'gpu', 'check', '--json', '--pid', String(process.pid)])).stdout);
  const memlock = byPid.checks.find((c: { name: string }) => c.name === 'memlock limit');
  t.regex(memlock.detail, new RegExp(`checked: the running broker \\(pid ${process.pid}, /proc/${process.pid}/limits\\)`));
  const badPid = await qwdctl(['--config', setup2.configFile, 'gpu', 'check', '--pid', 'self']);
  t.is(badPid.code, 1);
  t.regex(badPid.stderr, /--pid must be a process id, got "self"/);
});

test('on a host without GPUs, list says the option is not offered and the form has no GPU field', async (t) => {
  const setup = makeSetup(t, { gpu: { sysfsRoot: tempDir(t) } });
  const listed = await qwdctl(['--config', setup.configFile, 'gpu', 'list']);
  t.regex(listed.stdout, /no GPU .* the GPU option is not offered/);
  const { startTestBroker } = await import('../helpers/broker.js');
  const broker = await startTestBroker(t, setup.config);
  t.notRegex(await (await fetch(broker.url)).text(), /name="gpus"/);
  const withGpu = makeSetup(t, { gpu: { sysfsRoot: makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1')]) } });
  const broker2 = await startTestBroker(t, withGpu.config);
  const form = await (await fetch(broker2.url)).text();
  t.regex(form, /name="gpus" value="1"/);
  t.regex(form, /Free now on this server: \d+ desktops, \d+ CPUs, \d+ MiB, 1 GPU\./);
});

test('status counts GPUs (usable, free, held and by whom) in its header and its JSON', async (t) => {
  const sysfs = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1'), AUDIO('0000:01:00.1', '1'), GPU('0000:02:00.0', '2'), GPU('0000:03:00.0', '7', 'nouveau')]);
  const setup = makeSetup(t, { gpu: { sysfsRoot: sysfs } });
  const { openDb } = await import('../../src/store/db.js');
  const { SessionRows } = await import('../../src/store/session-rows.js');
  const db = openDb(setup.stateDir);
  new SessionRows(db).claimGpu('0000:02:00.0', 'feedc0ffee01', ['0000:02:00.0'], Date.now());
  db.close();
  const status = await qwdctl(['--config', setup.configFile, 'status']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /\nGPUs: 2 usable of 3, 1 free, 1 held \(0000:02:00\.0 by feedc0ffee01\)\n/);
  const asJson = JSON.parse((await qwdctl(['--config', setup.configFile, 'status', '--json'])).stdout);
  t.deepEqual(asJson.gpus, { total: 3, usable: 2, free: 1, held: 1, heldBy: [{ address: '0000:02:00.0', sessionId: 'feedc0ffee01' }] });
  const none = makeSetup(t, { gpu: { sysfsRoot: tempDir(t) } });
  t.regex((await qwdctl(['--config', none.configFile, 'status'])).stdout, /\nGPUs: none\n/);
});

test('gpu list shows a held GPU with its holder session, in the table and in --json', async (t) => {
  const sysfs = makeSysfs(tempDir(t), [GPU('0000:01:00.0', '1'), AUDIO('0000:01:00.1', '1'), GPU('0000:02:00.0', '1'), GPU('0000:03:00.0', '4')]);
  const setup = makeSetup(t, { gpu: { sysfsRoot: sysfs } });
  const { startTestBroker, api } = await import('../helpers/broker.js');
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'alice', lifetimeS: 600 });
  // Recorded as create() records a claim (no real GPU can start here), through the group's second card.
  broker.services.rows.claimGpu('0000:01:00.0', json.id, ['0000:01:00.0', '0000:02:00.0', '0000:01:00.1'], Date.now());
  const listed = await qwdctl(['--config', setup.configFile, 'gpu', 'list']);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, new RegExp(`0000:01:00\\.0\\s+10de:1eb8\\s+1\\s+00\\.0,02:00\\.0,00\\.1\\s+held by ${json.id}`));
  t.regex(listed.stdout, /0000:03:00\.0\s+10de:1eb8\s+4\s+00\.0\s+free/);
  t.notRegex(listed.stdout, /^0000:02:00\.0/m, 'the second card of group 1 is part of its unit, not a line of its own');
  const asJson = JSON.parse((await qwdctl(['--config', setup.configFile, 'gpu', 'list', '--json'])).stdout);
  t.deepEqual(asJson.map((g: { address: string; heldBy: string | null }) => [g.address, g.heldBy]), [['0000:01:00.0', json.id], ['0000:03:00.0', null]]);
  // gpu check reads the memlock limit of the broker that recorded itself in the state dir (here this test process).
  const check = JSON.parse((await qwdctl(['--config', setup.configFile, 'gpu', 'check', '--json'])).stdout);
  t.regex(check.checks.find((c: { name: string }) => c.name === 'memlock limit').detail, new RegExp(`checked: the running broker \\(pid ${process.pid},`));
  await api(broker, 'DELETE', `/api/v1/sessions/${json.token}`);
  const after = JSON.parse((await qwdctl(['--config', setup.configFile, 'gpu', 'list', '--json'])).stdout);
  t.is(after[0].heldBy, null, 'released when the session ends');
});
