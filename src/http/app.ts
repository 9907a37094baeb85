// The Express application, composed: security headers, static assets, body parsers, the
// browser session, who is asking, the anonymous brake and CSRF; then the routes by
// concern (routes/: pages, login, admin, api, health); then not-found and the one error
// handler. Routes only translate HTTP to manager calls and back; the manager owns session state.
import path from 'node:path';
import { createRequire } from 'node:module';
import express from 'express';
import session from 'express-session';
import { INSTALL_DIR } from '../config/load.js';
import { errorHandler } from './error-handler.js';
import { securityHeaders } from './security-headers.js';
import { CsrfTokens, SESSION_COOKIE, csrfProtect, identify } from './security.js';
import { AnonymousPageLimiter, limitAnonymousPages } from './anonymous-limit.js';
import { notFoundPage } from './views.js';
import { type AppDeps, createRouteKit } from './deps.js';
import { pageRoutes } from './routes/pages.js';
import { loginRoutes } from './routes/login.js';
import { adminRoutes } from './routes/admin.js';
import { apiRoutes, stampServerTime } from './routes/api.js';
import { healthRoutes } from './routes/health.js';
import { oidcRecheck, oidcRoutes } from './routes/oidc.js';
import { attemptOutcome, OidcLogins, singleSignOnOrigins, type LoginEvent } from '../auth/oidc/service.js';
import { fromOidcEvent } from '../audit/login.js';

export type { AppDeps } from './deps.js';

const NOVNC_DIR = path.dirname(path.dirname(createRequire(import.meta.url).resolve('@novnc/novnc')));

export function createApp(deps: AppDeps): express.Express {
  const { config, auth } = deps;
  const app = express();
  app.disable('x-powered-by');
  // A hop count or a list of proxy addresses, never `true` (see readTrustProxy): a copy,
  // as the config is frozen.
  app.set('trust proxy', Array.isArray(config.trustProxy) ? [...config.trustProxy] : config.trustProxy);
  app.use(securityHeaders({ formActionOrigins: singleSignOnOrigins(config) }));
  app.use('/api', stampServerTime(deps.now));
  app.use('/static', express.static(path.join(INSTALL_DIR, 'public'), { index: false, maxAge: '1h' }));
  app.use('/novnc', express.static(NOVNC_DIR, { index: false, maxAge: '1d' }));
  app.use(express.urlencoded({ extended: false, limit: '96kb', parameterLimit: 20 }));
  app.use(express.json({ limit: '96kb' }));
  // The cookie outlives the longest login and the longest desktop by a day.
  const cookieMaxAgeMs = Math.max(config.auth.sessionTtlS, config.limits.maxLifetimeS) * 1000 + 86400000;
  app.use(session({
    store: deps.webSessions,
    secret: deps.sessionSecret,
    name: SESSION_COOKIE,
    resave: false,
    saveUninitialized: false,
    // secure: 'auto' marks the cookie Secure whenever the request came over TLS
    // (directly, or through a proxy trusted with trustProxy).
    cookie: { httpOnly: true, sameSite: 'lax', secure: 'auto', maxAge: cookieMaxAgeMs },
  }));
  app.use(identify(auth));
  // Single sign-on: a login its provider no longer vouches for ends here (routes/oidc.ts).
  // Its outcomes go to the audit trail (audit/login.ts) and the login metrics like every other login.
  const auditSso = (event: LoginEvent) => {
    const attempt = fromOidcEvent(event);
    if (attempt) auth.recordLogin(attempt);
    const outcome = attemptOutcome(event);
    if (outcome) auth.recordAttempt(event.backend, outcome);
  };
  const oidcLogins = deps.oidcLogins ?? new OidcLogins(
    config, deps.log.child({ module: 'oidc' }), deps.now, auditSso,
    () => deps.catalog.list().map((m) => m.bootScripts.scripts),
  );
  app.use(oidcRecheck(oidcLogins));
  app.use(limitAnonymousPages(new AnonymousPageLimiter(config.auth.rateLimit.anonymousPagesPerMinute)));
  const csrfTokens = new CsrfTokens(deps.sessionSecret);
  app.use(csrfProtect(csrfTokens));

  const kit = createRouteKit(deps, csrfTokens);
  app.use(pageRoutes(deps, kit));
  app.use(oidcRoutes(deps, oidcLogins, kit));
  app.use(loginRoutes(deps, kit));
  app.use(adminRoutes(deps));
  app.use(apiRoutes(deps, kit));
  app.use(healthRoutes(deps));

  app.use((req, res) => {
    if (req.path.startsWith('/api/')) {
      res.status(404).json({ error: { code: 'QWD_NOT_FOUND', message: 'No such API endpoint.' } });
    } else {
      res.status(404).type('html').send(notFoundPage('There is no page here.'));
    }
  });
  app.use(errorHandler(deps.log));
  return app;
}
