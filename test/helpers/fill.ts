import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';

/** Appends zeros to `file` (created empty) in `chunkBytes` pieces until its file system says ENOSPC. */
export async function fillUp(file: string, chunkBytes: number): Promise<void> {
  await fsp.writeFile(file, '');
  const chunk = Buffer.alloc(chunkBytes);
  for (;;) {
    try {
      await fsp.appendFile(file, chunk);
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'ENOSPC');
      return;
    }
  }
}
