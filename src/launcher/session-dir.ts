// The guard every launcher puts before creating or deleting a session's
// directory: it must be a direct child of the launcher's root (the run dir
// locally, the shared dir for Slurm), because cleanup deletes it recursively.
import path from 'node:path';
import { QwdError } from '../errors.js';

/** The session dir, resolved, when it is a direct child of root; otherwise a QWD_INTERNAL error naming both. */
export function sessionDirIn(root: string, dir: string, what = 'run dir'): string {
  const resolvedRoot = path.resolve(root);
  const resolved = path.resolve(dir);
  if (path.dirname(resolved) !== resolvedRoot) {
    throw new QwdError('QWD_INTERNAL', `refusing to use ${what} ${dir} outside ${resolvedRoot}`);
  }
  return resolved;
}
