import type { ServerResponse } from 'node:http';
import { BerthError, errorLine, type ErrorCode } from '../lib/errors.js';
import { readLog } from '../lib/logfollow.js';
import { formatProblem } from '../reconciler/problem.js';
import { answerNdjson } from './ndjson.js';
import type { ApplyResponse, BerthService, ManifestRef } from './service.js';

/**
 * `berth run` answered by the daemon in one request (`POST /v1/run`, lib/fast-run's client):
 * apply the one-container pod through the controller's queue, stream the container's output,
 * then (`--rm`) delete the pod, and answer its exit code. The CLI process loads neither
 * commander nor the runtime and forks nothing: node's start-up plus one socket round trip.
 *
 * The answer is NDJSON over an HTTP/1.0 response (no chunked framing, the body ends when the
 * connection closes): `{"out": text}` for the container's output (stdout and stderr, merged
 * as conmon logs them), `{"err": text}` for what the CLI prints on stderr (manifest problems),
 * then one `{"result": {"exitCode": n} | {"id": id}}` or `{"error": {code, message}}`.
 * A client that goes away does not stop the run: the container runs to its end and `--rm`
 * still removes it, as the in-process path would have.
 */
export interface RunRequest {
  /** The berth.dev/v1 Container the CLI built from its flags (JSON text). */
  input: ManifestRef;
  podKey: string;
  mode: 'attach' | 'rm' | 'detach';
}

/** How often the log file is polled and the container's row asked while attached. */
const POLL_MS = 10;

export async function streamRun(service: BerthService, body: unknown, res: ServerResponse): Promise<void> {
  await answerNdjson(res, (send) => runOnce(service, checkRequest(body), send));
}

function checkRequest(body: unknown): RunRequest {
  const b = (body ?? {}) as Partial<RunRequest>;
  if (typeof b.input?.stdinText !== 'string' || typeof b.podKey !== 'string' || !['attach', 'rm', 'detach'].includes(String(b.mode))) {
    throw new BerthError('ERR_INVALID_ARGUMENT', 'api run: expected {input: {stdinText}, podKey, mode: attach|rm|detach}');
  }
  return { input: { path: '-', stdinText: b.input.stdinText, display: 'berth run' }, podKey: b.podKey, mode: b.mode as RunRequest['mode'] };
}

async function runOnce(service: BerthService, req: RunRequest, send: (o: unknown) => void): Promise<{ exitCode: number } | { id: string }> {
  const res: ApplyResponse = await service.apply({ input: req.input });
  if (res.invalid !== undefined && res.invalid.problems.length > 0) {
    send({ err: res.invalid.problems.map((p) => errorLine('ERR_INVALID_MANIFEST', formatProblem(p))).join('') });
    throw new BerthError('ERR_INVALID_MANIFEST', `${res.invalid.problems.length} problem(s) in ${res.invalid.badFiles} file(s); nothing was changed`);
  }
  const failed = res.steps.find((r) => r.error !== undefined);
  if (failed?.error !== undefined) throw new BerthError(failed.error.code as ErrorCode, failed.error.message);
  if (res.blocked.length > 0) throw new BerthError('ERR_PRECONDITION', res.blocked.map((x) => `${x.key}: ${x.reason}`).join('; '));
  const t = await service.logTarget({ podKey: req.podKey });
  if (req.mode === 'detach') return { id: t.id };
  let running = t.running;
  await readLog(t.file, {
    raw: false,
    timestamps: false,
    follow: true,
    pollMs: POLL_MS,
    checkMs: 0,
    // The exit is recorded with an event: asked then, not at the next poll.
    wake: (kick) => service.onPodEvent(req.podKey, kick),
    // The container's stderr stays stderr at the CLI (as podman run keeps it): `err` lines.
    write: (text, stream) => send(stream === 'stderr' ? { err: text } : { out: text }),
    // The daemon's rows follow conmon's exit file (the exit watch), so this is a database read, no process.
    running: async () => {
      if (!running) return false;
      const now = await service.logTarget({ podKey: req.podKey }).catch(() => undefined);
      running = now !== undefined && now.id === t.id && now.running;
      return running;
    },
  });
  const listing = await service.pods({ keys: [req.podKey] });
  const exitCode = listing[0]?.containers[0]?.exitCode ?? 1;
  if (req.mode === 'rm') await service.delete({ keys: [req.podKey], source: '-' });
  return { exitCode };
}
