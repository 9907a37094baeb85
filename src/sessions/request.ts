// Validates what a user asked for (web form, JSON API or qwdctl) against the
// catalog and the site limits. Pure: raw input in, a CreateRequest out, or a
// ValidationError naming the field, the expectation and the value.
import { QwdError, ValidationError } from '../errors.js';
import { MACHINE_NAME, type Machine } from '../catalog/descriptor.js';
import type { Config } from '../config/schema.js';
import { checkScriptText } from '../guest/boot-scripts.js';
import { describeValue } from '../describe-value.js';

export interface CreateRequest {
  machine: Machine;
  cpus: number;
  memoryMiB: number;
  lifetimeS: number;
  user: string;
  oneShot: boolean;
  email: string | null;
  /** A boot script typed by the user (only where the machine allows it). */
  script: string | null;
  gpus: number;
}

export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/;
const MAX_FIELD_LENGTH = 256;
const KNOWN_FIELDS = new Set([
  'machine', 'cpus', 'memoryMiB', 'lifetimeS', 'user', 'oneShot', 'email', 'script', 'gpus', '_csrf',
]);
const LONG_FIELDS = new Set(['script']);
export const EMAIL = /^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$/;

/**
 * What one desktop of a machine may have, and gets when it does not say: the machine's sizes within the site's
 * per-session limits.
 */
export function sessionSizes(
  machine: Pick<Machine, 'cpus' | 'memoryMiB'>,
  limits: Pick<Config['limits'], 'maxCpusPerSession' | 'maxMemoryMiBPerSession'>,
) {
  const cpuMax = Math.min(machine.cpus.max, limits.maxCpusPerSession);
  const memoryMax = Math.min(machine.memoryMiB.max, limits.maxMemoryMiBPerSession);
  return {
    cpus: { default: Math.min(machine.cpus.default, cpuMax), max: cpuMax },
    memoryMiB: { default: Math.min(machine.memoryMiB.default, memoryMax), max: memoryMax },
  };
}

export function validateCreateRequest(
  raw: unknown, lookup: (name: string) => Machine | undefined, limits: Config['limits'],
  defaults: { oneShot: boolean; gpuMachines?: readonly string[] | null } = { oneShot: false },
): CreateRequest {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ValidationError('the request body must be an object with machine, cpus, memoryMiB, lifetimeS and user');
  }
  const body = raw as Record<string, unknown>;
  for (const [key, value] of Object.entries(body)) {
    if (!KNOWN_FIELDS.has(key)) throw new ValidationError(`unknown field "${key.slice(0, 40)}"`);
    if (typeof value === 'string' && value.length > MAX_FIELD_LENGTH && !LONG_FIELDS.has(key)) {
      throw new ValidationError(`${key} is too long (at most ${MAX_FIELD_LENGTH} characters)`);
    }
  }
  const machineName = body.machine;
  if (typeof machineName !== 'string' || machineName === '') throw new ValidationError('machine is required');
  if (!MACHINE_NAME.test(machineName)) {
    throw new ValidationError(
      `machine must be the name of a machine from the list, got ${JSON.stringify(machineName.slice(0, 64))}`
    );
  }
  const machine = lookup(machineName);
  if (!machine) {
    throw new QwdError(
      'QWD_UNKNOWN_MACHINE', `unknown machine "${machineName}"`,
      { userMessage: `There is no machine called "${machineName}".` },
    );
  }

  const sizes = sessionSizes(machine, limits);
  const cpus = readWhole(body.cpus, 'cpus', sizes.cpus.default, 1, sizes.cpus.max);
  const memoryMiB = readWhole(body.memoryMiB, 'memoryMiB', sizes.memoryMiB.default, 64, sizes.memoryMiB.max);
  const lifetimeS = readWhole(
    body.lifetimeS, 'lifetimeS', limits.defaultLifetimeS, limits.minLifetimeS, limits.maxLifetimeS,
  );

  const user = body.user;
  if (typeof user !== 'string' || user.trim() === '') throw new ValidationError('user is required: type your name');
  if (!USER_NAME.test(user.trim())) {
    throw new ValidationError(
      `user must be 1 to 64 letters, digits or . _ @ + - (starting with a letter or digit), got ` +
        `${JSON.stringify(user.slice(0, 64))}`
    );
  }
  const oneShot = readFlag(body.oneShot, 'oneShot', defaults.oneShot);
  let email: string | null = null;
  if (body.email !== undefined && body.email !== null && body.email !== '') {
    if (typeof body.email !== 'string' || !EMAIL.test(body.email.trim())) {
      throw new ValidationError(`email must be an e-mail address, got ${describeValue(body.email, 80)}`);
    }
    email = body.email.trim();
  } else if (EMAIL.test(user.trim())) {
    email = user.trim(); // a user name that is an address receives the warnings
  }
  let script: string | null = null;
  if (body.script !== undefined && body.script !== null && body.script !== '') {
    if (!machine.bootScripts.allowUserScripts) {
      throw new ValidationError(`machine ${machine.name} does not accept boot scripts from users`);
    }
    if (typeof body.script !== 'string') throw new ValidationError('script must be text');
    checkScriptText(body.script, 'script');
    script = body.script;
  }
  const gpus = readWhole(
    body.gpus === true ? 1 : body.gpus === false || body.gpus === 'on' ? (body.gpus === 'on' ? 1 : 0) : body.gpus,
    'gpus', 0, 0, limits.maxGpusPerSession,
  );
  if (gpus > 0 && defaults.gpuMachines && !defaults.gpuMachines.includes(machine.name)) {
    throw new ValidationError(
      `machine ${machine.name} cannot have a GPU (GPUs are offered for: ` +
        `${defaults.gpuMachines.join(', ') || 'no machine'})`
    );
  }
  return { machine, cpus, memoryMiB, lifetimeS, user: user.trim(), oneShot, email, script, gpus };
}

/** JSON true/false, or a form checkbox ("on", "true", "1"; absent = default). */
function readFlag(value: unknown, key: string, fallback: boolean): boolean {
  if (value === undefined || value === null || value === '') return fallback;
  if (typeof value === 'boolean') return value;
  if (value === 'on' || value === 'true' || value === '1') return true;
  if (value === 'off' || value === 'false' || value === '0') return false;
  throw new ValidationError(`${key} must be true or false, got ${describeValue(value)}`);
}

/** Accepts a JSON integer or a form string of digits; nothing else. */
function readWhole(value: unknown, key: string, fallback: number, min: number, max: number): number {
  if (value === undefined || value === null || value === '') return fallback;
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^\d{1,12}$/.test(value.trim())) n = Number(value.trim());
  else throw new ValidationError(
    `${key} must be a whole number from ${min} to ${max}, got ${describeValue(value, 60)}`
  );
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ValidationError(`${key} must be a whole number from ${min} to ${max}, got ${describeValue(value)}`);
  }
  return n;
}
