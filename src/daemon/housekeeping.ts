import { messageOf } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { Runtime } from '../runtime/index.js';
import { lastAppliedPod } from '../reconciler/plan.js';

/**
 * The daemon's periodic duties that are not reconciliation: log rotation (every second, a stat
 * per running container) and the disk emptyDir sizeLimit check (every 10 s, the kubelet's
 * eviction-manager period; a bounded du walk per limited volume). Each tick runs after the
 * previous one finished, so a slow disk never stacks walks. Errors are logged and the next tick
 * tries again. `stop` waits for a tick in progress.
 */
export interface HousekeepingOptions {
  rt: Runtime;
  log: Logger;
  logRotateMs?: number;
  storageCheckMs?: number;
}

export function startHousekeeping(o: HousekeepingOptions): { stop: () => Promise<void> } {
  let stopped = false;
  const loops = [
    every(o.logRotateMs ?? 1000, async () => {
      const rotated = await o.rt.rotateLogs();
      if (rotated.length > 0) o.log.debug({ ids: rotated }, 'container logs rotated');
    }),
    every(o.storageCheckMs ?? 10_000, () => checkEmptyDirLimits(o.rt, o.log)),
  ];
  function every(ms: number, fn: () => Promise<void>): { timer: NodeJS.Timeout | undefined; running: Promise<void> } {
    const loop: { timer: NodeJS.Timeout | undefined; running: Promise<void> } = { timer: undefined, running: Promise.resolve() };
    const tick = (): void => {
      loop.running = fn()
        .catch((err: unknown) => o.log.warn({ err: messageOf(err) }, 'housekeeping failed'))
        .finally(() => {
          if (!stopped) loop.timer = setTimeout(tick, ms);
        });
    };
    loop.timer = setTimeout(tick, ms);
    return loop;
  }
  return {
    async stop() {
      stopped = true;
      for (const l of loops) clearTimeout(l.timer);
      await Promise.all(loops.map((l) => l.running));
    },
  };
}

/**
 * Evicts each pod with a running container whose disk emptyDir uses more than its sizeLimit
 * (Memory emptyDirs are bounded by their tmpfs size instead).
 */
async function checkEmptyDirLimits(rt: Runtime, log: Logger): Promise<void> {
  for (const p of rt.listPods()) {
    if (!rt.listContainers(p.key).some((c) => c.state === 'running')) continue;
    const pod = lastAppliedPod(p.spec);
    const over: string[] = [];
    const why: string[] = [];
    for (const v of pod?.volumes ?? []) {
      if (!('emptyDir' in v) || v.emptyDir.medium === 'Memory' || v.emptyDir.sizeLimitBytes === undefined) continue;
      const limit = v.emptyDir.sizeLimitBytes;
      const use = await rt.emptyDirUsage(p.key, v.name, limit);
      if (use.bytes <= limit) continue;
      over.push(v.name);
      why.push(`emptyDir volume "${v.name}" uses ${use.bytes} bytes, over its sizeLimit of ${limit} bytes`);
    }
    if (over.length === 0) continue;
    const message = `${why.join('; ')}: pod evicted (containers killed, the volume emptied; restartPolicy ${pod?.restartPolicy ?? 'Always'} decides what runs again)`;
    log.warn({ pod: p.key, volumes: over }, 'evicting pod: emptyDir over its sizeLimit');
    await rt.evictPod(p.key, over, message);
  }
}
