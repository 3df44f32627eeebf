/**
 * One error class for all of berth. Callers branch on `code`, never on text.
 * Messages follow `<operation> <identifiers>: <reason>`, lowercase.
 */
export type ErrorCode =
  | 'ERR_INVALID_ARGUMENT' // bad flag, bad reference, bad value handed to an API
  | 'ERR_INVALID_MANIFEST' // a YAML manifest that does not parse or validate
  | 'ERR_INVALID_IMAGE' // an image document, layer or config that breaks a rule
  | 'ERR_DIGEST_MISMATCH' // bytes that do not hash to the expected digest
  | 'ERR_UNSAFE_CONTENT' // a tar entry or path that tries to escape or is forbidden
  | 'ERR_FORBIDDEN' // a registry sent berth where rule P3 forbids (a redirect to loopback, private, link-local…)
  | 'ERR_UNSUPPORTED' // a valid input berth does not implement (yet)
  | 'ERR_NOT_FOUND'
  | 'ERR_ALREADY_EXISTS'
  | 'ERR_CONFLICT' // a host resource another pod or process holds (a hostPort already bound)
  | 'ERR_REGISTRY' // registry answered with an error status
  | 'ERR_NETWORK' // connection, timeout, reset
  | 'ERR_RUNTIME' // runc/conmon/mount failed
  | 'ERR_LOCKED' // another berth holds the state lock
  | 'ERR_RESOURCE_EXHAUSTED' // the machine ran out: ENOSPC, EMFILE, ENOMEM, the free-space floor
  | 'ERR_IO' // the local disk or file system failed: EIO, EROFS, EACCES under berth's root (never the network)
  | 'ERR_LIMIT_EXCEEDED' // an input larger than a configured limit (entries, file size, path bytes…)
  | 'ERR_TIMEOUT' // an external process or wait passed its deadline (and was killed)
  | 'ERR_PRECONDITION' // host lacks something berth needs (root, runc, overlay)
  | 'ERR_INTERNAL';

/**
 * Retryable vs terminal, in one place. The controller backs off on retryable codes.
 *
 * Resources: ERR_RESOURCE_EXHAUSTED means the host ran short (disk, descriptors, memory), which
 * frees up on its own or after GC, so it is retried. ERR_LIMIT_EXCEEDED means the input itself is
 * larger than a configured limit: the same input fails the same way until the limit or the input
 * changes (a config or manifest edit, which enqueues the key anyway), so it is terminal.
 * ERR_TIMEOUT: the process was killed at its deadline; a wedged runc or mount may recover.
 * ERR_FORBIDDEN: a registry answer that would send berth where rule P3 forbids is a policy
 * refusal, not a registry fault: asking again gets the same answer, so it is terminal.
 * ERR_IO: a local disk error (EIO, a file system remounted read-only) clears when the device or
 * mount is repaired, which edits no manifest, so it is retried with the controller's backoff. It is
 * kept apart from ERR_NETWORK so that the puller never re-downloads a blob because of its own disk.
 */
export const RETRYABLE: Readonly<Record<ErrorCode, boolean>> = {
  ERR_INVALID_ARGUMENT: false,
  ERR_INVALID_MANIFEST: false,
  ERR_INVALID_IMAGE: false,
  ERR_DIGEST_MISMATCH: true,
  ERR_UNSAFE_CONTENT: false,
  ERR_FORBIDDEN: false,
  ERR_UNSUPPORTED: false,
  ERR_NOT_FOUND: false,
  ERR_ALREADY_EXISTS: false,
  ERR_CONFLICT: true,
  ERR_REGISTRY: true,
  ERR_NETWORK: true,
  ERR_RUNTIME: true,
  ERR_LOCKED: true,
  ERR_RESOURCE_EXHAUSTED: true,
  ERR_IO: true,
  ERR_LIMIT_EXCEEDED: false,
  ERR_TIMEOUT: true,
  ERR_PRECONDITION: false,
  ERR_INTERNAL: false,
};

export type ErrorDetails = Readonly<Record<string, string | number | boolean | undefined>>;

export class BerthError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BerthError';
    this.code = code;
    this.details = options.details ?? {};
  }

  get retryable(): boolean {
    return RETRYABLE[this.code];
  }
}

export function isBerthError(err: unknown, code?: ErrorCode): err is BerthError {
  return err instanceof BerthError && (code === undefined || err.code === code);
}

/** Node system errors carry `code` strings such as ENOENT. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === 'string' ? c : undefined;
  }
  return undefined;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Every code, in the order of the union (the README's table follows it; a unit test checks). */
export const ERROR_CODES: readonly ErrorCode[] = Object.keys(RETRYABLE) as ErrorCode[];

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.hasOwn(RETRYABLE, s);
}

/** The code an error is reported with: its own, or ERR_INTERNAL for anything not a BerthError. */
export function codeOf(err: unknown): ErrorCode {
  return err instanceof BerthError ? err.code : 'ERR_INTERNAL';
}

/**
 * The process exit code a command that fails with `code` ends with: 2 for input berth refuses
 * to read (a bad flag or manifest: fix the input), 1 for everything else (kubectl's split; `diff`
 * exits 2 on any error since 1 means "changes pending").
 */
export function exitCodeOf(code: ErrorCode): 1 | 2 {
  return code === 'ERR_INVALID_MANIFEST' || code === 'ERR_INVALID_ARGUMENT' ? 2 : 1;
}

/**
 * One line of the CLI's stderr for a refusal or failure: `error ERR_…: <operation> <ids>: <reason>`.
 * Scripts key on the code, so every error line of every command goes through here.
 */
export function errorLine(code: ErrorCode, message: string): string {
  return `error ${code}: ${message}\n`;
}

/**
 * A reason stored as text with its code in front (`ERR_…: message`, how the controller records a
 * failure that blocked a pod), split back into the two; `fallback` when it carries none.
 */
export function splitCoded(text: string, fallback: ErrorCode): { code: ErrorCode; message: string } {
  const m = /^(ERR_[A-Z_]+): /.exec(text);
  return m?.[1] !== undefined && isErrorCode(m[1]) ? { code: m[1], message: text.slice(m[0].length) } : { code: fallback, message: text };
}
