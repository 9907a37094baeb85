// The broker's Prometheus metrics: one prom-client Registry of its own (never
// the global one, so that tests and several brokers in one process do not
// collide), the counters and histograms services feed through MetricsRecorder
// (recorder.ts), and the gauges read at scrape time: sessions by state and
// machine and what they reserve (one SQL query, session-counts.ts), viewers and
// bridge bytes (the bridge keeps plain integers; nothing here is on its data
// path), admission capacity, and Node's default process metrics.
// It owns no session state and changes nothing; serve.ts answers GET /metrics
// from it. Metric names follow Prometheus conventions: a qwd_ prefix, base units
// (seconds, bytes) in the name, _total on counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERROR_CODES, QwdError, type ErrorCode } from '../errors.js';
import type { Catalog } from '../catalog/catalog.js';
import type { Config } from '../config/schema.js';
import type { LauncherCapabilities, StopOutcome } from '../launcher/types.js';
import type { HostLoad } from '../admission/policy.js';
import type { PurgeReport } from '../purge/service.js';
import type { SessionState } from '../store/session-rows.js';
import type { AuthAttemptOutcome, BridgeStats, MetricsRecorder } from './recorder.js';
import type { SessionCounts } from './session-counts.js';

/** What the gauges read at scrape time, given once the services exist (BrokerMetrics.observe). */
export interface MetricsSources {
  catalog: Catalog;
  capabilities: LauncherCapabilities;
  sessionCounts: () => SessionCounts;
  hostLoad: () => HostLoad;
  /** The host's VFIO GPUs: usable ones (held or not). */
  gpusUsable: () => number;
}

const STATES: readonly SessionState[] = ['starting', 'queued', 'running', 'stopping', 'stopped', 'failed'];
/** Admission's limit names (admission/policy.ts refuse()): the reason label's fixed set, with reasonOfCode's. */
export const REFUSAL_REASONS = [
  'maxSessionsPerUser', 'maxCpusPerUser', 'maxMemoryMiBPerUser', 'maxGpusPerUser', 'maxSessions',
  'machine.maxSessions', 'cpu', 'memory', 'gpu', 'load',
] as const;
const STOP_OUTCOMES: ReadonlyArray<StopOutcome | 'failed'> = ['quit', 'terminated', 'killed', 'already-gone', 'failed'];
const AUTH_OUTCOMES: readonly AuthAttemptOutcome[] = ['success', 'invalid', 'unavailable', 'rate-limited'];
/** A machine no longer in the catalog (its sessions may still run): one label value for all such names. */
export const OTHER_MACHINE = '(not in catalog)';
const MIB = 1048576;

export class BrokerMetrics implements MetricsRecorder {
  readonly registry = new Registry();
  private sources: MetricsSources | null = null;
  private bridge: (() => BridgeStats) | null = null;
  private readonly created: Counter<'machine'>;
  private readonly refused: Counter<'code' | 'reason'>;
  private readonly startDuration: Histogram<'machine'>;
  private readonly startFailures: Counter<'code'>;
  private readonly stops: Counter<'outcome'>;
  private readonly purgeRuns: Counter<'result'>;
  private readonly purgeDuration: Histogram;
  private readonly purgeActions: Counter<'action' | 'reason'>;
  private readonly purgeOrphans: Counter;
  private readonly purgeWarnings: Counter;
  private readonly purgeForgotten: Counter;
  private readonly purgeLastRun: Gauge;
  private readonly authAttempts: Counter<'backend' | 'outcome'>;
  private readonly queueWait: Histogram;
  private readonly authBackends: ReadonlySet<string>;
  /** The session counts of the scrape under way: one query for every gauge that needs them. */
  private counts: SessionCounts | null = null;

  /**
   * The metrics services feed (counters, histograms): ready before any service is built, so that the launcher, the
   * manager, the purge job and the auth chain can be given it. The gauges read at scrape time come with observe().
   */
  constructor(private readonly config: Config, version: string, launcher: string) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    replaceActiveResourceGauges(this.registry);
    new Gauge({
      name: 'qwd_build_info', help: 'The broker\'s version and launcher (always 1).',
      labelNames: ['version', 'launcher'], registers,
    }).set({ version, launcher }, 1);

    this.created = new Counter({
      name: 'qwd_session_creations_total', help: 'Desktops admitted (their row written, their VM started).',
      labelNames: ['machine'], registers,
    });
    this.refused = new Counter({
      name: 'qwd_session_refusals_total',
      help: 'Create requests refused before anything was made, by error code and admission limit (reason).',
      labelNames: ['code', 'reason'], registers,
    });
    this.startDuration = new Histogram({
      name: 'qwd_session_start_duration_seconds',
      help: 'From the admitted create request to the desktop\'s VM being ready (its VNC answers), in seconds.',
      labelNames: ['machine'], registers,
      buckets: [1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300],
    });
    this.startFailures = new Counter({
      name: 'qwd_session_start_failures_total', help: 'Desktop starts that failed, by error code.',
      labelNames: ['code'], registers,
    });
    this.stops = new Counter({
      name: 'qwd_vm_stops_total',
      help: 'VMs taken down the stop ladder, by how they ended: quit (QMP quit or scancel -s TERM), terminated ' +
        '(SIGTERM), killed (SIGKILL), already-gone, failed (could not be stopped).',
      labelNames: ['outcome'], registers,
    });
    for (const outcome of STOP_OUTCOMES) this.stops.inc({ outcome }, 0);

    this.purgeRuns = new Counter({
      name: 'qwd_purge_runs_total', help: 'Purge runs (dry runs not counted), by result (ok, failed).',
      labelNames: ['result'], registers,
    });
    for (const result of ['ok', 'failed']) this.purgeRuns.inc({ result }, 0);
    this.purgeDuration = new Histogram({
      name: 'qwd_purge_duration_seconds', help: 'How long purge runs took, in seconds.', registers,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    });
    this.purgeActions = new Counter({
      name: 'qwd_purge_actions_total',
      help: 'What purge runs did to sessions: stop (expired) or cleanup (vm-exited, start-abandoned, stop-abandoned).',
      labelNames: ['action', 'reason'], registers,
    });
    this.purgeOrphans = new Counter({
      name: 'qwd_purge_orphan_dirs_total', help: 'Run directories of no session that purge runs removed.', registers,
    });
    this.purgeWarnings = new Counter({
      name: 'qwd_purge_lifetime_warnings_total', help: 'Life-time warnings purge runs found due (and tried to mail).',
      registers,
    });
    this.purgeForgotten = new Counter({
      name: 'qwd_purge_tombstones_forgotten_total',
      help: 'Ended-session tombstones purge runs forgot (past purge.endedRetentionS).',
      registers,
    });
    this.purgeLastRun = new Gauge({
      name: 'qwd_purge_last_run_timestamp_seconds', help: 'When the last purge run ended (Unix time, seconds).',
      registers,
    });

    this.authAttempts = new Counter({
      name: 'qwd_auth_attempts_total',
      help: 'Login attempts by backend (its name in the config; chain: refused before any backend was asked) and ' +
        'outcome (success, invalid, unavailable, rate-limited).',
      labelNames: ['backend', 'outcome'], registers,
    });
    this.authBackends = new Set(['chain', ...config.auth.backends.map((b) => b.name)]);
    for (const backend of this.authBackends) {
      for (const outcome of AUTH_OUTCOMES) this.authAttempts.inc({ backend, outcome }, 0);
    }
    this.queueWait = new Histogram({
      name: 'qwd_slurm_queue_wait_seconds',
      help: 'How long Slurm jobs of desktops waited in the queue (SubmitTime to StartTime), in seconds.',
      registers, buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400],
    });
  }

  /** The gauges read at scrape time, once the services they read exist (once). */
  observe(sources: MetricsSources): void {
    if (this.sources) throw new Error('BrokerMetrics.observe: already observing');
    this.sources = sources;
    const registers = [this.registry];
    const snapshot = () => this.snapshot(sources);
    const machineLabel = (name: string) => this.machineLabel(name);
    new Gauge({
      name: 'qwd_sessions', help: 'Desktops in the store, by state and machine (counted at scrape, one query).',
      labelNames: ['state', 'machine'], registers,
      collect() {
        const c = snapshot();
        this.reset();
        // Every catalog machine shows in every live state (0 too), so sums and rates have stable series.
        for (const m of sources.catalog.list()) {
          for (const state of STATES.slice(0, 4)) this.set({ state, machine: m.name }, 0);
        }
        for (const g of c.groups) this.inc({ state: g.state, machine: machineLabel(g.machine) }, g.sessions);
      },
    });
    const bridge = () => this.bridge?.() ?? null;
    new Gauge({
      name: 'qwd_viewers', help: 'Viewers connected through the bridge, by the link\'s access (control, view).',
      labelNames: ['access'], registers,
      collect() {
        const stats = bridge();
        this.set({ access: 'control' }, stats?.viewers.control ?? 0);
        this.set({ access: 'view' }, stats?.viewers.view ?? 0);
      },
    });
    new Counter({
      name: 'qwd_bridge_bytes_total',
      help: 'Bytes the bridge carried: desktop_to_viewer (framebuffer) and viewer_to_desktop (input, clipboard).',
      labelNames: ['direction'], registers,
      collect() {
        const stats = bridge();
        this.reset();
        this.inc({ direction: 'desktop_to_viewer' }, stats?.desktopToViewerBytes ?? 0);
        this.inc({ direction: 'viewer_to_desktop' }, stats?.viewerToDesktopBytes ?? 0);
      },
    });
    this.registerAdmission(sources, snapshot);
  }

  /** A machine of the catalog by its name; any other name (removed since) is one value. */
  private machineLabel(name: string): string {
    return this.sources?.catalog.get(name) ? name : OTHER_MACHINE;
  }

  /** The bridge is attached after the services (it needs the HTTP server). */
  attachBridge(stats: () => BridgeStats): void {
    this.bridge = stats;
  }

  /** The Prometheus text of one scrape (every collect callback runs now). */
  scrape(): Promise<string> {
    this.counts = null;
    return this.registry.metrics();
  }

  private snapshot(sources: MetricsSources): SessionCounts {
    return (this.counts ??= sources.sessionCounts());
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  sessionCreated(machine: string): void {
    this.created.inc({ machine: this.machineLabel(machine) });
  }

  sessionRefused(err: unknown): void {
    const code = codeOf(err);
    const limit = err instanceof QwdError ? err.details?.limit : undefined;
    const reason = (REFUSAL_REASONS as readonly unknown[]).includes(limit) ? String(limit) : reasonOfCode(code);
    this.refused.inc({ code, reason });
  }

  sessionReady(machine: string, seconds: number): void {
    this.startDuration.observe({ machine: this.machineLabel(machine) }, Math.max(0, seconds));
  }

  sessionStartFailed(err: unknown): void {
    this.startFailures.inc({ code: codeOf(err) });
  }

  vmStopped(outcome: StopOutcome | 'failed'): void {
    this.stops.inc({ outcome: STOP_OUTCOMES.includes(outcome) ? outcome : 'failed' });
  }

  purgeRan(report: PurgeReport | null, seconds: number): void {
    if (report?.dryRun) return;
    this.purgeRuns.inc({ result: report ? 'ok' : 'failed' });
    this.purgeDuration.observe(seconds);
    this.purgeLastRun.set(Date.now() / 1000);
    if (!report) return;
    for (const a of report.actions) this.purgeActions.inc({ action: a.action, reason: a.reason });
    this.purgeOrphans.inc(report.orphanDirs.length);
    this.purgeWarnings.inc(report.warnings.length);
    this.purgeForgotten.inc(report.forgottenTombstones);
  }

  recordAuthAttempt(backend: string, outcome: AuthAttemptOutcome): void {
    // Only the config's backend names (bounded by it): anything else is one value, never what a visitor typed.
    const label = this.authBackends.has(backend) ? backend : 'other';
    this.authAttempts.inc({ backend: label, outcome: AUTH_OUTCOMES.includes(outcome) ? outcome : 'invalid' });
  }

  slurmQueueWait(seconds: number): void {
    this.queueWait.observe(Math.max(0, seconds));
  }

  /** Reserved vs capacity, as admission counts them (admission/policy.ts reservedBy, decideAdmission). */
  private registerAdmission(sources: MetricsSources, snapshot: () => SessionCounts): void {
    const { config } = this;
    const { capabilities } = sources;
    const registers = [this.registry];
    const gauge = (name: string, help: string, value: () => number) => new Gauge({
      name, help, registers, collect() { this.set(value()); },
    });
    gauge('qwd_admission_reserved_sessions', 'Live desktops, queued ones too (they count toward limits.maxSessions).',
      () => snapshot().reserved.sessions);
    gauge('qwd_admission_capacity_sessions', 'limits.maxSessions: the most desktops at once.',
      () => config.limits.maxSessions);
    gauge('qwd_admission_reserved_cpus', 'CPUs reserved by desktops on this host (starting, running, stopping).',
      () => snapshot().reserved.cpus);
    gauge('qwd_admission_reserved_memory_bytes', 'Memory reserved by desktops on this host, in bytes.',
      () => snapshot().reserved.memoryMiB * MIB);
    gauge('qwd_admission_reserved_gpus', 'GPUs held by desktops that start, run or stop (queued ones hold none yet).',
      () => snapshot().reserved.gpus);
    // Where a scheduler owns capacity (Slurm), this host's size is not what admits: only the limits show.
    if (!capabilities.ownsCapacity) {
      gauge('qwd_admission_capacity_cpus', 'CPUs admission may reserve on this host: its CPUs × limits.cpuOvercommit.',
        () => Math.floor(sources.hostLoad().cpus * config.limits.cpuOvercommit));
      gauge('qwd_admission_capacity_memory_bytes',
        'Memory admission may reserve on this host, in bytes: (total − limits.hostReserveMemoryMiB) × ' +
          'limits.memoryOvercommit (GPU guests count at 1×).',
        () => Math.max(0, Math.floor(
          (sources.hostLoad().totalMemoryMiB - config.limits.hostReserveMemoryMiB) * config.limits.memoryOvercommit,
        )) * MIB);
    }
    if (capabilities.nodeGpusPerSession === 0) {
      gauge('qwd_admission_capacity_gpus', 'Usable VFIO GPUs of this host (held or free).', () => sources.gpusUsable());
    }
  }
}

function codeOf(err: unknown): ErrorCode {
  if (err instanceof QwdError && err.code in ERROR_CODES) return err.code;
  // better-sqlite3's busy error and anything else thrown: the code toQwdError would give it.
  const sqlite = (err as { code?: unknown } | null)?.code;
  return sqlite === 'SQLITE_BUSY' || sqlite === 'SQLITE_LOCKED' ? 'QWD_STORE_BUSY' : 'QWD_INTERNAL';
}

/** A refusal that is not an admission limit: what kind, from its code (a fixed set). */
function reasonOfCode(code: ErrorCode): string {
  switch (code) {
    case 'QWD_BAD_REQUEST':
    case 'QWD_UNKNOWN_MACHINE':
    case 'QWD_FORBIDDEN':
    case 'QWD_UNAUTHORIZED':
      return 'invalid-request';
    case 'QWD_STORE_BUSY':
    case 'QWD_STORE_FAILED':
      return 'store';
    default:
      return 'other';
  }
}

/**
 * prom-client's nodejs_active_{handles,requests,resources}_total are gauges named like counters, which promtool
 * check metrics rejects ("non-counter metrics should not have _total suffix"): they are replaced by one gauge
 * named by the convention, from process.getActiveResourcesInfo() (what keeps the event loop alive, by type).
 */
function replaceActiveResourceGauges(registry: Registry): void {
  for (const name of ['nodejs_active_handles', 'nodejs_active_requests', 'nodejs_active_resources']) {
    registry.removeSingleMetric(name);
    registry.removeSingleMetric(`${name}_total`);
  }
  new Gauge({
    name: 'nodejs_active_resources', help: 'Resources that keep the event loop alive, by type.',
    labelNames: ['type'], registers: [registry],
    collect() {
      this.reset();
      for (const type of process.getActiveResourcesInfo()) this.inc({ type });
    },
  });
}
