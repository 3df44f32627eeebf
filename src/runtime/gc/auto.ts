import type { Digest } from '../../lib/digest.js';
import { messageOf } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { humanAge } from '../../lib/time.js';
import type { ImageRecord } from '../state/index.js';
import type { GcReport } from './index.js';

/**
 * Automatic image GC by disk use (the kubelet's image GC manager): when the file system holding
 * berth's root is used at or above `highPercent`, unused images are forgotten least recently used
 * first, each followed by a GC, until use is below `lowPercent` or no unused image is left. Used
 * = capacity − available, as the kubelet computes it. An unused image recorded less than `minAgeMs`
 * ago (default 2 min, the kubelet's) is kept too. An image is in use when a recorded pod
 * names it, a container row runs it, the daemon's manifests name it, or a pull holds a lease on
 * its manifest: those are never removed. Garbage no image reaches is collected first.
 * Events: ImageGCStarted, ImageRemoved (one per image), ImageGCFailed (still above the low
 * threshold with nothing left to remove, or an error).
 */

export interface ImageGcThresholds {
  highPercent: number;
  lowPercent: number;
  /**
   * An unused image recorded (pulled or re-tagged) less than this long ago is kept, as the
   * kubelet's `--minimum-image-ttl-duration` (default 2 min) keeps an image pulled for a pod that
   * has not started yet. 0 or absent: no minimum.
   */
  minAgeMs?: number;
}

export interface ImageGcDeps {
  usage: () => Promise<{ capacityBytes: number; usedBytes: number; usedPercent: number }>;
  /** The images nothing uses now, read afresh at each call (a pod may start using one meanwhile). */
  unused: () => ImageRecord[];
  /** Forgets one image row (its files go at the next collect). */
  forget: (ref: string) => void;
  collect: () => Promise<GcReport>;
  event: (key: string, reason: string, message: string, type: 'Normal' | 'Warning') => void;
  log: Logger;
}

export interface ImageGcResult {
  /** Whether use was at or above the high threshold. */
  triggered: boolean;
  usedPercentBefore: number;
  usedPercentAfter: number;
  removed: { ref: string; digest: Digest; lastUsed: number }[];
  /** Bytes GC reclaimed (blobs and snapshot directories). */
  bytes: number;
  /** Set when the run failed or could not get below the low threshold. */
  error?: string;
}

/** Checks the thresholds (0 ≤ low < high ≤ 100, as the kubelet requires); a message naming the flags, or undefined. */
export function thresholdProblem(t: ImageGcThresholds): string | undefined {
  for (const [flag, v] of [['--image-gc-high-threshold', t.highPercent], ['--image-gc-low-threshold', t.lowPercent]] as const) {
    if (!Number.isFinite(v) || v < 0 || v > 100) return `${flag} ${v}: must be a percentage from 0 to 100`;
  }
  if (t.lowPercent >= t.highPercent) return `--image-gc-low-threshold ${t.lowPercent} must be below --image-gc-high-threshold ${t.highPercent}`;
  return undefined;
}

export async function runImageGc(d: ImageGcDeps, t: ImageGcThresholds): Promise<ImageGcResult> {
  const before = await d.usage();
  const result: ImageGcResult = { triggered: false, usedPercentBefore: before.usedPercent, usedPercentAfter: before.usedPercent, removed: [], bytes: 0 };
  if (before.usedPercent < t.highPercent) return result;
  result.triggered = true;
  d.event('image/gc', 'ImageGCStarted', `disk use ${before.usedPercent}% is at or above the high threshold ${t.highPercent}%: removing unused images, least recently used first, until below ${t.lowPercent}%`, 'Normal');
  d.log.info({ usedPercent: before.usedPercent, high: t.highPercent, low: t.lowPercent }, 'image gc started');
  try {
    result.bytes += (await d.collect()).bytes;
    let now = await d.usage();
    const tried = new Set<string>();
    const minAge = t.minAgeMs ?? 0;
    let young = 0;
    while (now.usedPercent >= t.lowPercent) {
      // Re-read each round: a pod may have started using an image meanwhile.
      const candidates = d.unused().filter((i) => !tried.has(i.ref));
      const oldEnough = candidates.filter((i) => Date.now() - i.updatedAt >= minAge);
      young = candidates.length - oldEnough.length;
      const next = oldEnough
        .sort((a, b) => (a.lastUsed ?? 0) - (b.lastUsed ?? 0) || (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0))[0];
      if (next === undefined) break;
      tried.add(next.ref);
      d.forget(next.ref);
      result.bytes += (await d.collect()).bytes;
      result.removed.push({ ref: next.ref, digest: next.digest, lastUsed: next.lastUsed ?? 0 });
      d.event(`image/${next.ref}`, 'ImageRemoved', `image ${next.ref} (${next.digest}) removed by image GC (last used ${next.lastUsed !== undefined && next.lastUsed > 0 ? new Date(next.lastUsed).toISOString() : 'never'})`, 'Normal');
      now = await d.usage();
    }
    result.usedPercentAfter = now.usedPercent;
    if (now.usedPercent >= t.lowPercent) {
      const kept = young > 0 ? ` (${young} unused image(s) recorded less than ${humanAge(minAge)} ago are kept: --minimum-image-ttl-duration)` : '';
      result.error = `disk use is ${now.usedPercent}% after removing ${result.removed.length} unused image(s): no unused image is left and the low threshold is ${t.lowPercent}%${kept}`;
    }
  } catch (err) {
    result.error = `image GC failed: ${messageOf(err)}`;
  }
  if (result.error !== undefined) {
    d.event('image/gc', 'ImageGCFailed', result.error, 'Warning');
    d.log.warn({ err: result.error }, 'image gc failed');
  } else {
    d.log.info({ removed: result.removed.length, bytes: result.bytes, usedPercent: result.usedPercentAfter }, 'image gc done');
  }
  return result;
}
