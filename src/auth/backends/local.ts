// Local accounts kept by the service (scrypt hashes in the store, managed
// with qwdctl users). Unknown users cost the same time as wrong passwords.
import type { UserStore } from '../../store/users.js';
import { DUMMY_HASH, verifyPassword } from '../password-hash.js';
import { invalid, type AuthBackend, type AuthResult } from '../types.js';

export function localBackend(name: string, users: UserStore): AuthBackend {
  return {
    name,
    type: 'local',
    async authenticate(user: string, password: string): Promise<AuthResult> {
      const account = users.get(user);
      const ok = await verifyPassword(password, account?.hash ?? DUMMY_HASH);
      if (!account || !ok) return invalid(account ? 'wrong password' : 'no such local user');
      return {
        ok: true, identity: { user: account.name, email: account.email, groups: [], admin: account.admin, via: name },
      };
    },
  };
}
