import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pack } from 'tar-stream';
import { BerthError } from '../../src/lib/errors.js';
import { TarReader, type EntrySink, type PaxRecords, type TarHeader } from '../../src/runtime/unpack/tarread.js';
import { END, dir, file, gnuLong, member, pax, symlink, tarHeader, tarOf } from '../helpers/hostile.js';

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
        ['short', 'file', 0, true],
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

  test('the PAX size frames the data; a PAX path wins over a GNU long name', () => {
    const tar = Buffer.concat([gnuLong('gnu-name'), pax([['path', 'pax-name'], ['size', '3']]), member({ name: 'hdr', type: '0', size: 0 }), Buffer.from('abc'.padEnd(512, '\0')), END]);
    const seen = read(tar);
    assert.equal(seen.entries.length, 1);
    assert.equal(seen.entries[0]?.name, 'gnu-name'); // the header's name; the writer takes the PAX path from the records
    assert.equal(seen.entries[0]?.pax?.path, 'pax-name');
    assert.equal(seen.entries[0]?.data, 'abc');
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
      b.fill(0x20, 148, 156);
      let sum = 0;
      for (const x of b) sum += signed ? (x < 128 ? x : x - 256) : x;
      b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
      const seen = read(Buffer.concat([b, END]));
      assert.equal(seen.entries.length, 1);
    }
    const seen = read(Buffer.concat([h, END]));
    assert.equal(seen.entries[0]?.mtime, 0o1234567);
  });

  test('a bad checksum, an unknown format and a long header over 4 MiB are refused', () => {
    refused(() => read(Buffer.concat([member({ name: 'f', type: '0', badChecksum: true }, 'x'), END])), /checksum mismatch/);
    const v7 = tarHeader({ name: 'f', type: '0' }, 0);
    v7.fill(0, 257, 265);
    v7.fill(0x20, 148, 156);
    let sum = 0;
    for (const x of v7) sum += x;
    v7.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    refused(() => read(Buffer.concat([v7, END])), /unknown format/);
    refused(() => read(Buffer.concat([tarHeader({ name: 'PaxHeaders/x', type: 'x', size: 4 * 2 ** 20 + 1 }, 0), END])), /exceeds 4194304/);
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
});
