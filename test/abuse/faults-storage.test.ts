// Storage faults with real components: qemu-img failing, and the run dir or
// the state dir on a full file system (a 1 MiB tmpfs mounted here, as root,
// and unmounted in teardown). Each ends in a clear error with nothing left
// behind (no overlay, no live row, no QEMU), and works again once space is freed.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { makeSetup, mountTmpfs, pidsMentioning, requireQemu } from '../helpers/env.js';
import { api, startTestBroker } from '../helpers/broker.js';

test.before(() => requireQemu());

/** Fills the file system holding `dir` with one file; returns it (delete it to free the space). */
function fill(dir: string): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  try {
    for (;;) fs.writeSync(fd, chunk, 0, 512); // the last partial blocks
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    fs.closeSync(fd);
  }
  return filler;
}

function liveRows(broker: Awaited<ReturnType<typeof startTestBroker>>) {
  return broker.services.rows.all();
}

test('qemu-img failing: the create gets a clear error; no overlay file, no row, no process', async (t) => {
  const setup = makeSetup(t);
  const fake = path.join(setup.dir, 'qemu-img-fails');
  // Inspection works (the real qemu-img), creating an overlay fails as a broken qemu-img would.
  fs.writeFileSync(fake, '#!/bin/sh\nif [ "$1" = create ]; then echo "qemu-img: simulated I/O error" >&2; exit 1; fi\nexec qemu-img "$@"\n', { mode: 0o755 });
  const broker = await startTestBroker(t, { ...setup.config, qemu: { ...setup.config.qemu, img: fake } });
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'fay', lifetimeS: 600 });
  t.is(res.status, 500, res.text);
  t.is(res.json.error.code, 'QWD_OVERLAY_FAILED');
  t.is(typeof res.json.error.message, 'string');
  t.deepEqual(liveRows(broker), []);
  t.deepEqual(fs.existsSync(setup.config.runDir) ? fs.readdirSync(setup.config.runDir) : [], [], 'no run dir, no overlay');
  t.deepEqual(pidsMentioning(setup.dir).filter((pid) => pid !== process.pid), [], 'no QEMU started');
});

test('the run dir on a full file system: a clear error, nothing half-written, and it works again once space is freed', async (t) => {
  t.timeout(90_000);
  const setup = makeSetup(t);
  const runDir = path.join(setup.dir, 'run');
  mountTmpfs(t, runDir);
  const broker = await startTestBroker(t, { ...setup.config, runDir });
  const filler = fill(runDir);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ned', lifetimeS: 600 });
  t.true(res.status >= 500, res.text);
  t.regex(res.json.error.code, /^QWD_(OVERLAY_FAILED|LAUNCH_FAILED)$/, res.text);
  t.deepEqual(liveRows(broker), []);
  t.deepEqual(fs.readdirSync(runDir), ['filler'], 'no session dir or overlay left');
  fs.rmSync(filler);
  const again = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ned', lifetimeS: 600 });
  t.is(again.status, 201, again.text);
  t.is(liveRows(broker).length, 1);
});

test('the state dir on a full file system: a clear error, no row half-written, and it works again once space is freed', async (t) => {
  t.timeout(90_000);
  const setup = makeSetup(t);
  mountTmpfs(t, setup.stateDir);
  // Sessions run elsewhere: only the store is on the small file system.
  const broker = await startTestBroker(t, { ...setup.config, runDir: path.join(setup.dir, 'run') });
  const filler = fill(setup.stateDir);
  const res = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'sid', lifetimeS: 600 });
  t.true(res.status >= 500, res.text);
  t.is(res.status, 503, res.text);
  t.deepEqual(res.json.error, { code: 'QWD_STORE_FAILED', message: 'The server has no disk space left to record a new desktop; try again later.' });
  t.deepEqual(liveRows(broker), [], 'no row');
  const runRoot = path.join(setup.dir, 'run');
  t.deepEqual(fs.existsSync(runRoot) ? fs.readdirSync(runRoot) : [], [], 'no run dir');
  t.deepEqual(pidsMentioning(runRoot), [], 'no QEMU');
  fs.rmSync(filler);
  const again = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'sid', lifetimeS: 600 });
  t.is(again.status, 201, again.text);
  t.is(liveRows(broker).length, 1);
});
