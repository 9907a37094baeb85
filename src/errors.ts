// One error hierarchy for the whole service. Every error that crosses a module
// boundary is a QwdError: a stable code (listed in INSTALL.md), an HTTP status,
// an operator message (paths, argv, stderr tail) and a userMessage that is safe
// to show a scientist in a browser. Boundaries translate foreign errors and keep
// the original as `cause`.

export type ErrorFamily =
  | 'usage'
  | 'not-found'
  | 'gone'
  | 'refused'
  | 'launch'
  | 'config'
  | 'download'
  | 'internal';

export const ERROR_CODES = {
  QWD_BAD_REQUEST: { status: 400, family: 'usage' },
  QWD_FORBIDDEN: { status: 403, family: 'usage' },
  QWD_CSRF: { status: 403, family: 'usage' },
  QWD_UNAUTHORIZED: { status: 401, family: 'usage' },
  QWD_UNKNOWN_MACHINE: { status: 404, family: 'not-found' },
  QWD_SESSION_NOT_FOUND: { status: 404, family: 'not-found' },
  QWD_NOT_FOUND: { status: 404, family: 'not-found' },
  QWD_SESSION_ENDED: { status: 410, family: 'gone' },
  QWD_ADMISSION_LIMIT: { status: 429, family: 'refused' },
  // Too many requests from one client address (anonymous page loads): wait and retry.
  QWD_RATE_LIMITED: { status: 429, family: 'refused' },
  QWD_ADMISSION_CAPACITY: { status: 503, family: 'refused' },
  // A viewer link or desktop has as many viewers as the bridge allows (bridge.maxViewersPer*).
  QWD_VIEWERS_FULL: { status: 503, family: 'refused' },
  QWD_IMAGE_INVALID: { status: 500, family: 'launch' },
  // A master image's chain names a file outside the machines directory, a protocol or an external data file.
  QWD_IMAGE_UNSAFE: { status: 500, family: 'launch' },
  QWD_OVERLAY_FAILED: { status: 500, family: 'launch' },
  QWD_LAUNCH_FAILED: { status: 500, family: 'launch' },
  QWD_PREPARE_FAILED: { status: 500, family: 'launch' },
  QWD_LAUNCH_TIMEOUT: { status: 504, family: 'launch' },
  QWD_QMP_ERROR: { status: 502, family: 'launch' },
  QWD_QMP_TIMEOUT: { status: 504, family: 'launch' },
  QWD_VNC_UNREACHABLE: { status: 502, family: 'launch' },
  // The desktop's VNC refused the broker's VNC Authentication (wrong password, or no security type we speak).
  QWD_VNC_AUTH_FAILED: { status: 502, family: 'launch' },
  // The session's network namespace, firewall rules or pasta could not be set up (see INSTALL.md, guest network).
  QWD_NETWORK_FAILED: { status: 500, family: 'launch' },
  // Slurm said no to a job as asked (partition, account, QOS, limits, resources): retrying the same request will not
  // help.
  QWD_SLURM_REFUSED: { status: 422, family: 'refused' },
  // A Slurm command failed otherwise (not installed, controller unreachable, timed out, unexpected output).
  QWD_SLURM_FAILED: { status: 502, family: 'launch' },
  // A machine (its descriptor or master image) cannot be removed or replaced while sessions use it.
  QWD_MACHINE_IN_USE: { status: 409, family: 'refused' },
  QWD_DOWNLOAD_FAILED: { status: 502, family: 'download' },
  // qwdctl machines build: a program or file the build needs is missing (the message names the Debian package).
  QWD_BUILD_TOOL_MISSING: { status: 500, family: 'config' },
  // qwdctl machines build failed (no space, not root, a step failed); nothing was left in machinesDir.
  QWD_BUILD_FAILED: { status: 500, family: 'launch' },
  QWD_CHECKSUM_MISMATCH: { status: 502, family: 'download' },
  QWD_CONFIG_INVALID: { status: 500, family: 'config' },
  // The state dir (or a parent) can be written by others: the store is not opened.
  QWD_STATE_DIR_UNSAFE: { status: 500, family: 'config' },
  // A write to the state store failed for lack of disk space or an I/O error; nothing was written.
  QWD_STORE_FAILED: { status: 503, family: 'internal' },
  QWD_MACHINE_INVALID: { status: 500, family: 'config' },
  // The state database stayed locked by another process (SQLite busy) for longer than its busy timeout.
  QWD_STORE_BUSY: { status: 503, family: 'refused' },
  QWD_INTERNAL: { status: 500, family: 'internal' },
} as const satisfies Record<string, { status: number; family: ErrorFamily }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface QwdErrorOptions {
  userMessage?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

export class QwdError extends Error {
  readonly code: ErrorCode;
  readonly httpStatus: number;
  readonly family: ErrorFamily;
  readonly userMessage: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: QwdErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QwdError';
    this.code = code;
    this.httpStatus = ERROR_CODES[code].status;
    this.family = ERROR_CODES[code].family;
    this.userMessage = options.userMessage ?? defaultUserMessage(this.family);
    this.details = options.details;
  }
}

/** Input that a user or an admin got wrong: 400, names the field and the value. */
export class ValidationError extends QwdError {
  constructor(message: string, options: QwdErrorOptions = {}) {
    super('QWD_BAD_REQUEST', message, { userMessage: message, ...options });
    this.name = 'ValidationError';
  }
}

/** Admission refusals: the userMessage says which limit and what to ask for instead. */
export class AdmissionError extends QwdError {
  constructor(
    code: 'QWD_ADMISSION_LIMIT' | 'QWD_ADMISSION_CAPACITY', userMessage: string, details?: Record<string, unknown>,
  ) {
    super(code, userMessage, { userMessage, details });
    this.name = 'AdmissionError';
  }
}

/** The config file or a machine descriptor is wrong; message lists every problem. */
export class ConfigError extends QwdError {
  readonly problems: string[];
  constructor(problems: string[], code: 'QWD_CONFIG_INVALID' | 'QWD_MACHINE_INVALID' = 'QWD_CONFIG_INVALID') {
    super(code, problems.join('\n'), { userMessage: 'The service is misconfigured; an administrator has been told.' });
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

function defaultUserMessage(family: ErrorFamily): string {
  switch (family) {
    case 'usage':
      return 'The request was not understood.';
    case 'not-found':
      return 'Not found.';
    case 'gone':
      return 'This desktop has ended.';
    case 'refused':
      return 'The server cannot start a desktop right now.';
    case 'launch':
      return 'The desktop could not be started. Please try again; if it keeps failing, tell the administrators.';
    case 'config':
      return 'The service is misconfigured; an administrator has been told.';
    case 'download':
      return 'The image could not be downloaded.';
    case 'internal':
      return 'Something went wrong on the server.';
  }
}

/** Wraps anything thrown into a QwdError, keeping it as the cause. */
export function toQwdError(err: unknown, code: ErrorCode = 'QWD_INTERNAL'): QwdError {
  if (err instanceof QwdError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // better-sqlite3's SqliteError: the store was locked past its busy timeout. Nothing was written
  // (the statement or transaction failed as a whole), so trying again later is the answer.
  const sqliteCode = (err as { code?: unknown } | null)?.code;
  if (sqliteCode === 'SQLITE_BUSY' || sqliteCode === 'SQLITE_LOCKED') {
    return new QwdError(
      'QWD_STORE_BUSY', `the state database is locked by another process: ${message}`,
      { userMessage: 'The service is busy. Please try again in a moment.', cause: err },
    );
  }
  return new QwdError(code, message, { cause: err });
}

/** The cause chain as lines, for `--verbose` and logs. */
export function describeCauses(err: unknown): string[] {
  const lines: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    if (current instanceof QwdError) lines.push(`${current.code}: ${current.message}`);
    else if (current instanceof Error) lines.push(`${current.name}: ${current.message}`);
    else lines.push(String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return lines;
}
