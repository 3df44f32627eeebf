/**
 * What a failed pull says to a person: the registry's answer in one short line and what to
 * check, instead of the raw response body. PURE (no imports): the controller words its
 * pull failures with it, and unit tests pin the texts.
 */

/** The parts of a BerthError a pull failure is worded from (the registry puts status, url and body in details). */
export interface PullFailure {
  code: string;
  message: string;
  details?: Readonly<Record<string, string | number | boolean | undefined>>;
}

const CHECK = 'check the tag, the registry address and credentials';
const EXCERPT_CHARS = 120;

/** One line of at most EXCERPT_CHARS characters. */
function oneLine(s: string, max = EXCERPT_CHARS): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/**
 * The gist of a registry's error body: the OCI distribution `errors[].message` (and code)
 * when it is that JSON — even cut short — else a short excerpt of the text.
 */
export function registryAnswer(body: string): string {
  try {
    const doc = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
    const parts = (doc.errors ?? []).map((e) => [typeof e.message === 'string' ? e.message : '', typeof e.code === 'string' ? `(${e.code})` : ''].filter((x) => x !== '').join(' '));
    if (parts.length > 0) return oneLine(parts.join('; '));
  } catch {
    // cut at the registry client's limit, or not JSON: fall through
  }
  const messages = [...body.matchAll(/"message"\s*:\s*"([^"]*)"/g)].map((m) => m[1] ?? '');
  if (messages.length > 0) return oneLine(messages.join('; '));
  return oneLine(body);
}

/** The registry host of a canonical reference (`host[:port]/path:tag`). */
function registryOf(ref: string): string {
  return ref.split('/')[0] ?? ref;
}

/**
 * `pull REF: <what happened>; <what to check>`, one line. The raw message stays the error's
 * cause (logs at debug); only a short excerpt of a response body is kept here.
 */
export function explainPullFailure(ref: string, e: PullFailure): string {
  const status = typeof e.details?.['status'] === 'number' ? e.details['status'] : undefined;
  const body = typeof e.details?.['body'] === 'string' ? e.details['body'] : undefined;
  const answer = body !== undefined && body.trim() !== '' ? ` "${registryAnswer(body)}"` : '';
  const host = registryOf(ref);
  if (status === 404 || (e.code === 'ERR_NOT_FOUND' && status !== undefined)) {
    return `pull ${ref}: not found: registry ${host} answered ${status ?? 404}${answer}; ${CHECK}`;
  }
  // The registry client's own authentication message names the credentials file and what to check.
  if (e.details?.['auth'] !== undefined) return `pull ${ref}: ${e.message.replace(/^fetch (manifest|blob) \S+: /, '')}`;
  if (status === 401 || status === 403) {
    return `pull ${ref}: access denied: registry ${host} answered ${status}${answer}; ${CHECK}`;
  }
  if (status !== undefined) {
    return `pull ${ref}: registry ${host} answered ${status}${answer}; retried with back-off; ${CHECK}`;
  }
  if (e.code === 'ERR_NETWORK') {
    // "fetch manifest host/path:tag: connect ECONNREFUSED …": the part after the operation.
    const why = e.message.replace(/^fetch (manifest|blob) \S+: /, '');
    return `pull ${ref}: cannot reach registry ${host}: ${oneLine(why)}; check the registry address (host:port), that the registry runs, and the network`;
  }
  // A message that already names this pull (the images layer says `pull REF: …`) is not prefixed twice
  // (regression pull-error-names-ref-twice).
  const msg = oneLine(e.message, 300);
  return msg.startsWith(`pull ${ref}: `) ? msg : `pull ${ref}: ${msg}`;
}
