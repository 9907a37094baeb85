// What an administrator's tool may ask of the service: the operations behind
// qwdctl's commands, over the services of whichever process is the store's one
// writer. The broker runs them for requests on its admin socket (server.ts);
// qwdctl runs the very same functions on services of its own when no broker
// runs (cli/context.ts), under the writer lock. Arguments and results are plain
// JSON values; formatting for the terminal stays in the CLI. Not an HTTP API:
// no users, no tokens; whoever may open the socket is the administrator.
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
}

/** Every operation's name (the remote client's methods and the server's table are built from it). */
export const ADMIN_OPERATIONS: Readonly<Record<keyof Admin, true>> = {
  listSessions: true, getSession: true, createSession: true, stopSession: true, extendSession: true,
  balloonInfo: true, setBalloon: true, schedulerInfo: true, purge: true, gpuStatus: true, hostStatus: true,
  hasUser: true, listUsers: true, addUser: true, setUserHash: true, setUserAdmin: true, removeUser: true,
  addApiToken: true, listApiTokens: true, revokeApiToken: true,
};

export function adminOperations(deps: AdminDeps): Admin {
  const manager = async () => (await deps.services()).manager;
  return {
    listSessions: async () => deps.rows().all(),
    getSession: async (id) => deps.rows().byId(id) ?? null,
    createSession: async (request) => (await manager()).create(request),
    stopSession: async (id, reason) => {
      await (await manager()).stop(id, endReason('stopped', reason));
      return null;
    },
    extendSession: async (id, byS) => (await manager()).extend(id, byS),
    balloonInfo: async (id) => (await manager()).balloonInfo(id),
    setBalloon: async (id, targetMiB) => {
      await (await manager()).setBalloon(id, targetMiB);
      return null;
    },
    schedulerInfo: async (id) => {
      const row = deps.rows().byId(id);
      return row ? (await manager()).schedulerInfo(row) : {};
    },
    purge: async (opts) => (await deps.services()).purge.run({ dryRun: opts.dryRun }),
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
    addUser: async (user) => {
      deps.users().add(user);
      return null;
    },
    setUserHash: async (name, hash) => deps.users().setHash(name, hash),
    setUserAdmin: async (name, admin) => deps.users().setAdmin(name, admin),
    removeUser: async (name) => deps.users().remove(name),
    addApiToken: async ({ id, hash, user, admin, createdAt }) => {
      deps.users().addApiToken(id, hash, user, admin, createdAt);
      return null;
    },
    listApiTokens: async () => deps.users().apiTokens(),
    revokeApiToken: async (id) => deps.users().revokeApiToken(id),
  };
}
