// Host folders shared into the guest with virtio-9p. A declared path (with
// @USER@ substituted) must exist, be a directory, and — after resolving every
// symlink — stay inside one of the configured roots; ".." is refused outright.
// The caller gets absolute, resolved paths or a ValidationError naming the folder.
import fs from 'node:fs';
import path from 'node:path';
import { ValidationError } from '../errors.js';
import { substitute, type Substitutions } from './substitute.js';

import type { ShareDecl } from '../config/guest.js';

export type { ShareDecl } from '../config/guest.js';
export { MOUNT_TAG } from '../config/guest.js';

export interface ResolvedShare {
  path: string;
  tag: string;
  readonly: boolean;
}

export function resolveShares(
  decls: readonly ShareDecl[], roots: readonly string[], values: Substitutions,
): ResolvedShare[] {
  const realRoots = roots.map((r) => {
    try {
      return fs.realpathSync(r);
    } catch {
      return null;
    }
  }).filter((r): r is string => r !== null);
  const out: ResolvedShare[] = [];
  const tags = new Set<string>();
  for (const decl of decls) {
    const wanted = substitute(decl.path, values);
    if (!path.isAbsolute(wanted)) {
      throw new ValidationError(`host folder ${JSON.stringify(wanted)} must be an absolute path`);
    }
    if (wanted.split('/').includes('..')) {
      throw new ValidationError(`host folder ${JSON.stringify(wanted)} must not contain ".."`);
    }
    let real: string;
    try {
      real = fs.realpathSync(wanted);
    } catch {
      if (!decl.required) continue;
      throw new ValidationError(
        `the host folder ${wanted} (shared as "${decl.tag}") does not exist; ask the administrators to create it`
      );
    }
    if (!fs.statSync(real).isDirectory()) throw new ValidationError(`the host folder ${wanted} is not a directory`);
    if (!realRoots.some((root) => real === root || real.startsWith(root + path.sep))) {
      throw new ValidationError(
        `the host folder ${wanted} resolves to ${real}, outside the allowed roots (` +
          `${roots.join(', ') || 'none configured'})`
      );
    }
    if (tags.has(decl.tag)) throw new ValidationError(`two host folders use the mount tag "${decl.tag}"`);
    tags.add(decl.tag);
    out.push({ path: real, tag: decl.tag, readonly: decl.readonly });
  }
  return out;
}
