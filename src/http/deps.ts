// What the HTTP layer is given (AppDeps, from src/main.ts) and the few helpers its
// routers share, built once from them (RouteKit): the visitor's page context, a
// desktop's links, its access through a link, creating in the visitor's name.
// No routes here; routes/ holds them, one file per concern.
import type { Request, Response } from 'express';
import type { Logger } from '../log.js';
import type { ClipboardMode, Config } from '../config/schema.js';
import type { Catalog } from '../catalog/catalog.js';
import type { AccelChoice } from '../qemu/accel.js';
import type { EventLoopDelay } from './event-loop-delay.js';
import type { SessionManager } from '../sessions/manager.js';
import type { LinkKind, SessionRow } from '../store/session-rows.js';
import type { AuthService } from '../auth/service.js';
import type { OidcLogins } from '../auth/oidc/service.js';
import type { SqliteWebSessionStore } from './web-session-store.js';
import type { PageContext } from './html.js';
import type { SessionLinks } from './views.js';
import { type CsrfTokens, csrfToken } from './security.js';
import { type AccessNeed, type SessionAccess, decideSessionAccess } from './session-access.js';
import { webActor } from '../audit/actor.js';

export interface AppDeps {
  config: Config;
  manager: SessionManager;
  catalog: Catalog;
  webSessions: SqliteWebSessionStore;
  sessionSecret: string;
  accel: AccelChoice;
  viewerCounts: (sessionId: string) => { control: number; view: number };
  viewerNames: (sessionId: string) => string[];
  hostLoad: () => { cpus: number; load1: number; availableMemoryMiB: number; totalMemoryMiB: number };
  auth: AuthService;
  log: Logger;
  version: string;
  startedAt: number;
  /** How late the broker's event loop ran over the last window (/healthz). */
  eventLoopDelay: () => EventLoopDelay;
  /** The clock expiries are decided on (the manager's): pages count down on it. */
  now: () => number;
  /** A viewer's clipboard policy, decided as the bridge enforces it (the page only shows it). */
  clipboardMode: (machine: string, access: LinkKind) => ClipboardMode;
  /** Single sign-on logins; built from the config by createApp when not given (give one to feed its event sink). */
  oidcLogins?: OidcLogins;
}

export interface RouteKit {
  /** What every page needs to know about the visitor (and its CSRF token). */
  page(req: Request, res: Response): PageContext;
  /** The desktop's links (control and view-only: page, viewer, WebSocket) as this request reaches us. */
  links(req: Request, row: SessionRow): SessionLinks;
  /**
   * The access the link in :token gives this request, or a thrown SessionAccessError. A page
   * link needs a login where auth.linksRequireLogin says so; `linkLogin: false` leaves that
   * to the ownership rule (the API's changes, refused 403 to anyone not the owner).
   */
  access(req: Request, need: AccessNeed, linkLogin?: boolean): SessionAccess;
  /** Creates a desktop in the visitor's name and remembers it in this browser. */
  create(req: Request, body: unknown): Promise<SessionRow>;
  /** The desktops this visitor sees listed: all for an admin, their own, or those made in this browser. */
  listed(req: Request): SessionRow[];
}

export function createRouteKit(deps: AppDeps, csrfTokens: CsrfTokens): RouteKit {
  const { config, manager, auth } = deps;
  return {
    page: (req, res) => ({
      csrf: csrfToken(req, res, csrfTokens),
      identity: req.identity ? { user: req.identity.user, admin: req.identity.admin } : null,
      open: auth.open,
    }),
    links: (req, row) => {
      const origin = config.publicUrl ?? `${req.protocol}://${req.get('host')}`;
      const ws = origin.replace(/^http/, 'ws');
      return {
        page: `${origin}/s/${row.token}`, viewer: `${origin}/s/${row.token}/view`, ws: `${ws}/ws/${row.token}`,
        viewPage: `${origin}/s/${row.viewToken}`, viewViewer: `${origin}/s/${row.viewToken}/view`,
        viewWs: `${ws}/ws/${row.viewToken}`,
      };
    },
    access: (req, need, linkLogin = true) => decideSessionAccess(manager.lookupToken(req.params.token), {
      identity: req.identity, open: auth.open, mustLogIn: linkLogin && config.auth.linksRequireLogin,
    }, need),
    create: async (req, body) => {
      const who = { ...identityGroups(req), actor: webActor(req.identity) };
      const row = await manager.create(withIdentity(req, body), who);
      const kept = (req.session.sessionIds ?? []).filter((id) => manager.get(id));
      req.session.sessionIds = [...kept, row.id].slice(-50);
      req.session.userName = row.owner;
      return row;
    },
    listed: (req) => {
      const who = req.identity;
      if (who) return manager.list().filter((r) => who.admin || r.owner === who.user);
      const made = (req.session.sessionIds ?? []).map((id) => manager.get(id));
      return made.filter((r): r is SessionRow => r !== undefined);
    },
  };
}

/** Logged-in users create desktops in their own name (the typed name is ignored). */
function withIdentity(req: Request, body: unknown): unknown {
  const who = req.identity;
  if (!who) return body;
  const b = { ...(body as Record<string, unknown>) };
  b.user = who.user;
  if (!b.email && who.email) b.email = who.email;
  return b;
}

/** The groups the auth backend vouched for (boot-script conditions); nothing from the request. */
function identityGroups(req: Request): { groups: readonly string[] } {
  return { groups: req.identity?.groups ?? [] };
}
