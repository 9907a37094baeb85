// qwdctl gpu list|check against fixture sysfs trees (no GPU on these machines).
import test from 'ava';
import { qwdctl } from '../helpers/cli.js';
import path from 'node:path';
import { ROOT, makeSetup, requireQemu, tempDir } from '../helpers/env.js';
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
  t.deepEqual(asJson[0], { address: '0000:01:00.0', vendor: '0x10de', device: '0x1eb8', driver: 'vfio-pci', iommuGroup: '1', functions: ['0000:01:00.0', '0000:01:00.1'], usable: true, reason: null, heldBy: null });
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
  const setup2 = makeSetup(t, { gpu: { sysfsRoot: ready } });
  const good = await qwdctl(['--config', setup2.configFile, 'gpu', 'check', '--json']);
  const report = JSON.parse(good.stdout);
  t.deepEqual(report.usableGpus, ['0000:01:00.0']);
  // memlock depends on how this test runs; every other check passes.
  t.true(report.checks.filter((c: { name: string }) => c.name !== 'memlock limit').every((c: { ok: boolean }) => c.ok));
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
