// Who may do what with a desktop through one of its links: the one access policy of the
// pages (/s/<token>…) and the JSON API (/api/v1/sessions/<token>…). A pure decision over the
// token's lookup and the asker; a refusal is thrown as a SessionAccessError, which the error
// handler answers (a page for a page, JSON for the API). Not here: the WebSocket bridge's
// own checks before an upgrade (src/bridge/ws-bridge.ts), and who may create or list.
import { QwdError, type ErrorCode } from '../errors.js';
import type { Identity } from '../auth/types.js';
import type { TokenLookup } from '../sessions/manager.js';
import type { EndedRow, LinkKind, SessionRow } from '../store/session-rows.js';
import { describeEnd } from '../store/end-reason.js';

/** What a link gives this asker: `manage` = may stop, extend or re-link the desktop. */
export interface SessionAccess {
  row: SessionRow;
  access: LinkKind;
  manage: boolean;
}

export interface Asker {
  identity: Identity | null | undefined;
  /** No authentication configured (auth "none"): holding the control link is what counts. */
  open: boolean;
  /** auth.linksRequireLogin applies: without a login no link opens, known or not. */
  mustLogIn: boolean;
}

/** To see the desktop, or to change it; `what` names the change in the refusal ("change it"). */
export type AccessNeed = { kind: 'see' } | { kind: 'change'; what: string };

export type Refusal = 'login' | 'unknown' | 'ended' | 'revoked' | 'view-only' | 'not-owner';

/** A link refused: `refusal` says why, for the page that answers it. */
export class SessionAccessError extends QwdError {
  constructor(
    readonly refusal: Refusal,
    code: ErrorCode,
    message: string,
    userMessage: string,
    /** How an ended or revoked link ended. */
    readonly ended?: EndedRow,
    /** A refused change links back to the desktop's page. */
    readonly controlToken?: string,
  ) {
    super(code, message, { userMessage });
    this.name = 'SessionAccessError';
  }
}

/** What a revoked link answers (page, API, viewer): the desktop itself may well go on running. */
export const REVOKED_LINK_MESSAGE = 'This link was revoked by the owner of the desktop; ask them for a new one.';
export const LOGIN_FIRST_MESSAGE = 'Log in first, or send an API token (Authorization: Bearer …).';

/**
 * The access a link gives, or the refusal. In order: a login where links need one (before the
 * token says anything); an unknown, revoked or ended link; for a change, a view-only link and
 * then the ownership rule: with real authentication the owner or an admin, with auth "none"
 * (where nothing proves a name) whoever holds the control link.
 */
export function decideSessionAccess(found: TokenLookup, asker: Asker, need: AccessNeed): SessionAccess {
  if (asker.mustLogIn && !asker.identity) {
    throw new SessionAccessError('login', 'QWD_UNAUTHORIZED', 'link used without login', LOGIN_FIRST_MESSAGE);
  }
  if (found.kind === 'unknown') {
    const userMessage = 'No desktop has this token.';
    throw new SessionAccessError('unknown', 'QWD_SESSION_NOT_FOUND', 'unknown session token', userMessage);
  }
  if (found.kind === 'ended') {
    const { ended } = found;
    // A revoked link's desktop may still run: it is not said to have ended.
    if (ended.end.code === 'revoked') {
      const message = `session ${ended.sessionId}: this link was revoked`;
      throw new SessionAccessError('revoked', 'QWD_SESSION_ENDED', message, REVOKED_LINK_MESSAGE, ended);
    }
    const message = `session ${ended.sessionId} ended: ${ended.end.detail}`;
    const userMessage = `This desktop has ended (${describeEnd(ended.end)}).`;
    throw new SessionAccessError('ended', 'QWD_SESSION_ENDED', message, userMessage, ended);
  }
  const { row, access } = found;
  const who = asker.identity;
  const manage = access === 'control' && (asker.open || (!!who && (who.admin || who.user === row.owner)));
  if (need.kind === 'see') return { row, access, manage };
  if (access !== 'control') {
    const userMessage = 'A view-only link cannot change this desktop.';
    throw new SessionAccessError('view-only', 'QWD_FORBIDDEN', 'view-only token used for a change', userMessage);
  }
  if (!manage) {
    const message = `${who?.user ?? 'anonymous'} may not change session ${row.id} of ${row.owner}`;
    const userMessage = `Only the owner of this desktop (or an administrator) can ${need.what}.`;
    throw new SessionAccessError('not-owner', 'QWD_FORBIDDEN', message, userMessage, undefined, row.token);
  }
  return { row, access, manage };
}
