// What an administrator's tool may ask of the service: the operations behind
// qwdctl's commands, over the services of whichever process is the store's one
// writer. The broker runs them for requests on its admin socket (server.ts);
// qwdctl runs the very same functions on services of its own when no broker
// runs (cli/context.ts), under the writer lock. Arguments and results are plain
// JSON values; formatting for the terminal stays in the CLI. Not an HTTP API:
// no users, no tokens; whoever may open the socket is the administrator, and
// the audit trail records its changes with the actor cli:qwdctl.
import type { SessionManager } from '../sessions/manager.js';
import type { PurgeReport, PurgeService } from '../purge/service.js';
import { endReason } from '../store/end-reason.js';
import type { SessionRow, SessionRows } from '../store/session-rows.js';
import type { ApiToken, LocalUser, UserStore } from '../store/users.js';
import type { LoadSampler } from '../admission/host-load.js';
import type { HostLoad } from '../admission/policy.js';
import type { AccelChoice } from '../qemu/accel.js';
import type { Catalog } from '../catalog/catalog.js';
import type { Launcher } from '../launcher/types.js';
import type { GpuDevice } from '../gpu/discover.js';
import { QwdError } from '../errors.js';
import { ACTORS, boundedText } from '../audit/actor.js';
import { queryAudit, type AuditEntry, type AuditFilter } from '../audit/query.js';

/** The services behind the session operations (built only for commands that need them). */
export interface AdminServices {
  manager: SessionManager;
  purge: PurgeService;
  load: LoadSampler;
  launcher: Launcher;
  accel: AccelChoice;
  catalog: Catalog;
}

/** Each getter is asked only by the operations that need it, so qwdctl builds no more than its command uses. */
export interface AdminDeps {
  rows(): SessionRows;
  users(): UserStore;
  services(): Promise<AdminServices>;
}

export type GpuStatus = GpuDevice & { heldBy: string | null };

export interface HostStatus {
  pid: number;
  host: HostLoad;
  accel: Pick<AccelChoice, 'accel' | 'reason'>;
  machines: Array<{ name: string; maxMemoryMiB: number }>;
  /** The running launcher's name, and whether its VMs are scheduler jobs with details to show (Launcher.describe). */
  /** Absent from a broker older than this qwdctl: then no job columns. */
  launcher?: { kind: string; jobs: boolean };
}

export interface Admin {
  listSessions(): Promise<SessionRow[]>;
  getSession(id: string): Promise<SessionRow | null>;
  /** A create request as the web form's JSON (validated by the manager), `user` included. */
  createSession(request: Record<string, unknown>): Promise<SessionRow>;
  stopSession(id: string, reason: string): Promise<null>;
  extendSession(id: string, byS: number): Promise<SessionRow>;
  balloonInfo(id: string): Promise<{ actualMiB: number; targetMiB: number | null; memoryMiB: number }>;
  setBalloon(id: string, targetMiB: number): Promise<null>;
  schedulerInfo(id: string): Promise<Record<string, string | number | null>>;
  purge(opts: { dryRun: boolean }): Promise<PurgeReport>;
  gpuStatus(): Promise<GpuStatus[]>;
  hostStatus(): Promise<HostStatus>;
  hasUser(name: string): Promise<boolean>;
  listUsers(): Promise<Array<Omit<LocalUser, 'hash'>>>;
  addUser(user: LocalUser): Promise<null>;
  setUserHash(name: string, hash: string): Promise<boolean>;
  setUserAdmin(name: string, admin: boolean): Promise<boolean>;
  removeUser(name: string): Promise<{ tokens: number } | null>;
  addApiToken(token: { id: string; hash: string; user: string; admin: boolean; createdAt: number }): Promise<null>;
  listApiTokens(): Promise<ApiToken[]>;
  revokeApiToken(id: string): Promise<boolean>;
  /** The audit trail, filtered (qwdctl audit). */
  audit(filter: AuditFilter): Promise<AuditEntry[]>;
}

/** Every operation's name (the remote client's methods and the server's table are built from it). */
export const ADMIN_OPERATIONS: Readonly<Record<keyof Admin, true>> = {
  listSessions: true, getSession: true, createSession: true, stopSession: true, extendSession: true,
  balloonInfo: true, setBalloon: true, schedulerInfo: true, purge: true, gpuStatus: true, hostStatus: true,
  hasUser: true, listUsers: true, addUser: true, setUserHash: true, setUserAdmin: true, removeUser: true,
  addApiToken: true, listApiTokens: true, revokeApiToken: true, audit: true,
};

/** A filter as it arrives over the socket: each field of its type or absent, else a usage error. */
function checkedFilter(raw: unknown): AuditFilter {
  const f = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const out: AuditFilter = {};
  for (const key of ['since', 'until', 'limit', 'beforeId'] as const) {
    if (f[key] === undefined || f[key] === null) continue;
    if (typeof f[key] !== 'number' || !Number.isFinite(f[key])) throw badFilter(key, f[key]);
    out[key] = f[key];
  }
  for (const key of ['user', 'sessionId', 'kind'] as const) {
    if (f[key] === undefined || f[key] === null) continue;
    if (typeof f[key] !== 'string' || f[key].length > 256) throw badFilter(key, f[key]);
    out[key] = f[key];
  }
  return out;
}

function badFilter(key: string, value: unknown): QwdError {
  const message = `audit filter ${key} has the wrong type (${typeof value})`;
  return new QwdError('QWD_BAD_REQUEST', message, { userMessage: message });
}

export function adminOperations(deps: AdminDeps): Admin {
  const manager = async () => (await deps.services()).manager;
  const actor = ACTORS.qwdctl;
  /** An account or token change, audited (never a hash or a token: names, ids and flags only). */
  const audit = (kind: string, owner: string | null, detail: Record<string, unknown> | null) => {
    deps.rows().audit(null, kind, detail, Date.now(), { actor, owner });
  };
  /**
   * A change and its audit row in one transaction: if the row cannot be written the change is rolled back too
   * (accounts and sessions share one store, one Db; the user store's own transactions nest as savepoints).
   */
  const inTransaction = <T>(change: () => T): T => deps.rows().db.transaction(change)();
  return {
    listSessions: async () => deps.rows().all(),
    getSession: async (id) => deps.rows().byId(id) ?? null,
    createSession: async (request) => (await manager()).create(request, { actor }),
    stopSession: async (id, reason) => {
      // The administrator's words go to the trail (and the tombstone the user's link shows): bounded and escaped.
      const words = typeof reason === 'string' ? boundedText(reason, 500) : undefined;
      await (await manager()).stop(id, endReason('stopped', words, actor));
      return null;
    },
    extendSession: async (id, byS) => (await manager()).extend(id, byS, actor),
    balloonInfo: async (id) => (await manager()).balloonInfo(id),
    setBalloon: async (id, targetMiB) => {
      await (await manager()).setBalloon(id, targetMiB, actor);
      return null;
    },
    schedulerInfo: async (id) => {
      const row = deps.rows().byId(id);
      return row ? (await manager()).schedulerInfo(row) : {};
    },
    purge: async (opts) => (await deps.services()).purge.run({ dryRun: opts.dryRun, actor }),
    gpuStatus: async () => (await manager()).gpuStatus(),
    hostStatus: async () => {
      const { load, accel, catalog, launcher } = await deps.services();
      return {
        pid: process.pid, host: load.current(), accel: { accel: accel.accel, reason: accel.reason },
        machines: catalog.list().map((m) => ({ name: m.name, maxMemoryMiB: m.memoryMiB.max })),
        launcher: { kind: launcher.kind, jobs: launcher.describe !== undefined },
      };
    },
    hasUser: async (name) => deps.users().get(name) !== undefined,
    listUsers: async () => deps.users().list().map(({ name, email, admin, createdAt }) => ({
      name, email, admin, createdAt,
    })),
    addUser: async (user) => inTransaction(() => {
      deps.users().add(user);
      audit('user-added', user.name, { admin: user.admin, email: user.email !== null });
      return null;
    }),
    setUserHash: async (name, hash) => inTransaction(() => {
      const changed = deps.users().setHash(name, hash);
      if (changed) audit('user-password-set', name, null);
      return changed;
    }),
    setUserAdmin: async (name, admin) => inTransaction(() => {
      const changed = deps.users().setAdmin(name, admin);
      if (changed) audit('user-admin-set', name, { admin });
      return changed;
    }),
    removeUser: async (name) => inTransaction(() => {
      const removed = deps.users().remove(name);
      if (removed) audit('user-removed', name, { tokens: removed.tokens });
      return removed;
    }),
    addApiToken: async ({ id, hash, user, admin, createdAt }) => inTransaction(() => {
      deps.users().addApiToken(id, hash, user, admin, createdAt);
      audit('api-token-added', user, { tokenId: id, admin });
      return null;
    }),
    listApiTokens: async () => deps.users().apiTokens(),
    revokeApiToken: async (id) => inTransaction(() => {
      const token = deps.users().apiTokens().find((t) => t.id === id);
      const revoked = deps.users().revokeApiToken(id);
      if (revoked) audit('api-token-revoked', token?.user ?? null, { tokenId: id });
      return revoked;
    }),
    audit: async (filter) => queryAudit(deps.rows().db, checkedFilter(filter)),
  };
}
