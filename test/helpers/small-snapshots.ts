import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createLogger } from '../../src/lib/log.js';
import { Runtime } from '../../src/runtime/index.js';

/**
 * A Runtime at `<parent>/root` (state `<parent>/state`) whose snapshots/ is a 320 MiB tmpfs: a little
 * more than the free-space floor (256 MiB, checked every 256 MiB of uncompressed bytes), so a
 * decompression bomb stops at the floor. The mount is pushed on `mounts` for the caller to unmount.
 */
export async function smallSnapshotRuntime(parent: string, mounts: string[]): Promise<{ root: string; snaps: string; runtime: Runtime }> {
  const root = path.join(parent, 'root');
  const snaps = path.join(root, 'snapshots');
  await fsp.mkdir(snaps, { recursive: true, mode: 0o700 });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=320m,mode=0700', 'tmpfs', snaps]);
  mounts.push(snaps);
  const runtime = await Runtime.open({ root, state: path.join(parent, 'state'), log: createLogger('silent') });
  return { root, snaps, runtime };
}
