import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { messageOf } from './errors.js';

/**
 * NODE_EXTRA_CA_CERTS for berth's registry connections, read when the first one is made.
 *
 * node 20 reads the file named by NODE_EXTRA_CA_CERTS, and its own root store with it, at every
 * process start: ~45 ms of CPU on a 2-vCPU VM for the system bundle, more than the rest of node's
 * start, paid by `berth ps` and `berth run` that never open a TLS connection. So berth's launcher
 * (bin/berth) moves the variable to BERTH_EXTRA_CA_CERTS before node starts, and the registry client
 * adds those certificates here, with node's meaning: they extend node's well-known roots for
 * connections that set no CA of their own (a hosts.toml `ca` replaces both, as an explicit `ca`
 * option does in node), and a file that cannot be read is warned about and ignored.
 *
 * When node itself was given NODE_EXTRA_CA_CERTS (berth run as `node dist/src/cli.js`), node has
 * extended its defaults already and this adds nothing.
 */
export const EXTRA_CA_ENV = 'BERTH_EXTRA_CA_CERTS';

let loaded: { file: string; extra: string | undefined; context: SecureContext | undefined } | undefined;

function load(): { extra: string | undefined; context: SecureContext | undefined } {
  const file = process.env[EXTRA_CA_ENV] ?? '';
  if (loaded !== undefined && loaded.file === file) return loaded;
  let extra: string | undefined;
  if (file !== '') {
    try {
      extra = readFileSync(file, 'utf8');
    } catch (err) {
      process.emitWarning(`Ignoring extra certs from \`${file}\` (${EXTRA_CA_ENV}), load failed: ${messageOf(err)}`);
    }
  }
  // One context, built once: a `ca` list in each connection's options would parse every root again per connection.
  loaded = { file, extra, context: extra === undefined ? undefined : extendedContext(extra) };
  return loaded;
}

/** Options for undici's `connect` on a connection with no TLS setup of its own: the shared context, or none. */
export function defaultTlsConnect(): { secureContext?: SecureContext } {
  const { context } = load();
  return context === undefined ? {} : { secureContext: context };
}

/** The CA list for a connection with a client certificate but no CA of its own: node's roots plus the extra ones, or undefined for node's defaults. */
export function defaultCaList(): string[] | undefined {
  const { extra } = load();
  return extra === undefined ? undefined : [...rootCertificates, extra];
}

/**
 * node's default root store (whichever this node uses: its bundled roots, or OpenSSL's store with
 * --use-openssl-ca) plus the extra certificates, as NODE_EXTRA_CA_CERTS would make it: a context
 * made without `ca` loads the default store, and its native handle takes more CAs (what node itself
 * does for a `ca` option). Where that handle is not there, the bundled roots plus the extra ones.
 */
function extendedContext(extra: string): SecureContext {
  const ctx = createSecureContext({});
  const native = (ctx as unknown as { context?: { addCACert?: (pem: string) => void } }).context;
  if (typeof native?.addCACert !== 'function') return createSecureContext({ ca: [...rootCertificates, extra] });
  native.addCACert(extra);
  return ctx;
}
