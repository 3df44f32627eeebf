import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { sha256 } from '../../src/lib/digest.js';
import { BerthError, messageOf } from '../../src/lib/errors.js';
import { hostPlatform, parseManifestOrIndex, selectPlatform } from '../../src/runtime/images/documents.js';
import { unpackLayer, type UnpackResult } from '../../src/runtime/unpack/index.js';
import {
  assertCanariesUntouched,
  assertInside,
  canaryState,
  IMAGE_CASES,
  indexOf,
  LAYER_CASES,
  MT,
  layerTestName,
  makeCanaries,
  removeCanaries,
  tableRows,
} from '../helpers/hostile.js';

/**
 * Issue 15, hostile layers: every case of the catalogue in test/helpers/hostile.ts is fed to
 * unpackLayer (the function ImageService.pull runs inside Snapshotter.commitLayer) with a fresh
 * root three levels below the case's temp dir. A case is either refused with its code, or
 * confined: it succeeds and what it wrote is inside the root. Either way the canaries outside the
 * root (in the temp dir and under /tmp) are unchanged.
 */

let base: string;
before(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-hostile-layers-'));
});
after(async () => {
  await fsp.rm(base, { recursive: true, force: true });
});

interface LogLine {
  msg: string;
}

/** Bytes of regular files under `dir`, not following links. */
async function fileBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += await fileBytes(p);
    else if (e.isFile()) n += (await fsp.lstat(p)).size;
  }
  return n;
}

describe('issue 15: hostile layers fed to unpackLayer', () => {
  for (const c of LAYER_CASES) {
    test(layerTestName(c), async () => {
      const canaries = await makeCanaries(base, c.id);
      try {
        const built = await c.build(canaries);
        const before = await canaryState(canaries);
        const lines: LogLine[] = [];
        const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
        const pieces: Buffer[] = [];
        for (let i = 0; i < built.blob.length; i += 64 * 1024) pieces.push(built.blob.subarray(i, i + 64 * 1024));
        let result: UnpackResult | undefined;
        let caught: unknown;
        try {
          result = await unpackLayer({
            source: Readable.from(pieces),
            mediaType: built.mediaType,
            expected: built.expected,
            dest: canaries.root,
            sync: false,
            log,
            ...(c.limits !== undefined ? { limits: c.limits } : {}),
            ...(c.allowDevices === true ? { allowDevices: true } : {}),
          });
        } catch (err) {
          caught = err;
        }
        if (c.outcome === 'confined') {
          assert.equal(caught, undefined, `confined case failed: ${messageOf(caught)}`);
          assert.ok(result !== undefined);
          assert.ok((built.inside ?? []).length > 0, 'a confined case names what it leaves inside the root');
          assert.equal(result.opaqueRoot, built.opaqueRoot ?? false, 'root-level opaque marker');
        } else {
          assert.ok(caught instanceof BerthError, `expected BerthError ${c.outcome}, got ${caught instanceof Error ? caught.stack : String(caught)}`);
          assert.equal(caught.code, c.outcome, caught.message);
          assert.ok(caught.message.startsWith(`unpack layer ${built.expected.digest}`), `the error names the layer: ${caught.message}`);
        }
        await assertInside(canaries.root, built.inside ?? []);
        if (c.warns !== undefined) {
          const re = c.warns;
          assert.ok(lines.some((l) => re.test(l.msg)), `logged ${String(re)}: ${lines.map((l) => l.msg).join('; ')}`);
        }
        if (c.maxRootBytes !== undefined) {
          const n = await fileBytes(canaries.root);
          assert.ok(n <= c.maxRootBytes, `${n} bytes written, limit ${c.maxRootBytes}`);
        }
        await assertCanariesUntouched(canaries, before);
      } finally {
        await removeCanaries(canaries);
      }
    });
  }
});

test('issue 15: docs/hostile-images.md lists every hostile case with its rule, outcome and test name', async () => {
  const doc = await fsp.readFile(new URL('../../../docs/hostile-images.md', import.meta.url), 'utf8');
  const { layers, images } = tableRows();
  const ids = [...LAYER_CASES.map((c) => `layer ${c.id}`), ...IMAGE_CASES.map((c) => `image ${c.id}`)];
  assert.equal(new Set(ids).size, ids.length, 'case ids are unique');
  for (const row of [...layers, ...images]) assert.ok(doc.includes(`${row}\n`), `docs/hostile-images.md lacks the row:\n${row}`);
});

test('regression: nested-index-reported-not-found — an index whose entry for this platform is another index is ERR_INVALID_IMAGE naming it, not ERR_NOT_FOUND', () => {
  const inner = sha256('inner index');
  const doc = parseManifestOrIndex(indexOf([{ mediaType: MT.index, digest: inner, size: 10 }]), MT.index, 'idx');
  assert.equal(doc.kind, 'index');
  assert.throws(
    () => selectPlatform(doc, hostPlatform(), 'pull x index'),
    (err: unknown) => {
      assert.ok(err instanceof BerthError, String(err));
      assert.equal(err.code, 'ERR_INVALID_IMAGE', err.message);
      assert.ok(err.message.includes(inner), err.message);
      assert.match(err.message, /nested indexes are not supported/);
      return true;
    },
  );
  // A manifest entry next to it is still picked, and an index without this platform is still ERR_NOT_FOUND.
  const both = parseManifestOrIndex(indexOf([{ mediaType: MT.index, digest: inner, size: 10 }, { mediaType: MT.manifest, digest: sha256('m'), size: 10 }]), MT.index, 'idx');
  assert.ok(both.kind === 'index');
  assert.equal(selectPlatform(both, hostPlatform(), 'idx').digest, sha256('m'));
  assert.throws(() => selectPlatform(doc, { os: 'linux', architecture: 'no-such-arch' }, 'idx'), (err: unknown) => err instanceof BerthError && err.code === 'ERR_NOT_FOUND');
});
