// The chain of password backends, tried in config order until one accepts.
// A backend that is down is logged and skipped; the user only ever sees
// "invalid credentials" or "login service unavailable".
import type { Logger } from '../log.js';
import type { AuthBackend, Identity } from './types.js';
import type { AuthAttemptOutcome } from '../metrics/recorder.js';

/** Told of every backend's answer (metrics: MetricsRecorder.recordAuthAttempt); the backend by its config name. */
export type AuthAttemptHook = (backend: string, outcome: AuthAttemptOutcome) => void;

export type ChainResult =
  | { ok: true; identity: Identity }
  | { ok: false; reason: 'invalid' | 'unavailable' };

export async function authenticateChain(
  backends: readonly AuthBackend[], user: string, password: string, admins: readonly string[], log: Logger,
  onAttempt?: AuthAttemptHook,
): Promise<ChainResult> {
  let sawInvalid = false;
  for (const backend of backends) {
    if (!backend.authenticate) continue;
    const started = Date.now();
    const result = await backend.authenticate(user, password);
    onAttempt?.(backend.name, result.ok ? 'success' : result.reason);
    if (result.ok) {
      log.info({ backend: backend.name, user, ms: Date.now() - started }, 'login accepted');
      return {
        ok: true,
        identity: { ...result.identity, admin: result.identity.admin || admins.includes(result.identity.user) },
      };
    }
    if (result.reason === 'invalid') sawInvalid = true;
    log[result.reason === 'unavailable' ? 'warn' : 'info'](
      { backend: backend.name, user, reason: result.reason, detail: result.detail, ms: Date.now() - started },
      result.reason === 'unavailable' ? 'login backend unavailable; trying the next' : 'login refused by backend',
    );
  }
  return { ok: false, reason: sawInvalid ? 'invalid' : 'unavailable' };
}
