// The few parts of the `oidc-provider` package (a devDependency without type
// declarations) that test/helpers/oidc-provider.ts uses.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  interface ProviderClient {
    grantTypeAllowed(grant: string): boolean;
  }

  interface ProviderAccount {
    accountId: string;
    claims: () => Promise<Record<string, unknown>>;
  }

  interface ProviderConfiguration {
    clients?: Array<Record<string, unknown>>;
    jwks?: { keys: unknown[] };
    claims?: Record<string, string[]>;
    scopes?: string[];
    pkce?: { required?: () => boolean };
    issueRefreshToken?: (ctx: unknown, client: ProviderClient, code: unknown) => Promise<boolean>;
    findAccount?: (ctx: unknown, sub: string) => Promise<ProviderAccount | undefined>;
    features?: Record<string, { enabled: boolean }>;
    ttl?: Record<string, number>;
  }

  export default class Provider {
    constructor(issuer: string, configuration: ProviderConfiguration);
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
  }
}
