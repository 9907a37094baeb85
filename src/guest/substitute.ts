// DARTS-compatible placeholders in host folder paths and boot scripts:
// @USER@ (the session owner), @SESSION_NAME@ (the session id), @VM@ (the
// machine name). Values are validated names, never free text, so a
// substitution cannot introduce a path separator or a shell metacharacter.

export interface Substitutions {
  user: string;
  sessionId: string;
  machine: string;
}

const SAFE = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/;

export function substitute(text: string, values: Substitutions): string {
  for (const [key, value] of Object.entries(values)) {
    if (!SAFE.test(value)) throw new Error(`refusing to substitute unsafe ${key} ${JSON.stringify(value)}`);
  }
  return text.replaceAll('@USER@', values.user).replaceAll('@SESSION_NAME@', values.sessionId)
    .replaceAll('@VM@', values.machine);
}
