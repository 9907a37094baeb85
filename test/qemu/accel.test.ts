import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { chooseAccelerator, probeHostAccel, type HostAccelFacts } from '../../src/qemu/accel.js';
import { tempDir } from '../helpers/env.js';

const table: Array<[string, HostAccelFacts, 'kvm' | 'tcg', RegExp]> = [
  ['no /dev/kvm', { kvmDevice: 'missing', kvmPvm: false, hardwareKvm: false }, 'tcg', /does not exist/],
  ['/dev/kvm not accessible', { kvmDevice: 'no-access', kvmPvm: false, hardwareKvm: true }, 'tcg', /cannot be opened/],
  ['kvm-pvm', { kvmDevice: 'ok', kvmPvm: true, hardwareKvm: false }, 'tcg', /kvm-pvm/],
  ['kvm-pvm next to kvm_intel', { kvmDevice: 'ok', kvmPvm: true, hardwareKvm: true }, 'tcg', /kvm-pvm/],
  ['no hardware module', { kvmDevice: 'ok', kvmPvm: false, hardwareKvm: false }, 'tcg', /no hardware KVM/],
  ['real KVM', { kvmDevice: 'ok', kvmPvm: false, hardwareKvm: true }, 'kvm', /usable/],
];
for (const [title, facts, accel, reason] of table) {
  test(`auto picks ${accel} with ${title}`, (t) => {
    const choice = chooseAccelerator('auto', facts);
    t.is(choice.accel, accel);
    t.regex(choice.reason, reason);
  });
}

test('admins can force either accelerator', (t) => {
  const pvm: HostAccelFacts = { kvmDevice: 'ok', kvmPvm: true, hardwareKvm: false };
  t.is(chooseAccelerator('kvm', pvm).accel, 'kvm');
  t.is(chooseAccelerator('tcg', { kvmDevice: 'ok', kvmPvm: false, hardwareKvm: true }).accel, 'tcg');
  t.regex(chooseAccelerator('tcg', pvm).reason, /forced/);
});

test('probeHostAccel reads a fixture root', (t) => {
  const root = tempDir(t);
  t.deepEqual(probeHostAccel(root, 'x64'), { kvmDevice: 'missing', kvmPvm: false, hardwareKvm: false });
  fs.mkdirSync(path.join(root, 'dev'));
  fs.writeFileSync(path.join(root, 'dev', 'kvm'), '');
  fs.mkdirSync(path.join(root, 'sys', 'module', 'kvm_pvm'), { recursive: true });
  t.deepEqual(probeHostAccel(root, 'x64'), { kvmDevice: 'ok', kvmPvm: true, hardwareKvm: false });
  fs.rmSync(path.join(root, 'sys', 'module', 'kvm_pvm'), { recursive: true });
  fs.mkdirSync(path.join(root, 'sys', 'module', 'kvm_amd'));
  t.is(chooseAccelerator('auto', probeHostAccel(root, 'x64')).accel, 'kvm');
});

test('on this machine auto never picks kvm-pvm', (t) => {
  const choice = chooseAccelerator('auto', probeHostAccel('/'));
  if (fs.existsSync('/sys/module/kvm_pvm')) t.is(choice.accel, 'tcg');
  else t.pass(`host has no kvm-pvm; chose ${choice.accel}: ${choice.reason}`);
});
