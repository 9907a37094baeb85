// Prepared machines on real QEMU and the demo guest: qwdctl machines prepare's
// work (boot, wait for the guest's ready line, save, freeze the disk, check by
// resuming) and sessions that resume it instead of booting, with the cold boot
// they fall back to when the state cannot be used.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireDemoImage, requireQemu, waitFor, writeDemoMachine } from '../helpers/env.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { prepareMachine } from '../../src/resume/prepare.js';
import { preparedDir, readPrepared } from '../../src/resume/prepared.js';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { chooseAccelerator, probeHostAccel } from '../../src/qemu/accel.js';
import { silentLogger } from '../../src/log.js';
import type { LocalHandle } from '../../src/launcher/local.js';
import type { Config } from '../../src/config/schema.js';

test.before(() => {
  requireQemu();
  requireDemoImage();
});

const SIZE = { cpus: 1, memoryMiB: 256 };
const RESUME = { sizes: [SIZE], ready: { serial: 'QWD: boot ok' } };

function demoSetup(t: ExecutionContext, resume: unknown = RESUME) {
  return makeSetup(t, { qemu: { network: 'none' } }, {
    machines: (d) => {
      writeDemoMachine(d);
      const file = path.join(d, 'demo.yml');
      fs.writeFileSync(file, stringify({ ...parse(fs.readFileSync(file, 'utf8')), resume }));
    },
  });
}

async function demoMachine(config: Config) {
  const catalog = await loadCatalog(config.machinesDir, config.qemu.img);
  const machine = catalog.get('demo');
  if (!machine) throw new Error(catalog.problems.join('\n'));
  return machine;
}

async function prepare(config: Config) {
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel());
  return prepareMachine({ config, accel, log: silentLogger() }, await demoMachine(config), SIZE);
}

test('a prepared demo guest resumes: the session comes up already booted, from an overlay on the frozen disk', async (t) => {
  t.timeout(240_000);
  const setup = demoSetup(t);
  const report = await prepare(setup.config);
  const dir = preparedDir(setup.config.machinesDir, 'demo', SIZE);
  t.is(report.dir, dir);
  t.true(report.stateBytes > 0 && report.diskBytes > 0);
  t.deepEqual(fs.readdirSync(dir).sort(), ['disk.qcow2', 'meta.json', 'state.zst']);
  const meta = await readPrepared(dir);
  t.false(meta === null || meta instanceof Error, String(meta));
  t.log(`prepared in ${report.prepareMs} ms; resumed in ${report.resumeMs} ms; state ${report.stateBytes} bytes`);

  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'demo', user: 'ada', lifetimeS: 600, ...SIZE });
  t.is(res.status, 201, res.text);
  const row = broker.services.manager.get(res.json.id)!;
  t.true((row.handle as LocalHandle).resumed, 'resumed, not booted');
  // The guest did not boot in this session: its serial port has printed no kernel banner and no boot line.
  const serial = fs.readFileSync(path.join(row.runDir, 'serial.log'), 'utf8');
  t.notRegex(serial, /Linux version|QWD: boot ok/);
  // And its screen is the booted console at once (a cold boot would show the firmware first).
  const viewer = await connectRfb(res.json.wsUrl);
  t.teardown(() => viewer.close());
  const frame = await viewer.update(false);
  t.true(frame.some((b) => b !== 0), 'the console is drawn');
  // Typing reaches the resumed guest's shell: it answers on its serial port.
  await typeLine(viewer, 'echo resumed-ok > /dev/ttyS0');
  await waitFor('the guest to answer', () => fs.readFileSync(path.join(row.runDir, 'serial.log'), 'utf8').includes('resumed-ok'), 30_000);
  const stop = await api(broker, 'DELETE', `/api/v1/sessions/${res.json.token}`);
  t.is(stop.status, 204, stop.text);
  t.false(fs.existsSync(row.runDir));
  t.true(fs.existsSync(path.join(dir, 'state.zst')), 'the prepared state stays for the next session');
});

async function typeLine(viewer: Awaited<ReturnType<typeof connectRfb>>, line: string) {
  const SHIFTED = new Set('>_|&:"<?'.split(''));
  for (const ch of line + '\n') {
    const keysym = ch === '\n' ? 0xff0d : ch.charCodeAt(0);
    const shift = SHIFTED.has(ch);
    if (shift) viewer.keyEvent(0xffe1, true);
    viewer.keyEvent(keysym, true);
    viewer.keyEvent(keysym, false);
    if (shift) viewer.keyEvent(0xffe1, false);
  }
}
