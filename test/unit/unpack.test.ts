import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, constants as fsc, existsSync, fstatSync, openSync, promises as fsp, readdirSync, writeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { pack } from 'tar-stream';
import type { Digest } from '../../src/lib/digest.js';
import { BerthError, type ErrorCode } from '../../src/lib/errors.js';
import { createBeneath, lgetxattr, llistxattr, lsetxattr, makedev, mknod, realDirBeneath, syncfs } from '../../src/lib/sys.js';
import { unpackLayer, type UnpackLimits, type UnpackOptions, type UnpackResult } from '../../src/runtime/unpack/index.js';
import { setChecksum } from '../helpers/hostile.js';

// ── tar building ────────────────────────────────────────────────────────────────────────────────

type PackHeader = Parameters<ReturnType<typeof pack>['entry']>[0];
interface Member {
  header: PackHeader;
  data?: string | Buffer;
}

const MTIME = new Date('2021-02-03T04:05:06Z');

async function tarOf(members: Member[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const m of members) {
    const header: PackHeader = { mtime: MTIME, ...m.header };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (m.data === undefined) p.entry(header, cb);
      else p.entry(header, m.data, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

const file = (name: string, data: string, extra: Partial<PackHeader> = {}): Member => ({
  header: { name, type: 'file', mode: 0o644, ...extra },
  data,
});
const dir = (name: string, extra: Partial<PackHeader> = {}): Member => ({ header: { name, type: 'directory', mode: 0o755, ...extra } });
const symlink = (name: string, linkname: string): Member => ({ header: { name, type: 'symlink', linkname, mode: 0o777 } });
const hardlink = (name: string, linkname: string): Member => ({ header: { name, type: 'link', linkname } });

/** A ustar header block built by hand, for names and type flags tar-stream's pack() will not write. */
function rawHeader(h: { name: Buffer | string; type: string; size?: number; mode?: number; uid?: number; gid?: number; linkname?: string }): Buffer {
  const b = Buffer.alloc(512);
  const name = typeof h.name === 'string' ? Buffer.from(h.name) : h.name;
  name.copy(b, 0, 0, 100);
  const oct = (v: number, off: number, len: number): void => void b.write(`${v.toString(8).padStart(len - 1, '0')}\0`, off, 'latin1');
  oct(h.mode ?? 0o644, 100, 8);
  oct(h.uid ?? 0, 108, 8);
  oct(h.gid ?? 0, 116, 8);
  oct(h.size ?? 0, 124, 12);
  oct(Math.floor(MTIME.getTime() / 1000), 136, 12);
  b.write(h.type, 156, 'latin1');
  if (h.linkname !== undefined) b.write(h.linkname, 157, 'latin1');
  b.write('ustar\u000000', 257, 'latin1');
  return setChecksum(b);
}

const pad = (data: Buffer): Buffer => Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
const rawMember = (h: Parameters<typeof rawHeader>[0], data = Buffer.alloc(0)): Buffer =>
  Buffer.concat([rawHeader({ ...h, size: data.length }), pad(data)]);
const END = Buffer.alloc(1024);

/** A PAX extended header ('x', or 'g' for global) with raw byte values. */
function paxMember(records: [string, Buffer | string][], type: 'x' | 'g' = 'x'): Buffer {
  const body = Buffer.concat(
    records.map(([k, v]) => {
      const rest = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from('\n')]);
      let len = rest.length + 1;
      while (String(len).length + rest.length !== len) len++;
      return Buffer.concat([Buffer.from(String(len)), rest]);
    }),
  );
  return rawMember({ name: 'PaxHeaders/x', type }, body);
}

// ── layers ──────────────────────────────────────────────────────────────────────────────────────

const sha = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

interface Layer {
  blob: Buffer;
  mediaType: string;
  expected: { digest: Digest; size: number; diffId: Digest };
}

function layerOf(tar: Buffer, mediaType = GZIP): Layer {
  const blob = mediaType.endsWith('tar') ? tar : gzipSync(tar);
  return { blob, mediaType, expected: { digest: sha(blob), size: blob.length, diffId: sha(tar) } };
}

let base: string;
let seq = 0;
before(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-unpack-'));
});
after(async () => {
  await fsp.rm(base, { recursive: true, force: true });
});

/** A fresh dest inside a fresh directory that also holds an (empty) canary dir and a canary file. */
async function scratch(): Promise<{ dest: string; canaryDir: string; canaryFile: string; outer: string }> {
  const outer = path.join(base, `t${++seq}`);
  const dest = path.join(outer, 'a', 'b', 'dest');
  await fsp.mkdir(dest, { recursive: true, mode: 0o700 });
  const canaryDir = path.join(outer, 'canary');
  await fsp.mkdir(canaryDir);
  const canaryFile = path.join(outer, 'canary.txt');
  await fsp.writeFile(canaryFile, 'canary');
  return { dest, canaryDir, canaryFile, outer };
}

async function assertCanaries(s: { canaryDir: string; canaryFile: string; outer: string }): Promise<void> {
  assert.deepEqual(await fsp.readdir(s.canaryDir), []);
  assert.equal(await fsp.readFile(s.canaryFile, 'utf8'), 'canary');
  assert.deepEqual((await fsp.readdir(s.outer)).sort(), ['a', 'canary', 'canary.txt']);
}

interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

function capture(): { log: NonNullable<UnpackOptions['log']>; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

async function unpack(
  layer: Layer,
  dest: string,
  extra: Partial<Omit<UnpackOptions, 'limits'>> & { limits?: Partial<UnpackLimits>; chunk?: number } = {},
): Promise<UnpackResult> {
  const { chunk = 4096, ...rest } = extra;
  const pieces: Buffer[] = [];
  for (let i = 0; i < layer.blob.length; i += chunk) pieces.push(layer.blob.subarray(i, i + chunk));
  return unpackLayer({
    source: Readable.from(pieces),
    mediaType: layer.mediaType,
    expected: layer.expected,
    dest,
    sync: false,
    ...rest,
  });
}

async function rejects(p: Promise<unknown>, code: ErrorCode, re?: RegExp): Promise<BerthError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof BerthError, `expected BerthError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (re) assert.match(caught.message, re);
  return caught;
}

const exists = async (p: string | Buffer): Promise<boolean> => fsp.lstat(p).then(() => true, () => false);
const mtimeOf = async (p: string): Promise<number> => Math.round((await fsp.lstat(p)).mtimeMs);

// ── tests ───────────────────────────────────────────────────────────────────────────────────────

describe('unpackLayer', () => {
  test('E7 files, directories, symlinks, hardlinks and fifos keep mode, owner and mtime', async () => {
    const s = await scratch();
    const tar = await tarOf([
      dir('etc/', { mode: 0o750, uid: 1000, gid: 1001 }),
      file('etc/hosts', 'hello', { mode: 0o640, uid: 1234, gid: 5678 }),
      symlink('etc/link', 'hosts'),
      hardlink('etc/hard', 'etc/hosts'),
      { header: { name: 'run/fifo', type: 'fifo', mode: 0o620, uid: 7, gid: 8 } },
      file('empty', ''),
    ]);
    const r = await unpack(layerOf(tar), s.dest, { sync: true, chunk: 7 });
    assert.equal(r.entries, 6);
    assert.equal(r.opaqueRoot, false);
    assert.equal(r.uncompressedSize, tar.length);
    const d = (p: string): string => path.join(s.dest, p);
    const etc = await fsp.lstat(d('etc'));
    assert.ok(etc.isDirectory());
    assert.equal(etc.mode & 0o7777, 0o750);
    assert.deepEqual([etc.uid, etc.gid], [1000, 1001]);
    assert.equal(Math.round(etc.mtimeMs), MTIME.getTime());
    const hosts = await fsp.lstat(d('etc/hosts'));
    assert.equal(await fsp.readFile(d('etc/hosts'), 'utf8'), 'hello');
    assert.equal(hosts.mode & 0o7777, 0o640);
    assert.deepEqual([hosts.uid, hosts.gid], [1234, 5678]);
    assert.equal(Math.round(hosts.mtimeMs), MTIME.getTime());
    assert.equal(hosts.nlink, 2);
    assert.equal((await fsp.lstat(d('etc/hard'))).ino, hosts.ino);
    assert.equal(await fsp.readlink(d('etc/link')), 'hosts');
    assert.equal(await mtimeOf(d('etc/link')), MTIME.getTime());
    const fifo = await fsp.lstat(d('run/fifo'));
    assert.ok(fifo.isFIFO());
    assert.equal(fifo.mode & 0o7777, 0o620);
    assert.deepEqual([fifo.uid, fifo.gid], [7, 8]);
    const run = await fsp.lstat(d('run'));
    assert.equal(run.mode & 0o7777, 0o755, 'implicit parents are 0755');
    assert.equal((await fsp.readFile(d('empty'))).length, 0);
  });

  test('E5 setuid, setgid and sticky bits survive chown', async () => {
    const s = await scratch();
    const tar = await tarOf([
      file('bin/su', '#!', { mode: 0o4755, uid: 0, gid: 0 }),
      file('bin/wall', '#!', { mode: 0o2755, uid: 1, gid: 5 }),
      dir('tmp/', { mode: 0o1777 }),
    ]);
    await unpack(layerOf(tar), s.dest);
    assert.equal((await fsp.lstat(path.join(s.dest, 'bin/su'))).mode & 0o7777, 0o4755);
    assert.equal((await fsp.lstat(path.join(s.dest, 'bin/wall'))).mode & 0o7777, 0o2755);
    assert.equal((await fsp.lstat(path.join(s.dest, 'tmp'))).mode & 0o7777, 0o1777);
  });

  test('E5 directory mode and times are applied after its children', async () => {
    const s = await scratch();
    const tar = await tarOf([dir('ro/', { mode: 0o555 }), file('ro/a', 'a'), dir('ro/sub/', { mode: 0o500 }), file('ro/sub/b', 'b')]);
    await unpack(layerOf(tar), s.dest);
    const ro = await fsp.lstat(path.join(s.dest, 'ro'));
    assert.equal(ro.mode & 0o7777, 0o555);
    assert.equal(Math.round(ro.mtimeMs), MTIME.getTime(), 'children did not bump the mtime afterwards');
    assert.equal(await mtimeOf(path.join(s.dest, 'ro/sub')), MTIME.getTime());
    assert.equal(await fsp.readFile(path.join(s.dest, 'ro/sub/b'), 'utf8'), 'b');
  });

  test('E5 uid and gid outside 0…2^32-2 are rejected (PAX)', async () => {
    for (const [key, value] of [
      ['uid', '4294967295'],
      ['gid', '99999999999'],
      ['uid', '-1'],
    ] as const) {
      const s = await scratch();
      const tar = Buffer.concat([paxMember([[key, value]]), rawMember({ name: 'f', type: '0' }, Buffer.from('x')), END]);
      await rejects(unpack(layerOf(tar), s.dest), 'ERR_INVALID_IMAGE', /entry "f"/);
    }
    const s = await scratch();
    const ok = Buffer.concat([paxMember([['uid', '4294967294'], ['gid', '70000']]), rawMember({ name: 'f', type: '0' }, Buffer.from('x')), END]);
    await unpack(layerOf(ok), s.dest);
    const st = await fsp.lstat(path.join(s.dest, 'f'));
    assert.deepEqual([st.uid, st.gid], [4294967294, 70000]);
  });

  test('E2 names with .. components or a leading / are rejected', async () => {
    for (const name of ['../x', 'a/../../x', 'a/..', '/etc/x', '/x']) {
      const s = await scratch();
      const tar = await tarOf([file('ok', 'ok'), file(name, 'pwned')]);
      await rejects(unpack(layerOf(tar), s.dest), 'ERR_UNSAFE_CONTENT', /entry "/);
      await assertCanaries(s);
    }
  });

  test('E2 a leading ./ and empty components are ignored; the root entry is skipped', async () => {
    const s = await scratch();
    await fsp.chmod(s.dest, 0o700);
    const tar = await tarOf([dir('./', { mode: 0o777 }), file('./a//b', 'b'), file('././c', 'c')]);
    const r = await unpack(layerOf(tar), s.dest);
    assert.equal(r.entries, 3);
    assert.equal(await fsp.readFile(path.join(s.dest, 'a/b'), 'utf8'), 'b');
    assert.equal(await fsp.readFile(path.join(s.dest, 'c'), 'utf8'), 'c');
    assert.equal((await fsp.lstat(s.dest)).mode & 0o777, 0o700, 'dest keeps the caller mode');
  });

  test('E2 an absolute symlink target is re-rooted under dest', async () => {
    const s = await scratch();
    const rel = path.relative('/', s.canaryDir); // a/… → the canary if the link escaped
    const tar = await tarOf([
      symlink('a', '/'),
      file(`a/${rel}/pwned`, 'pwned'),
      dir('sub/'),
      symlink('sub/abs', `/${rel}`),
      file('sub/abs/deep', 'deep'),
    ]);
    await unpack(layerOf(tar), s.dest);
    await assertCanaries(s);
    assert.equal(await fsp.readFile(path.join(s.dest, rel, 'pwned'), 'utf8'), 'pwned');
    assert.equal(await fsp.readFile(path.join(s.dest, rel, 'deep'), 'utf8'), 'deep', 're-rooted at dest, not at sub/');
    assert.equal(await fsp.readlink(path.join(s.dest, 'a')), '/');
  });

  test('E2 a relative symlink climbing with .. stops at the root', async () => {
    const s = await scratch();
    // dest is outer/a/b/dest: ../../../canary would be the canary dir.
    const tar = await tarOf([symlink('x', '../../../canary'), dir('d/'), symlink('d/up', '../../../../..'), file('x/pwned', '1'), file('d/up/canary/deep', '2')]);
    await unpack(layerOf(tar), s.dest);
    await assertCanaries(s);
    assert.equal(await fsp.readFile(path.join(s.dest, 'canary/pwned'), 'utf8'), '1');
    assert.equal(await fsp.readFile(path.join(s.dest, 'canary/deep'), 'utf8'), '2');
  });

  test('E2 a symlink loop stops after 40 hops', async () => {
    const s = await scratch();
    const tar = await tarOf([symlink('l1', 'l2'), symlink('l2', 'l1'), file('l1/x', 'x')]);
    await rejects(unpack(layerOf(tar), s.dest), 'ERR_UNSAFE_CONTENT', /40 symlinks/);
    const chain: Member[] = [];
    for (let i = 0; i < 40; i++) chain.push(symlink(`s${i}`, `s${i + 1}`));
    const s2 = await scratch();
    await unpack(layerOf(await tarOf([...chain, dir('s40/'), file('s0/f', 'f')])), s2.dest);
    assert.equal(await fsp.readFile(path.join(s2.dest, 's40/f'), 'utf8'), 'f', '40 hops are allowed');
  });

  test('E2 a file parent that is a regular file is rejected', async () => {
    const s = await scratch();
    const tar = await tarOf([file('f', 'f'), file('f/g', 'g')]);
    await rejects(unpack(layerOf(tar), s.dest), 'ERR_INVALID_IMAGE', /not a directory/);
  });

  test('E2 a directory replaced by a symlink later in the same layer: entries below it follow the link, confined', async () => {
    // The first entries under d/ are resolved by the kernel's one-call walk (all real directories);
    // once d/ and d/e/ are symlinks, that walk must say no and the component walk confine them.
    const s = await scratch();
    const tar = await tarOf([
      dir('d/'),
      dir('d/e/'),
      file('d/e/before', 'b'),
      symlink('d', '../../../canary'),
      file('d/after', 'a'),
      dir('x/'),
      dir('x/y/'),
      file('x/y/one', '1'),
      symlink('x/y', s.canaryDir),
      file('x/y/two', '2'),
    ]);
    await unpack(layerOf(tar), s.dest);
    await assertCanaries(s);
    assert.equal(await fsp.readFile(path.join(s.dest, 'canary/after'), 'utf8'), 'a', 'followed with .. stopping at the root');
    assert.equal(await fsp.readFile(path.join(s.dest, s.canaryDir, 'two'), 'utf8'), '2', 'absolute target re-rooted');
    assert.ok((await fsp.lstat(path.join(s.dest, 'x/y'))).isSymbolicLink(), 'the directory was replaced, not followed');
    assert.ok((await fsp.lstat(path.join(s.dest, 'd'))).isSymbolicLink());
    assert.deepEqual((await fsp.readdir(path.join(s.dest, 'canary'))).sort(), ['after']);
  });

  test('E2 realDirBeneath: true only for real directories below the root', async () => {
    const s = await scratch();
    await fsp.mkdir(path.join(s.dest, 'a/b/c'), { recursive: true });
    await fsp.symlink('b', path.join(s.dest, 'a/lb'));
    await fsp.symlink(s.canaryDir, path.join(s.dest, 'out'));
    await fsp.writeFile(path.join(s.dest, 'a/f'), '');
    const root = Buffer.from(s.dest);
    assert.equal(realDirBeneath(root, Buffer.from('a/b/c')), true);
    assert.equal(realDirBeneath(root, Buffer.from('a/lb/c')), false, 'a symlink inside the root');
    assert.equal(realDirBeneath(root, Buffer.from('a/lb')), false, 'a symlink as the last component');
    assert.equal(realDirBeneath(root, Buffer.from('out')), false, 'a symlink out of the root');
    assert.equal(realDirBeneath(root, Buffer.from('a/f')), false, 'a file');
    assert.equal(realDirBeneath(root, Buffer.from('a/f/g')), false, 'below a file');
    assert.equal(realDirBeneath(root, Buffer.from('a/missing')), false);
    assert.equal(realDirBeneath(root, Buffer.from('../../../canary')), false, '.. above the root');
    assert.equal(realDirBeneath(root, Buffer.from(s.canaryDir)), false, 'an absolute path');
    assert.equal(realDirBeneath(root, Buffer.from('a/b/../b/c')), true, '.. inside the root');
  });

  test('E2 realDirBeneath through a root fd the caller keeps: the same answers, and the fd stays open', async () => {
    const s = await scratch();
    await fsp.mkdir(path.join(s.dest, 'a/b/c'), { recursive: true });
    await fsp.symlink('b', path.join(s.dest, 'a/lb'));
    await fsp.symlink(s.canaryDir, path.join(s.dest, 'out'));
    const fd = openSync(s.dest, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      assert.equal(realDirBeneath(fd, Buffer.from('a/b/c')), true);
      assert.equal(realDirBeneath(fd, Buffer.from('a/lb/c')), false, 'a symlink inside the root');
      assert.equal(realDirBeneath(fd, Buffer.from('out')), false, 'a symlink out of the root');
      assert.equal(realDirBeneath(fd, Buffer.from('../../../canary')), false, '.. above the root');
      assert.equal(realDirBeneath(fd, Buffer.from(s.canaryDir)), false, 'an absolute path');
      assert.ok(fstatSync(fd).isDirectory(), 'the caller\'s fd is not closed by the call');
      assert.throws(() => realDirBeneath(-1, Buffer.from('a')), TypeError);
    } finally {
      closeSync(fd);
    }
  });

  test('E2/E3 createBeneath: a new file under real directories only, never through a symlink, never over anything', async () => {
    const s = await scratch();
    await fsp.mkdir(path.join(s.dest, 'a/b'), { recursive: true });
    await fsp.symlink('b', path.join(s.dest, 'a/lb'));
    await fsp.symlink(s.canaryDir, path.join(s.dest, 'out'));
    await fsp.symlink(s.canaryFile, path.join(s.dest, 'a/b/dangling-to-canary'));
    await fsp.writeFile(path.join(s.dest, 'a/b/there'), 'old');
    const root = openSync(s.dest, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      const fd = createBeneath(root, Buffer.from('a/b/new'), 0o640);
      assert.equal(typeof fd, 'number');
      writeSync(fd as number, 'fresh');
      closeSync(fd as number);
      assert.equal(await fsp.readFile(path.join(s.dest, 'a/b/new'), 'utf8'), 'fresh');
      assert.equal((await fsp.stat(path.join(s.dest, 'a/b/new'))).mode & 0o777, 0o640 & ~process.umask());
      for (const [rel, why] of [
        ['a/b/there', 'an existing file'],
        ['a/b/dangling-to-canary', 'a symlink as the name: not followed'],
        ['a/lb/x', 'a symlink among the parents'],
        ['out/x', 'a symlink out of the root'],
        ['a/missing/x', 'a missing parent'],
        ['../canary/x', '.. above the root'],
        [path.join(s.canaryDir, 'x'), 'an absolute path'],
      ] as const) {
        assert.equal(createBeneath(root, Buffer.from(rel), 0o644), undefined, why);
      }
      assert.equal(await fsp.readFile(path.join(s.dest, 'a/b/there'), 'utf8'), 'old');
      assert.ok(!existsSync(path.join(s.dest, 'a/b/x')), 'nothing made through a/lb');
      await assertCanaries(s);
    } finally {
      closeSync(root);
    }
  });

  test('the writer keeps one fd of the root per layer and closes it, after a success and after a refused entry (regression root-fd-per-writer)', async () => {
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    const ok = await scratch();
    const deep = Array.from({ length: 40 }, (_, i) => file(`d${i % 4}/e${i % 3}/f${i}`, 'x'));
    await unpack(layerOf(await tarOf([dir('d0'), dir('d1'), ...deep])), ok.dest);
    assert.equal(await fsp.readFile(path.join(ok.dest, 'd3/e1/f7'), 'utf8'), 'x');
    assert.equal(fds(), before, 'no fd left after a success');
    const bad = await scratch();
    await rejects(unpack(layerOf(await tarOf([file('a/ok', 'x'), file('../escape', 'x')])), bad.dest), 'ERR_UNSAFE_CONTENT');
    assert.equal(fds(), before, 'no fd left after a failure');
    await assertCanaries(bad);
  });

  test('E3 a file replacing a symlink does not write through it', async () => {
    const s = await scratch();
    const tar = await tarOf([symlink('etc', s.canaryFile), symlink('rel', '../../../canary.txt'), file('etc', 'pwned'), file('rel', 'pwned')]);
    await unpack(layerOf(tar), s.dest);
    await assertCanaries(s);
    for (const n of ['etc', 'rel']) {
      const st = await fsp.lstat(path.join(s.dest, n));
      assert.ok(st.isFile());
      assert.equal(await fsp.readFile(path.join(s.dest, n), 'utf8'), 'pwned');
    }
  });

  test('E3 a directory replacing a symlink does not follow it', async () => {
    const s = await scratch();
    const tar = await tarOf([symlink('s', s.canaryDir), dir('s/', { mode: 0o700 }), file('s/f', 'f'), symlink('t', '../../../canary'), dir('t/')]);
    await unpack(layerOf(tar), s.dest);
    await assertCanaries(s);
    const st = await fsp.lstat(path.join(s.dest, 's'));
    assert.ok(st.isDirectory());
    assert.equal(st.mode & 0o7777, 0o700);
    assert.equal(await fsp.readFile(path.join(s.dest, 's/f'), 'utf8'), 'f');
    assert.ok((await fsp.lstat(path.join(s.dest, 't'))).isDirectory());
    assert.equal((await fsp.lstat(s.canaryDir)).mode & 0o7777, 0o755, 'canary dir mode untouched');
  });

  test('E3 a file replacing a hardlink does not change the other name', async () => {
    const s = await scratch();
    const tar = await tarOf([file('a', 'A'), hardlink('b', 'a'), file('b', 'B')]);
    await unpack(layerOf(tar), s.dest);
    assert.equal(await fsp.readFile(path.join(s.dest, 'a'), 'utf8'), 'A');
    assert.equal(await fsp.readFile(path.join(s.dest, 'b'), 'utf8'), 'B');
  });

  test('E3 duplicate entries: the later wins, a directory over a directory merges', async () => {
    const s = await scratch();
    const tar = await tarOf([
      file('x', 'first', { mode: 0o600 }),
      file('x', 'second', { mode: 0o644 }),
      dir('d/', { mode: 0o700 }),
      file('d/keep', 'keep'),
      dir('d/', { mode: 0o751 }),
      dir('y/'),
      file('y/child', 'c'),
      symlink('y', 'x'),
      file('z', 'z'),
      dir('z/', { mode: 0o705 }),
    ]);
    await unpack(layerOf(tar), s.dest);
    assert.equal(await fsp.readFile(path.join(s.dest, 'x'), 'utf8'), 'second');
    assert.equal((await fsp.lstat(path.join(s.dest, 'x'))).mode & 0o7777, 0o644);
    assert.equal(await fsp.readFile(path.join(s.dest, 'd/keep'), 'utf8'), 'keep');
    assert.equal((await fsp.lstat(path.join(s.dest, 'd'))).mode & 0o7777, 0o751);
    assert.equal(await fsp.readlink(path.join(s.dest, 'y')), 'x');
    // The directory 'y' was replaced: its pending metadata must not be applied through the symlink.
    assert.equal((await fsp.lstat(path.join(s.dest, 'x'))).mode & 0o7777, 0o644);
    const z = await fsp.lstat(path.join(s.dest, 'z'));
    assert.ok(z.isDirectory());
    assert.equal(z.mode & 0o7777, 0o705);
  });

  test('E4 a hardlink to a missing target is an invalid image', async () => {
    const s = await scratch();
    const tar = await tarOf([hardlink('bin/sh', 'bin/bash')]);
    await rejects(unpack(layerOf(tar), s.dest), 'ERR_INVALID_IMAGE', /hardlink to a lower layer is not supported/);
  });

  test('E4 hardlink targets follow the entry name rules', async () => {
    for (const [target, code] of [
      ['../canary.txt', 'ERR_UNSAFE_CONTENT'],
      ['/etc/passwd', 'ERR_UNSAFE_CONTENT'],
      ['d', 'ERR_INVALID_IMAGE'],
    ] as const) {
      const s = await scratch();
      await rejects(unpack(layerOf(await tarOf([dir('d/'), hardlink('h', target)])), s.dest), code);
      await assertCanaries(s);
    }
    // A target reached through a symlink is resolved inside dest.
    const s = await scratch();
    const tar = await tarOf([dir('real/'), file('real/f', 'f'), symlink('via', '/real'), hardlink('h', 'via/f')]);
    await unpack(layerOf(tar), s.dest);
    assert.equal((await fsp.lstat(path.join(s.dest, 'h'))).ino, (await fsp.lstat(path.join(s.dest, 'real/f'))).ino);
  });

  test('E6 .wh.<name> becomes a 0:0 character device', async () => {
    const s = await scratch();
    const tar = await tarOf([dir('etc/'), file('etc/.wh.foo', ''), file('.wh.bar', '')]);
    await unpack(layerOf(tar), s.dest);
    for (const p of ['etc/foo', 'bar']) {
      const st = await fsp.lstat(path.join(s.dest, p));
      assert.ok(st.isCharacterDevice(), p);
      assert.equal(st.rdev, 0);
    }
    assert.equal(await exists(path.join(s.dest, 'etc/.wh.foo')), false);
  });

  test('E6 .wh..wh..opq in a subdirectory sets trusted.overlay.opaque=y', async () => {
    const s = await scratch();
    const tar = await tarOf([dir('var/'), dir('var/lib/'), file('var/lib/.wh..wh..opq', ''), file('var/lib/new', 'n')]);
    const r = await unpack(layerOf(tar), s.dest);
    assert.equal(r.opaqueRoot, false);
    assert.deepEqual(lgetxattr(path.join(s.dest, 'var/lib'), 'trusted.overlay.opaque'), Buffer.from('y'));
    assert.equal(lgetxattr(path.join(s.dest, 'var'), 'trusted.overlay.opaque'), null);
    assert.equal(await exists(path.join(s.dest, 'var/lib/.wh..wh..opq')), false);
  });

  test('E6 a root-level opaque marker sets opaqueRoot and no xattr on dest', async () => {
    const s = await scratch();
    const r = await unpack(layerOf(await tarOf([file('.wh..wh..opq', ''), file('a', 'a')])), s.dest);
    assert.equal(r.opaqueRoot, true);
    assert.equal(lgetxattr(s.dest, 'trusted.overlay.opaque'), null);
    assert.deepEqual(await fsp.readdir(s.dest), ['a']);
  });

  test('E6 whiteout basenames "", "." and ".." are rejected', async () => {
    for (const name of ['.wh.', 'd/.wh..', 'd/.wh...']) {
      const s = await scratch();
      await rejects(unpack(layerOf(await tarOf([dir('d/'), file(name, '')])), s.dest), 'ERR_UNSAFE_CONTENT', /whiteout/);
      await assertCanaries(s);
    }
  });

  test('E6 a whiteout never deletes an entry of the same layer', async () => {
    const s = await scratch();
    const { log, lines } = capture();
    const tar = await tarOf([file('keep', 'k'), dir('kd/'), file('kd/x', 'x'), file('.wh.keep', ''), file('.wh.kd', '')]);
    await unpack(layerOf(tar), s.dest, { log });
    assert.equal(await fsp.readFile(path.join(s.dest, 'keep'), 'utf8'), 'k');
    assert.equal(await fsp.readFile(path.join(s.dest, 'kd/x'), 'utf8'), 'x');
    assert.equal(lines.filter((l) => l.msg.includes('whiteout for an entry of the same layer')).length, 2);
  });

  test('E7 null and unknown entry types are rejected', async () => {
    for (const type of ['S', 'Z', 'V']) {
      const s = await scratch();
      const tar = Buffer.concat([rawMember({ name: 'weird', type }), END]);
      await rejects(unpack(layerOf(tar), s.dest), 'ERR_UNSUPPORTED', /unsupported entry type/);
    }
  });

  test('E7 devices are skipped with a warning unless allowed (as root)', async () => {
    const tar = await tarOf([
      { header: { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 } },
      { header: { name: 'dev/loop', type: 'block-device', devmajor: 7, devminor: 300, mode: 0o660 } },
    ]);
    const s = await scratch();
    const { log, lines } = capture();
    await unpack(layerOf(tar), s.dest, { log });
    assert.equal(await exists(path.join(s.dest, 'dev/null')), false);
    assert.equal(lines.filter((l) => l.msg === 'unpack: device node skipped' && l.level === 40).length, 2);

    const s2 = await scratch();
    await unpack(layerOf(tar), s2.dest, { allowDevices: true });
    const nul = await fsp.lstat(path.join(s2.dest, 'dev/null'));
    assert.ok(nul.isCharacterDevice());
    assert.equal(nul.rdev, 1 * 256 + 3);
    assert.equal(nul.mode & 0o7777, 0o666);
    const loop = await fsp.lstat(path.join(s2.dest, 'dev/loop'));
    assert.ok(loop.isBlockDevice());
    assert.equal(loop.rdev, (300 & 0xff) + 7 * 256 + (300 & 0xfff00) * 4096);
  });

  test('E7 xattrs: user.* and security.capability kept (binary), others dropped', async () => {
    const s = await scratch();
    // vfs_cap_data v2 with CAP_SETUID (bit 7): a 0x80 byte, which a UTF-8 decode would corrupt.
    const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const tar = Buffer.concat([
      paxMember([
        ['SCHILY.xattr.user.note', 'hello'],
        ['SCHILY.xattr.security.capability', cap],
        ['SCHILY.xattr.trusted.overlay.opaque', 'y'],
        ['SCHILY.xattr.security.selinux', 'system_u:object_r:bin_t:s0'],
        ['SCHILY.xattr.user.bin', Buffer.from([0xff, 0x00, 0xfe])],
      ]),
      rawMember({ name: 'bin/newuidmap', type: '0', mode: 0o755 }, Buffer.from('elf')),
      paxMember([['SCHILY.xattr.user.dir', 'd']]),
      rawMember({ name: 'dir/', type: '5', mode: 0o755 }),
      END,
    ]);
    await unpack(layerOf(tar), s.dest);
    const f = path.join(s.dest, 'bin/newuidmap');
    assert.deepEqual(llistxattr(f).sort(), ['security.capability', 'user.bin', 'user.note']);
    assert.deepEqual(lgetxattr(f, 'security.capability'), cap);
    assert.deepEqual(lgetxattr(f, 'user.note'), Buffer.from('hello'));
    assert.deepEqual(lgetxattr(f, 'user.bin'), Buffer.from([0xff, 0x00, 0xfe]));
    assert.deepEqual(lgetxattr(path.join(s.dest, 'dir'), 'user.dir'), Buffer.from('d'));
  });

  test('E7 xattr bytes at the limit and one over', async () => {
    const member = (value: string): Buffer =>
      Buffer.concat([paxMember([['SCHILY.xattr.user.k', value]]), rawMember({ name: 'f', type: '0' }, Buffer.from('x')), END]);
    const s = await scratch();
    await unpack(layerOf(member('1234')), s.dest, { limits: { maxXattrBytes: 'user.k'.length + 4 } });
    assert.deepEqual(lgetxattr(path.join(s.dest, 'f'), 'user.k'), Buffer.from('1234'));
    const s2 = await scratch();
    await rejects(unpack(layerOf(member('12345')), s2.dest, { limits: { maxXattrBytes: 'user.k'.length + 4 } }), 'ERR_LIMIT_EXCEEDED');
  });

  test('E8 entry count at the limit and one over', async () => {
    const members = [dir('d/'), file('d/1', '1'), file('d/2', '2')];
    const s = await scratch();
    const r = await unpack(layerOf(await tarOf(members)), s.dest, { limits: { maxEntries: 3 } });
    assert.equal(r.entries, 3);
    const s2 = await scratch();
    const err = await rejects(
      unpack(layerOf(await tarOf([...members, file('d/3', '3')])), s2.dest, { limits: { maxEntries: 3 } }),
      'ERR_LIMIT_EXCEEDED',
      /more than 3 entries/,
    );
    assert.equal(err.details['limit'], 'maxEntries');
    assert.equal(err.retryable, false, 'a configured limit is terminal: the same layer fails the same way');
    assert.equal(await exists(path.join(s2.dest, 'd/3')), false);
  });

  test('E8 file size at the limit and one over, checked before writing', async () => {
    const s = await scratch();
    await unpack(layerOf(await tarOf([file('f', '0123456789')])), s.dest, { limits: { maxFileSize: 10 } });
    assert.equal((await fsp.lstat(path.join(s.dest, 'f'))).size, 10);
    const s2 = await scratch();
    await rejects(unpack(layerOf(await tarOf([file('f', '0123456789X')])), s2.dest, { limits: { maxFileSize: 10 } }), 'ERR_LIMIT_EXCEEDED', /limit is 10/);
    assert.equal(await exists(path.join(s2.dest, 'f')), false);
  });

  test('E8 uncompressed bytes at the limit and one over', async () => {
    const tar = await tarOf([file('f', 'x'.repeat(5000))]);
    const s = await scratch();
    await unpack(layerOf(tar), s.dest, { limits: { maxUncompressedBytes: tar.length } });
    const s2 = await scratch();
    await rejects(unpack(layerOf(tar), s2.dest, { limits: { maxUncompressedBytes: tar.length - 1 } }), 'ERR_LIMIT_EXCEEDED', /uncompressed/);
  });

  test('E8 path bytes and depth at the limit and one over', async () => {
    const s = await scratch();
    await unpack(layerOf(await tarOf([file('a/b/c', 'x')])), s.dest, { limits: { maxDepth: 3, maxPathBytes: 5 } });
    const s2 = await scratch();
    await rejects(unpack(layerOf(await tarOf([file('a/b/c/d', 'x')])), s2.dest, { limits: { maxDepth: 3 } }), 'ERR_LIMIT_EXCEEDED', /levels deep/);
    const s3 = await scratch();
    await rejects(unpack(layerOf(await tarOf([file('a/b/cd', 'x')])), s3.dest, { limits: { maxPathBytes: 5 } }), 'ERR_LIMIT_EXCEEDED', /6 bytes/);
  });

  test('E8 a free-space floor above the free space refuses to start', async () => {
    const s = await scratch();
    const err = await rejects(unpack(layerOf(await tarOf([file('f', 'x')])), s.dest, { limits: { minFreeBytes: Number.MAX_SAFE_INTEGER } }), 'ERR_RESOURCE_EXHAUSTED', /free/);
    assert.equal(err.retryable, true, 'the host running short is retryable');
    assert.deepEqual(await fsp.readdir(s.dest), []);
  });

  test('E1 a wrong digest is a digest mismatch', async () => {
    const s = await scratch();
    const layer = layerOf(await tarOf([file('f', 'x')]));
    layer.expected.digest = sha(Buffer.from('other'));
    await rejects(unpack(layer, s.dest), 'ERR_DIGEST_MISMATCH', /blob hashes to/);
  });

  test('E1 a wrong diffId is a digest mismatch', async () => {
    const s = await scratch();
    const layer = layerOf(await tarOf([file('f', 'x')]));
    layer.expected.diffId = sha(Buffer.from('other'));
    await rejects(unpack(layer, s.dest), 'ERR_DIGEST_MISMATCH', /uncompressed tar hashes to/);
  });

  test('E1 a size mismatch is a digest mismatch, and at most size+1 bytes are read', async () => {
    const layer = layerOf(await tarOf([file('f', 'x'.repeat(100_000))]));
    const shorter = { ...layer, expected: { ...layer.expected, size: layer.blob.length - 1 } };
    await rejects(unpack(shorter, (await scratch()).dest), 'ERR_DIGEST_MISMATCH', /longer than the descriptor size/);
    const longer = { ...layer, expected: { ...layer.expected, size: layer.blob.length + 1 } };
    await rejects(unpack(longer, (await scratch()).dest), 'ERR_DIGEST_MISMATCH', /shorter than the descriptor size/);

    let pulled = 0;
    const endless = new Readable({
      read(): void {
        pulled += 1024;
        this.push(Buffer.alloc(1024, 1));
      },
    });
    const s = await scratch();
    await rejects(
      unpackLayer({ source: endless, mediaType: GZIP, expected: { ...layer.expected, size: 10_000 }, dest: s.dest, sync: false }),
      'ERR_DIGEST_MISMATCH',
      /longer/,
    );
    assert.ok(pulled < 10_000 + 64 * 1024, `read ${pulled} bytes`);
  });

  test('E1 trailing garbage changes the digest and is reported as such', async () => {
    const layer = layerOf(await tarOf([file('f', 'x')]));
    const withGarbage = { ...layer, blob: Buffer.concat([layer.blob, Buffer.from('garbage')]) };
    // Same descriptor size as the garbage-carrying blob, digest of the clean one.
    withGarbage.expected = { ...layer.expected, size: withGarbage.blob.length };
    await rejects(unpack(withGarbage, (await scratch()).dest), 'ERR_DIGEST_MISMATCH', /blob hashes to/);
    // When the descriptor does describe the garbage, the blob is hashed to the end and then rejected as malformed.
    const described = { ...withGarbage, expected: { ...withGarbage.expected, digest: sha(withGarbage.blob) } };
    await rejects(unpack(described, (await scratch()).dest), 'ERR_INVALID_IMAGE', /decompress/);
  });

  test('E1 a corrupt blob reports the digest mismatch, not the parse error', async () => {
    const layer = layerOf(await tarOf([file('f', 'x'.repeat(10_000))]));
    const blob = Buffer.from(layer.blob);
    blob[20] = (blob[20] ?? 0) ^ 0xff;
    const err = await rejects(unpack({ ...layer, blob }, (await scratch()).dest), 'ERR_DIGEST_MISMATCH');
    assert.ok(err.cause !== undefined, 'the parse error is kept as the cause');
  });

  test('E9 names are bytes: latin1 ustar names and UTF-8 PAX paths are kept exactly', async () => {
    const s = await scratch();
    const latin = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "caf\xe9", not UTF-8
    const utf8 = Buffer.from('caf\u0065\u0301-\u00e9', 'utf8'); // decomposed and composed é, not normalised
    const tar = Buffer.concat([
      rawMember({ name: latin, type: '0' }, Buffer.from('L')),
      paxMember([['path', utf8]]),
      rawMember({ name: 'placeholder', type: '0' }, Buffer.from('U')),
      END,
    ]);
    await unpack(layerOf(tar), s.dest);
    const names = (await fsp.readdir(s.dest, { encoding: 'buffer' })).map((b) => b.toString('hex')).sort();
    assert.deepEqual(names, [latin.toString('hex'), utf8.toString('hex')].sort());
    assert.equal(await fsp.readFile(Buffer.concat([Buffer.from(`${s.dest}/`), latin]), 'utf8'), 'L');
  });

  test('E9 PAX global headers are ignored', async () => {
    const s = await scratch();
    const tar = Buffer.concat([
      paxMember([['path', 'evil'], ['uid', '4294967295'], ['comment', 'x']], 'g'),
      rawMember({ name: 'f', type: '0' }, Buffer.from('x')),
      paxMember([['uid', '5']]),
      rawMember({ name: 'g', type: '0' }, Buffer.from('y')),
      END,
    ]);
    await unpack(layerOf(tar), s.dest);
    assert.deepEqual((await fsp.readdir(s.dest)).sort(), ['f', 'g']);
    assert.equal((await fsp.lstat(path.join(s.dest, 'g'))).uid, 5);
  });

  test('entries hidden after an end-of-archive marker are rejected', async () => {
    const s = await scratch();
    const tar = Buffer.concat([rawMember({ name: 'a', type: '0' }, Buffer.from('a')), END, rawMember({ name: 'hidden', type: '0' }, Buffer.from('h')), END]);
    await rejects(unpack(layerOf(tar), s.dest), 'ERR_INVALID_IMAGE', /end-of-archive/);
    const s2 = await scratch();
    const padded = Buffer.concat([rawMember({ name: 'a', type: '0' }, Buffer.from('a')), END, Buffer.alloc(10240 - 1536)]);
    await unpack(layerOf(padded), s2.dest); // zero padding to a record boundary is fine
  });

  test('header-only types carrying data are rejected', async () => {
    const s = await scratch();
    const tar = Buffer.concat([rawMember({ name: 'l', type: '2', linkname: 'x' }, Buffer.from('data')), END]);
    await rejects(unpack(layerOf(tar), s.dest), 'ERR_INVALID_IMAGE', /symlink entry with 4 bytes/);
  });

  test('media types: plain tar and docker gzip work, unknown are unsupported, a plain tar declared zstd is invalid', async () => {
    const tar = await tarOf([file('f', 'x')]);
    await unpack(layerOf(tar, 'application/vnd.oci.image.layer.v1.tar'), (await scratch()).dest);
    await unpack(layerOf(tar, 'application/vnd.docker.image.rootfs.diff.tar.gzip'), (await scratch()).dest);
    const layer = layerOf(tar);
    await rejects(unpack({ ...layerOf(tar, 'application/vnd.oci.image.layer.v1.tar'), mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }, (await scratch()).dest), 'ERR_INVALID_IMAGE', /decompress zstd: not a zstd stream/);
    await rejects(unpack({ ...layer, mediaType: 'application/octet-stream' }, (await scratch()).dest), 'ERR_UNSUPPORTED');
    // gzip media type on a plain tar
    await rejects(unpack({ ...layerOf(tar, 'application/vnd.oci.image.layer.v1.tar'), mediaType: GZIP }, (await scratch()).dest), 'ERR_INVALID_IMAGE', /decompress/);
  });

  test('dest must be an existing empty directory', async () => {
    const s = await scratch();
    await fsp.writeFile(path.join(s.dest, 'x'), '');
    await rejects(unpack(layerOf(await tarOf([file('f', 'x')])), s.dest), 'ERR_INVALID_ARGUMENT');
    await rejects(unpack(layerOf(await tarOf([file('f', 'x')])), path.join(s.outer, 'missing')), 'ERR_INVALID_ARGUMENT');
  });

  test('an abort stops the unpack with the signal reason', async () => {
    const s = await scratch();
    const layer = layerOf(await tarOf([file('f', 'x')]));
    const ac = new AbortController();
    const stalled = new Readable({ read(): void {} });
    stalled.push(layer.blob.subarray(0, 10));
    const p = unpackLayer({ source: stalled, mediaType: GZIP, expected: layer.expected, dest: s.dest, signal: ac.signal, sync: false });
    setTimeout(() => ac.abort(new Error('stop')), 20);
    await assert.rejects(p, /stop/);
  });

  test('the error names the layer and escapes control characters in the entry', async () => {
    const s = await scratch();
    const layer = layerOf(await tarOf([file('evil\n{"level":60}/../x', 'x')]));
    const err = await rejects(unpack(layer, s.dest), 'ERR_UNSAFE_CONTENT');
    assert.ok(err.message.includes(layer.expected.digest));
    assert.ok(err.message.includes('evil\\x0a{'), err.message);
    assert.ok(!err.message.includes('\n'));
  });
});

describe('sys addon', () => {
  test('errors carry errno codes like Node system errors', async () => {
    const s = await scratch();
    const missing = path.join(s.outer, 'missing');
    assert.throws(() => lgetxattr(missing, 'user.x'), (err: NodeJS.ErrnoException) => err.code === 'ENOENT' && err.syscall === 'lgetxattr' && err.errno === -2);
    assert.throws(() => mknod(s.canaryFile, 0o010600, 0), (err: NodeJS.ErrnoException) => err.code === 'EEXIST');
    assert.throws(() => lsetxattr(Buffer.from(`${s.canaryFile}\0x`), 'user.x', Buffer.alloc(0)), /NUL/);
    await assert.rejects(syncfs(missing), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
    await syncfs(s.outer);
  });

  test('xattrs round-trip on Buffer paths, symlinks are not followed', async () => {
    const s = await scratch();
    const name = Buffer.concat([Buffer.from(`${s.outer}/`), Buffer.from([0xff, 0x41])]);
    await fsp.writeFile(name, '');
    lsetxattr(name, 'user.a', Buffer.from([0, 1, 0x80]));
    assert.deepEqual(lgetxattr(name, 'user.a'), Buffer.from([0, 1, 0x80]));
    assert.equal(lgetxattr(name, 'user.missing'), null);
    assert.deepEqual(llistxattr(name), ['user.a']);
    const link = path.join(s.outer, 'link');
    await fsp.symlink(name, link);
    assert.equal(lgetxattr(link, 'user.a'), null);
  });

  test('makedev matches the kernel encoding and rejects out-of-range numbers', () => {
    assert.equal(makedev(1, 3), 0x103);
    assert.equal(makedev(0xfff, 0xfffff), 0xffffffff); // glibc: minor[7:0] | major[11:0] << 8 | minor[19:8] << 20
    assert.equal(makedev(0x12, 0x34567), 0x34501267); // value printed by a C program using <sys/sysmacros.h>
    assert.throws(() => makedev(4096, 0), RangeError);
    assert.throws(() => makedev(0, -1), RangeError);
  });
});

test('regression: truncated-tar-crash — a tar that ends inside a file\'s data is an error, not a process crash', async () => {
  for (const mediaType of [GZIP, 'application/vnd.oci.image.layer.v1.tar']) {
    const s = await scratch();
    const truncated = Buffer.concat([rawHeader({ name: 'f', type: '0', size: 100_000 }), Buffer.alloc(512, 0x41)]);
    const err = await rejects(unpack(layerOf(truncated, mediaType), s.dest), 'ERR_INVALID_IMAGE');
    assert.match(err.message, /sha256:[a-f0-9]{64}/);
    await assertCanaries(s);
  }
});

test('regression: symlink-amplification — a symlink that expands to thousands of components is refused quickly', async () => {
  const s = await scratch();
  const target = Array(800).fill('a/..').join('/');
  const members: Member[] = [dir('a'), symlink('s', `${target}/s`)];
  let name = 's';
  for (let i = 0; i < 39; i++) name += '/s';
  members.push(file(`${name}/f`, 'x'));
  const began = Date.now();
  await rejects(unpack(layerOf(await tarOf(members)), s.dest), 'ERR_UNSAFE_CONTENT', /symlink amplification|more than 40 symlinks/);
  assert.ok(Date.now() - began < 5000, `refused in ${Date.now() - began} ms`);
  await assertCanaries(s);
});

test('regression: implicit-dir-hides-lower-metadata — an implied parent copies the lower layer\'s mode and owner', async () => {
  const lowerScratch = await scratch();
  const lower = lowerScratch.dest;
  await fsp.mkdir(path.join(lower, 'tmp'));
  await fsp.chmod(path.join(lower, 'tmp'), 0o1777);
  await fsp.mkdir(path.join(lower, 'home', 'app'), { recursive: true });
  await fsp.chown(path.join(lower, 'home', 'app'), 1000, 1000);
  await fsp.chmod(path.join(lower, 'home', 'app'), 0o700);
  // The lower layer's symlink must not lead the lookup out of the layer.
  await fsp.symlink('/etc', path.join(lower, 'etc-link'));
  const s = await scratch();
  await unpack(layerOf(await tarOf([file('tmp/x', '1'), file('home/app/.profile', '2'), file('etc-link/y', '3'), file('new/z', '4')])), s.dest, { lowerDirs: [lower] });
  const tmp = await fsp.lstat(path.join(s.dest, 'tmp'));
  assert.equal(tmp.mode & 0o7777, 0o1777);
  const app = await fsp.lstat(path.join(s.dest, 'home', 'app'));
  assert.equal(app.mode & 0o7777, 0o700);
  assert.equal(app.uid, 1000);
  assert.equal(app.gid, 1000);
  // No lower has these: the default. etc-link is a directory in this layer (not the host's /etc).
  assert.equal((await fsp.lstat(path.join(s.dest, 'new'))).mode & 0o7777, 0o755);
  assert.ok((await fsp.lstat(path.join(s.dest, 'etc-link'))).isDirectory());
  await assertCanaries(s);
});

test('regression: abort-before-read-hangs — an abort during the checks before the first byte ends an unpack whose source has no data yet', async () => {
  // A blob still downloading (unpack/thread.ts's growing file) yields nothing until more is
  // written. An abort that landed before the read loop listened for it was never seen there.
  const s = await scratch();
  const layer = layerOf(await tarOf([file('f', 'x')]));
  let destroyed = false;
  const stalled = new Readable({
    read() {},
    destroy(err, cb) {
      destroyed = true;
      cb(err);
    },
  });
  const abort = new AbortController();
  const p = unpackLayer({ source: stalled, mediaType: layer.mediaType, expected: layer.expected, dest: s.dest, sync: false, signal: abort.signal });
  abort.abort(new Error('stop'));
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    p.then(() => 'resolved', (err: unknown) => (err instanceof Error ? err.message : String(err))),
    new Promise<string>((r) => (timer = setTimeout(() => r('still waiting after 5 s'), 5000))),
  ]);
  clearTimeout(timer);
  assert.equal(outcome, 'stop');
  assert.equal(destroyed, true, 'the source was destroyed');
});
