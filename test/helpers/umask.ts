// Runs a Node child (qwdctl, the broker) with a given umask: a preload module
// sets it before anything else runs (Node has no option for it, and ava's
// worker threads cannot change their own).
import fs from 'node:fs';
import path from 'node:path';

/** Environment for a child Node process; `dir` holds the preload module (a test's temp dir). */
export function umaskEnv(dir: string, mask: number): NodeJS.ProcessEnv {
  const preload = path.join(dir, 'umask.mjs');
  fs.writeFileSync(preload, `process.umask(0o${mask.toString(8)});\n`);
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${preload}`.trim() };
}
