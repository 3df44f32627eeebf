import * as path from 'node:path';
import type { Logger } from '../lib/log.js';
import type { DesiredConfig, DesiredImage, DesiredPod } from './desired.js';
import type { ImageFolder } from './image-folder.js';
import { formatProblem, loadManifests, type ManifestProblem, type ParseCache } from './manifest.js';

/**
 * A manifest source (a directory watched by `berth up`) with last-good semantics (rule
 * M5): a file that stops parsing keeps the objects it declared before; only removing the
 * file, or the object from a valid file, removes them.
 */
export class ManifestSource {
  readonly root: string;
  private lastGood = new Map<string, DesiredPod[]>();
  private lastGoodImages = new Map<string, DesiredImage[]>();
  private lastGoodConfigs = new Map<string, DesiredConfig[]>();
  private readonly cache: ParseCache = new Map();

  constructor(
    root: string,
    private readonly log: Logger,
    /** Objects recorded as applied from a file, used when the file is bad at startup. */
    private readonly recorded: (file: string) => DesiredPod[],
    /** Which file each applied pod came from (the owner keeps a pod declared twice). */
    private readonly owners: () => ReadonlyMap<string, string> = () => new Map(),
    /** ConfigMaps and Secrets recorded as applied from a file, used when the file is bad at startup. */
    private readonly recordedConfigs: (file: string) => DesiredConfig[] = () => [],
    /** `<root>/images/`: its archives are imported before the manifests are read (image-folder.ts). */
    private readonly imageFolder?: ImageFolder,
  ) {
    this.root = path.resolve(root);
  }

  async load(): Promise<{ desired: DesiredPod[]; images: DesiredImage[]; configs: DesiredConfig[]; problems: ManifestProblem[] }> {
    // Images first: a pod planned from this load finds the archives' images already local.
    const folder = await this.imageFolder?.sync({ requireStable: true });
    const res = await loadManifests(this.root, { owners: this.owners(), cache: this.cache });
    const next = new Map<string, DesiredPod[]>();
    for (const pod of res.pods) {
      const list = next.get(pod.source) ?? [];
      list.push(pod);
      next.set(pod.source, list);
    }
    const nextImages = new Map<string, DesiredImage[]>();
    for (const img of res.images) {
      const list = nextImages.get(img.source) ?? [];
      list.push(img);
      nextImages.set(img.source, list);
      // A file that declares only images is not empty.
      if (!next.has(img.source)) next.set(img.source, []);
    }
    const nextConfigs = new Map<string, DesiredConfig[]>();
    for (const c of res.configs) {
      const list = nextConfigs.get(c.source) ?? [];
      list.push(c);
      nextConfigs.set(c.source, list);
      if (!next.has(c.source)) next.set(c.source, []);
    }
    // A file that is bad, or empty (a non-atomic rewrite caught half way, a truncation), keeps
    // the objects it declared before (rule M5): only removing the file prunes them.
    const bad = new Set(res.badFiles);
    for (const file of new Set([...res.files, ...bad])) {
      if (next.has(file) && !bad.has(file)) continue;
      const imagesBefore = this.lastGoodImages.get(file);
      if (imagesBefore !== undefined) nextImages.set(file, imagesBefore);
      const configsBefore = this.lastGoodConfigs.get(file) ?? this.recordedConfigs(file);
      if (configsBefore.length > 0) nextConfigs.set(file, configsBefore);
      const before = this.lastGood.get(file) ?? this.recorded(file);
      if (!bad.has(file) && before.length > 0) this.log.warn({ file }, 'empty manifest keeps its last objects; remove the file to delete them');
      next.set(file, before);
    }
    for (const p of res.problems) this.log.error({ file: p.file, line: p.line, col: p.col, field: p.field }, `invalid manifest: ${formatProblem(p)}`);
    this.lastGood = next;
    this.lastGoodImages = nextImages;
    this.lastGoodConfigs = nextConfigs;
    const desired = [...next.values()].flat();
    // A key declared twice (e.g. kept last-good + new file) keeps the first.
    const seen = new Set<string>();
    return {
      desired: desired.filter((p) => (seen.has(p.key) ? false : (seen.add(p.key), true))),
      images: [...nextImages.values()].flat(),
      configs: [...nextConfigs.values()].flat(),
      problems: [...res.problems, ...(folder?.problems ?? [])],
    };
  }
}
