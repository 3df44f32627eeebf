import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { Digest } from '../../src/lib/digest.js';
import { unpackLayer, type UnpackResult } from '../../src/runtime/unpack/index.js';
import { isCode } from '../helpers/codes.js';
import { packTar, type PackHeader } from '../helpers/tar-pack.js';

/**
 * E2 (every entry's parent resolved afresh, no caching across entries) and the per-entry syscall
 * cuts of issue 14's unpack work: these layers replace a name that earlier entries resolved
 * through, then write under it. Anything that kept an earlier resolution (node-tar's
 * CVE-2021-32803 was such a cache) would open `a/g` through the new symlink `a` (out of the layer)
 * or into the old target.
 */

const asRoot = process.geteuid?.() === 0;

const MTIME = new Date('2021-02-03T04:05:06Z');
type Member = { header: PackHeader; data?: string };
const file = (name: string, data = name): Member => ({ header: { name, type: 'file', mode: 0o644, mtime: MTIME }, data });
const dir = (name: string): Member => ({ header: { name, type: 'directory', mode: 0o755, mtime: MTIME } });
const symlink = (name: string, linkname: string): Member => ({ header: { name, type: 'symlink', linkname, mode: 0o777, mtime: MTIME } });
const hardlink = (name: string, linkname: string): Member => ({ header: { name, type: 'link', linkname, mtime: MTIME } });
const sha = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

async function unpack(members: Member[], dest: string): Promise<UnpackResult> {
  const tar = await packTar(members);
  return unpackLayer({
    source: Readable.from([tar]),
    mediaType: 'application/vnd.oci.image.layer.v1.tar',
    expected: { digest: sha(tar), size: tar.length, diffId: sha(tar) },
    dest,
    limits: { minFreeBytes: 0 },
    sync: false,
  });
}

let base: string;
let seq = 0;
before(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-unpack-entries-'));
});
after(async () => {
  await fsp.rm(base, { recursive: true, force: true });
});

/** dest three levels below `outer`, beside an empty canary directory: `../../../canary` from dest's top reaches it. */
async function scratch(): Promise<{ dest: string; canary: string; outer: string }> {
  const outer = path.join(base, `t${++seq}`);
  const dest = path.join(outer, 'x', 'y', 'dest');
  await fsp.mkdir(dest, { recursive: true, mode: 0o700 });
  const canary = path.join(outer, 'canary');
  await fsp.mkdir(canary);
  return { dest, canary, outer };
}

async function assertCanary(s: { canary: string; outer: string }): Promise<void> {
  assert.deepEqual(await fsp.readdir(s.canary), []);
  assert.deepEqual((await fsp.readdir(s.outer)).sort(), ['canary', 'x']);
}

describe('E2: a replaced name is resolved afresh', () => {
  test('a directory replaced by an escaping symlink later in the same layer, then an entry under it, stays confined', async () => {
    for (const target of ['../../../canary', '/canary', `${'../'.repeat(8)}canary`]) {
      const s = await scratch();
      await unpack([dir('a/'), file('a/f'), dir('a/b/'), file('a/b/f'), symlink('a', target), file('a/g'), file('a/b/h')], s.dest);
      await assertCanary(s);
      assert.equal(await fsp.readlink(path.join(s.dest, 'a')), target);
      // The symlink is followed confined: `canary` inside the layer, made as an implied directory.
      assert.equal(await fsp.readFile(path.join(s.dest, 'canary', 'g'), 'utf8'), 'a/g');
      assert.equal(await fsp.readFile(path.join(s.dest, 'canary', 'b', 'h'), 'utf8'), 'a/b/h');
      assert.deepEqual((await fsp.readdir(s.dest)).sort(), ['a', 'canary']);
    }
  });

  test('a symlink replaced by a directory: entries under it go into the new directory, not the old target', async () => {
    const s = await scratch();
    await unpack([dir('d/'), symlink('a', 'd'), file('a/f'), dir('a/'), file('a/g')], s.dest);
    assert.deepEqual((await fsp.readdir(path.join(s.dest, 'd'))).sort(), ['f']);
    assert.ok((await fsp.lstat(path.join(s.dest, 'a'))).isDirectory());
    assert.deepEqual((await fsp.readdir(path.join(s.dest, 'a'))).sort(), ['g']);
  });

  test('a symlink pointed elsewhere: entries follow the new target', async () => {
    const s = await scratch();
    await unpack([dir('x/'), dir('y/'), symlink('a', 'x'), file('a/f'), symlink('a', 'y'), file('a/g')], s.dest);
    assert.deepEqual(await fsp.readdir(path.join(s.dest, 'x')), ['f']);
    assert.deepEqual(await fsp.readdir(path.join(s.dest, 'y')), ['g']);
  });

  test('an ancestor replaced: a deeper parent resolved before is not reused', async () => {
    const s = await scratch();
    await unpack([dir('a/'), dir('a/b/'), dir('a/b/c/'), file('a/b/c/f'), dir('z/'), dir('z/b/'), symlink('a', 'z'), file('a/b/c/g')], s.dest);
    assert.deepEqual(await fsp.readdir(path.join(s.dest, 'z', 'b', 'c')), ['g']);
    assert.equal((await fsp.lstat(path.join(s.dest, 'a'))).isSymbolicLink(), true);
  });

  test('a directory replaced by a file or a hardlink: an entry under it is an invalid image', async () => {
    for (const replace of [file('a'), hardlink('a', 'h')]) {
      const s = await scratch();
      await assert.rejects(unpack([file('h'), dir('a/'), file('a/f'), replace, file('a/g')], s.dest), isCode('ERR_INVALID_IMAGE', /entry "a\/g"/));
    }
  });

  test('the symlink hop limit counts every hop of the parent\'s walk (40 allowed, 41 refused)', async () => {
    // l0 → l1 → … → l38 → d: 39 hops to reach d through l0.
    const chain: Member[] = [dir('d/'), dir('d/e/'), symlink('d/m', 'e'), symlink('d/e/n', '.')];
    for (let i = 0; i < 38; i++) chain.push(symlink(`l${i}`, `l${i + 1}`));
    chain.push(symlink('l38', 'd'));
    const s1 = await scratch();
    // l0/f resolves through 39 hops; l0/m/f takes one more: 40, allowed.
    await unpack([...chain, file('l0/f'), file('l0/m/f')], s1.dest);
    assert.deepEqual((await fsp.readdir(path.join(s1.dest, 'd', 'e'))).sort(), ['f', 'n']);
    // l0/m/n/f takes 41: refused as a fresh walk would refuse it.
    const s2 = await scratch();
    await assert.rejects(unpack([...chain, file('l0/f'), file('l0/m/f'), file('l0/m/n/f')], s2.dest), isCode('ERR_UNSAFE_CONTENT', /40 symlinks/));
  });
});

describe('issue-14-unpack-syscalls: fewer calls per file, the same result', () => {
  test('files get their exact mode whether or not the umask lets open set it', async () => {
    const s = await scratch();
    const modes = [0o644, 0o755, 0o600, 0o666, 0o777, 0o400, 0o4755, 0o2755, 0o1644, 0o444];
    await unpack(
      modes.map((m) => ({ header: { name: `f${m.toString(8)}`, type: 'file', mode: m, mtime: MTIME }, data: 'x' })),
      s.dest,
    );
    for (const m of modes) assert.equal((await fsp.lstat(path.join(s.dest, `f${m.toString(8)}`))).mode & 0o7777, m, m.toString(8));
  });

  test('a file in a setgid layer root takes the group its header names, not the root\'s', { skip: !asRoot && 'needs root' }, async () => {
    const s = await scratch();
    await fsp.chown(s.dest, 0, 4242);
    await fsp.chmod(s.dest, 0o2770);
    await unpack([file('f'), symlink('l', 'f'), dir('d/'), file('d/g'), file('n/h')], s.dest);
    for (const p of ['f', 'l', 'd/g', 'n/h']) {
      const st = await fsp.lstat(path.join(s.dest, p));
      assert.deepEqual([st.uid, st.gid], [0, 0], p);
    }
  });

  test('regression: enospc-write-as-tar-error — a full disk while writing an entry is ERR_RESOURCE_EXHAUSTED naming the entry', { skip: !asRoot && 'needs root (tmpfs mount)' }, async () => {
    const mnt = path.join(base, `tiny${++seq}`);
    await fsp.mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'berth-test-tiny', mnt]);
    try {
      const dest = path.join(mnt, 'dest');
      await fsp.mkdir(dest, { mode: 0o700 });
      await assert.rejects(
        unpack([{ header: { name: 'big', type: 'file', mode: 0o644, mtime: MTIME }, data: 'x'.repeat(3 * 2 ** 20) }, file('after')], dest),
        isCode('ERR_RESOURCE_EXHAUSTED', /entry "big"/, /ENOSPC/),
      );
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
