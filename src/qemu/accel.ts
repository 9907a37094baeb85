// Chooses the accelerator. "auto" picks KVM only where it really runs ordinary
// guests: /dev/kvm must exist and open read-write, and it must not be kvm-pvm
// (/sys/module/kvm_pvm), a software KVM that fails on SeaBIOS ("emulation
// failure") and on -cpu host ("failed to set MSR 0x10a"). Everything else gets
// TCG. The decision is pure; gathering the facts is the only I/O.
import fs from 'node:fs';
import path from 'node:path';
import type { Accel } from '../config/schema.js';
import type { ResolvedAccel } from './argv.js';

export interface HostAccelFacts {
  kvmDevice: 'missing' | 'no-access' | 'ok';
  kvmPvm: boolean;
  /** A hardware KVM module is loaded (kvm_intel, kvm_amd) or the host is arm64 with /dev/kvm. */
  hardwareKvm: boolean;
}

export interface AccelChoice {
  accel: ResolvedAccel;
  requested: Accel;
  reason: string;
}

export function chooseAccelerator(requested: Accel, facts: HostAccelFacts): AccelChoice {
  if (requested === 'tcg') return { accel: 'tcg', requested, reason: 'forced by qemu.accel: tcg' };
  if (requested === 'kvm') return { accel: 'kvm', requested, reason: 'forced by qemu.accel: kvm' };
  if (facts.kvmDevice === 'missing') return { accel: 'tcg', requested, reason: '/dev/kvm does not exist' };
  if (facts.kvmDevice === 'no-access') {
    return { accel: 'tcg', requested, reason: '/dev/kvm cannot be opened read-write by this user' };
  }
  if (facts.kvmPvm) {
    return {
      accel: 'tcg', requested,
      reason: '/dev/kvm is provided by kvm-pvm (/sys/module/kvm_pvm), which cannot run ordinary guests',
    };
  }
  if (!facts.hardwareKvm) {
    return { accel: 'tcg', requested, reason: 'no hardware KVM module (kvm_intel, kvm_amd) is loaded' };
  }
  return { accel: 'kvm', requested, reason: '/dev/kvm is usable hardware KVM' };
}

/** Reads the facts from a (configurable, for tests) filesystem root. */
export function probeHostAccel(root = '/', hostArch: string = process.arch): HostAccelFacts {
  const at = (p: string) => path.join(root, p);
  let kvmDevice: HostAccelFacts['kvmDevice'] = 'ok';
  try {
    fs.closeSync(fs.openSync(at('dev/kvm'), 'r+'));
  } catch (err) {
    kvmDevice = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'no-access';
  }
  const kvmPvm = fs.existsSync(at('sys/module/kvm_pvm'));
  const hardwareKvm = hostArch === 'arm64'
    || fs.existsSync(at('sys/module/kvm_intel')) || fs.existsSync(at('sys/module/kvm_amd'));
  return { kvmDevice, kvmPvm, hardwareKvm };
}
