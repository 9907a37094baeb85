// Logging in and out: the password form, the e-mail login link (asked for, shown,
// redeemed) and logout. Who is logged in on each request is identify() (security.ts).
import { Router, type Response } from 'express';
import { KNOWN_DEVICE_COOKIE, KNOWN_DEVICE_MAX_AGE_S, addMark, isKnownDevice } from '../../auth/known-device.js';
import { cookieValue, safeRedirectPath } from '../security.js';
import { endWebLogin, startWebLogin } from '../web-login.js';
import { answerErrorsWith } from '../error-handler.js';
import type { AppDeps, RouteKit } from '../deps.js';
import { emailLinkPage, errorPage, loginPage } from '../views.js';

const LINK_SENT = 'If this address may log in, a link is on its way. It works once, for a limited time.';
const LINK_NOT_SENT = 'The login link could not be sent. Please try again later.';

export function loginRoutes(deps: Pick<AppDeps, 'auth' | 'sessionSecret'>, kit: RouteKit): Router {
  const { auth, sessionSecret } = deps;
  const router = Router();
  const hasEmail = () => auth.emailBackend !== null;

  router.get('/login', (req, res) => {
    if (auth.open) return res.redirect(303, '/');
    const next = safeRedirectPath(req.query.next);
    res.type('html').send(loginPage(kit.page(req, res), {
      password: auth.hasPasswordLogin, email: hasEmail(), sso: auth.singleSignOn, next,
    }));
  });

  router.post('/login', async (req, res) => {
    if (auth.open || !auth.hasPasswordLogin) return res.redirect(303, '/');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = typeof body.user === 'string' ? body.user : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const next = safeRedirectPath(body.next);
    const marks = cookieValue(req.headers.cookie, KNOWN_DEVICE_COOKIE);
    const outcome = await auth.login(user, password, req.ip ?? 'unknown', isKnownDevice(sessionSecret, marks, user));
    if (!outcome.ok) {
      if (outcome.retryAfterS) res.set('Retry-After', String(outcome.retryAfterS));
      const form = {
        password: true, email: hasEmail(), sso: auth.singleSignOn, error: outcome.message, next,
        user: user.slice(0, 64),
      };
      res.status(outcome.status).type('html').send(loginPage(kit.page(req, res), form));
      return;
    }
    await startWebLogin(req, outcome.identity, auth.loginStartedAt());
    res.cookie(KNOWN_DEVICE_COOKIE, addMark(sessionSecret, marks, user), {
      httpOnly: true, sameSite: 'lax', secure: req.secure, path: '/login', maxAge: KNOWN_DEVICE_MAX_AGE_S * 1000,
    });
    res.redirect(303, next);
  });

  router.post('/login/email', async (req, res) => {
    const email = (req.body as Record<string, unknown> | undefined)?.email;
    const form = { password: auth.hasPasswordLogin, email: true, sso: auth.singleSignOn, next: '/' };
    // The server's own failures (mail, config) are told apart from the visitor's (address, rate).
    answerErrorsWith(res, (e) => e.httpStatus >= 500
      ? { status: 503, html: loginPage(kit.page(req, res), { ...form, error: LINK_NOT_SENT }) }
      : { html: loginPage(kit.page(req, res), { ...form, error: e.userMessage }) });
    // The link is built from config.publicUrl only (never from the Host header).
    await auth.sendEmailLink(typeof email === 'string' ? email : '', req.ip ?? 'unknown');
    res.type('html').send(loginPage(kit.page(req, res), { ...form, notice: LINK_SENT }));
  });

  // Opening the mailed link only shows a button: mail scanners and link
  // previews fetch links with GET, and must not use up a single-use login.
  router.get('/login/email/:token', (req, res) => {
    const token = req.params.token;
    const email = auth.peekEmailLink(token);
    if (!email) return linkNotValid(res);
    res.type('html').send(emailLinkPage(kit.page(req, res), email, `/login/email/${token}`));
  });

  router.post('/login/email/:token', async (req, res) => {
    const identity = auth.redeemEmailLink(req.params.token);
    if (!identity) return linkNotValid(res);
    await startWebLogin(req, identity, auth.loginStartedAt());
    res.redirect(303, '/');
  });

  router.post('/logout', (req, res, next) => {
    // (single sign-on logouts are answered, and audited, by routes/oidc.ts before this one)
    const who = req.session.identity;
    if (who) auth.recordLogin({ backend: who.via, user: who.user, result: 'logout', ip: req.ip });
    endWebLogin(req, res, next, auth.open ? '/' : '/login');
  });

  return router;
}

function linkNotValid(res: Response): void {
  const message = 'This login link has expired or was already used. Ask for a new one.';
  res.status(410).type('html').send(errorPage('Link not valid', message, '/login'));
}
