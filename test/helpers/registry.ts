import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';

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

function registryConfig(port: number, storageDir: string): string {
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
    '',
  ].join('\n');
}

async function probe(url: string): Promise<number | undefined> {
  try {
    const res = await request(`${url}/v2/`, { method: 'GET', headersTimeout: 1000, bodyTimeout: 1000 });
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
 * Starts `docker-registry serve` on 127.0.0.1:<free port> with filesystem storage, no auth and deletes enabled,
 * and resolves once `GET /v2/` answers 200. Rejects after 15 s, or as soon as the process exits, with the
 * registry's stderr in the message; nothing is left running or on disk then.
 */
export async function startRegistry(opts: { storageDir?: string } = {}): Promise<TestRegistry> {
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
    await fsp.writeFile(configFile, registryConfig(port, storageDir));
    child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    await cleanupDirs();
    throw new Error(`start registry (storage ${storageDir}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
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
      await cleanupDirs();
      const why = spawnError !== undefined ? `spawn failed: ${spawnError.message}` : `exited early (${exitInfo ?? ''})`;
      throw new Error(`start registry ${host}: ${why}; stderr:\n${stderr}`);
    }
    lastStatus = await probe(url);
    if (lastStatus === 200) break;
    if (Date.now() > deadline) {
      await terminate(child);
      await cleanupDirs();
      throw new Error(
        `start registry ${host}: GET /v2/ not 200 after ${READY_TIMEOUT_MS} ms (last status ${String(lastStatus)}); stderr:\n${stderr}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }

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
