import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BerthError, errnoCode } from '../../lib/errors.js';
import { localIoError } from '../../lib/local-io.js';

/**
 * Registry credentials (rule P3: keyed by exact host) and the `WWW-Authenticate` grammar.
 *
 * Where credentials come from:
 * - a Docker `config.json` file (`dockerConfigFile`): the node's, `--registry-config PATH` or
 *   `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. It is read lazily, on the first
 *   401 of a registry (most pulls are anonymous), and read again only when it changed, so a
 *   `docker login` while `berth up` runs is seen at the next retry;
 * - the same format as text (`credentialsFromDockerConfig`): a Kubernetes
 *   `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson` (imagePullSecrets);
 * - several of those in order (`chainCredentials`): pull secrets before the node's file, as the
 *   kubelet does.
 *
 * Lookup is by the registry host exactly as the image reference names it, `host[:port]`
 * (lowercased): `127.0.0.1:5000` never matches an entry for `127.0.0.1`. The one alias is Docker
 * Hub: `docker.io`, `index.docker.io`, `registry-1.docker.io` and `https://index.docker.io/v1/`
 * are one registry. config.json keys may be written as URLs (`https://host:port/v1/`); the scheme
 * and path are dropped, as docker does.
 *
 * Not supported, with an ERR_UNSUPPORTED naming the file when a registry asks for a credential
 * kept that way: credential helpers (`credsStore`, `credHelpers`: berth runs no
 * `docker-credential-*` program) and `registrytoken` entries.
 *
 * Secrets never appear in error messages, details or logs: messages name the file and the host,
 * never a value read from the file.
 */

/** A credential for one registry. */
export type RegistryCredential =
  | { kind: 'basic'; username: string; password: string }
  /** config.json `identitytoken`: an OAuth2 refresh token, exchanged at the token realm. */
  | { kind: 'identity-token'; username: string; refreshToken: string };

export interface FoundCredential {
  credential: RegistryCredential;
  /** Where it came from, for messages: a file path or `imagePullSecret NAME`. Never a secret. */
  origin: string;
}

/**
 * Credentials by registry host. Implementations are cheap to ask repeatedly; `lookup` is only
 * called for hosts that asked for authentication.
 */
export interface CredentialSource {
  /** What to tell a user to check when nothing is found or a credential is refused: a path, `imagePullSecrets`. */
  readonly origin: string;
  /**
   * The credential for `host` (`host[:port]` as the image reference names it), or undefined.
   * Throws ERR_INVALID_ARGUMENT for a malformed source (naming the file and field, never the
   * value), ERR_UNSUPPORTED for a host delegated to a credential helper, ERR_IO when the file
   * cannot be read.
   */
  lookup(host: string): Promise<FoundCredential | undefined>;
}

/** `host[:port]` for a config.json key or an image reference's domain; Docker Hub's names fold to `docker.io`. */
export function normalizeRegistryHost(key: string): string {
  let h = key.trim().toLowerCase();
  h = h.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  const slash = h.indexOf('/');
  if (slash >= 0) h = h.slice(0, slash);
  if (h === 'index.docker.io' || h === 'registry-1.docker.io') return 'docker.io';
  return h;
}

type Entry = FoundCredential | { unsupported: string };

interface ParsedConfig {
  entries: Map<string, Entry>;
  /** `credsStore`: every host without an inline credential is delegated to it. */
  credsStore: string | undefined;
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function parseDockerConfig(text: string, origin: string): ParsedConfig {
  const bad = (where: string, why: string): BerthError =>
    new BerthError('ERR_INVALID_ARGUMENT', `read registry credentials ${origin}: ${where}: ${why}`, { details: { origin } });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // The parser's message quotes the text around the error, which may be a password.
    throw bad('not JSON', 'expected a Docker config.json object ({"auths": {"HOST": {"auth": "base64(user:password)"}}})');
  }
  if (!isObject(doc)) throw bad('top level', 'not a JSON object');
  const entries = new Map<string, Entry>();
  /** Keys written exactly as the host win over keys that only normalise to it (`docker.io` over `https://index.docker.io/v1/`). */
  const exact = new Set<string>();
  const auths = doc['auths'];
  if (auths !== undefined && !isObject(auths)) throw bad('auths', 'not an object');
  for (const [key, raw] of Object.entries(auths ?? {})) {
    const host = normalizeRegistryHost(key);
    const where = `auths.${JSON.stringify(key)}`;
    if (!isObject(raw)) throw bad(where, 'not an object');
    const entry = parseAuthEntry(raw, where, origin, bad);
    if (entry === undefined) continue;
    const isExact = key.trim().toLowerCase() === host;
    if (entries.has(host) && (exact.has(host) || !isExact)) continue;
    entries.set(host, entry);
    if (isExact) exact.add(host);
  }
  const helpers = doc['credHelpers'];
  if (helpers !== undefined && !isObject(helpers)) throw bad('credHelpers', 'not an object');
  for (const [key, helper] of Object.entries(helpers ?? {})) {
    const host = normalizeRegistryHost(key);
    // docker asks a host's credHelper before its auths entry.
    entries.set(host, { unsupported: `credHelpers names the credential helper docker-credential-${String(helper)} for it` });
  }
  const store = doc['credsStore'];
  return { entries, credsStore: typeof store === 'string' && store !== '' ? store : undefined };
}

function parseAuthEntry(
  raw: Record<string, unknown>,
  where: string,
  origin: string,
  bad: (where: string, why: string) => BerthError,
): Entry | undefined {
  const str = (field: string): string | undefined => {
    const v = raw[field];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw bad(`${where}.${field}`, 'not a string');
    return v;
  };
  let username = str('username');
  let password = str('password');
  const auth = str('auth');
  if (auth !== undefined) {
    if (!BASE64_RE.test(auth)) throw bad(`${where}.auth`, 'not base64 of "user:password"');
    const decoded = Buffer.from(auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw bad(`${where}.auth`, 'not base64 of "user:password" (no colon after decoding)');
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const identityToken = str('identitytoken');
  if (identityToken !== undefined) {
    return { credential: { kind: 'identity-token', username: username ?? '', refreshToken: identityToken }, origin };
  }
  if (username !== undefined && username !== '' && password !== undefined) {
    return { credential: { kind: 'basic', username, password }, origin };
  }
  if (str('registrytoken') !== undefined) return { unsupported: `${where} holds a registrytoken, which berth does not use` };
  if (username !== undefined || password !== undefined) throw bad(where, 'needs both a username and a password (or "auth")');
  return undefined; // `{}`: docker's marker for a credential kept in credsStore
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function lookupParsed(parsed: ParsedConfig, host: string, origin: string): FoundCredential | undefined {
  const key = normalizeRegistryHost(host);
  const entry = parsed.entries.get(key);
  const unsupported = (why: string): BerthError =>
    new BerthError(
      'ERR_UNSUPPORTED',
      `registry credentials for ${key} in ${origin}: ${why}; berth runs no credential helper: put "auth" (base64 of user:password) under auths.${JSON.stringify(key)} in a config.json of its own (--registry-config)`,
      { details: { host: key, origin } },
    );
  if (entry !== undefined) {
    if ('unsupported' in entry) throw unsupported(entry.unsupported);
    return entry;
  }
  if (parsed.credsStore !== undefined) throw unsupported(`credsStore delegates every registry to docker-credential-${parsed.credsStore}`);
  return undefined;
}

/**
 * A source over config.json text: a kubernetes.io/dockerconfigjson Secret's `.dockerconfigjson`
 * or a file already read. Parses at once; throws ERR_INVALID_ARGUMENT naming `origin` and the
 * field (never a value).
 */
export function credentialsFromDockerConfig(text: string, origin: string): CredentialSource {
  const parsed = parseDockerConfig(text, origin);
  return {
    origin,
    lookup: async (host) => lookupParsed(parsed, host, origin),
  };
}

/**
 * A source over a config.json file, read on the first lookup and again only when its size,
 * mtime or inode changed. A missing file is no credentials unless `required` (an explicit
 * `--registry-config`): then ERR_INVALID_ARGUMENT. Unreadable: ERR_IO naming the path.
 */
export function dockerConfigFile(file: string, opts: { required?: boolean } = {}): CredentialSource {
  let cached: { stamp: string; parsed: ParsedConfig } | undefined;
  const what = 'read registry credentials';
  return {
    origin: file,
    async lookup(host) {
      let stamp: string;
      try {
        const st = await fsp.stat(file);
        if (!st.isFile()) throw new BerthError('ERR_INVALID_ARGUMENT', `${what} ${file}: not a regular file`, { details: { origin: file } });
        stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch (err) {
        if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') {
          if (opts.required === true) {
            throw new BerthError('ERR_INVALID_ARGUMENT', `${what} ${file}: no such file (--registry-config)`, { details: { origin: file } });
          }
          cached = undefined;
          return undefined;
        }
        throw localIoError(err, what, file);
      }
      if (cached?.stamp !== stamp) {
        let text: string;
        try {
          // Same limit as a manifest: a config.json is a few KiB.
          const fh = await fsp.open(file, 'r');
          try {
            const buf = Buffer.alloc(4 * 1024 * 1024 + 1);
            const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
            if (bytesRead > 4 * 1024 * 1024) throw new BerthError('ERR_INVALID_ARGUMENT', `${what} ${file}: larger than 4 MiB`, { details: { origin: file } });
            text = buf.subarray(0, bytesRead).toString('utf8');
          } finally {
            await fh.close();
          }
        } catch (err) {
          if (err instanceof BerthError) throw err;
          throw localIoError(err, what, file);
        }
        cached = { stamp, parsed: parseDockerConfig(text, file) };
      }
      return lookupParsed(cached.parsed, host, file);
    },
  };
}

/** Asks each source in turn; the first that has the host answers (pull secrets, then the node's file). */
export function chainCredentials(...sources: readonly CredentialSource[]): CredentialSource {
  return {
    origin: sources.map((s) => s.origin).join(' or '),
    async lookup(host) {
      for (const s of sources) {
        const found = await s.lookup(host);
        if (found !== undefined) return found;
      }
      return undefined;
    },
  };
}

/**
 * Docker's default location: `$DOCKER_CONFIG/config.json`, else `HOME/.docker/config.json`.
 * Pure: the caller hands in the environment (cli.ts builds the config; no module reads process.env).
 */
export function defaultDockerConfigPath(env: Readonly<Record<string, string | undefined>>, home: string): string {
  const dir = env['DOCKER_CONFIG'];
  return dir !== undefined && dir !== '' ? path.join(dir, 'config.json') : path.join(home, '.docker', 'config.json');
}

/** A short stable identity for a credential, for cache keys: tokens got with one credential never serve another. */
export function credentialKey(found: FoundCredential | undefined): string {
  if (found === undefined) return 'anonymous';
  const c = found.credential;
  const secret = c.kind === 'basic' ? `${c.username}\0${c.password}` : `${c.username}\0${c.refreshToken}`;
  return createHash('sha256').update(`${c.kind}\0${secret}`).digest('hex').slice(0, 32);
}

/** `Basic base64(user:password)`. */
export function basicAuthorization(c: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

// ---------------------------------------------------------------------------------------------
// WWW-Authenticate (RFC 9110 §11.6.1)

export interface AuthChallenge {
  /** Lowercased: `bearer`, `basic`. */
  scheme: string;
  /** Parameter names lowercased; the first of a repeated name wins. */
  params: Readonly<Record<string, string>>;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses every challenge of one or more `WWW-Authenticate` values, e.g.
 * `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"`.
 * Quoted strings may hold commas and `\"`; a header may carry several challenges
 * (`Basic realm="x", Bearer realm="y"`). Malformed trailing input ends parsing; what was
 * parsed before it is returned. token68 forms (`Negotiate abc==`) are skipped.
 */
export function parseWwwAuthenticate(values: string | readonly string[] | undefined): AuthChallenge[] {
  if (values === undefined) return [];
  const out: AuthChallenge[] = [];
  for (const value of typeof values === 'string' ? [values] : values) out.push(...parseOne(value.slice(0, 16 * 1024)));
  return out;
}

function parseOne(s: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  let i = 0;
  const skip = (re: RegExp): void => {
    while (i < s.length && re.test(s[i] ?? '')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < s.length && TCHAR.test(s[i] ?? '')) i++;
    return s.slice(start, i);
  };
  for (;;) {
    skip(/[ \t,]/);
    if (i >= s.length) return out;
    const scheme = token();
    if (scheme === '') return out;
    const params: Record<string, string> = {};
    out.push({ scheme: scheme.toLowerCase(), params });
    skip(/[ \t]/);
    // Parameters until a token that is not followed by `=` (the next challenge's scheme).
    for (;;) {
      skip(/[ \t,]/);
      const mark = i;
      const name = token();
      if (name === '') {
        if (i < s.length && s[i] === '=') return out; // malformed
        break;
      }
      skip(/[ \t]/);
      if (s[i] !== '=') {
        i = mark; // a new challenge starts here
        break;
      }
      i++;
      if (s[i] === '=' || s[i] === ',' || i >= s.length) {
        // token68 (`abc==`): not a parameter; skip it.
        skip(/=/);
        continue;
      }
      skip(/[ \t]/);
      let value: string;
      if (s[i] === '"') {
        i++;
        let v = '';
        for (;;) {
          if (i >= s.length) return out; // unterminated quoted string
          const c = s[i++] ?? '';
          if (c === '"') break;
          if (c === '\\') v += s[i++] ?? '';
          else v += c;
        }
        value = v;
      } else {
        value = token();
      }
      const key = name.toLowerCase();
      if (!(key in params)) params[key] = value;
    }
  }
}
