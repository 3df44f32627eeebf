import { realpathSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import * as path from 'node:path';
import { BerthError } from '../lib/errors.js';
import type { ProgressEvent } from '../reconciler/controller.js';
import { renderStep } from '../reconciler/render.js';
import type { RuntimeConfig } from '../runtime/index.js';
import { answerNdjson } from './ndjson.js';

/**
 * `berth images pull` answered by the daemon in one request (`POST /v1/images/pull`,
 * lib/fast-pull's client), so the CLI process loads neither commander nor the runtime: node's
 * start-up plus one socket round trip, as containerd's `ctr images pull` hands its pull to the
 * running containerd. The pull is the service's (`BerthService.pull`: the runtime façade's
 * pull under its lease), the very call the commander path makes.
 *
 * The pull uses the root and registry options the daemon was started with. The request names who
 * asks (`PullClient`: the --root and registry flags it gives); a daemon started with other values
 * of those flags answers an error before anything runs, and the
 * CLI's normal path (which sends the same client) reports it as ERR_CONFLICT: a flag is never
 * silently ignored, and the CLI cannot pull in-process while `berth up` holds the state lock.
 *
 * The answer is NDJSON over an HTTP/1.0 response (no chunked framing; the body ends when the
 * connection closes): `{"progress": event, "line": text}` per step start, layer report and end
 * (`line`: the plan line the CLI prints for the step, so the client needs no renderer of
 * steps), none with `quiet`; then one `{"result": {ref, digest}}` or `{"error": {code, message}}`.
 * A client that goes away does not stop the pull: it runs to its end under its lease and
 * records the image (or leaves its partial ingests for the next pull to resume), as an
 * in-process pull killed mid-way would, so the content store stays consistent either way.
 */

/** Who asks for a pull: the --root and registry flags its command line gives (null: not given). */
export interface PullClient {
  /** --root, resolved (not realpath'd: the daemon does that); null: not given (the daemon's root is used). */
  root: string | null;
  /** --registry-config, resolved; null: not given (the daemon's own is used). */
  registryConfig: string | null;
  /** --registry-hosts-dir, resolved; null: not given. */
  registryHostsDir: string | null;
}

/** The `client` of a request, or undefined when it is not one (an older CLI: nothing to check). */
export function asPullClient(v: unknown): PullClient | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const c = v as Record<string, unknown>;
  const orNull = (x: unknown): x is string | null => x === null || typeof x === 'string';
  if (!orNull(c['root']) || !orNull(c['registryConfig']) || !orNull(c['registryHostsDir'])) return undefined;
  return { root: c['root'], registryConfig: c['registryConfig'], registryHostsDir: c['registryHostsDir'] };
}

/** What the daemon pulls with: its (real) root and its runtime's registry options. */
export interface PullSettings extends Pick<RuntimeConfig, 'registryConfig' | 'registryHostsDir'> {
  root: string;
  pid: number;
}

/**
 * Why the daemon must not take a pull `client` asks for, or undefined when it may: the client
 * gives a --root, --registry-config or --registry-hosts-dir whose value is not the one the
 * daemon was started with. Flags not given are not compared: as with every command the daemon
 * answers on its socket, its root and, like containerd's, its registry options are the ones a
 * pull through it uses (the client's environment, e.g. $DOCKER_CONFIG, is not consulted).
 */
export function pullConflict(daemon: PullSettings, client: PullClient): string | undefined {
  const who = `berth up (pid ${daemon.pid})`;
  const advice = 'drop the flag, or stop berth up to pull with it in-process';
  if (client.root !== null && realRoot(client.root) !== daemon.root) return `images pull: ${who} serves --root ${daemon.root}, this command names --root ${client.root}; ${advice}`;
  const config = daemon.registryConfig;
  if (client.registryConfig !== null && config?.path !== client.registryConfig) {
    return `images pull --registry-config ${client.registryConfig}: ${who} reads registry credentials from ${config === undefined ? 'no file' : `${config.path}${config.required ? '' : ' (its default)'}`}; ${advice}`;
  }
  const hosts = daemon.registryHostsDir;
  if (client.registryHostsDir !== null && hosts?.path !== client.registryHostsDir) {
    return `images pull --registry-hosts-dir ${client.registryHostsDir}: ${who} uses ${hosts === undefined ? 'no registry hosts directory' : `${hosts.path}${hosts.required ? '' : ' (its default)'}`}; ${advice}`;
  }
  return undefined;
}

/** `root` as a real path; as resolved when it does not exist (then it is not the daemon's, whose root exists). */
function realRoot(root: string): string {
  try {
    return realpathSync(path.resolve(root));
  } catch {
    return path.resolve(root);
  }
}

/** The body of `POST /v1/images/pull`. */
export interface PullRequest {
  ref: string;
  /** `os/arch[/variant]` as `--platform` takes it (checked by the service). */
  platform?: string;
  /** No progress is streamed (`--quiet`). */
  quiet: boolean;
  client: PullClient;
}

export function checkPullRequest(body: unknown): PullRequest {
  const b = (body ?? {}) as Record<string, unknown>;
  const client = asPullClient(b['client']);
  if (typeof b['ref'] !== 'string' || client === undefined || (b['platform'] !== undefined && typeof b['platform'] !== 'string') || typeof b['quiet'] !== 'boolean') {
    throw new BerthError('ERR_INVALID_ARGUMENT', 'api images pull: expected {ref, platform?, quiet, client: {root, registryConfig, registryHostsDir}}');
  }
  return { ref: b['ref'], ...(typeof b['platform'] === 'string' ? { platform: b['platform'] } : {}), quiet: b['quiet'], client };
}

/** What the route needs of the service (daemon/service.ts's BerthService). */
export interface Puller {
  pullConflict(client: PullClient): string | undefined;
  pull(ref: string, onProgress?: (e: ProgressEvent) => void, o?: { platform?: string; client?: PullClient }): Promise<{ ref: string; digest: string }>;
}

/**
 * Answers one `POST /v1/images/pull`. A request that is not one, or a client whose options
 * differ from the daemon's, is refused by a throw before any byte is written (the server
 * answers a coded error with a non-200 status, and the CLI takes its normal path).
 */
export async function streamPull(puller: Puller, body: unknown, res: ServerResponse): Promise<void> {
  const req = checkPullRequest(body);
  const conflict = puller.pullConflict(req.client);
  if (conflict !== undefined) throw new BerthError('ERR_CONFLICT', conflict);
  const platform = req.platform !== undefined ? { platform: req.platform } : {};
  await answerNdjson(res, (send) => puller.pull(req.ref, req.quiet ? undefined : (e) => send({ progress: e, line: renderStep(e.step) }), { ...platform, client: req.client }));
}
