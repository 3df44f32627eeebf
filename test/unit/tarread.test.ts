import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pack } from 'tar-stream';
import { BerthError } from '../../src/lib/errors.js';
import { TarReader, type EntrySink, type PaxRecords, type TarHeader } from '../../src/runtime/unpack/tarread.js';
import { END, dir, file, gnuLong, member, pax, paxBody, setChecksum, symlink, tarHeader, tarOf } from '../helpers/hostile.js';

/** What a reader saw: each entry with its data, the global headers, and the sinks aborted. */
interface Seen {
  entries: { name: string; type: string | null; size: number; linkname: string | null; mtime: number; pax: Record<string, string> | undefined; data: string; ended: boolean }[];
  globals: Record<string, string>[];
  aborted: string[];
}

function recordsOf(p: PaxRecords | undefined): Record<string, string> | undefined {
  return p === undefined ? undefined : Object.fromEntries([...p].map(([k, v]) => [k, v.toString('latin1')]));
}

/** Reads `tar` pushed in pieces of `step` bytes (all at once when step is 0). */
function read(tar: Buffer, step = 0, opts: { throwAt?: string } = {}): Seen {
  const seen: Seen = { entries: [], globals: [], aborted: [] };
  const reader = new TarReader({
    entry(h: TarHeader, p: PaxRecords | undefined): EntrySink | undefined {
      if (opts.throwAt === h.name) throw new BerthError('ERR_INVALID_IMAGE', `refused ${h.name}`);
      const e = { name: h.name, type: h.type, size: h.size, linkname: h.linkname, mtime: h.mtime, pax: recordsOf(p), data: '', ended: false };
      seen.entries.push(e);
      return {
        data: (c) => (e.data += c.toString('latin1')),
        end: () => (e.ended = true),
        abort: () => seen.aborted.push(h.name),
      };
    },
    globalHeader: (r) => seen.globals.push(recordsOf(r) ?? {}),
  });
  try {
    if (step === 0) reader.push(tar);
    else for (let off = 0; off < tar.length; off += step) reader.push(tar.subarray(off, off + step));
    reader.end();
  } catch (err) {
    (err as { seen?: Seen }).seen = seen;
    throw err;
  }
  return seen;
}

function refused(fn: () => unknown, re: RegExp): Seen {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof BerthError, `not a BerthError: ${String(err)}`);
    assert.equal(err.code, 'ERR_INVALID_IMAGE');
    assert.match(err.message, re);
    return (err as { seen?: Seen }).seen ?? { entries: [], globals: [], aborted: [] };
  }
  assert.fail('not refused');
}

async function tarStreamPack(entries: { name: string; type?: 'file' | 'directory' | 'symlink'; data?: string; linkname?: string }[]): Promise<Buffer> {
  const p = pack();
  for (const e of entries) p.entry({ name: e.name, type: e.type ?? 'file', ...(e.linkname !== undefined ? { linkname: e.linkname } : {}), mtime: new Date(1_600_000_000_000) }, e.data ?? '');
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('TarReader', () => {
  test('entries, data and padding come out the same whatever the chunk boundaries', async () => {
    const longName = `${'d'.repeat(120)}/file`;
    const tar = Buffer.concat([
      dir('a/'),
      file('a/one', 'x'.repeat(700)),
      symlink('a/link', 'one'),
      gnuLong(longName),
      file('ignored-name', 'long'),
      pax([['path', 'p/ä'], ['SCHILY.xattr.user.k', Buffer.from([0xff, 0x00, 0x01])]]),
      file('short', ''),
      file('empty', ''),
      END,
    ]);
    const whole = read(tar);
    assert.deepEqual(
      whole.entries.map((e) => [e.name, e.type, e.data.length, e.ended]),
      [
        ['a/', 'directory', 0, true],
        ['a/one', 'file', 700, true],
        ['a/link', 'symlink', 0, true],
        [longName, 'file', 4, true],
        [Buffer.from('p/ä').toString('latin1'), 'file', 0, true], // the PAX path's bytes, one char each

        ['empty', 'file', 0, true],
      ],
    );
    assert.equal(whole.entries[2]?.linkname, 'one');
    assert.equal(whole.entries[4]?.pax?.['SCHILY.xattr.user.k'], '\u00ff\u0000\u0001'); // raw bytes, not UTF-8-decoded
    assert.equal(whole.entries[5]?.pax, undefined); // PAX records belong to one entry only
    for (const step of [1, 7, 511, 512, 513, 1000]) assert.deepEqual(read(tar, step), whole, `step ${step}`);
  });

  test('reads what tar-stream writes (ustar prefix, PAX for long names), with its mtimes', async () => {
    const deep = `${'sub/'.repeat(30)}leaf.txt`;
    const tar = await tarStreamPack([{ name: 'dir', type: 'directory' }, { name: deep, data: 'hello' }, { name: 'l', type: 'symlink', linkname: 'dir' }]);
    const seen = read(tar, 300);
    assert.deepEqual(
      seen.entries.map((e) => [e.name, e.type, e.data]),
      [
        ['dir', 'directory', ''],
        [deep, 'file', 'hello'],
        ['l', 'symlink', ''],
      ],
    );
    assert.equal(seen.entries[1]?.mtime, 1_600_000_000);
  });

  test('a directory reads no data whatever its size field says (as Go)', () => {
    const tar = Buffer.concat([tarHeader({ name: 'd/', type: '5', size: 512 }, 0), file('f', 'after'), END]);
    const seen = read(tar);
    assert.deepEqual(
      seen.entries.map((e) => [e.name, e.data]),
      [
        ['d/', ''],
        ['f', 'after'],
      ],
    );
  });

  test('an old-style name ending in / with typeflag 0 is a directory', () => {
    const seen = read(Buffer.concat([member({ name: 'old/', type: '\0' }), END]));
    assert.equal(seen.entries[0]?.type, 'directory');
  });

  test('the PAX size frames the data; a GNU long name wins over a PAX path, as in Go (regression tar-name-precedence-as-go)', () => {
    const tar = Buffer.concat([gnuLong('gnu-name'), pax([['path', 'pax-name'], ['size', '3']]), member({ name: 'hdr', type: '0', size: 0 }), Buffer.from('abc'.padEnd(512, '\0')), END]);
    const seen = read(tar);
    assert.equal(seen.entries.length, 1);
    assert.equal(seen.entries[0]?.name, 'gnu-name');
    assert.equal(seen.entries[0]?.data, 'abc');
    const paxOnly = read(Buffer.concat([pax([['path', 'pax-name'], ['linkpath', 'pax-target']]), symlink('hdr', 'hdr-target'), END]));
    assert.deepEqual([paxOnly.entries[0]?.name, paxOnly.entries[0]?.linkname], ['pax-name', 'pax-target']);
    const both = read(Buffer.concat([gnuLong('gnu-target', 'K'), pax([['linkpath', 'pax-target']]), symlink('l', 'hdr-target'), END]));
    assert.equal(both.entries[0]?.linkname, 'gnu-target');
  });

  test('a PAX global header is reported and never applied', () => {
    const seen = read(Buffer.concat([pax([['path', '../../escape'], ['uid', '7']], { type: 'g' }), file('f', 'x'), END]));
    assert.deepEqual(seen.globals, [{ path: '../../escape', uid: '7' }]);
    assert.equal(seen.entries[0]?.name, 'f');
    assert.equal(seen.entries[0]?.pax, undefined);
  });

  test('base-256 and space-led octal numbers; the signed checksum of old tars is accepted', () => {
    const h = tarHeader({ name: 'big', type: '0', size: 0, uid: 0 }, 0);
    // uid as base-256 (0x80 then big-endian), mtime with leading spaces, then the checksum again.
    h.fill(0, 108, 116);
    h[108] = 0x80;
    h.writeUInt32BE(70000, 112);
    h.write('   1234567\0', 136, 'latin1');
    const withHighByte = Buffer.from(h);
    withHighByte[500] = 0xff; // in the unused tail: signed and unsigned sums differ
    for (const [b, signed] of [
      [h, false],
      [withHighByte, true],
    ] as const) {
      setChecksum(b, { signed });
      const seen = read(Buffer.concat([b, END]));
      assert.equal(seen.entries.length, 1);
    }
    const seen = read(Buffer.concat([h, END]));
    assert.equal(seen.entries[0]?.mtime, 0o1234567);
  });

  test('a bad checksum, an unknown format and a long header over 1 MiB (as Go) are refused', () => {
    refused(() => read(Buffer.concat([member({ name: 'f', type: '0', badChecksum: true }, 'x'), END])), /checksum mismatch/);
    const v7 = tarHeader({ name: 'f', type: '0' }, 0);
    v7.fill(0, 257, 265);
    setChecksum(v7);
    refused(() => read(Buffer.concat([v7, END])), /unknown format/);
    refused(() => read(Buffer.concat([tarHeader({ name: 'PaxHeaders/x', type: 'x', size: 2 ** 20 + 1 }, 0), END])), /exceeds 1048576/);
    const atLimit = paxBody([['comment', 'c'.repeat(2 ** 20 - 20)]]);
    assert.ok(atLimit.length <= 2 ** 20);
    assert.equal(read(Buffer.concat([pax([], { body: atLimit }), file('f', 'x'), END])).entries[0]?.name, 'f');
  });

  test('the first zero block ends the archive: zeros may follow, nothing else', () => {
    const ok = read(Buffer.concat([file('a', 'a'), END, Buffer.alloc(10240 - 1536), Buffer.alloc(100)]));
    assert.deepEqual(
      ok.entries.map((e) => e.name),
      ['a'],
    );
    const hidden = refused(() => read(Buffer.concat([file('a', 'a'), Buffer.alloc(512), file('hidden', 'h'), END]), 64), /end-of-archive/);
    assert.deepEqual(
      hidden.entries.map((e) => e.name),
      ['a'],
    );
    refused(() => read(Buffer.concat([file('a', 'a'), END, Buffer.alloc(100, 'garbage')])), /end-of-archive/);
  });

  test('an archive cut inside a header, inside data or after a long header is refused; the open entry is aborted', () => {
    const tar = tarOf(file('a', 'x'.repeat(2000)));
    const cut = refused(() => read(tar.subarray(0, 512 + 1000), 100), /unexpected end of data/);
    assert.deepEqual(cut.aborted, ['a']);
    assert.equal(cut.entries[0]?.ended, false);
    refused(() => read(tar.subarray(0, 300)), /unexpected end of data/);
    refused(() => read(Buffer.concat([file('a', 'x')]).subarray(0, 600)), /unexpected end of data/); // inside the padding
    refused(() => read(gnuLong('name')), /ends after a long header/);
  });

  test('an entry the visitor refuses stops the archive there', () => {
    const seen = refused(() => read(Buffer.concat([file('a', 'a'), file('bad', 'b'), file('c', 'c'), END]), 0, { throwAt: 'bad' }), /refused bad/);
    assert.deepEqual(
      seen.entries.map((e) => e.name),
      ['a'],
    );
  });

  test('a malformed PAX record is refused (strict, unlike tar-stream)', () => {
    refused(() => read(Buffer.concat([pax([], { body: Buffer.from('999 path=x\n') }), file('f', 'x'), END])), /parse pax header: bad record length/);
    refused(() => read(Buffer.concat([pax([], { body: Buffer.from('9 =value\n') }), file('f', 'x'), END])), /parse pax header: missing keyword/);
  });

  // Parser differences with Go's archive/tar (what docker, containerd and image scanners read) are
  // places to hide content: an entry one reader extracts and the other reads as file data.
  describe('read as Go reads it', () => {
    /** `h` with the bytes at each offset replaced and its checksum made right again. */
    const patched = (h: Buffer, edits: readonly (readonly [number, string | Buffer])[]): Buffer => {
      const b = Buffer.from(h);
      for (const [off, v] of edits) (typeof v === 'string' ? Buffer.from(v, 'latin1') : v).copy(b, off);
      return setChecksum(b);
    };
    /** Two blocks that are a whole member to a reader that takes them for headers. */
    const SMUGGLED = file('smuggled', 'evil'.padEnd(512, '!'));
    const names = (seen: Seen): string[] => seen.entries.map((e) => e.name);

    test('typeflag NUL: a directory only when the final name (PAX path, GNU long name) ends in / (regression tar-nul-type-by-final-name)', () => {
      const asFile = read(Buffer.concat([pax([['path', 'f']]), member({ name: 'x/', type: '\0' }, SMUGGLED), END]));
      assert.deepEqual(asFile.entries.map((e) => [e.name, e.type, e.data.length]), [['f', 'file', SMUGGLED.length]]);
      const viaGnu = read(Buffer.concat([gnuLong('g'), member({ name: 'x/', type: '\0' }, SMUGGLED), END]));
      assert.deepEqual(viaGnu.entries.map((e) => [e.name, e.type, e.data.length]), [['g', 'file', SMUGGLED.length]]);
      const asDir = read(Buffer.concat([pax([['path', 'd/']]), tarHeader({ name: 'x', type: '\0', size: 1024 }, 0), SMUGGLED, END]));
      assert.deepEqual(asDir.entries.map((e) => [e.name, e.type, e.data.length]), [['d/', 'directory', 0], ['smuggled', 'file', 512]]);
    });

    test("typeflag '0' stays a file whatever its name ends with (regression tar-typeflag-0-slash)", () => {
      const seen = read(Buffer.concat([member({ name: 'a/', type: '0' }, SMUGGLED), END]));
      assert.deepEqual(seen.entries.map((e) => [e.name, e.type, e.data.length]), [['a/', 'file', SMUGGLED.length]]);
    });

    test('links, symlinks, devices and FIFOs read no data whatever their size says (regression tar-header-only-types)', () => {
      for (const type of ['1', '2', '3', '4', '6']) {
        const seen = read(Buffer.concat([tarHeader({ name: `t${type}`, type, linkname: 'x', size: 1024 }, 0), SMUGGLED, END]));
        assert.deepEqual(names(seen), [`t${type}`, 'smuggled'], `type ${type}`);
      }
    });

    test('octal fields: spaces and NULs trimmed at both ends, cut at a NUL, anything else refused (regression tar-octal-as-go)', () => {
      const lead = read(Buffer.concat([tarHeader({ name: 'f', type: '0', sizeField: Buffer.from('\0 0000002000', 'latin1') }, 0), SMUGGLED, END]));
      assert.deepEqual(lead.entries.map((e) => [e.name, e.data.length]), [['f', 1024]]);
      const cut = read(Buffer.concat([tarHeader({ name: 'f', type: '0', sizeField: Buffer.from('00000000003\0x', 'latin1').subarray(0, 12) }, 0), Buffer.from('abc'.padEnd(512, '\0')), END]));
      assert.equal(cut.entries[0]?.data, 'abc');
      refused(() => read(Buffer.concat([tarHeader({ name: 'f', type: '0', sizeField: Buffer.from('0000 000003\0', 'latin1') }, 0), END])), /invalid size field/);
      refused(() => read(Buffer.concat([patched(tarHeader({ name: 'f', type: '0' }, 0), [[100, '0000648\0']]), END])), /invalid mode field/);
      refused(() => read(Buffer.concat([patched(tarHeader({ name: 'f', type: '0' }, 0), [[136, '0000000001x\0']]), END])), /invalid mtime field/);
      // Base-256 as Go: the bits after the marker bit of the first byte count.
      const b256 = read(Buffer.concat([tarHeader({ name: 'f', type: '0', sizeField: Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]) }, 0), Buffer.from('abc'.padEnd(512, '\0')), END]));
      assert.equal(b256.entries[0]?.data, 'abc');
    });

    test('a PAX global header drops pending x, L and K headers (regression tar-global-drops-pending)', () => {
      const seen = read(Buffer.concat([pax([['path', 'evil']]), gnuLong('evil2'), gnuLong('evil3', 'K'), pax([['comment', 'c']], { type: 'g' }), symlink('benign', 'target'), END]));
      assert.deepEqual(seen.entries.map((e) => [e.name, e.linkname, e.pax]), [['benign', 'target', undefined]]);
      assert.deepEqual(seen.globals, [{ comment: 'c' }]);
    });

    test("'N' is not a long-name header (regression tar-old-gnu-n)", () => {
      const seen = read(Buffer.concat([member({ name: 'n', type: 'N' }, 'evil-name\0'), file('benign', 'x'), END]));
      assert.deepEqual(seen.entries.map((e) => [e.name, e.type]), [['n', null], ['benign', 'file']]);
    });

    test("empty GNU long names and empty PAX values leave the header's fields (regression tar-empty-values)", () => {
      const seen = read(Buffer.concat([gnuLong(''), file('hdr', 'x'), pax([['path', ''], ['size', ''], ['mtime', '']]), file('hdr2', 'abc'), END]));
      assert.deepEqual(seen.entries.map((e) => [e.name, e.data, e.pax]), [['hdr', 'x', undefined], ['hdr2', 'abc', {}]]);
      refused(() => read(Buffer.concat([pax([['size', '3x']]), file('f', 'abc'), END])), /pax size is malformed/);
      const signed = read(Buffer.concat([pax([['size', '+3']]), member({ name: 'f', type: '0', size: 0 }), Buffer.from('abc'.padEnd(512, '\0')), END]));
      assert.equal(signed.entries[0]?.data, 'abc');
    });

    test('ustar prefix: 131 bytes under a star trailer; GNU only by the pre-1.8 fallback (regression tar-prefix-as-go)', () => {
      const star = patched(tarHeader({ name: 'leaf', type: '0', size: 0 }, 0), [[345, 'p'.repeat(131)], [476, 'q'.repeat(24)], [508, 'tar\0']]);
      assert.deepEqual(names(read(Buffer.concat([star, END]))), [`${'p'.repeat(131)}/leaf`]);
      const ustar = patched(tarHeader({ name: 'leaf', type: '0', size: 0 }, 0), [[345, 'p'.repeat(131)], [476, 'q'.repeat(24)]]);
      assert.deepEqual(names(read(Buffer.concat([ustar, END]))), [`${'p'.repeat(131)}${'q'.repeat(24)}/leaf`]);
      const gnu = (atime: string): Buffer => patched(tarHeader({ name: 'leaf', type: '0', size: 0 }, 0), [[257, 'ustar  \0'], [345, atime]]);
      assert.deepEqual(names(read(Buffer.concat([gnu('dir\0'), END]))), ['dir/leaf']); // atime "dir" does not parse: Go reads a prefix
      assert.deepEqual(names(read(Buffer.concat([gnu('00000000017\0'), END]))), ['leaf']); // a real atime
      assert.deepEqual(names(read(Buffer.concat([gnu('\u00e9t\u00e9\0'), END]))), ['leaf']); // not ASCII: no prefix
    });

    test('only an all-zero block ends the archive (regression tar-zero-block-exact)', () => {
      const block = Buffer.alloc(512);
      block.write('0000400\0', 148, 'latin1'); // the checksum of an otherwise empty header
      refused(() => read(Buffer.concat([file('f', 'x'), block, END])), /unknown format/);
    });
  });
});
