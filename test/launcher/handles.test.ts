// Each launcher reads the handle in a session row itself. Rows written before
// launchers were adapters hold the same JSON, so a broker upgraded while
// desktops run adopts them; a handle of another launcher, or one that lost a
// field, is refused with QWD_INTERNAL rather than misread.
import test from 'ava';
import { asLocal } from '../../src/launcher/local.js';
import { asSlurm } from '../../src/launcher/slurm.js';
import { QwdError } from '../../src/errors.js';

// As the previous broker stored them (session rows' handle column), byte for byte.
const STORED_LOCAL = '{"kind":"local","pid":4242,"startTime":"987654","processName":"qwd-0123456789ab",' +
  '"runDir":"/var/lib/qwd/sessions/0123456789ab","qmpSocket":"/var/lib/qwd/sessions/0123456789ab/qmp.sock",' +
  '"vncSocket":"/var/lib/qwd/sessions/0123456789ab/vnc.sock","accel":"kvm"}';
const STORED_SLURM_QUEUED = '{"kind":"slurm","jobId":"17","jobDir":"/shared/qwd/0123456789ab","node":null,' +
  '"host":null,"port":null,"accel":null}';
const STORED_SLURM_RUNNING = '{"kind":"slurm","jobId":"17","jobDir":"/shared/qwd/0123456789ab","node":"c01",' +
  '"host":"10.0.0.7","port":5901,"accel":"tcg"}';

test('handles stored by the previous broker are read as they were written', (t) => {
  t.deepEqual(asLocal(JSON.parse(STORED_LOCAL)), JSON.parse(STORED_LOCAL));
  t.deepEqual(asSlurm(JSON.parse(STORED_SLURM_QUEUED)), JSON.parse(STORED_SLURM_QUEUED));
  t.deepEqual(asSlurm(JSON.parse(STORED_SLURM_RUNNING)), JSON.parse(STORED_SLURM_RUNNING));
});

test('a launcher refuses another launcher\'s handle and a handle that lost a field', (t) => {
  const refused = [
    () => asLocal(JSON.parse(STORED_SLURM_RUNNING)),
    () => asSlurm(JSON.parse(STORED_LOCAL)),
    () => asLocal({ ...JSON.parse(STORED_LOCAL), pid: '4242' }),
    () => asSlurm({ ...JSON.parse(STORED_SLURM_RUNNING), jobId: undefined }),
  ];
  for (const read of refused) {
    const err = t.throws(read);
    t.true(err instanceof QwdError && err.code === 'QWD_INTERNAL', String(err));
  }
});
