import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { pathToFileURL } from 'node:url';
import { RegistryClient, credentialsFromDockerConfig, parseReference } from '../../src/runtime/registry/index.js';
import { BerthError } from '../../src/lib/errors.js';
import { sha256 } from '../../src/lib/digest.js';
import { TRAP_PORTS } from './registry-guard-netns.js';

/**
 * Rule P3 for token realms (issue 14), run by test/integration/registry-auth.test.ts inside a
 * network namespace of its own (`unshare -n -m`, only `lo`, with the addresses and hosts file
 * of ./registry-guard-netns.ts). Each registry answers every request with a 401 whose Bearer
 * challenge names the case's realm; a realm berth should not reach lands on a trap listener
 * (ports 80, 443, 8443 on every local address) and is counted. The client holds basic
 * credentials for every registry, so a followed realm would be sent them: nothing may connect
 * for a refused one.
 *
 * Run as a script it prints one JSON document (`RealmReport`) on stdout. It refuses to run
 * unless `lo` is the only interface, so it can never send anything from the host namespace.
 */

export interface RealmCase {
  name: string;
  registry: 'public' | 'private' | 'loopback';
  realm: string;
  /** refused: ERR_FORBIDDEN matching `reason`, one registry request, no connection. followed: connections to `connectsTo`. */
  expect: 'refused' | 'followed';
  reason?: string;
  connectsTo?: readonly string[];
}

const P = 'private address';
export const REALM_CASES: readonly RealmCase[] = [
  { name: 'loopback registry: unspecified 0.0.0.0 over http', registry: 'loopback', realm: 'http://0.0.0.0:8443/token', expect: 'refused', reason: 'unspecified address 0\\.0\\.0\\.0' },
  { name: 'loopback registry: unspecified 0.0.0.0 over https', registry: 'loopback', realm: 'https://0.0.0.0/token', expect: 'refused', reason: 'unspecified address 0\\.0\\.0\\.0' },
  { name: 'loopback registry: IPv6 unspecified', registry: 'loopback', realm: 'http://[::]:8443/token', expect: 'refused', reason: 'unspecified address ::' },
  { name: 'loopback registry: private over http', registry: 'loopback', realm: 'http://10.0.0.1/token', expect: 'refused', reason: `${P} 10\\.0\\.0\\.1 over plain http` },
  { name: 'loopback registry: private over https', registry: 'loopback', realm: 'https://10.0.0.1/token', expect: 'refused', reason: `${P} 10\\.0\\.0\\.1` },
  { name: 'loopback registry: link-local metadata', registry: 'loopback', realm: 'https://169.254.169.254/latest/token', expect: 'refused', reason: 'link-local address 169\\.254\\.169\\.254' },
  { name: 'loopback registry: name resolving to private', registry: 'loopback', realm: 'http://internal.test/token', expect: 'refused', reason: `internal\\.test resolves to ${P} 10\\.0\\.0\\.1` },
  { name: 'loopback registry: public over plain http', registry: 'loopback', realm: 'http://11.0.0.1/token', expect: 'refused', reason: 'public address 11\\.0\\.0\\.1 over plain http' },
  { name: 'loopback registry: loopback over http is followed', registry: 'loopback', realm: 'http://localhost:8443/token', expect: 'followed', connectsTo: ['127.0.0.1', '::1'] },
  { name: 'public registry: plain http realm on its own address', registry: 'public', realm: 'http://11.0.0.1:8443/token', expect: 'refused', reason: 'plain http' },
  { name: 'public registry: loopback', registry: 'public', realm: 'https://127.0.0.1/token', expect: 'refused', reason: 'loopback address 127\\.0\\.0\\.1' },
  { name: 'public registry: localhost name', registry: 'public', realm: 'https://localhost/token', expect: 'refused', reason: 'loopback name localhost' },
  { name: 'public registry: IPv4-mapped private', registry: 'public', realm: 'https://[::ffff:10.0.0.1]/token', expect: 'refused', reason: `${P} ::ffff:a00:1 \\(IPv4-mapped 10\\.0\\.0\\.1\\)` },
  { name: 'public registry: CGNAT', registry: 'public', realm: 'https://100.64.0.1/token', expect: 'refused', reason: `${P} 100\\.64\\.0\\.1` },
  {
    name: 'public registry: name resolving to private, query redacted',
    registry: 'public',
    realm: 'https://internal.test/token?client_secret=SECRET',
    expect: 'refused',
    reason: `refusing token realm https://internal\\.test/token\\?\\[redacted\\]: internal\\.test resolves to ${P} 10\\.0\\.0\\.1 \\(rule P3\\)$`,
  },
  { name: 'public registry: name resolving to loopback', registry: 'public', realm: 'https://loopback.test/token', expect: 'refused', reason: 'loopback\\.test resolves to loopback address 127\\.0\\.0\\.1' },
  { name: 'public registry: other scheme', registry: 'public', realm: 'ftp://public.test/token', expect: 'refused', reason: 'scheme ftp is not https' },
  { name: 'public registry: public name over https is followed', registry: 'public', realm: 'https://public.test/token', expect: 'followed', connectsTo: ['11.0.0.1'] },
  { name: 'private registry: private over https is followed', registry: 'private', realm: 'https://10.0.0.1:8443/token', expect: 'followed', connectsTo: ['10.0.0.1'] },
  { name: 'private registry: loopback refused', registry: 'private', realm: 'https://127.0.0.1/token', expect: 'refused', reason: 'loopback address 127\\.0\\.0\\.1' },
  { name: 'private registry: link-local refused', registry: 'private', realm: 'https://169.254.169.254/token', expect: 'refused', reason: 'link-local address' },
  { name: 'private registry: plain http refused', registry: 'private', realm: 'http://10.0.0.1:8443/token', expect: 'refused', reason: 'plain http' },
];

export interface RealmOutcome {
  name: string;
  fetched: boolean;
  code?: string;
  message?: string;
  /** Requests the registry saw for this case (retries included). */
  registryRequests: number;
  /** `address:port` of every connection a trap listener accepted during the case. */
  connects: string[];
}

export interface RealmReport {
  interfaces: string[];
  outcomes: RealmOutcome[];
}

const REGISTRY_ADDRESSES = { public: '11.0.0.1', private: '10.0.0.1', loopback: '127.0.0.1' } as const;
const REGISTRY_PORT = 5000;
export const NETNS_SECRET = 'netns-SECRET-pw';

async function main(): Promise<RealmReport> {
  const interfaces = Object.keys(networkInterfaces()).sort();
  if (interfaces.join(',') !== 'lo') throw new Error(`refusing to run outside an isolated network namespace (interfaces: ${interfaces.join(', ')})`);

  const connects: string[] = [];
  const traps: TcpServer[] = [];
  for (const port of TRAP_PORTS) {
    const trap = createTcpServer((sock) => {
      connects.push(`${(sock.localAddress ?? '').replace(/^::ffff:/, '')}:${sock.localPort ?? 0}`);
      sock.destroy();
    });
    trap.listen({ port, host: '::', ipv6Only: false });
    await once(trap, 'listening');
    traps.push(trap);
  }

  let realm = '';
  let registryRequests = 0;
  const registries: Server[] = [];
  for (const host of Object.values(REGISTRY_ADDRESSES)) {
    const srv = createHttpServer((_req, res) => {
      registryRequests++;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="netns-registry",scope="repository:repo/x:pull"`, 'content-length': '0' });
      res.end();
    });
    srv.listen(REGISTRY_PORT, host);
    await once(srv, 'listening');
    registries.push(srv);
  }

  const auths = Object.fromEntries(
    Object.values(REGISTRY_ADDRESSES).map((a) => [`${a}:${REGISTRY_PORT}`, { auth: Buffer.from(`alice:${NETNS_SECRET}`).toString('base64') }]),
  );
  const credentials = credentialsFromDockerConfig(JSON.stringify({ auths }), 'netns config.json');
  const digest = sha256('blob');
  const outcomes: RealmOutcome[] = [];
  try {
    for (const c of REALM_CASES) {
      realm = c.realm;
      registryRequests = 0;
      connects.length = 0;
      // A client per case: a client remembers each registry's realm.
      const client = new RegistryClient({
        retries: 2,
        headersTimeoutMs: 3_000,
        bodyTimeoutMs: 3_000,
        insecureHosts: [`${REGISTRY_ADDRESSES.public}:${REGISTRY_PORT}`, `${REGISTRY_ADDRESSES.private}:${REGISTRY_PORT}`],
        credentials,
      });
      const ref = parseReference(`${REGISTRY_ADDRESSES[c.registry]}:${REGISTRY_PORT}/repo/x:tag`);
      const outcome: RealmOutcome = { name: c.name, fetched: false, registryRequests: 0, connects: [] };
      try {
        const body = await client.fetchBlob(ref, digest);
        body.destroy();
        outcome.fetched = true;
      } catch (err) {
        outcome.code = err instanceof BerthError ? err.code : 'not a BerthError';
        outcome.message = err instanceof Error ? err.message : String(err);
      } finally {
        await client.close();
      }
      await new Promise((resolve) => setTimeout(resolve, 20)); // let the traps' accept callbacks run
      outcome.registryRequests = registryRequests;
      outcome.connects = [...connects];
      outcomes.push(outcome);
    }
  } finally {
    for (const s of registries) s.close();
    for (const t of traps) t.close();
  }
  return { interfaces, outcomes };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (report) => {
      process.stdout.write(`${JSON.stringify(report)}\n`);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
