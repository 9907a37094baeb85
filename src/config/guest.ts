// Reading the guest-side declarations (host folders, boot scripts) shared by
// machine descriptors and the site config, with the same problem reporting.
import path from 'node:path';
import {
  Problems, isObject, rejectUnknownKeys, section, readString, readOptionalString, readEnum, readBool, type Obj,
} from './check.js';

/** A host folder shared into the guest with virtio-9p, as declared (src/guest/shares.ts resolves it). */
export interface ShareDecl {
  /** Host path; may contain @USER@, @SESSION_NAME@, @VM@. */
  path: string;
  /** The 9p mount tag the guest mounts (mount -t 9p -o trans=virtio TAG /mnt). */
  tag: string;
  readonly: boolean;
  /** false: silently skipped when the folder does not exist (e.g. a user without a data dir). */
  required: boolean;
}

export const MOUNT_TAG = /^[A-Za-z0-9_-]{1,31}$/;

export type ScriptDelivery = 'cloud-init' | 'virt-customize';

/** A boot script, as declared (src/guest/boot-scripts.ts selects and substitutes it). */
export interface ScriptDecl {
  /** A file (relative to the descriptor or config) … */
  file?: string;
  /** … or inline text (DARTS's "exec:"). */
  exec?: string;
  when?: { machines?: string[]; users?: string[]; groups?: string[] };
  /** Where it was declared, for log lines and errors. */
  source: string;
}

export interface BootScriptsDecl {
  readonly delivery: ScriptDelivery;
  readonly allowUserScripts: boolean;
  readonly scripts: readonly ScriptDecl[];
}

/** shares: [{ path, tag, readonly?, required? }] — shared with the site config. */
export function readShares(p: Problems, raw: Obj, key: string, prefix = ''): ShareDecl[] {
  const value = raw[key];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    p.add(prefix + key, 'a list of { path, tag, readonly, required }', value);
    return [];
  }
  return value.flatMap((item, i) => {
    const where = `${prefix}${key}[${i}].`;
    if (!isObject(item)) {
      p.add(`${prefix}${key}[${i}]`, 'a mapping with path and tag', item);
      return [];
    }
    rejectUnknownKeys(p, item, where, ['path', 'tag', 'readonly', 'required']);
    const sharePath = readString(
      p, item, 'path', '', { prefix: where, pattern: /^\/[^\0]*$/, expectation: 'an absolute path' },
    );
    if (item.path === undefined) p.add(`${where}path`, 'present', undefined);
    else if (sharePath.split('/').includes('..')) p.add(`${where}path`, 'a path without ".."', item.path);
    const tag = readString(
      p, item, 'tag', '',
      { prefix: where, pattern: MOUNT_TAG, expectation: 'a mount tag of 1 to 31 letters, digits, _ or -' },
    );
    if (item.tag === undefined) p.add(`${where}tag`, 'present', undefined);
    return [{
      path: sharePath, tag, readonly: readBool(p, item, 'readonly', true, where),
      required: readBool(p, item, 'required', true, where),
    }];
  });
}

/** bootScripts: { delivery, allowUserScripts, scripts: [{ file | exec, when }] } — shared with the site config. */
export function readBootScripts(p: Problems, raw: Obj, baseDir: string, source: string, prefix = ''): BootScriptsDecl {
  const r = section(p, raw, 'bootScripts', prefix);
  const where = `${prefix}bootScripts.`;
  rejectUnknownKeys(p, r, where, ['delivery', 'allowUserScripts', 'scripts']);
  const delivery = readEnum<ScriptDelivery>(p, r, 'delivery', ['cloud-init', 'virt-customize'], 'cloud-init', where);
  const allowUserScripts = readBool(p, r, 'allowUserScripts', false, where);
  const list = r.scripts;
  const scripts: ScriptDecl[] = [];
  if (list !== undefined && list !== null && !Array.isArray(list)) {
    p.add(`${where}scripts`, 'a list of { file } or { exec }', list);
  }
  for (const [i, item] of (Array.isArray(list) ? list : []).entries()) {
    const at = `${where}scripts[${i}]`;
    if (!isObject(item)) {
      p.add(at, 'a mapping with file or exec', item);
      continue;
    }
    rejectUnknownKeys(p, item, `${at}.`, ['file', 'exec', 'when']);
    const file = readOptionalString(p, item, 'file', { prefix: `${at}.` });
    const exec = readOptionalString(p, item, 'exec', { prefix: `${at}.` });
    if ((file === null) === (exec === null)) p.note(`${at} must have exactly one of file or exec`);
    const when = section(p, item, 'when', `${at}.`);
    rejectUnknownKeys(p, when, `${at}.when.`, ['machines', 'users', 'groups']);
    const names = (k: string): string[] | undefined => {
      const v = when[k];
      if (v === undefined || v === null) return undefined;
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
        p.add(`${at}.when.${k}`, 'a list of names', v);
        return undefined;
      }
      return v as string[];
    };
    const resolvedFile = file ? path.resolve(baseDir, file) : undefined;
    scripts.push({
      ...(resolvedFile ? { file: resolvedFile } : {}), ...(exec ? { exec } : {}),
      when: { machines: names('machines'), users: names('users'), groups: names('groups') }, source,
    });
  }
  return { delivery, allowUserScripts, scripts };
}
