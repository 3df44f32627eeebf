import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../lib/log.js';
import { messageOf } from '../lib/errors.js';
import type { Runtime } from '../runtime/index.js';
import type { DesiredPod } from '../reconciler/desired.js';
import { computePlan, executePlan } from '../reconciler/reconcile.js';
import { renderStep } from '../reconciler/render.js';
import { ManifestSource } from '../reconciler/source.js';
import { lastAppliedPod } from '../reconciler/plan.js';
import { formatProblem } from '../reconciler/manifest.js';

export interface UpOptions {
  dir: string;
  rt: Runtime;
  log: Logger;
  /** Full resync period: restarts exited containers per restartPolicy, re-reads files. */
  resyncMs?: number;
  debounceMs?: number;
  /** Called after each pass (tests, status printing). */
  onPass?: (info: { steps: number; failed: number; lines: string[]; errors: string[]; invalid: string[] }) => void;
  signal: AbortSignal;
}

/**
 * `berth up DIR`: watch the directory and converge on every change, plus a periodic
 * resync as a safety net for missed inotify events and for exited containers. Passes are
 * serialised (one at a time); a change during a pass triggers one more pass after it.
 * Stopping `up` never stops containers (rule S1): they keep running and are adopted by
 * the next `up`.
 */
export async function runUp(o: UpOptions): Promise<void> {
  const recorded = (file: string): DesiredPod[] =>
    o.rt.state
      .listPods()
      .filter((p) => p.source === file)
      .flatMap((p) => lastAppliedPod(p.spec) ?? []);
  const owners = (): ReadonlyMap<string, string> => new Map(o.rt.state.listPods().map((p) => [p.key, p.source]));
  const source = new ManifestSource(o.dir, o.log, recorded, owners);
  await o.rt.withLock('sweep', () => o.rt.sweep());

  let running = false;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  const pass = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const { desired, problems } = await source.load();
        await o.rt.withLock('reconcile', async () => {
          const plan = await computePlan(o.rt, { desired, prune: { sources: [source.root] } }, o.log);
          for (const s of plan.steps) o.log.debug({ step: s.kind }, renderStep(s));
          const res = await executePlan(o.rt, plan, o.log, o.signal);
          const failed = new Set(res.failed.map((f) => f.step));
          o.onPass?.({
            steps: plan.steps.length,
            failed: res.failed.length,
            lines: plan.steps.filter((s) => !failed.has(s)).map(renderStep),
            errors: [...res.failed.map((f) => f.error.message), ...plan.blocked.map((b) => `${b.key}: ${b.reason}`)],
            invalid: problems.map(formatProblem),
          });
        });
      } while (again && !o.signal.aborted);
    } catch (err) {
      o.log.error({ err: messageOf(err) }, 'reconcile pass failed');
    } finally {
      running = false;
    }
  };
  const schedule = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => void pass(), o.debounceMs ?? 150);
  };

  const watcher: FSWatcher = watch(source.root, {
    ignoreInitial: true,
    followSymlinks: true,
    awaitWriteFinish: false,
    ignored: (p: string) => /(^|\/)\.[^/]*$|~$|\.swp$|\.swx$|\/#[^/]*#?$/.test(p.slice(source.root.length)),
  });
  watcher.on('all', (_event, p) => {
    o.log.debug({ path: p }, 'manifest change');
    schedule();
  });
  watcher.on('error', (err) => o.log.warn({ err: messageOf(err) }, 'watcher error'));

  await pass();
  const resync = setInterval(() => void pass(), o.resyncMs ?? 30_000);
  await new Promise<void>((resolve) => {
    if (o.signal.aborted) resolve();
    o.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  clearInterval(resync);
  if (timer !== undefined) clearTimeout(timer);
  await watcher.close();
  while (running) await new Promise((r) => setTimeout(r, 20));
}
