import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { REPO, httpGet } from './berth.js';
import { freePort, startRegistry, type TestRegistry } from './registry.js';

/**
 * The shipped demo (manifests/demo-web.yaml) made runnable in a test: a registry on a
 * free port holding the fixture image, and the manifest text pointed at it and at a
 * host port the test may use.
 */
export interface DemoFixture {
  registry: TestRegistry;
  port: number;
  /** manifests/demo-web.yaml as shipped. */
  original: string;
  /** `original` with the registry and port replaced. */
  text: string;
  /** Applies the same replacements to an edited copy. */
  adapt(text: string): string;
  stop(): Promise<void>;
}

/** `preferPort`: keep the demo's own port when nothing listens there. */
export async function startDemoFixture(opts: { preferPort?: number } = {}): Promise<DemoFixture> {
  const registry = await startRegistry();
  try {
    await pushImage(registry.url, 'berth/demo', '1.0', await buildBusyboxImage());
    let port = opts.preferPort ?? 0;
    if (port !== 0 && (await httpGet(`http://127.0.0.1:${port}/`).then(() => true, () => false))) port = 0;
    if (port === 0) port = await freePort();
    const original = readFileSync(path.join(REPO, 'manifests/demo-web.yaml'), 'utf8');
    if (!original.includes('127.0.0.1:5111/berth/demo:1.0') || !original.includes('8080')) {
      throw new Error('manifests/demo-web.yaml no longer names 127.0.0.1:5111/berth/demo:1.0 and port 8080; update test/helpers/demo.ts');
    }
    const adapt = (t: string): string => t.replaceAll('127.0.0.1:5111', registry.host).replaceAll('8080', String(port));
    return { registry, port, original, text: adapt(original), adapt, stop: () => registry.stop() };
  } catch (err) {
    await registry.stop();
    throw err;
  }
}
