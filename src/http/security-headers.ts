// The response headers every answer carries (helmet): a Content Security Policy that
// allows only this site's own scripts, styles and WebSockets, no framing, and no
// Referer (share links are secrets). No HSTS header from the broker itself.
import helmet from 'helmet';

export function securityHeaders() {
  return helmet({
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'", 'ws:', 'wss:'],
        frameAncestors: ["'none'"],
        formAction: ["'self'"],
        upgradeInsecureRequests: null,
      },
    },
    // Share links must not leak through Referer headers.
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: false,
  });
}
