// What services tell the metrics, as one narrow interface: the session manager,
// a session's life, the purge job, the auth chain and the Slurm launcher call
// these methods (each an optional dependency: absent when metrics are off, and
// in tests that build a service alone). Only types live here, so that services
// do not import prom-client; src/metrics/broker-metrics.ts implements it.
// Every argument becomes a label value of bounded cardinality: machine names are
// mapped onto the catalog, codes and reasons onto fixed sets; never a token, a
// user name or a session id.
import type { StopOutcome } from '../launcher/types.js';
import type { PurgeReport } from '../purge/service.js';

/** How one login attempt ended at one backend (or before any: `chain`, see recordAuthAttempt). */
export type AuthAttemptOutcome = 'success' | 'invalid' | 'unavailable' | 'rate-limited';

export interface MetricsRecorder {
  /** A desktop was admitted and its row written (its VM is being started). */
  sessionCreated(machine: string): void;
  /** A create request was refused before anything was made (validation, admission, store): the error thrown. */
  sessionRefused(err: unknown): void;
  /** A desktop's VM became ready, `seconds` after its request was admitted (POST → ready). */
  sessionReady(machine: string, seconds: number): void;
  /** A desktop's start failed: the launcher's error. */
  sessionStartFailed(err: unknown): void;
  /** A VM went down the stop ladder with this outcome, or could not be stopped ('failed'). */
  vmStopped(outcome: StopOutcome | 'failed'): void;
  /** One purge run ended (a report) or failed (null); dry runs are not counted. */
  purgeRan(report: PurgeReport | null, seconds: number): void;
  /**
   * One login attempt at one backend. `backend` is the backend's name from the config (bounded by it), or `chain`
   * for an attempt refused before any backend was asked (rate limit, malformed name, empty password). Call it from
   * any login path (password form, OpenID Connect callback, e-mail link).
   */
  recordAuthAttempt(backend: string, outcome: AuthAttemptOutcome): void;
  /** A Slurm job went from submitted to running after `seconds` in the queue (Slurm's own SubmitTime → StartTime). */
  slurmQueueWait(seconds: number): void;
}

/** What the bridge counts (plain integers it adds to; the metrics read them at scrape time). */
export interface BridgeStats {
  viewers: { control: number; view: number };
  /** Bytes from desktops to viewers (framebuffer updates), since the broker started. */
  desktopToViewerBytes: number;
  /** Bytes from viewers to desktops (input, clipboard), as received, since the broker started. */
  viewerToDesktopBytes: number;
}
