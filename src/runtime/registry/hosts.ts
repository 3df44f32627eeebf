import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { rootCertificates } from 'node:tls';
import * as path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import { normalizeRegistryHost } from './auth.js';
import { isLoopbackHost } from './reference.js';

/**
 * Per-registry configuration in containerd's `certs.d` layout (containerd docs/hosts.md), read
 * from `--registry-hosts-dir` (default /etc/berth/certs.d):
 *
 *   DIR/<host[:port]>/hosts.toml      (also DIR/<host>_<port>_/ first, and DIR/_default/ last)
 *
 *   server = "https://registry.example:5000"     # default: the reference's own registry
 *   ca = "ca.pem"                                # string or array; paths relative to hosts.toml
 *   client = [["client.cert", "client.key"]]     # or "client.pem" (cert and key in one file)
 *   skip_verify = false
 *   [host."https://mirror.internal"]             # tried first, in file order
 *     capabilities = ["pull", "resolve"]
 *     ca = "mirror-ca.pem"
 *   [host."http://127.0.0.1:5001"]               # plain http only as written here
 *     capabilities = ["pull"]
 *
 * Semantics (as containerd): the `[host]` entries are tried in order, then the server. Only
 * endpoints with `resolve` may turn a tag into a digest (a public mirror should only `pull`:
 * it is not trusted with names); endpoints with `pull` serve blobs and manifests by digest,
 * which are verified against the digest whoever serves them. A `[host]` without `capabilities`
 * may pull and resolve; the server may do both unless the root `capabilities` says otherwise.
 * Requests to a mirror carry `?ns=<registry>`. Custom CAs are added to the system roots for that
 * endpoint only; `skip_verify` turns certificate checks off for it. A host directory without
 * hosts.toml is read the docker way: `*.crt` are CAs, `X.cert` + `X.key` a client pair, for the
 * default server.
 *
 * berth's differences: plain `http://` is used only when written in hosts.toml (that is what
 * configures a host insecure) or for loopback registries by default; unknown fields, `proxy`
 * and malformed values are ERR_INVALID_ARGUMENT naming the file and field (containerd ignores
 * unknown keys); `push` is accepted and unused (berth never pushes). The files are read again
 * when a hosts.toml or a host directory changes (mtime), so edits need no restart.
 */

export type HostCapability = 'pull' | 'resolve' | 'push';

export interface EndpointTls {
  /** PEM CAs: the system roots plus the configured ones. Undefined: node's defaults. */
  ca?: string[];
  cert?: Buffer[];
  key?: Buffer[];
  rejectUnauthorized: boolean;
  /** Identity of this TLS setup, for connection pools. */
  id: string;
}

export interface RegistryEndpoint {
  /** `scheme://host[:port]`. */
  origin: string;
  /** The API root requests go under: `/v2`, or the configured path with `override_path`. */
  apiRoot: string;
  /** `host[:port]` as credentials and tokens are keyed (rule P3: by exact host). */
  host: string;
  capabilities: ReadonlySet<HostCapability>;
  /** Not the reference's own registry: requests carry `ns=<registry>`. */
  mirror: boolean;
  tls: EndpointTls | undefined;
  /** `[header]`: sent to this endpoint's own origin only, never to redirect hops. */
  headers: Readonly<Record<string, string>>;
  /** Where this endpoint was configured, for messages: a hosts.toml path or `default`. */
  source: string;
}

export interface HostsConfigOptions {
  /** The certs.d directory; undefined: no per-registry configuration. */
  dir: string | undefined;
  /** A missing `dir` is an error (it was given explicitly) rather than "no configuration". */
  required: boolean;
  /** Hosts (host[:port]) whose default server is plain http besides loopback ones. */
  insecureHosts: readonly string[];
}

const ALL: ReadonlySet<HostCapability> = new Set(['pull', 'resolve', 'push']);
const PULL_RESOLVE: ReadonlySet<HostCapability> = new Set(['pull', 'resolve']);
const MAX_HOSTS_TOML_BYTES = 1024 * 1024;
const MAX_PEM_BYTES = 1024 * 1024;

interface Cached {
  stamp: string;
  endpoints: RegistryEndpoint[];
}

/** The endpoints to ask for one registry, from the certs.d directory. */
export class RegistryHosts {
  private readonly cache = new Map<string, Cached>();

  constructor(private readonly opts: HostsConfigOptions) {}

  /**
   * The endpoints for the registry `domain` (as the reference names it: `docker.io`,
   * `127.0.0.1:5000`), in the order to try them: mirrors, then the server. Throws
   * ERR_INVALID_ARGUMENT for a malformed hosts.toml or certificate file (naming it), ERR_IO when
   * one cannot be read.
   */
  async endpoints(domain: string): Promise<RegistryEndpoint[]> {
    const dir = this.opts.dir;
    if (dir === undefined) return [this.defaultServer(domain, undefined)];
    const found = await this.findHostDir(dir, domain);
    if (found === undefined) return [this.defaultServer(domain, undefined)];
    const cached = this.cache.get(domain);
    if (cached !== undefined && cached.stamp === found.stamp) return cached.endpoints;
    const endpoints = found.toml ? await this.fromHostsToml(found.dir, domain) : [this.defaultServer(domain, await certFiles(found.dir))];
    this.cache.set(domain, { stamp: found.stamp, endpoints });
    return endpoints;
  }

  private defaultServer(domain: string, tls: EndpointTls | undefined): RegistryEndpoint {
    const plain = isLoopbackHost(domain) || this.opts.insecureHosts.includes(domain);
    const host = domain === 'docker.io' ? 'registry-1.docker.io' : domain;
    return {
      origin: `${plain ? 'http' : 'https'}://${host}`,
      apiRoot: '/v2',
      host: normalizeRegistryHost(domain),
      capabilities: ALL,
      mirror: false,
      tls,
      headers: {},
      source: 'default',
    };
  }

  /** The first existing of `<host>_<port>_`, `<host[:port]>`, `_default`, with a stamp of what was read. */
  private async findHostDir(dir: string, domain: string): Promise<{ dir: string; toml: boolean; stamp: string } | undefined> {
    const names: string[] = [];
    const m = /^(.*):(\d+)$/.exec(domain);
    if (m !== null) names.push(`${m[1]}_${m[2]}_`);
    names.push(domain, '_default');
    try {
      await fsp.stat(dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' && !this.opts.required) return undefined;
      throw hostsError(dir, errnoCode(err) === 'ENOENT' ? 'no such directory (--registry-hosts-dir)' : messageOf(err), err);
    }
    for (const name of names) {
      const hostDir = path.join(dir, name);
      let st;
      try {
        st = await fsp.stat(hostDir);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') continue;
        throw hostsError(hostDir, messageOf(err), err);
      }
      if (!st.isDirectory()) continue;
      const file = path.join(hostDir, 'hosts.toml');
      try {
        const f = await fsp.stat(file);
        return { dir: hostDir, toml: true, stamp: `${hostDir} ${st.mtimeMs} ${f.ino} ${f.mtimeMs} ${f.size}` };
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw hostsError(file, messageOf(err), err);
      }
      return { dir: hostDir, toml: false, stamp: `${hostDir} ${st.mtimeMs}` };
    }
    return undefined;
  }

  private async fromHostsToml(hostDir: string, domain: string): Promise<RegistryEndpoint[]> {
    const file = path.join(hostDir, 'hosts.toml');
    const text = await readLimited(file, MAX_HOSTS_TOML_BYTES);
    let doc: Record<string, unknown>;
    try {
      doc = parseToml(text) as Record<string, unknown>;
    } catch (err) {
      const where = err instanceof TomlError ? `line ${err.line} column ${err.column}: ` : '';
      throw hostsError(file, `not TOML: ${where}${messageOf(err).split('\n')[0] ?? ''}`, err);
    }
    const root = new FieldReader(file, '', doc);
    root.known(['server', 'capabilities', 'ca', 'client', 'skip_verify', 'header', 'override_path', 'dial_timeout', 'host']);
    const out: RegistryEndpoint[] = [];
    const hosts = root.table('host');
    for (const [key, value] of Object.entries(hosts ?? {})) {
      const where = `host.${JSON.stringify(key)}`;
      if (!isTable(value)) throw hostsError(file, `${where}: not a table`);
      const f = new FieldReader(file, `${where}.`, value);
      f.known(['capabilities', 'ca', 'client', 'skip_verify', 'header', 'override_path', 'dial_timeout']);
      out.push(await endpointOf({ file, hostDir, url: key, where, fields: f, domain, defaultCaps: PULL_RESOLVE }));
    }
    const server = root.string('server');
    if (server === undefined) {
      const d = this.defaultServer(domain, undefined);
      out.push(await endpointOf({ file, hostDir, url: d.origin, where: 'server', fields: root, domain, defaultCaps: ALL, implicit: true }));
    } else {
      out.push(await endpointOf({ file, hostDir, url: server, where: 'server', fields: root, domain, defaultCaps: ALL }));
    }
    return out;
  }
}

async function endpointOf(o: {
  file: string;
  hostDir: string;
  url: string;
  where: string;
  fields: FieldReader;
  domain: string;
  defaultCaps: ReadonlySet<HostCapability>;
  /** The server is the reference's own registry, not written in the file. */
  implicit?: boolean;
}): Promise<RegistryEndpoint> {
  const { file, fields: f } = o;
  // containerd takes a bare host as https.
  const written = /^[a-z][a-z0-9+.-]*:\/\//i.test(o.url) ? o.url : `https://${o.url}`;
  let u: URL;
  try {
    u = new URL(written);
  } catch {
    throw hostsError(file, `${o.where}: ${JSON.stringify(o.url)} is not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw hostsError(file, `${o.where}: scheme ${u.protocol.replace(/:$/, '')} is not http or https`);
  if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
    throw hostsError(file, `${o.where}: ${JSON.stringify(o.url)} may name only a scheme, host, port and path (credentials go in the Docker config.json)`);
  }
  const overridePath = f.boolean('override_path') ?? false;
  const p = u.pathname.replace(/\/+$/, '');
  const apiRoot = overridePath ? p : p === '' ? '/v2' : p.endsWith('/v2') ? p : `${p}/v2`;
  const caps = f.capabilities() ?? o.defaultCaps;
  const skipVerify = f.boolean('skip_verify') ?? false;
  const caFiles = f.paths('ca');
  const client = f.clientPairs();
  const headers = f.headers();
  f.duration('dial_timeout');
  let tls: EndpointTls | undefined;
  if (caFiles.length > 0 || client.length > 0 || skipVerify) {
    const ca = caFiles.length === 0 ? undefined : [...rootCertificates, ...(await Promise.all(caFiles.map((c) => readPem(resolveIn(o.hostDir, c), `${o.where} ca`))))];
    const certs: Buffer[] = [];
    const keys: Buffer[] = [];
    for (const [cert, key] of client) {
      const c = await readPem(resolveIn(o.hostDir, cert), `${o.where} client`);
      certs.push(Buffer.from(c));
      keys.push(Buffer.from(key === '' ? c : await readPem(resolveIn(o.hostDir, key), `${o.where} client key`)));
    }
    tls = {
      ...(ca !== undefined ? { ca } : {}),
      ...(certs.length > 0 ? { cert: certs, key: keys } : {}),
      rejectUnauthorized: !skipVerify,
      id: tlsId(ca, certs, keys, skipVerify),
    };
  }
  const host = normalizeRegistryHost(u.host);
  return {
    origin: u.origin,
    apiRoot,
    host,
    capabilities: caps,
    mirror: o.implicit !== true && host !== normalizeRegistryHost(o.domain) && !(o.domain === 'docker.io' && u.host === 'registry-1.docker.io'),
    tls,
    headers,
    source: file,
  };
}

/** Reads a host dir without hosts.toml the docker way: `*.crt` CAs, `X.cert` + `X.key` client pairs. */
async function certFiles(hostDir: string): Promise<EndpointTls | undefined> {
  const names = (await fsp.readdir(hostDir)).sort();
  const cas = names.filter((n) => n.endsWith('.crt'));
  const certs = names.filter((n) => n.endsWith('.cert'));
  if (cas.length === 0 && certs.length === 0) return undefined;
  const ca = cas.length === 0 ? undefined : [...rootCertificates, ...(await Promise.all(cas.map((n) => readPem(path.join(hostDir, n), 'ca'))))];
  const cert: Buffer[] = [];
  const key: Buffer[] = [];
  for (const n of certs) {
    const keyName = `${n.slice(0, -'.cert'.length)}.key`;
    if (!names.includes(keyName)) throw hostsError(path.join(hostDir, n), `client certificate without its key ${keyName}`);
    cert.push(Buffer.from(await readPem(path.join(hostDir, n), 'client')));
    key.push(Buffer.from(await readPem(path.join(hostDir, keyName), 'client key')));
  }
  for (const n of names.filter((x) => x.endsWith('.key'))) {
    if (!names.includes(`${n.slice(0, -'.key'.length)}.cert`)) throw hostsError(path.join(hostDir, n), `client key without its certificate ${n.slice(0, -'.key'.length)}.cert`);
  }
  return {
    ...(ca !== undefined ? { ca } : {}),
    ...(cert.length > 0 ? { cert, key } : {}),
    rejectUnauthorized: true,
    id: tlsId(ca, cert, key, false),
  };
}

/** Typed access to one table of hosts.toml; every error names the file and the field. */
class FieldReader {
  constructor(
    private readonly file: string,
    private readonly prefix: string,
    private readonly t: Record<string, unknown>,
  ) {}

  private bad(field: string, why: string): BerthError {
    return hostsError(this.file, `${this.prefix}${field}: ${why}`);
  }

  known(fields: readonly string[]): void {
    for (const k of Object.keys(this.t)) {
      if (k === 'proxy') throw this.bad(k, 'proxies are not supported by berth');
      if (!fields.includes(k)) throw this.bad(k, `unknown field (known: ${fields.join(', ')})`);
    }
  }

  string(field: string): string | undefined {
    const v = this.t[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') throw this.bad(field, 'must be a non-empty string');
    return v;
  }

  boolean(field: string): boolean | undefined {
    const v = this.t[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw this.bad(field, 'must be true or false');
    return v;
  }

  table(field: string): Record<string, unknown> | undefined {
    const v = this.t[field];
    if (v === undefined) return undefined;
    if (!isTable(v)) throw this.bad(field, 'must be a table');
    return v;
  }

  capabilities(): ReadonlySet<HostCapability> | undefined {
    const v = this.t['capabilities'];
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw this.bad('capabilities', 'must be an array of "pull", "resolve", "push"');
    const out = new Set<HostCapability>();
    for (const c of v) {
      if (c !== 'pull' && c !== 'resolve' && c !== 'push') throw this.bad('capabilities', `${JSON.stringify(c)} is not one of "pull", "resolve", "push"`);
      out.add(c);
    }
    return out;
  }

  /** `ca`: a path or an array of paths. */
  paths(field: string): string[] {
    const v = this.t[field];
    if (v === undefined) return [];
    const list = typeof v === 'string' ? [v] : v;
    if (!Array.isArray(list) || !list.every((p) => typeof p === 'string' && p !== '')) throw this.bad(field, 'must be a path or an array of paths');
    return list as string[];
  }

  /** `client`: a path, an array of paths, or an array of [cert, key] pairs (key "" = in the cert file). */
  clientPairs(): [string, string][] {
    const v = this.t['client'];
    if (v === undefined) return [];
    const list = typeof v === 'string' ? [v] : v;
    if (!Array.isArray(list)) throw this.bad('client', 'must be a path, an array of paths or an array of [cert, key] pairs');
    return list.map((e): [string, string] => {
      if (typeof e === 'string' && e !== '') return [e, ''];
      if (Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && e[0] !== '' && typeof e[1] === 'string') return [e[0], e[1]];
      throw this.bad('client', 'each entry must be a path or a [cert, key] pair of paths');
    });
  }

  headers(): Record<string, string> {
    const h = this.table('header');
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(h ?? {})) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)) throw this.bad(`header.${k}`, 'not a valid header name');
      const values = typeof v === 'string' ? [v] : v;
      if (!Array.isArray(values) || !values.every((x) => typeof x === 'string' && !/[\r\n\0]/.test(x))) throw this.bad(`header.${k}`, 'must be a string or an array of strings');
      if (k.toLowerCase() === 'authorization' || k.toLowerCase() === 'host') throw this.bad(`header.${k}`, 'may not be set here');
      out[k.toLowerCase()] = (values as string[]).join(', ');
    }
    return out;
  }

  /** `dial_timeout`: a Go duration (`500ms`, `1s`, `1m`); accepted, checked, and not used (undici's connect timeout applies). */
  duration(field: string): void {
    const v = this.t[field];
    if (v === undefined) return;
    if (typeof v !== 'string' || !/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(v)) throw this.bad(field, 'must be a duration such as "1s"');
  }
}

/** Pools are shared by identical TLS setups, and a changed certificate file gets a pool of its own. */
function tlsId(ca: readonly string[] | undefined, cert: readonly Buffer[], key: readonly Buffer[], skipVerify: boolean): string {
  const h = createHash('sha256');
  for (const part of [...(ca ?? ['-']), '|', ...cert, '|', ...key, '|', skipVerify ? 'skip' : 'verify']) h.update(part).update('\0');
  return h.digest('hex');
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function resolveIn(hostDir: string, p: string): string {
  return path.isAbsolute(p) ? p : path.join(hostDir, p);
}

async function readLimited(file: string, limit: number): Promise<string> {
  let fh;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    throw hostsError(file, messageOf(err), err, 'ERR_IO');
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw hostsError(file, 'not a regular file');
    if (st.size > limit) throw hostsError(file, `${st.size} bytes is over the ${limit} byte limit`);
    return (await fh.readFile()).toString('utf8');
  } finally {
    await fh.close();
  }
}

async function readPem(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readLimited(file, MAX_PEM_BYTES);
  } catch (err) {
    if (err instanceof BerthError && errnoCode(err.cause) === 'ENOENT') throw hostsError(file, `${what}: no such file`, err);
    throw err;
  }
  if (!text.includes('-----BEGIN ')) throw hostsError(file, `${what}: not a PEM file`);
  return text;
}

function hostsError(file: string, reason: string, cause?: unknown, code: 'ERR_INVALID_ARGUMENT' | 'ERR_IO' = 'ERR_INVALID_ARGUMENT'): BerthError {
  return new BerthError(code, `read registry hosts config ${file}: ${reason}`, { details: { file }, ...(cause !== undefined ? { cause } : {}) });
}
