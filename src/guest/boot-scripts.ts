// Boot scripts (DARTS's config_script): shell scripts run as root at the
// guest's first boot, with @USER@ @SESSION_NAME@ @VM@ substituted, applied to
// the session only — the master image is never touched. Conditions are data
// (machines, users, groups), never code evaluated here. Delivery: a cloud-init
// NoCloud seed ISO ("cidata") attached to the VM, or virt-customize --firstboot
// on the session's overlay.
import fs from 'node:fs';
import path from 'node:path';
import { QwdError, ValidationError } from '../errors.js';
import { substitute, type Substitutions } from './substitute.js';

import type { ScriptDecl } from '../config/guest.js';

export type { ScriptDecl, ScriptDelivery } from '../config/guest.js';

export interface ResolvedScript {
  name: string;
  text: string;
  source: string;
}

export const MAX_SCRIPT_BYTES = 64 * 1024;

/** Declarative conditions: every listed dimension must match (empty/absent = any). */
export function scriptApplies(
  decl: ScriptDecl, who: { machine: string; user: string; groups: readonly string[] },
): boolean {
  const w = decl.when;
  if (!w) return true;
  if (w.machines?.length && !w.machines.includes(who.machine)) return false;
  if (w.users?.length && !w.users.includes(who.user)) return false;
  if (w.groups?.length && !w.groups.some((g) => who.groups.includes(g))) return false;
  return true;
}

/** Length and character checks: text, UTF-8, no NUL or other control characters but tab/newline. */
export function checkScriptText(text: string, what: string): void {
  if (Buffer.byteLength(text) > MAX_SCRIPT_BYTES) {
    throw new ValidationError(`${what} is too long (at most ${MAX_SCRIPT_BYTES / 1024} KiB)`);
  }
  if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(text.replace(/\r\n/g, '\n'))) {
    throw new ValidationError(`${what} contains control characters; only text is accepted`);
  }
  if (text.trim() === '') throw new ValidationError(`${what} is empty`);
}

export function resolveScripts(
  decls: readonly ScriptDecl[], who: { machine: string; user: string; groups: readonly string[] },
  values: Substitutions, userScript: string | null,
): ResolvedScript[] {
  const out: ResolvedScript[] = [];
  decls.forEach((decl, i) => {
    if (!scriptApplies(decl, who)) return;
    let text: string;
    let name: string;
    if (decl.file) {
      try {
        text = fs.readFileSync(decl.file, 'utf8');
      } catch (err) {
        throw new QwdError(
          'QWD_MACHINE_INVALID',
          `${decl.source}: boot script ${decl.file} cannot be read (${(err as NodeJS.ErrnoException).code ?? err})`,
          { cause: err },
        );
      }
      name = path.basename(decl.file);
    } else {
      text = decl.exec ?? '';
      name = `inline-${i + 1}`;
    }
    checkScriptText(text, `boot script ${name} (${decl.source})`);
    out.push({ name, text: substitute(text, values), source: decl.source });
  });
  if (userScript !== null) {
    checkScriptText(userScript, 'your boot script');
    out.push({ name: 'user-script', text: substitute(userScript, values), source: 'submitted by the user' });
  }
  return out;
}

/** A script file to run: shebang kept, or /bin/sh added. */
export function asShellScript(text: string): string {
  const normalized = text.replace(/\r\n/g, '\n');
  return normalized.startsWith('#!') ? normalized : `#!/bin/sh\n${normalized}`;
}

/**
 * cloud-init user-data: a MIME multipart with one text/x-shellscript part per
 * script (cloud-init runs each once per instance, as root, in order).
 */
export function cloudInitUserData(scripts: readonly ResolvedScript[], boundary = 'qwd-boundary-7f3a'): string {
  const parts = scripts.map((s) => [
    `--${boundary}`,
    'Content-Type: text/x-shellscript; charset="utf-8"',
    'MIME-Version: 1.0',
    'Content-Transfer-Encoding: 8bit',
    `Content-Disposition: attachment; filename="${s.name.replace(/[^A-Za-z0-9._-]/g, '_')}.sh"`,
    '',
    asShellScript(s.text),
  ].join('\n'));
  return [
    `Content-Type: multipart/mixed; boundary="${boundary}"`, 'MIME-Version: 1.0', '', ...parts, `--${boundary}--`, '',
  ].join('\n');
}

export function cloudInitMetaData(sessionId: string, machine: string): string {
  return `instance-id: qwd-${sessionId}\nlocal-hostname: ${machine.replace(/[^a-z0-9-]/g, '-').slice(0, 63)}\n`;
}
