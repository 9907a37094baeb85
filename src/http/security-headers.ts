// The response headers every answer carries (helmet): a Content Security Policy that
// allows only this site's own scripts, styles and WebSockets, no framing, and no
// Referer (share links are secrets). No HSTS header from the broker itself.
// Forms post to this site only, and to the single sign-on providers' origins: a
// form's redirects are checked against form-action too, and the SSO login and
// logout forms are answered with a redirect to the provider.
import helmet from 'helmet';

export function securityHeaders(opts: { formActionOrigins?: readonly string[] } = {}) {
  return helmet({
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'", 'ws:', 'wss:'],
        frameAncestors: ["'none'"],
        formAction: ["'self'", ...(opts.formActionOrigins ?? [])],
        upgradeInsecureRequests: null,
      },
    },
    // Share links must not leak through Referer headers.
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: false,
  });
}
