// The one Express error handler: QwdErrors become their status and safe user
// message (HTML for pages, JSON for the API); anything else is a 500 whose
// detail goes to the log only.
import type { ErrorRequestHandler, Request } from 'express';
import { QwdError, toQwdError } from '../errors.js';
import type { Logger } from '../log.js';
import { errorPage } from './views.js';

export function wantsJson(req: Request): boolean {
  return req.path.startsWith('/api/') || (req.get('accept') ?? '').startsWith('application/json');
}

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    // Body parser errors (malformed JSON, too large) are the client's fault.
    const status = (err as { status?: number }).status;
    const e: QwdError = err instanceof QwdError
      ? err
      : status && status >= 400 && status < 500
        ? new QwdError('QWD_BAD_REQUEST', (err as Error).message, { userMessage: status === 413 ? 'The request is too large.' : 'The request body is not valid.', cause: err })
        : toQwdError(err);
    if (e.httpStatus >= 500) log.error({ err: e, cause: e.cause, path: req.path }, e.message);
    // A flood of rate-limited requests must not become a flood of log lines.
    else log[e.code === 'QWD_RATE_LIMITED' ? 'debug' : 'info']({ code: e.code, path: req.path, msg: e.message }, 'request refused');
    if (res.headersSent) return;
    res.status(e.code === 'QWD_BAD_REQUEST' && status === 413 ? 413 : e.httpStatus);
    if (wantsJson(req)) res.json({ error: { code: e.code, message: e.userMessage } });
    else res.type('html').send(errorPage(e.httpStatus >= 500 ? 'Sorry' : 'Cannot do that', e.userMessage));
  };
}
