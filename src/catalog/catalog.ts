// The machine catalog: every valid descriptor in the machines directory, with
// its image format detected. A broken descriptor or missing image is reported
// (problems) and skipped; the rest serve. Read-only after load.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../log.js';
import { parseMachine, type Machine } from './descriptor.js';
import { checkBackingChain } from './backing-chain.js';

export interface Catalog {
  readonly machines: ReadonlyMap<string, Machine>;
  readonly problems: readonly string[];
  get(name: string): Machine | undefined;
  list(): Machine[];
}

export interface DescriptorFile {
  file: string;
  machine: Machine | null;
  problems: string[];
}

/** Every descriptor file in the directory, parsed but without looking at images. */
export async function readDescriptors(dir: string): Promise<{ files: DescriptorFile[]; problems: string[] }> {
  let entries: string[];
  try {
    entries = (await fs.readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort();
  } catch (err) {
    return {
      files: [],
      problems: [`${dir}: cannot read the machines directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`],
    };
  }
  const files: DescriptorFile[] = [];
  for (const entry of entries) files.push(await readDescriptor(path.join(dir, entry)));
  return { files, problems: [] };
}

export async function readDescriptor(file: string): Promise<DescriptorFile> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    return {
      file, machine: null, problems: [`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`],
    };
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    return { file, machine: null, problems: [`${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`] };
  }
  const { machine, problems } = parseMachine(raw, file);
  return { file, machine, problems };
}

export async function loadCatalog(dir: string, qemuImg: string, log?: Logger): Promise<Catalog> {
  const machines = new Map<string, Machine>();
  const { files, problems } = await readDescriptors(dir);
  for (const descriptor of files) {
    const file = descriptor.file;
    problems.push(...descriptor.problems);
    const machine = descriptor.machine && (await checkImage(descriptor.machine, qemuImg, problems, dir));
    if (!machine) continue;
    const existing = machines.get(machine.name);
    if (existing) {
      problems.push(`${file}: name "${machine.name}" is already used by ${existing.file}; skipped`);
      continue;
    }
    machines.set(machine.name, machine);
  }
  for (const problem of problems) log?.warn({ problem }, 'machine descriptor skipped');
  return {
    machines,
    problems,
    get: (name) => machines.get(name),
    list: () => [...machines.values()],
  };
}

/**
 * The image exists, is readable, its format is known (detected or confirmed),
 * and every file its backing chain names stays inside the machines directory
 * (backing-chain.ts). A machine that fails is left out with the reason.
 */
export async function checkImage(
  machine: Machine, qemuImg: string, problems: string[], machinesDir: string,
): Promise<Machine | null> {
  const file = machine.file;
  try {
    await fs.access(machine.image, fs.constants.R_OK);
  } catch {
    const hint = machine.name === 'demo'
      ? ' (build it with bin/build-demo-image)'
      : machine.url ? ' (fetch it with qwdctl machines download)' : '';
    problems.push(`${file}: image ${machine.image} is missing or unreadable${hint}`);
    return null;
  }
  const chain = await checkBackingChain(qemuImg, machine.image, machinesDir, machine.format);
  if (chain.violations.length) {
    problems.push(...chain.violations.map((v) => `${file}: ${v}`));
    return null;
  }
  return { ...machine, format: chain.layers[0]!.format };
}
