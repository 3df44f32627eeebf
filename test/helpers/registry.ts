import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent, request, type Dispatcher } from 'undici';

/** A running `docker-registry` (CNCF distribution 2.8) on loopback, owned by one test file. */
export interface TestRegistry {
  /** `127.0.0.1:PORT`, the form image references use. */
  readonly host: string;
  /** `http://127.0.0.1:PORT`, the form HTTP clients use. */
  readonly url: string;
  /** Blob and manifest storage root (the registry's `storage.filesystem.rootdirectory`). */
  readonly storageDir: string;
  /**
   * SIGTERM, then SIGKILL after 5 s; removes the temp dirs this helper created (never a caller-supplied
   * `storageDir`). Idempotent.
   */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const STDERR_KEEP = 16 * 1024;

/** Asks the kernel for a free port. Another process may take it before the registry binds; tests accept that race. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('free port: server has no tcp address');
  return addr.port;
}

/**
 * Authentication for a test registry (distribution's `auth:` section):
 * - `htpasswd`: basic auth against an htpasswd file of bcrypt entries (see `htpasswdEntry`);
 * - `token`: bearer tokens from `realm`, JWTs whose `iss` is `issuer`, `aud` is `service`, signed
 *   by a key whose certificate (or a chain up to it) is in the PEM file `rootCertBundle`.
 */
export type TestRegistryAuth =
  | { htpasswd: { path: string; realm?: string } }
  | { token: { realm: string; service: string; issuer: string; rootCertBundle: string } };

function authConfig(auth: TestRegistryAuth | undefined): string[] {
  if (auth === undefined) return [];
  if ('htpasswd' in auth) {
    return ['auth:', '  htpasswd:', `    realm: ${JSON.stringify(auth.htpasswd.realm ?? 'berth-test')}`, `    path: ${JSON.stringify(auth.htpasswd.path)}`];
  }
  const t = auth.token;
  return [
    'auth:',
    '  token:',
    `    realm: ${JSON.stringify(t.realm)}`,
    `    service: ${JSON.stringify(t.service)}`,
    `    issuer: ${JSON.stringify(t.issuer)}`,
    `    rootcertbundle: ${JSON.stringify(t.rootCertBundle)}`,
  ];
}

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * One htpasswd line `user:$2…` with a bcrypt hash (the only hash docker-registry accepts), from
 * `htpasswd -nbB` (apache2-utils) when installed, else from perl's crypt(3), which is libxcrypt
 * on Debian and knows bcrypt (`$2b$`). Cost 5 keeps tests fast.
 */
export async function htpasswdEntry(user: string, password: string): Promise<string> {
  const run = (cmd: string, args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => (err === null ? resolve(stdout) : reject(new Error(`${cmd}: ${err.message} ${stderr}`))));
    });
  let hash: string;
  try {
    const out = await run('htpasswd', ['-nbB', '-C', '5', user, password]);
    hash = out.trim().slice(user.length + 1);
  } catch {
    // 22 salt characters; the last one carries 2 bits, so only these 4 are canonical.
    const salt = [...randomBytes(21)].map((b) => BCRYPT_ALPHABET[b % 64] ?? '.').join('') + ('.Oeu'[(randomBytes(1)[0] ?? 0) % 4] ?? '.');
    hash = (await run('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, `$2b$05$${salt}`])).trim();
  }
  if (!/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) throw new Error(`htpasswd entry for ${user}: no bcrypt hash produced (got ${JSON.stringify(hash.slice(0, 7))}…); install apache2-utils`);
  return `${user}:${hash}`;
}

/**
 * TLS for a test registry (distribution's `http.tls`): PEM server certificate and key files, and
 * `clientCas` to require client certificates signed by them. `clientCert`/`clientKey` are what
 * the readiness probe presents when client certificates are required.
 */
export interface TestRegistryTls {
  certificate: string;
  key: string;
  clientCas?: readonly string[];
  clientCert?: string;
  clientKey?: string;
}

function tlsConfig(tls: TestRegistryTls | undefined): string[] {
  if (tls === undefined) return [];
  return [
    '  tls:',
    `    certificate: ${JSON.stringify(tls.certificate)}`,
    `    key: ${JSON.stringify(tls.key)}`,
    ...(tls.clientCas !== undefined ? ['    clientcas:', ...tls.clientCas.map((c) => `      - ${JSON.stringify(c)}`)] : []),
  ];
}

function registryConfig(port: number, storageDir: string, auth?: TestRegistryAuth, tls?: TestRegistryTls): string {
  // JSON is valid YAML; JSON.stringify quotes paths with spaces or colons correctly.
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(storageDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${JSON.stringify(`127.0.0.1:${port}`)}`,
    ...tlsConfig(tls),
    ...authConfig(auth),
    '',
  ].join('\n');
}

async function probe(url: string, dispatcher?: Dispatcher): Promise<number | undefined> {
  try {
    const res = await request(`${url}/v2/`, { method: 'GET', headersTimeout: 1000, bodyTimeout: 1000, ...(dispatcher !== undefined ? { dispatcher } : {}) });
    await res.body.dump();
    return res.statusCode;
  } catch {
    return undefined; // not listening yet
  }
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts `docker-registry serve` on 127.0.0.1:<free port> with filesystem storage, no auth (unless `auth` is
 * given) and deletes enabled, and resolves once `GET /v2/` answers 200 (401 with `auth`). Rejects after 15 s,
 * or as soon as the process exits, with the registry's stderr in the message; nothing is left running or on
 * disk then.
 */
export async function startRegistry(opts: { storageDir?: string; auth?: TestRegistryAuth; tls?: TestRegistryTls } = {}): Promise<TestRegistry> {
  // Our own storage lives inside configDir, so removing configDir removes exactly what this helper created.
  const configDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-registry-'));
  const storageDir = opts.storageDir ?? path.join(configDir, 'storage');
  const cleanupDirs = async (): Promise<void> => {
    await fsp.rm(configDir, { recursive: true, force: true });
  };

  let port: number;
  let configFile: string;
  let child: ChildProcess;
  try {
    await fsp.mkdir(storageDir, { recursive: true });
    port = await freePort();
    configFile = path.join(configDir, 'config.yml');
    await fsp.writeFile(configFile, registryConfig(port, storageDir, opts.auth, opts.tls));
    child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    await cleanupDirs();
    throw new Error(`start registry (storage ${storageDir}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const host = `127.0.0.1:${port}`;
  const url = `${opts.tls !== undefined ? 'https' : 'http'}://${host}`;
  // The probe only asks whether it answers; the tests check certificates.
  const tls = opts.tls;
  const probeAgent =
    tls === undefined
      ? undefined
      : new Agent({
          connect: {
            rejectUnauthorized: false,
            ...(tls.clientCert !== undefined && tls.clientKey !== undefined ? { cert: await fsp.readFile(tls.clientCert), key: await fsp.readFile(tls.clientKey) } : {}),
          },
        });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEEP);
  });
  let exitInfo: string | undefined;
  let spawnError: Error | undefined;
  child.on('error', (err) => {
    spawnError = err;
  });
  child.on('exit', (code, signal) => {
    exitInfo = signal === null ? `exit code ${String(code)}` : `signal ${signal}`;
  });

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastStatus: number | undefined;
  for (;;) {
    if (spawnError !== undefined || exitInfo !== undefined) {
      await probeAgent?.close();
      await cleanupDirs();
      const why = spawnError !== undefined ? `spawn failed: ${spawnError.message}` : `exited early (${exitInfo ?? ''})`;
      throw new Error(`start registry ${host}: ${why}; stderr:\n${stderr}`);
    }
    lastStatus = await probe(url, probeAgent);
    if (lastStatus === (opts.auth === undefined ? 200 : 401)) break;
    if (Date.now() > deadline) {
      await probeAgent?.close();
      await terminate(child);
      await cleanupDirs();
      throw new Error(
        `start registry ${host}: GET /v2/ not 200 after ${READY_TIMEOUT_MS} ms (last status ${String(lastStatus)}); stderr:\n${stderr}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await probeAgent?.close();

  let stopped: Promise<void> | undefined;
  return {
    host,
    url,
    storageDir,
    stop() {
      stopped ??= (async () => {
        await terminate(child);
        await cleanupDirs();
      })();
      return stopped;
    },
  };
}
