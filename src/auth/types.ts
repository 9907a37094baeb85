// The one interface every authentication backend implements. A backend says
// who the user is, that the credentials are wrong, or that it could not ask
// (server down, timeout): the chain tries the next one in the last two cases.
// Backends never store or log passwords.

export interface Identity {
  /** The user name sessions are owned by. */
  user: string;
  email: string | null;
  groups: string[];
  admin: boolean;
  /** Which backend vouched for it. */
  via: string;
}

export type AuthResult =
  | { ok: true; identity: Identity }
  | { ok: false; reason: 'invalid'; detail: string }
  | { ok: false; reason: 'unavailable'; detail: string };

export interface AuthBackend {
  readonly name: string;
  readonly type: 'none' | 'local' | 'ldap' | 'imap' | 'smtp' | 'email';
  /** Password backends: check a user name and password. */
  authenticate?(user: string, password: string): Promise<AuthResult>;
}

export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/;

export function invalid(detail: string): AuthResult {
  return { ok: false, reason: 'invalid', detail };
}

export function unavailable(detail: string): AuthResult {
  return { ok: false, reason: 'unavailable', detail };
}
