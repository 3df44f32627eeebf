import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { pathToFileURL } from 'node:url';
import { RegistryClient, parseReference } from '../../src/runtime/registry/index.js';
import { BerthError } from '../../src/lib/errors.js';
import { sha256 } from '../../src/lib/digest.js';

/**
 * Rule P3 redirect cases, run by test/integration/registry-guard.test.ts inside a network
 * namespace of its own (`unshare -n -m`) where only `lo` exists. The parent gives `lo` the
 * addresses below and bind-mounts a hosts file over /etc/hosts, so every target a case names
 * is a local address of this namespace: if berth followed a forbidden redirect, the
 * connection would land on one of the `TRAP_PORTS` listeners and be counted; and nothing can
 * leave the namespace anyway.
 *
 * Registries (plain HTTP, each answering every request with a 307 to the case's `location`):
 * `public` on 11.0.0.1:5000 (a public-class address, configured insecure), `private` on
 * 10.0.0.1:5000 (likewise), `loopback` on 127.0.0.1:5000.
 *
 * Run as a script it prints one JSON document (`NetnsReport`) on stdout. It refuses to run
 * unless `lo` is the only interface, so it can never send anything from the host namespace.
 */

/** Addresses the parent adds to `lo` in the namespace (`ip addr add A dev lo`). */
export const NETNS_ADDRESSES = ['10.0.0.1/32', '11.0.0.1/32', '169.254.169.254/32', '100.64.0.1/32', 'fc00::1/128'] as const;

/** Ports where a followed redirect would connect; each gets a dual-stack listener that counts and hangs up. */
export const TRAP_PORTS = [80, 443, 8443] as const;

export const HOSTS_FILE = [
  '127.0.0.1 localhost',
  '::1 localhost',
  '10.0.0.1 internal.test',
  '11.0.0.1 public.test',
  '11.0.0.1 mixed.test',
  '10.0.0.1 mixed.test',
  '169.254.169.254 metadata.test',
  'fc00::1 ula.test',
  '127.0.0.1 loopback.test',
  '11.0.0.1 rebind.test',
  '',
].join('\n');

export interface GuardCase {
  name: string;
  registry: 'public' | 'private' | 'loopback';
  location: string;
  /** refused: ERR_FORBIDDEN matching `reason`, one registry request, no connection. followed: a connection to `connectsTo`. */
  expect: 'refused' | 'followed';
  /** A regular expression source the refusal message must match. */
  reason?: string;
  /** The local addresses (as the trap listener sees them) a followed hop may reach. */
  connectsTo?: readonly string[];
  /** Replaces the hosts file before the case (DNS rebinding between two fetches). */
  hosts?: string;
}

const P = 'private address';
export const GUARD_CASES: readonly GuardCase[] = [
  // From a registry on a public address: only public https targets.
  { name: 'private literal', registry: 'public', location: 'https://10.0.0.1/store/blob?X-Amz-Signature=secret', expect: 'refused', reason: `refusing redirect to https://10\\.0\\.0\\.1/store/blob\\?\\[redacted\\]: ${P} 10\\.0\\.0\\.1 \\(rule P3\\)$` },
  { name: '0.0.0.0 with port', registry: 'public', location: 'https://0.0.0.0:8443/x', expect: 'refused', reason: 'unspecified address 0\\.0\\.0\\.0' },
  { name: 'https://0/ (0.0.0.0)', registry: 'public', location: 'https://0/x', expect: 'refused', reason: 'unspecified address 0\\.0\\.0\\.0' },
  { name: 'IPv6 unspecified', registry: 'public', location: 'https://[::]/x', expect: 'refused', reason: 'unspecified address ::' },
  { name: 'IPv4-mapped loopback (hex)', registry: 'public', location: 'https://[::ffff:7f00:1]/x', expect: 'refused', reason: 'loopback address ::ffff:7f00:1 \\(IPv4-mapped 127\\.0\\.0\\.1\\)' },
  { name: 'IPv4-mapped loopback (dotted)', registry: 'public', location: 'https://[::ffff:127.0.0.1]/x', expect: 'refused', reason: 'loopback address ::ffff:7f00:1 \\(IPv4-mapped 127\\.0\\.0\\.1\\)' },
  { name: 'IPv4-mapped private', registry: 'public', location: 'https://[::ffff:10.0.0.1]/x', expect: 'refused', reason: `${P} ::ffff:a00:1 \\(IPv4-mapped 10\\.0\\.0\\.1\\)` },
  { name: 'IPv4-compatible loopback', registry: 'public', location: 'https://[::127.0.0.1]/x', expect: 'refused', reason: 'loopback address ::7f00:1 \\(IPv4-compatible 127\\.0\\.0\\.1\\)' },
  { name: 'NAT64 private', registry: 'public', location: 'https://[64:ff9b::a00:1]/x', expect: 'refused', reason: `${P} 64:ff9b::a00:1 \\(NAT64 10\\.0\\.0\\.1\\)` },
  { name: 'link-local metadata', registry: 'public', location: 'https://169.254.169.254/latest/meta-data/', expect: 'refused', reason: 'link-local address 169\\.254\\.169\\.254' },
  { name: 'IPv6 link-local', registry: 'public', location: 'https://[fe80::1]/x', expect: 'refused', reason: 'link-local address fe80::1' },
  { name: 'IPv6 ULA', registry: 'public', location: 'https://[fc00::1]/x', expect: 'refused', reason: `${P} fc00::1` },
  { name: 'CGNAT', registry: 'public', location: 'https://100.64.0.1/x', expect: 'refused', reason: `${P} 100\\.64\\.0\\.1` },
  { name: 'decimal loopback', registry: 'public', location: 'https://2130706433/x', expect: 'refused', reason: 'loopback address 127\\.0\\.0\\.1' },
  { name: 'hex loopback', registry: 'public', location: 'https://0x7f.1/x', expect: 'refused', reason: 'loopback address 127\\.0\\.0\\.1' },
  { name: 'octal loopback', registry: 'public', location: 'https://0177.0.0.1/x', expect: 'refused', reason: 'loopback address 127\\.0\\.0\\.1' },
  { name: 'short private 10.1', registry: 'public', location: 'https://10.1/x', expect: 'refused', reason: `${P} 10\\.0\\.0\\.1` },
  { name: 'IPv6 loopback', registry: 'public', location: 'https://[::1]/x', expect: 'refused', reason: 'loopback address ::1' },
  { name: 'multicast', registry: 'public', location: 'https://224.0.0.1/x', expect: 'refused', reason: 'multicast address 224\\.0\\.0\\.1' },
  { name: 'broadcast', registry: 'public', location: 'https://255.255.255.255/x', expect: 'refused', reason: 'broadcast address 255\\.255\\.255\\.255' },
  { name: 'localhost name', registry: 'public', location: 'https://localhost/x', expect: 'refused', reason: 'loopback name localhost' },
  { name: 'name resolving to private', registry: 'public', location: 'https://internal.test/x?token=secret', expect: 'refused', reason: `refusing redirect to https://internal\\.test/x\\?\\[redacted\\]: internal\\.test resolves to ${P} 10\\.0\\.0\\.1 \\(rule P3\\)$` },
  { name: 'name resolving to public AND private', registry: 'public', location: 'https://mixed.test/x', expect: 'refused', reason: `mixed\\.test resolves to ${P} 10\\.0\\.0\\.1` },
  { name: 'name resolving to link-local', registry: 'public', location: 'https://metadata.test/x', expect: 'refused', reason: 'metadata\\.test resolves to link-local address 169\\.254\\.169\\.254' },
  { name: 'name resolving to ULA', registry: 'public', location: 'https://ula.test/x', expect: 'refused', reason: `ula\\.test resolves to ${P} fc00::1` },
  { name: 'name resolving to loopback', registry: 'public', location: 'https://loopback.test/x', expect: 'refused', reason: 'loopback\\.test resolves to loopback address 127\\.0\\.0\\.1' },
  { name: 'plain http to a public address', registry: 'public', location: 'http://11.0.0.1/x', expect: 'refused', reason: 'plain http' },
  { name: 'plain http to a public name', registry: 'public', location: 'http://public.test/x', expect: 'refused', reason: 'plain http' },
  { name: 'other scheme', registry: 'public', location: 'ftp://public.test/x', expect: 'refused', reason: 'scheme ftp is not https' },
  { name: 'control: public literal over https is followed', registry: 'public', location: 'https://11.0.0.1/x', expect: 'followed', connectsTo: ['11.0.0.1'] },
  { name: 'control: public name over https is followed', registry: 'public', location: 'https://public.test/x', expect: 'followed', connectsTo: ['11.0.0.1'] },
  { name: 'rebind: name public at first is followed', registry: 'public', location: 'https://rebind.test/x', expect: 'followed', connectsTo: ['11.0.0.1'] },
  {
    name: 'rebind: same name now loopback is refused at connect',
    registry: 'public',
    location: 'https://rebind.test/x',
    expect: 'refused',
    reason: 'rebind\\.test resolves to loopback address 127\\.0\\.0\\.1',
    hosts: HOSTS_FILE.replace('11.0.0.1 rebind.test', '127.0.0.1 rebind.test'),
  },
  // From a registry on a private address: private targets too, still nothing else.
  { name: 'private registry: private target over https is followed', registry: 'private', location: 'https://10.0.0.1/x', expect: 'followed', connectsTo: ['10.0.0.1'] },
  { name: 'private registry: private name over https is followed', registry: 'private', location: 'https://internal.test/x', expect: 'followed', connectsTo: ['10.0.0.1'] },
  { name: 'private registry: loopback refused', registry: 'private', location: 'https://127.0.0.1/x', expect: 'refused', reason: 'loopback address 127\\.0\\.0\\.1' },
  { name: 'private registry: link-local refused', registry: 'private', location: 'https://169.254.169.254/x', expect: 'refused', reason: 'link-local address' },
  { name: 'private registry: plain http refused', registry: 'private', location: 'http://10.0.0.1/x', expect: 'refused', reason: 'plain http' },
  // From a registry on loopback: loopback targets (plain http too), never private.
  { name: 'loopback registry: loopback https followed', registry: 'loopback', location: 'https://127.0.0.1/x', expect: 'followed', connectsTo: ['127.0.0.1'] },
  { name: 'loopback registry: localhost http followed', registry: 'loopback', location: 'http://localhost/x', expect: 'followed', connectsTo: ['127.0.0.1', '::1'] },
  { name: 'loopback registry: private https refused', registry: 'loopback', location: 'https://10.0.0.1/x', expect: 'refused', reason: `${P} 10\\.0\\.0\\.1` },
  { name: 'loopback registry: private over http refused', registry: 'loopback', location: 'http://10.0.0.1/x', expect: 'refused', reason: `${P} 10\\.0\\.0\\.1 over plain http` },
  { name: 'loopback registry: name resolving to private over http refused', registry: 'loopback', location: 'http://internal.test/x', expect: 'refused', reason: `internal\\.test resolves to ${P} 10\\.0\\.0\\.1` },
];

export interface CaseOutcome {
  name: string;
  /** The fetch resolved (never expected: the trap listeners hang up). */
  fetched: boolean;
  code?: string;
  message?: string;
  /** Requests the registry saw for this case (retries included). */
  registryRequests: number;
  /** `address:port` of every connection a trap listener accepted during the case. */
  connects: string[];
}

export interface NetnsReport {
  interfaces: string[];
  outcomes: CaseOutcome[];
}

const REGISTRY_ADDRESSES = { public: '11.0.0.1', private: '10.0.0.1', loopback: '127.0.0.1' } as const;
const REGISTRY_PORT = 5000;

async function main(hostsPath: string): Promise<NetnsReport> {
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

  let location = '';
  let registryRequests = 0;
  const registries: Server[] = [];
  for (const host of Object.values(REGISTRY_ADDRESSES)) {
    const srv = createHttpServer((_req, res) => {
      registryRequests++;
      res.writeHead(307, { location, 'content-length': '0' });
      res.end();
    });
    srv.listen(REGISTRY_PORT, host);
    await once(srv, 'listening');
    registries.push(srv);
  }

  const client = new RegistryClient({
    retries: 2,
    headersTimeoutMs: 3_000,
    bodyTimeoutMs: 3_000,
    insecureHosts: [`${REGISTRY_ADDRESSES.public}:${REGISTRY_PORT}`, `${REGISTRY_ADDRESSES.private}:${REGISTRY_PORT}`],
  });
  const digest = sha256('blob');
  const outcomes: CaseOutcome[] = [];
  try {
    for (const c of GUARD_CASES) {
      if (c.hosts !== undefined) writeFileSync(hostsPath, c.hosts); // same inode: the bind mount sees it
      location = c.location;
      registryRequests = 0;
      connects.length = 0;
      const ref = parseReference(`${REGISTRY_ADDRESSES[c.registry]}:${REGISTRY_PORT}/repo/x:tag`);
      const outcome: CaseOutcome = { name: c.name, fetched: false, registryRequests: 0, connects: [] };
      try {
        const body = await client.fetchBlob(ref, digest);
        body.destroy();
        outcome.fetched = true;
      } catch (err) {
        outcome.code = err instanceof BerthError ? err.code : 'not a BerthError';
        outcome.message = err instanceof Error ? err.message : String(err);
      }
      await new Promise((resolve) => setTimeout(resolve, 20)); // let the traps' accept callbacks run
      outcome.registryRequests = registryRequests;
      outcome.connects = [...connects];
      outcomes.push(outcome);
    }
  } finally {
    await client.close();
    for (const s of registries) s.close();
    for (const t of traps) t.close();
  }
  return { interfaces, outcomes };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const hostsPath = process.argv[2];
  if (hostsPath === undefined) {
    process.stderr.write('usage: registry-guard-netns.js HOSTS_FILE (run inside unshare -n -m; see test/integration/registry-guard.test.ts)\n');
    process.exit(2);
  }
  main(hostsPath).then(
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
