// The one Express error handler: QwdErrors become their status and safe user
// message (HTML for pages, JSON for the API); anything else is a 500 whose
// detail goes to the log only. Routes throw; a page that answers an error in its
// own words (the form again, with the message) says so first with answerErrorsWith.
import type { ErrorRequestHandler, Request, Response } from 'express';
import { QwdError, toQwdError } from '../errors.js';
import type { Logger } from '../log.js';
import { SessionAccessError } from './session-access.js';
import { describeEnd } from '../store/end-reason.js';
import { sendToLogin } from './security.js';
import { endedPage, errorPage, notFoundPage, revokedPage } from './views.js';

export function wantsJson(req: Request): boolean {
  return req.path.startsWith('/api/') || (req.get('accept') ?? '').startsWith('application/json');
}

/** A page's own answer to an error: the HTML, and a status when it is not the error's. */
export interface PageAnswer {
  status?: number;
  html: string;
}

type AnswerPage = (e: QwdError) => PageAnswer;

/** From here on, errors of this request are answered with this page (whatever the client accepts). */
export function answerErrorsWith(res: Response, answer: AnswerPage): void {
  res.locals.answerPage = answer;
}

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    // Body parser errors (malformed JSON, too large) are the client's fault.
    const status = (err as { status?: number }).status;
    const e: QwdError = err instanceof QwdError
      ? err
      : status && status >= 400 && status < 500
        ? new QwdError('QWD_BAD_REQUEST', (err as Error).message, {
          userMessage: status === 413 ? 'The request is too large.' : 'The request body is not valid.', cause: err,
        })
        : toQwdError(err);
    // A refusal (no capacity, say) is the service working as configured, not a fault.
    if (e.httpStatus >= 500 && e.family !== 'refused') {
      log.error({ err: e, cause: e.cause, path: req.path }, e.message);
    } else {
      // A flood of rate-limited requests must not become a flood of log lines.
      const level = e.code === 'QWD_RATE_LIMITED' ? 'debug' : 'info';
      log[level]({ code: e.code, path: req.path, msg: e.message }, 'request refused');
    }
    if (res.headersSent) return;
    // A link opened in a browser is answered with a page, whatever it accepts.
    if (e instanceof SessionAccessError && !req.path.startsWith('/api/')) return answerRefusedLink(e, req, res);
    const answerPage = res.locals.answerPage as AnswerPage | undefined;
    if (answerPage) {
      const answer = answerPage(e);
      res.status(answer.status ?? e.httpStatus).type('html').send(answer.html);
      return;
    }
    res.status(e.code === 'QWD_BAD_REQUEST' && status === 413 ? 413 : e.httpStatus);
    if (wantsJson(req)) res.json({ error: { code: e.code, message: e.userMessage } });
    else res.type('html').send(errorPage(e.httpStatus >= 500 ? 'Sorry' : 'Cannot do that', e.userMessage));
  };
}

function answerRefusedLink(e: SessionAccessError, req: Request, res: Response): void {
  if (e.refusal === 'login') return sendToLogin(req, res.set('Cache-Control', 'no-store'));
  res.status(e.httpStatus).type('html').send(refusedLinkPage(e));
}

function refusedLinkPage(e: SessionAccessError): string {
  switch (e.refusal) {
    case 'revoked':
      return revokedPage();
    case 'ended':
      return endedPage(describeEnd(e.ended!.end), e.ended!.endedAt);
    case 'view-only':
      return errorPage('Not allowed', e.userMessage);
    case 'not-owner':
      return errorPage('Not allowed', e.userMessage, `/s/${e.controlToken!}`);
    default: // 'unknown' ('login' was sent to log in)
      return notFoundPage();
  }
}
