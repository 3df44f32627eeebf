import { realpathSync } from 'node:fs';
import * as path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { BerthError, messageOf } from '../lib/errors.js';
import { LockFile } from '../lib/lock.js';
import type { Logger } from '../lib/log.js';
import { parseReference, type ImageGcThresholds, type Runtime } from '../runtime/index.js';
import { Controller, type KeyReport } from '../reconciler/controller.js';
import { enforceImmutable, knownConfigs, recordConfigs, recordedConfigs } from '../reconciler/configs.js';
import type { DesiredConfig, DesiredImage, DesiredPod } from '../reconciler/desired.js';
import { resolvePods } from '../reconciler/resolve.js';
import { duplicatePods, formatProblem, type ManifestProblem } from '../reconciler/manifest.js';
import { lastAppliedPod } from '../reconciler/plan.js';
import { renderStep } from '../reconciler/render.js';
import { conflictMessage, ImageFolder } from '../reconciler/image-folder.js';
import { ManifestSource } from '../reconciler/source.js';
import { startHousekeeping } from './housekeeping.js';
import { Metrics, serveMetrics } from './metrics.js';
import { IdleGc } from './idle-gc.js';
import { serveApi, type ApiServer } from './server.js';
import { BerthService } from './service.js';

export interface UpOptions {
  dirs: string[];
  rt: Runtime;
  log: Logger;
  /** Safety-net resync period: every key once more, files re-read. */
  resyncMs?: number;
  debounceMs?: number;
  /** How long SIGTERM/SIGINT waits for in-flight steps (containers are never stopped). */
  drainMs?: number;
  /** Opt-in Prometheus metrics on a loopback `HOST:PORT` (the only TCP listener). */
  metricsAddr?: string;
  /** Automatic image GC by disk use (kubelet's thresholds); checked after pulls and at each resync. */
  imageGc?: ImageGcThresholds;
  /** Human output, one line at a time (stdout of `berth up`). */
  out: (line: string) => void;
  signal: AbortSignal;
  /**
   * A full garbage collection (node's `gc`, with --expose-gc: one of the daemon's flags,
   * daemon/reexec.ts), run once the queue has been idle for `idleGcMs` (default 1 s) and no
   * request on the socket is being answered, at most every 3 s (daemon/idle-gc.ts). V8 leaves the garbage of a burst (a reload, 50 pods started: ~8 MB) in the old
   * generation until the heap next grows, which a daemon at rest never makes it do.
   */
  collectGarbage?: (() => void) | undefined;
  idleGcMs?: number;
}

/** The shortest time between two idle collections (each costs ~10–30 ms of CPU: at most ~1 % of a core). */
const IDLE_GC_MIN_INTERVAL_MS = 3_000;

/**
 * `berth up DIR...`: the daemon and single writer of this state while it runs. It holds
 * the state lock for its lifetime (CLI commands talk to it over the socket instead), watches
 * the directories, conmon's exit files and a resync timer — all of which only enqueue keys
 * for the controller — and serves the API. Stopping it never stops containers (rule S1).
 */
export async function runUp(o: UpOptions): Promise<void> {
  const roots = o.dirs.map((d) => path.resolve(d));
  const daemonLock = new LockFile(path.join(o.rt.paths.state, 'up.lock'));
  try {
    await daemonLock.acquire({ waitMs: 0, what: 'berth up' });
  } catch (err) {
    // Only a lock another process holds is "another berth up"; any other failure to take it (the
    // lock file replaced by a link, the native addon not loading) is reported as itself
    // (regression up-lock-failure-reported-as-another-daemon).
    if (!(err instanceof BerthError && err.code === 'ERR_LOCKED')) throw err;
    const pid = await daemonLock.owner();
    throw new BerthError('ERR_LOCKED', `berth up: another berth up already runs on ${o.rt.paths.state}${pid !== undefined ? ` (pid ${pid})` : ''}; stop it first`, { cause: err });
  }
  const releaseState = await o.rt.holdLock('berth up');
  try {
    await serve(o, roots);
  } finally {
    await releaseState();
    await daemonLock.release();
  }
}

async function serve(o: UpOptions, roots: string[]): Promise<void> {
  const { rt, log } = o;
  await rt.sweep();
  // Adopt what runs: never restarted, only recorded (rule S2).
  for (const p of await rt.observe({ repair: true })) {
    const running = p.containers.filter((c) => c.state === 'running');
    if (running.length > 0) rt.addEvent(`pod/${p.key}`, 'Adopted', `adopted ${running.map((c) => `${c.name} (pid ${c.pid ?? '?'})`).join(', ')}`);
  }
  const recorded = (file: string): DesiredPod[] =>
    rt
      .listPods()
      .filter((p) => p.source === file)
      .flatMap((p) => lastAppliedPod(p.spec) ?? []);
  const owners = (): ReadonlyMap<string, string> => new Map(rt.listPods().map((p) => [p.key, p.source]));
  const configsOf = (file: string): DesiredConfig[] => recordedConfigs(rt).filter((c) => c.source === file);
  // An archive still being written in <dir>/images/ asks for one more reload once it may be complete.
  let reloadSoon: () => void = () => undefined;
  const imageFolder = (r: string): ImageFolder =>
    new ImageFolder(r, {
      importer: rt,
      ledger: path.join(rt.paths.root, 'image-folder.json'),
      log,
      wake: () => reloadSoon(),
      onConflict: (c) => {
        o.out(`! image archives conflict: ${conflictMessage(c)}`);
        rt.addEvent(`source/${c.file}`, 'Conflict', conflictMessage(c), { type: 'Warning' });
      },
    });
  const folders = roots.map(imageFolder);
  const sources = roots.map((r, i) => new ManifestSource(r, log, recorded, owners, configsOf, folders[i]));
  const controller = new Controller({ rt, log, retry: true });
  // A ConfigMap or Secret applied through the socket may change what watched pods resolve to.
  // A reload that fails (a watched directory gone) is logged, as the watcher's and resync's are:
  // an unhandled rejection would end the daemon (regression up-dies-on-config-apply).
  const service = new BerthService({ rt, log, controller, daemon: true, onConfigsChanged: () =>
      void load()
        // Pods applied from the CLI read the new ConfigMaps too: those whose resolution changed are queued.
        .then(() => void controller.resyncDrifted())
        .catch((err: unknown) => log.error({ err: messageOf(err) }, 'reading manifests failed')),
  });

  // Human output: steps as they happen, a summary each time the queue goes idle.
  let steps = 0;
  let failed = 0;
  let first = true;
  let lastInvalid = '';
  let problems: ManifestProblem[] = [];
  let wake: () => void = () => undefined;
  // Image refs the watched manifests name (pods not yet recorded, Image objects) and the images/
  // folders' archives hold: image GC keeps them.
  let desiredRefs: string[] = [];
  let imageGcRunning = false;
  let imageGcAgain = false;
  const imageGc = async (): Promise<void> => {
    if (o.imageGc === undefined) return;
    if (imageGcRunning) {
      imageGcAgain = true;
      return;
    }
    imageGcRunning = true;
    try {
      do {
        imageGcAgain = false;
        const r = await rt.imageGc({ ...o.imageGc, keep: desiredRefs });
        if (r.triggered) {
          o.out(`berth: image GC: disk ${r.usedPercentBefore}% ≥ ${o.imageGc.highPercent}%: removed ${r.removed.length} unused image(s), ${r.bytes} bytes; now ${r.usedPercentAfter}%${r.error !== undefined ? ` (${r.error})` : ''}`);
        }
      } while (imageGcAgain);
    } catch (err) {
      log.error({ err: messageOf(err) }, 'image gc failed');
    } finally {
      imageGcRunning = false;
    }
  };
  // After each pull (the controller's and `images pull` through the socket both record Pulled).
  const offPulled = rt.onEvent((e) => {
    if (e.reason === 'Pulled') void imageGc();
  });
  controller.onReport((r: KeyReport) => {
    for (const s of r.steps) {
      steps++;
      if (s.error !== undefined) {
        failed++;
        o.out(`! ${s.error.message}`);
      } else {
        o.out(renderStep(s.step));
      }
    }
    wake();
  });

  // The immutable-config problems already reported (each is printed once, not at every resync).
  let immutableSeen = new Set<string>();
  const load = async (): Promise<void> => {
    let all: DesiredPod[] = [];
    const images: DesiredImage[] = [];
    const configs: DesiredConfig[] = [];
    const seen = new Set<string>();
    problems = [];
    const declared: DesiredPod[] = [];
    for (const s of sources) {
      const res = await s.load();
      problems.push(...res.problems);
      images.push(...res.images);
      configs.push(...res.configs);
      declared.push(...res.desired);
    }
    // A pod declared in two watched directories is a duplicate as within one: the recorded
    // owner (else the first) keeps it and the other is named (regression pod-in-two-roots-silent).
    const dups = duplicatePods(declared, owners());
    const dropped = new Set(dups.map((d) => `${d.file}\0${d.line}`));
    problems.push(...dups);
    for (const p of declared) {
      if (dropped.has(`${p.source}\0${p.line}`) || seen.has(p.key)) continue;
      seen.add(p.key);
      all.push(p);
    }
    const invalidNow = problems.map(formatProblem).join('\n');
    if (invalidNow !== lastInvalid) {
      const before = new Set(lastInvalid.split('\n'));
      for (const p of problems) {
        o.out(`! invalid manifest (last good objects kept): ${formatProblem(p)}`);
        // An event per new problem, keyed by the file (its pods get InvalidSpec conditions too).
        if (!before.has(formatProblem(p))) rt.addEvent(`source/${p.file}`, 'Invalid', formatProblem(p), { type: 'Warning' });
      }
      if (problems.length === 0 && lastInvalid !== '') o.out('berth: all manifests valid again');
      lastInvalid = invalidNow;
    }
    // An immutable ConfigMap or Secret whose data changed keeps its record (what pods read), with a warning.
    const imm = enforceImmutable(rt, configs);
    const immNow = new Set(imm.problems.map(formatProblem));
    for (const text of immNow) {
      if (immutableSeen.has(text)) continue;
      o.out(`! invalid manifest (last good objects kept): ${text}`);
      rt.addEvent(`source/${imm.problems.find((p) => formatProblem(p) === text)?.file ?? ''}`, 'Invalid', text, { type: 'Warning' });
    }
    immutableSeen = immNow;
    // The watched directories own their ConfigMaps and Secrets: recorded as declared, forgotten when gone.
    recordConfigs(rt, imm.configs, { sources: roots });
    all = resolvePods(all, knownConfigs(rt, imm.configs));
    desiredRefs = [...images.map((i) => i.ref), ...folders.flatMap((f) => f.images().map((i) => i.ref)), ...all.flatMap((p) => [...(p.initContainers ?? []), ...p.containers].map((c) => c.image))].flatMap((ref) => {
      try {
        return [parseReference(ref).canonical];
      } catch {
        return [];
      }
    });
    controller.setWatched(roots, all, problems.map((p) => ({ file: p.file, text: formatProblem(p) })), images);
    wake();
  };

  // Before the first key runs, so the counters see every run.
  const metrics = new Metrics();
  controller.onReport((r) => metrics.observe(r));
  const metricsSource = { status: () => service.status(), queue: () => ({ pending: controller.queue.pending(), active: controller.queue.active() }) };

  o.out(`berth: watching ${roots.join(', ')}; API on ${rt.paths.socket} (Ctrl-C stops watching; containers keep running)`);
  controller.watchExits();
  // Log rotation and the emptyDir sizeLimit check; their kills reach the controller as exits.
  const housekeeping = startHousekeeping({ rt, log });
  await load();
  controller.resyncAll();
  void imageGc();
  let timer: NodeJS.Timeout | undefined;
  const schedule = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => void load().catch((err: unknown) => log.error({ err: messageOf(err) }, 'reading manifests failed')), o.debounceMs ?? 25);
  };
  reloadSoon = schedule;
  const watchers: FSWatcher[] = roots.map((root) => {
    // A root that is itself a link (`berth up current/` of a git-sync checkout) is watched as
    // the link (its swap) and as what it points to now (edits in place).
    const real = realpathSync(root);
    const w = watch(real === root ? root : [root, real], {
      ignoreInitial: true,
      // Links are watched as links (a git-sync swap is an event on the link), never followed:
      // a link to a directory outside would make the watcher walk it (the periodic rescan
      // reads what the links point to, inside the directory only).
      followSymlinks: false,
      awaitWriteFinish: false,
      ignored: (p: string) => /(^|\/)\.[^/]*$|~$|\.swp$|\.swx$|\/#[^/]*#?$/.test(p.slice((p.startsWith(`${real}/`) || p === real ? real : root).length)),
    });
    w.on('all', (_event, p) => {
      log.debug({ path: p }, 'manifest change');
      schedule();
    });
    w.on('error', (err) => log.warn({ err: messageOf(err) }, 'watcher error'));
    return w;
  });
  // chokidar reports nothing before its first scan is done (ignoreInitial): a file written meanwhile
  // would wait for the rescan. So: watchers ready, read once more, and only then serve the socket,
  // whose appearance tells clients the daemon sees their writes (regression up-serves-before-watching).
  await Promise.all(watchers.map((w) => new Promise<void>((resolve) => w.once('ready', () => resolve()))));
  await load();
  // A daemon pulls: undici is loaded before the socket is served, not by the first pull.
  rt.warmRegistry();
  let api: ApiServer | undefined;
  const collect = o.collectGarbage;
  const idleGc =
    collect === undefined
      ? undefined
      : new IdleGc({
          collect,
          // Busy again (a pull, a pod run, a request on the socket): the next idle point asks again.
          busy: () => controller.queue.active() > 0 || controller.queue.pending() > 0 || (api?.busy() ?? 0) > 0,
          delayMs: o.idleGcMs ?? 1000,
          minIntervalMs: IDLE_GC_MIN_INTERVAL_MS,
          done: (ms) => log.debug({ ms }, 'idle collection'),
        });
  api = await serveApi({
    socket: rt.paths.socket,
    service,
    log,
    onEvent: (fn) => rt.onEvent(fn),
    metrics: () => metrics.render(metricsSource),
    // A pull or a run over the socket leaves garbage behind, other requests little.
    onIdle: (p) => idleGc?.workEnded(p === '/v1/images/pull' || p === '/v1/run'),
  });
  const metricsServer = o.metricsAddr !== undefined ? await serveMetrics({ addr: o.metricsAddr, metrics, log, source: metricsSource }) : undefined;
  if (metricsServer !== undefined) o.out(`berth: metrics on http://${o.metricsAddr ?? ''}/metrics`);
  const resync = setInterval(() => {
    void load()
      .then(() => {
        void controller.resyncDrifted();
        void imageGc();
        void rt.repairNetwork().catch((err: unknown) => log.warn({ err: messageOf(err) }, 'checking the network rules failed'));
      })
      .catch((err: unknown) => log.error({ err: messageOf(err) }, 'resync failed'));
  }, o.resyncMs ?? 30_000);

  const summaries = (async () => {
    while (!o.signal.aborted) {
      // Pod keys only: a pull that hangs must not hold back the news about every other pod.
      await controller.queue.whenIdle((k) => k.startsWith('pod/'), o.signal).catch(() => undefined);
      if (o.signal.aborted) break;
      if (steps > 0 || first) {
        if (failed > 0) o.out(`berth: not converged (${failed} of ${steps} step(s) failed); retrying with backoff (berth status)`);
        else if (problems.length > 0) o.out(`berth: converged to the last good objects; ${problems.length} manifest problem(s) to fix`);
        else o.out(`berth: converged (${steps} step(s)); next: berth status, berth logs POD`);
      }
      first = false;
      steps = 0;
      failed = 0;
      idleGc?.idle();
      // One abort listener per wait, removed when woken: adding one per wake grew without bound
      // (MaxListenersExceededWarning within a minute of edits; regression up-abort-listener-leak).
      await new Promise<void>((resolve) => {
        const onAbort = (): void => resolve();
        wake = () => {
          o.signal.removeEventListener('abort', onAbort);
          resolve();
        };
        o.signal.addEventListener('abort', onAbort, { once: true });
      });
      wake = () => undefined;
      // Let the key that woke us get into the queue before asking whether it is idle.
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  await new Promise<void>((resolve) => {
    if (o.signal.aborted) resolve();
    o.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  clearInterval(resync);
  idleGc?.stop();
  offPulled();
  await housekeeping.stop();
  if (timer !== undefined) clearTimeout(timer);
  await Promise.all(watchers.map((w) => w.close()));
  await api.close();
  await metricsServer?.close();
  const left = await controller.stop(o.drainMs ?? 10_000);
  if (left.length > 0) o.out(`berth: stopped with ${left.length} step(s) cut short (${left.join(', ')}); they resume at the next berth up`);
  if (controller.queue.active() > 0) {
    // A step that outlived the drain and its abort (a wedged runc within its deadline) must not
    // go on without the state lock, which returning would release: end here, as a kill -9 would;
    // the next berth up finishes it from its intent row (regression shutdown-releases-lock-under-running-steps).
    o.out(`berth: ${controller.queue.active()} step(s) still running after the drain; exiting without them (the next berth up repairs them)`);
    process.exit(0);
  }
  await summaries;
}
