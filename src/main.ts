// The broker's composition root: the only place that constructs services.
// startBroker() takes the store's writer lock (it is the store's only writer
// while it runs), wires config → store → catalog → launcher → manager → HTTP,
// bridge, purge schedule and the admin socket qwdctl talks to, reconciles
// sessions left by a previous run, and returns a handle whose close() stops
// serving but leaves VMs running (the next start adopts them).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.js';
import { INSTALL_DIR } from './config/load.js';
import type { Logger } from './log.js';
import { openDb, type Db } from './store/db.js';
import { SessionRows } from './store/session-rows.js';
import { loadCatalog, type Catalog } from './catalog/catalog.js';
import { chooseAccelerator, probeHostAccel, type AccelChoice } from './qemu/accel.js';
import { guestNetworkUnavailable } from './launcher/guest-netns.js';
import { QwdError } from './errors.js';
import { createLauncher, type LauncherName } from './launcher/registry.js';
import type { Launcher } from './launcher/types.js';
import { startLoadSampler, type LoadSampler } from './admission/host-load.js';
import { SessionManager } from './sessions/manager.js';
import { ViewerPresence } from './sessions/presence.js';
import { PurgeService } from './purge/service.js';
import { offsetClock, systemClock, type Clock } from './clock.js';
import { createApp } from './http/app.js';
import { watchEventLoopDelay } from './http/event-loop-delay.js';
import { SqliteWebSessionStore } from './http/web-session-store.js';
import { webLoginFromCookie } from './http/web-login.js';
import { attachBridge, type Bridge } from './bridge/ws-bridge.js';
import { schedulePurge, type PurgeSchedule } from './purge/schedule.js';
import { createMailer } from './notify/mailer.js';
import { discoverGpus } from './gpu/discover.js';
import { UserStore } from './store/users.js';
import { AuthService } from './auth/service.js';
import { forgetBrokerAddress, recordBrokerAddress } from './admin/broker-address.js';
import { acquireWriterLock, type WriterLock } from './store/writer-lock.js';
import { serveAdmin, type AdminServer } from './admin/server.js';
import { adminSocketPath } from './admin/socket.js';
import { adminOperations } from './admin/operations.js';
import { recordLoginAttempt } from './audit/login.js';
import { AuditShipper } from './audit/shipper.js';
import { configuredSinks } from './audit/sinks.js';
import { BrokerMetrics } from './metrics/broker-metrics.js';
import { sessionCounter } from './metrics/session-counts.js';
import { readBearerToken } from './config/metrics.js';
import { metricsHandler, serveMetrics, withMetricsPath, type MetricsServer } from './metrics/serve.js';

export const VERSION: string = JSON.parse(fs.readFileSync(path.join(INSTALL_DIR, 'package.json'), 'utf8')).version;

export interface Services {
  config: Config;
  db: Db;
  rows: SessionRows;
  catalog: Catalog;
  accel: AccelChoice;
  launcher: Launcher;
  load: LoadSampler;
  manager: SessionManager;
  presence: ViewerPresence;
  purge: PurgeService;
  users: UserStore;
  auth: AuthService;
  log: Logger;
  /** Prometheus metrics (metrics.enabled, in the broker only); null otherwise. */
  metrics: BrokerMetrics | null;
}

/** The services shared by the broker and qwdctl (no HTTP, no schedules). */
export interface ServiceOptions {
  hostRoot?: string;
  /** The clock for expiry, purge and warning decisions and session timers; the system clock by default. */
  clock?: Clock;
  /** Tests: the system clock's time shifted (a broker whose clock runs ahead); ignored with clock. */
  now?: () => number;
  /**
   * Tests only: a launcher other than config.launcher, by name (the fake, which a config file cannot name).
   */
  launcher?: LauncherName;
  /** The accelerator and launcher already chosen (prepareLauncher), e.g. by startBroker for its checks. */
  prepared?: PreparedLauncher;
  /** The broker's metrics, fed by the services and given their gauges here (startBroker, with metrics.enabled). */
  metrics?: BrokerMetrics;
}

export interface PreparedLauncher {
  accel: AccelChoice;
  launcher: Launcher;
}

/** Chooses the accelerator and builds the launcher: no file is opened and nothing is started. */
export function prepareLauncher(
  config: Config, log: Logger, opts: Pick<ServiceOptions, 'hostRoot' | 'launcher' | 'metrics'> = {},
): PreparedLauncher {
  const accel = chooseAccelerator(config.qemu.accel, probeHostAccel(opts.hostRoot ?? '/'));
  return {
    accel, launcher: createLauncher(opts.launcher ?? config.launcher, { config, accel, log, metrics: opts.metrics }),
  };
}

export async function createServices(config: Config, log: Logger, opts: ServiceOptions = {}): Promise<Services> {
  const { accel, launcher } = opts.prepared ?? prepareLauncher(config, log, opts);
  const db = openDb(config.stateDir);
  const rows = new SessionRows(db);
  const catalog = await loadCatalog(config.machinesDir, config.qemu.img, log.child({ module: 'catalog' }));
  const load = await startLoadSampler(5000, log);
  const mailer = createMailer(config.mail);
  const listenHost = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const baseUrl = config.publicUrl ?? `http://${listenHost}:${config.listen.port}`;
  // GPUs are devices of this host: a broker that sends desktops to other nodes gives none of its own.
  const discover = () => (
    launcher.capabilities.onBrokerHost ? discoverGpus(config.gpu.sysfsRoot, config.gpu.exclude) : []
  );
  const clock = opts.clock ?? (opts.now ? offsetClock(opts.now) : systemClock);
  const sessionLog = log.child({ module: 'sessions' });
  const { metrics } = opts;
  const manager = new SessionManager({
    config, rows, catalog, launcher, load, discoverGpus: discover, clock, log: sessionLog, metrics,
  });
  const presence = new ViewerPresence({ manager, rows, config, log: sessionLog });
  const purge = new PurgeService({
    manager, rows, launcher, config, mailer, baseUrl, log: log.child({ module: 'purge' }), metrics,
  });
  const users = new UserStore(db);
  const auth = new AuthService(
    config, users, mailer, log.child({ module: 'auth' }), Date.now, metrics?.recordAuthAttempt.bind(metrics),
  );
  auth.auditLogin = (attempt) => recordLoginAttempt(rows, attempt, clock.now());
  metrics?.observe({
    catalog, capabilities: launcher.capabilities, sessionCounts: sessionCounter(db), hostLoad: () => load.current(),
    gpusUsable: () => discover().filter((g) => g.usable).length,
  });
  return {
    config, db, rows, catalog, accel, launcher, load, manager, presence, purge, users, auth, log,
    metrics: metrics ?? null,
  };
}

/**
 * Guests with network run in a namespace of their own (launcher/guest-netns.ts);
 * a broker that cannot give them one refuses to start rather than let guests reach the host.
 */
function assertGuestNetworkIsolation(config: Config, onBrokerHost: boolean): void {
  if (config.qemu.network !== 'user') return;
  // Jobs on other nodes (Slurm) make their guests' namespaces there themselves, and fail there naming what is missing.
  if (!onBrokerHost) return;
  const why = guestNetworkUnavailable(config.guestNetwork);
  if (!why) return;
  throw new QwdError('QWD_CONFIG_INVALID', `guests with network (qemu.network: user) must run in a network namespace ` +
    `of their own, and ${why}: `
    + 'run bin/setup (or install the packages named), run the broker as root, or set qemu.network: none');
}

export interface Broker {
  services: Services;
  server: http.Server;
  url: string;
  bridge: Bridge;
  /** Where Prometheus scrapes (metrics.enabled): on the broker's listener or metrics.listen; null when off. */
  metricsUrl: string | null;
  /** Stops serving; running VMs are left for the next broker to adopt. */
  close(): Promise<void>;
}

export interface BrokerOptions extends Pick<ServiceOptions, 'clock' | 'now' | 'launcher' | 'prepared'> {
  /** How long to wait for the writer lock a qwdctl command holds before refusing to start (default 30 s). */
  writerLockWaitMs?: number;
}

export async function startBroker(config: Config, log: Logger, opts: BrokerOptions = {}): Promise<Broker> {
  // The scrape token is read first: a missing or malformed token file stops the start before anything is made.
  const metricsToken = config.metrics.enabled ? metricsTokenOf(config) : null;
  const metrics = config.metrics.enabled ? new BrokerMetrics(config, VERSION, opts.launcher ?? config.launcher) : null;
  // Before anything is created: a launcher that runs guests on this host must be able to isolate their network
  // (Slurm jobs isolate theirs on their node).
  const prepared = prepareLauncher(config, log, { ...opts, metrics: metrics ?? undefined });
  assertGuestNetworkIsolation(config, prepared.launcher.capabilities.onBrokerHost);
  const socketPath = adminSocketPath(config.stateDir);
  // One writer: a qwdctl working on the store (no broker ran when it began) finishes first.
  const lock = await acquireWriterLock(config.stateDir, 'the broker (qwdctl serve)', {
    waitMs: opts.writerLockWaitMs ?? 30_000,
  });
  if (!lock) throw new QwdError('QWD_INTERNAL', 'no writer lock and no reason'); // only a shouldStop gives up early
  try {
    return await startBrokerLocked(
      config, log, { ...opts, prepared, metrics: metrics ?? undefined }, lock, socketPath, metricsToken,
    );
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function startBrokerLocked(
  config: Config, log: Logger, opts: BrokerOptions & { metrics?: BrokerMetrics }, lock: WriterLock, socketPath: string,
  metricsToken: string | null,
): Promise<Broker> {
  const startedAt = Date.now();
  const services = await createServices(config, log, {
    clock: opts.clock, now: opts.now, launcher: opts.launcher, prepared: opts.prepared, metrics: opts.metrics,
  });
  const now = () => services.manager.clock.now();
  const { manager, catalog, accel, db } = services;
  // The audit trail's copies (audit.jsonFile, audit.syslog): woken by every row, caught up now with what was missed.
  const shipper = new AuditShipper(db, configuredSinks(config.audit), log.child({ module: 'audit' }));
  if (shipper.active) {
    services.rows.audited = () => shipper.wake();
    shipper.wake();
  }
  log.info({ accel: accel.accel, requested: accel.requested, reason: accel.reason }, 'accelerator chosen');
  if (catalog.list().length === 0) {
    log.warn({ machinesDir: config.machinesDir }, 'no usable machine: the form will offer nothing');
  }
  await manager.reconcile();

  const webSessions = new SqliteWebSessionStore(db);
  const server = http.createServer();
  const sessionSecret = loadSecret(config.stateDir);
  const isLoggedIn = (req: http.IncomingMessage) => webLoginFromCookie(
    req.headers.cookie, sessionSecret, webSessions, services.auth,
  ) !== null;
  const bridgeLog = log.child({ module: 'bridge' });
  const bridge = attachBridge(server, manager, services.presence, bridgeLog, sessionSecret, config.bridge, {
    ...(config.auth.linksRequireLogin ? { isLoggedIn } : {}),
    clipboard: { site: config.bridge, machine: (name) => {
      const machine = catalog.get(name);
      return machine ? (machine.clipboard ?? 'both') : undefined;
    } },
    stalledViewerMs: config.bridge.stalledViewerS * 1000,
  });
  const loopDelay = watchEventLoopDelay();
  const app = createApp({
    config, manager, catalog, webSessions, sessionSecret, accel, viewerNames: (id) => bridge.viewerNames(id),
    viewerCounts: (id) => bridge.viewerCounts(id), hostLoad: () => services.load.current(), auth: services.auth,
    log: log.child({ module: 'http' }), version: VERSION, startedAt, now, eventLoopDelay: () => loopDelay.current(),
    clipboardMode: (machine, access) => bridge.clipboardMode(machine, access),
  });
  const { metrics } = services;
  if (metrics) metrics.attachBridge(() => bridge.stats());
  const scrape = metrics ? metricsHandler(metrics, metricsToken, log.child({ module: 'metrics' })) : null;
  // /metrics on the public listener only when no listener of its own is configured.
  server.on('request', scrape && !config.metrics.listen ? withMetricsPath(scrape, app) : app);
  const purge: PurgeSchedule = schedulePurge(config.purge.schedule, async () => {
    await services.purge.run();
    webSessions.prune(now());
    services.users.pruneEmailTokens(now());
  }, log.child({ module: 'purge' }));

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let admin: AdminServer;
  let metricsServer: MetricsServer | null = null;
  try {
    if (scrape && config.metrics.listen) metricsServer = await serveMetrics(config.metrics.listen, scrape);
    admin = await serveAdmin(socketPath, adminOperations({
      rows: () => services.rows, users: () => services.users, services: async () => services,
    }), log.child({ module: 'admin' }));
  } catch (err) {
    await metricsServer?.close();
    purge.stop();
    await shipper.close();
    loopDelay.stop();
    bridge.close();
    manager.detach();
    services.presence.close();
    services.load.stop();
    server.close();
    db.close();
    throw err;
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  log.info({ url, stateDir: config.stateDir, config: config.source ?? '(embedded defaults)' }, 'broker listening');
  recordBrokerAddress(config.stateDir, url); // so qwdctl's links use the real port
  const metricsUrl = metricsServer?.url ?? (scrape ? `${url}/metrics` : null);
  if (metricsUrl) log.info({ metricsUrl, bearerToken: metricsToken !== null }, 'serving Prometheus metrics');
  if (metricsUrl && !metricsToken && !config.metrics.listen) {
    log.warn('metrics on the public listener without metrics.bearerToken(File): whoever reaches the broker reads them');
  }

  let closed = false;
  return {
    services, server, url, bridge, metricsUrl,
    close: async () => {
      if (closed) return;
      closed = true;
      purge.stop();
      loopDelay.stop();
      await metricsServer?.close();
      await admin.close();
      bridge.close();
      manager.detach();
      services.presence.close();
      services.load.stop();
      forgetBrokerAddress(config.stateDir, url);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      services.rows.audited = null;
      await shipper.close();
      db.close();
      lock.release(); // last: the store is closed, another writer may open it
    },
  };
}

/** The token a scrape must present (metrics.bearerToken or its file), or null; a bad file is QWD_CONFIG_INVALID. */
function metricsTokenOf(config: Config): string | null {
  return readBearerToken(config.metrics);
}

/** The cookie-signing secret: generated once, kept 0600 in the state dir. */
function loadSecret(stateDir: string): string {
  const file = path.join(stateDir, 'cookie-secret');
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    const secret = crypto.randomBytes(32).toString('base64url');
    fs.writeFileSync(file, secret + '\n', { mode: 0o600, flag: 'wx' });
    return secret;
  }
}
