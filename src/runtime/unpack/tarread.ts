import { isUtf8 } from 'node:buffer';
import { BerthError } from '../../lib/errors.js';

/**
 * A layer tar read as it arrives: bytes are pushed in, headers and data slices come out,
 * synchronously, in order. It reads layers (the unpacker) and the archives of `images import`;
 * tar-stream only writes those of `images export`.
 *
 * Why our own: tar-stream makes a stream per entry and hands its data over through events and
 * callbacks, which cost more than the syscalls that write the entry (bench/README.md, bench/pull:
 * parsing the 17.8k entries of bench/large took ~0.6 s of CPU on a fresh thread through
 * tar-stream, ~0.28 s here; every pull starts fresh unpack threads). Its public API also left
 * three gaps berth had to close by patching its internals: raw PAX values, PAX global headers
 * merged into later entries, and headers after an end-of-archive marker. Here they are closed by
 * construction:
 *
 * - **Framing and fields as Go's archive/tar** (what docker, containerd and image scanners read;
 *   any difference is a place to hide content from them): a member is a 512-byte header and its
 *   data padded to 512; directories, links, symlinks, devices and FIFOs have no data whatever their
 *   size says (Go's header-only types); an all-zero block ends the archive, after which only zero
 *   bytes may follow (stricter than Go, which stops reading there). The stream must end on a block
 *   boundary, outside a member.
 * - **Headers** as Go reads them: the checksum (octal, unsigned or signed sum); numbers octal
 *   (spaces and NULs trimmed at both ends, cut at a NUL, digits 0-7 only) or base-256, a malformed
 *   one failing the archive as it fails Go's; the ustar prefix (131 bytes under a star trailer; for
 *   GNU headers only where Go's pre-1.8 fallback reads one). Formats other than ustar and GNU are
 *   refused. Typeflag NUL is a directory when the member's final name ends in `/`, else a file.
 * - **Names in Go's order**: a GNU long name (`L`) or link name (`K`) over a PAX path or linkpath
 *   over the header's fields; an empty value counts as absent, as do empty PAX values for the
 *   fields Go merges (path, linkpath, size, uid, gid, uname, gname, atime, mtime, ctime). A global
 *   header drops what pending `x`, `L` and `K` headers said (Go returns it as an entry of its own).
 *   `N` (old GNU) is no long-name header for Go, so it is none here either.
 * - **PAX records raw** (E9): values stay bytes (`SCHILY.xattr.*`, non-UTF-8 paths), parsed
 *   strictly; PAX `size` (decimal, as Go parses it) frames the data; global headers are reported
 *   and otherwise ignored.
 * - **Long headers bounded** at 1 MiB, Go's maxSpecialFileSize.
 */

/** One member's header, with GNU long names applied and the PAX size as its size. */
export interface TarHeader {
  /**
   * The member's final name (GNU long name, else PAX path, else the header's), as bytes mapped one
   * byte per char (latin1), as the writer reads it back.
   */
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  type: TarEntryType | null;
  /** The final link name (GNU `K`, else PAX linkpath, else the header's), latin1 like `name`; null when empty. */
  linkname: string | null;
  devmajor: number;
  devminor: number;
}

export type TarEntryType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo' | 'contiguous-file';

/** PAX records of one entry: keys decoded as UTF-8 (POSIX), values as the raw bytes. */
export type PaxRecords = ReadonlyMap<string, Buffer>;

/** Where an entry's data goes: every byte in order, then `end`; `abort` when the archive fails first. */
export interface EntrySink {
  data(chunk: Buffer): void;
  end(): void;
  abort(): void;
}

export interface TarVisitor {
  /**
   * A member, in archive order. Returns where its data goes, or undefined to skip it (the data
   * is still read and framed). Throwing fails the archive.
   */
  entry(header: TarHeader, pax: PaxRecords | undefined): EntrySink | undefined;
  /** A PAX global header: reported, never applied. */
  globalHeader?(records: PaxRecords): void;
}

const BLOCK = 512;
const MAX_LONG_HEADER = 1024 * 1024; // Go's maxSpecialFileSize
const USTAR_MAGIC = Buffer.from('ustar\0', 'latin1');
const GNU_MAGIC = Buffer.from('ustar ', 'latin1');
const GNU_VERSION = Buffer.from(' \0', 'latin1');
const STAR_TRAILER = Buffer.from('tar\0', 'latin1');
/** The PAX keys Go merges into a header's fields: an empty value leaves the field as it was. */
const MERGED_KEYS = ['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'atime', 'mtime', 'ctime'] as const;

type LongKind = 'pax' | 'pax-global' | 'gnu-name' | 'gnu-link';

export class TarReader {
  // A header block being assembled across chunks.
  private readonly block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  // Data bytes of the current member still to come, then its padding.
  private dataLeft = 0;
  private padLeft = 0;
  private memberBytes = 0; // data bytes of the current member, for its padding
  private sink: EntrySink | undefined;
  // A long header's data being collected.
  private long: { kind: LongKind; parts: Buffer[]; size: number } | undefined;
  private pax: PaxRecords | undefined;
  private gnuName: string | undefined;
  private gnuLink: string | undefined;
  private offset = 0; // bytes consumed so far
  private endAt = -1; // offset of the zero block that ended the archive
  private failed = false;

  constructor(private readonly visitor: TarVisitor) {}

  /** Consumes `chunk` (the next bytes of the tar). Throws on a malformed archive or a refused entry. */
  push(chunk: Buffer): void {
    if (this.failed) throw new BerthError('ERR_INTERNAL', 'tar reader used after a failure');
    try {
      this.consume(chunk);
    } catch (err) {
      this.fail();
      throw err;
    }
  }

  /** The tar is complete: throws if it ended inside a header or a member's data. */
  end(): void {
    if (this.failed) return;
    if (this.dataLeft > 0 || this.padLeft > 0 || this.long !== undefined || (this.blockFill > 0 && this.endAt < 0)) {
      this.fail();
      throw new BerthError('ERR_INVALID_IMAGE', `read tar: unexpected end of data at byte ${this.offset}`);
    }
    if (this.endAt < 0 && (this.pax !== undefined || this.gnuName !== undefined || this.gnuLink !== undefined)) {
      this.fail();
      throw new BerthError('ERR_INVALID_IMAGE', 'read tar: the archive ends after a long header, before its member');
    }
  }

  /** The archive failed elsewhere: the entry being written is told, once. */
  fail(): void {
    if (this.failed) return;
    this.failed = true;
    const sink = this.sink;
    this.sink = undefined;
    sink?.abort();
  }

  private consume(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.dataLeft > 0) {
        const take = Math.min(this.dataLeft, n - off);
        const part = chunk.subarray(off, off + take);
        if (this.long !== undefined) {
          this.long.parts.push(Buffer.from(part)); // copied: the chunk may be reused
        } else {
          this.sink?.data(part);
        }
        this.dataLeft -= take;
        off += take;
        this.offset += take;
        if (this.dataLeft === 0) this.memberDone();
        continue;
      }
      if (this.padLeft > 0) {
        const take = Math.min(this.padLeft, n - off);
        this.padLeft -= take;
        off += take;
        this.offset += take;
        continue;
      }
      if (this.endAt >= 0) {
        // After the end-of-archive marker: zeros only.
        const rest = chunk.subarray(off);
        const bad = rest.findIndex((b) => b !== 0);
        if (bad >= 0) {
          throw new BerthError(
            'ERR_INVALID_IMAGE',
            `read tar: data at offset ${this.offset + bad} follows a zero block at ${this.endAt}: entries after an end-of-archive marker are not allowed`,
          );
        }
        this.offset += rest.length; // a partial block of zeros at the very end is fine
        return;
      }
      // A header: whole in the chunk (the common case) or assembled across chunks.
      let header: Buffer;
      if (this.blockFill === 0 && n - off >= BLOCK) {
        header = chunk.subarray(off, off + BLOCK);
        off += BLOCK;
        this.offset += BLOCK;
      } else {
        const take = Math.min(BLOCK - this.blockFill, n - off);
        chunk.copy(this.block, this.blockFill, off, off + take);
        this.blockFill += take;
        off += take;
        this.offset += take;
        if (this.blockFill < BLOCK) return;
        this.blockFill = 0;
        header = this.block;
      }
      this.header(header, this.offset - BLOCK);
    }
  }

  private header(buf: Buffer, at: number): void {
    if (isZeroBlock(buf)) {
      this.endAt = at;
      return;
    }
    const sum = checksums(buf);
    const stored = parseOctal(buf, 148, 8);
    if (stored === undefined || (stored !== sum.unsigned && stored !== sum.signed)) {
      throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: checksum mismatch (corrupt tar, or still compressed?)`);
    }
    let prefix = '';
    if (buf.subarray(257, 263).equals(USTAR_MAGIC)) {
      prefix = decodeString(buf, 345, buf.subarray(508, 512).equals(STAR_TRAILER) ? 131 : 155);
    } else if (buf.subarray(257, 263).equals(GNU_MAGIC) && buf.subarray(263, 265).equals(GNU_VERSION)) {
      // GNU has atime and ctime where ustar has its prefix. Go reads the field as a prefix when a
      // time does not parse and the field is ASCII (archives of Go's writer before 1.8).
      if ((buf[345] !== 0 && parseNumeric(buf, 345, 12) === undefined) || (buf[357] !== 0 && parseNumeric(buf, 357, 12) === undefined)) {
        const p = decodeString(buf, 345, 155);
        if (isAscii(p)) prefix = p;
      }
    } else {
      throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: unknown format (neither ustar nor GNU)`);
    }
    // Go parses these in every header, long ones too, and a malformed one fails the archive.
    const num = (off: number, len: number, what: string): number => {
      const v = parseNumeric(buf, off, len);
      if (v === undefined) throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: invalid ${what} field`);
      return v;
    };
    const mode = num(100, 8, 'mode');
    const uid = num(108, 8, 'uid');
    const gid = num(116, 8, 'gid');
    const size = num(124, 12, 'size');
    const mtime = num(136, 12, 'mtime');
    const devmajor = num(329, 8, 'devmajor');
    const devminor = num(337, 8, 'devminor');
    const flag = buf[156] as number;
    const long = longKind(flag);
    if (long !== undefined) {
      if (!Number.isSafeInteger(size) || size < 0) throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: invalid size`);
      if (size > MAX_LONG_HEADER) {
        throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: a ${long} header of ${size} bytes exceeds ${MAX_LONG_HEADER}`);
      }
      this.long = { kind: long, parts: [], size };
      this.startData(size);
      return;
    }
    const headerName = decodeString(buf, 0, 100);
    const pax = this.pax;
    const gnuName = this.gnuName;
    const gnuLink = this.gnuLink;
    this.pax = undefined;
    this.gnuName = undefined;
    this.gnuLink = undefined;
    const paxPath = pax?.get('path');
    const paxLink = pax?.get('linkpath');
    const name = gnuName ?? (paxPath !== undefined ? paxPath.toString('latin1') : prefix !== '' ? `${prefix}/${headerName}` : headerName);
    const headerLink = buf[157] === 0 ? null : decodeString(buf, 157, 100);
    const type = flag === 0 ? (name.endsWith('/') ? 'directory' : 'file') : entryType(flag);
    const h: TarHeader = {
      name,
      mode,
      uid,
      gid,
      size,
      mtime,
      type,
      linkname: gnuLink ?? (paxLink !== undefined ? paxLink.toString('latin1') : headerLink),
      devmajor,
      devminor,
    };
    const paxSize = pax?.get('size');
    if (paxSize !== undefined) {
      const v = parseDecimal(paxSize.toString('latin1'));
      if (v === undefined) throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: pax size is malformed`);
      h.size = v;
    }
    const dataBytes = type !== null && HEADER_ONLY.has(type) ? 0 : h.size;
    if (!Number.isSafeInteger(dataBytes) || dataBytes < 0) {
      throw new BerthError('ERR_INVALID_IMAGE', `read tar: header at offset ${at}: invalid size ${String(h.size)}`);
    }
    // The visitor checks the entry (and its size) before any of its data is read.
    this.sink = this.visitor.entry(h, pax);
    this.startData(dataBytes);
  }

  private startData(bytes: number): void {
    this.dataLeft = bytes;
    this.memberBytes = bytes;
    this.padLeft = 0;
    if (bytes === 0) this.memberDone();
  }

  /** The member's data is complete: hand it over, then skip its padding. */
  private memberDone(): void {
    this.padLeft = padding(this.memberBytes);
    const long = this.long;
    if (long !== undefined) {
      this.long = undefined;
      const data = long.parts.length === 1 ? (long.parts[0] as Buffer) : Buffer.concat(long.parts);
      switch (long.kind) {
        case 'pax':
          this.pax = withoutEmptyMerged(parsePax(data));
          break;
        case 'pax-global':
          // Go hands a global header back as an entry of its own: what pending x, L and K headers
          // said is gone by the next member.
          this.pax = undefined;
          this.gnuName = undefined;
          this.gnuLink = undefined;
          this.visitor.globalHeader?.(parsePax(data));
          break;
        case 'gnu-name':
          this.gnuName = nonEmpty(decodeString(data, 0, data.length));
          break;
        case 'gnu-link':
          this.gnuLink = nonEmpty(decodeString(data, 0, data.length));
          break;
      }
      return;
    }
    const sink = this.sink;
    this.sink = undefined;
    sink?.end();
  }
}

function padding(bytes: number): number {
  const r = bytes % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/** The meta headers Go reads (its TypeXHeader, TypeXGlobalHeader, TypeGNULongName, TypeGNULongLink). */
function longKind(flag: number): LongKind | undefined {
  switch (flag) {
    case 0x78: // 'x'
      return 'pax';
    case 0x67: // 'g'
      return 'pax-global';
    case 0x4c: // 'L'
      return 'gnu-name';
    case 0x4b: // 'K'
      return 'gnu-link';
    default:
      return undefined;
  }
}

/** A typeflag byte other than NUL (which depends on the name) and the meta headers. */
function entryType(flag: number): TarEntryType | null {
  switch (flag) {
    case 0x30: // '0'
      return 'file';
    case 0x31:
      return 'link';
    case 0x32:
      return 'symlink';
    case 0x33:
      return 'character-device';
    case 0x34:
      return 'block-device';
    case 0x35:
      return 'directory';
    case 0x36:
      return 'fifo';
    case 0x37:
      return 'contiguous-file';
    default:
      return null;
  }
}

/** Go's isHeaderOnlyType: members that carry no data whatever their size field says. */
const HEADER_ONLY: ReadonlySet<TarEntryType> = new Set(['link', 'symlink', 'character-device', 'block-device', 'directory', 'fifo']);

function isZeroBlock(buf: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (buf[i] !== 0) return false;
  return true;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}

function nonEmpty(s: string): string | undefined {
  return s === '' ? undefined : s;
}

/** An x header's records minus the empty values of the fields Go merges (it keeps the header's field then). */
function withoutEmptyMerged(records: PaxRecords): PaxRecords {
  let out: Map<string, Buffer> | undefined;
  for (const k of MERGED_KEYS) {
    if (records.get(k)?.length === 0) {
      out ??= new Map(records);
      out.delete(k);
    }
  }
  return out ?? records;
}

/** Go's strconv.ParseInt(s, 10, 64) for a PAX size: optional sign, decimal digits, within int64. */
function parseDecimal(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const v = BigInt(s);
  if (v > 0x7fffffffffffffffn || v < -0x8000000000000000n) return undefined;
  return Number(v);
}

/** The header's checksum both ways: bytes as unsigned (POSIX) and as signed (old tars; Go accepts both). */
function checksums(buf: Buffer): { unsigned: number; signed: number } {
  let unsigned = 8 * 32;
  let signed = 8 * 32;
  for (let i = 0; i < BLOCK; i++) {
    if (i === 148) i = 156;
    const b = buf[i] as number;
    unsigned += b;
    signed += b < 128 ? b : b - 256;
  }
  return { unsigned, signed };
}

/**
 * A numeric field as Go's parser reads it: base-256 when the first byte has its high bit (two's
 * complement, the next bit the sign), else octal. undefined where Go fails: an overflow of int64,
 * or anything but digits 0-7 once spaces and NULs are trimmed at both ends and the text is cut at
 * its first NUL (an empty field is 0). Values beyond 2^53 come back inexact; sizes are checked.
 */
function parseNumeric(buf: Buffer, off: number, len: number): number | undefined {
  const first = buf[off] as number;
  if ((first & 0x80) === 0) return parseOctal(buf, off, len);
  const inv = (first & 0x40) !== 0 ? 0xff : 0;
  let x = 0n;
  for (let i = off; i < off + len; i++) {
    let c = (buf[i] as number) ^ inv;
    if (i === off) c &= 0x7f;
    if (x >> 56n > 0n) return undefined;
    x = (x << 8n) | BigInt(c);
  }
  if (x >> 63n > 0n) return undefined;
  return Number(inv === 0xff ? -x - 1n : x);
}

function parseOctal(buf: Buffer, off: number, len: number): number | undefined {
  let i = off;
  let end = off + len;
  while (i < end && (buf[i] === 0x20 || buf[i] === 0)) i++;
  while (end > i && (buf[end - 1] === 0x20 || buf[end - 1] === 0)) end--;
  if (i === end) return 0;
  // The trimmed text starts with a byte that is neither space nor NUL. Fields are at most 12
  // bytes: no overflow of ParseUint's 64 bits is possible.
  let v = 0;
  for (let j = i; j < end; j++) {
    const b = buf[j] as number;
    if (b === 0) break; // cut at the first NUL, as Go's parseString
    if (b < 0x30 || b > 0x37) return undefined;
    v = v * 8 + (b - 0x30);
  }
  return v;
}

/** A NUL-terminated field as latin1 (one char per byte: Buffer.from(s, 'latin1') gives the bytes back, E9). */
function decodeString(buf: Buffer, off: number, len: number): string {
  let end = off;
  const max = off + len;
  while (end < max && buf[end] !== 0) end++;
  return buf.toString('latin1', off, end);
}

/**
 * Parses PAX extended header records (`"%d %s=%s\n"`, length includes itself) without decoding
 * values. Any malformed record rejects the layer. Trailing NUL padding is tolerated. Later
 * duplicates win, as in Go.
 */
export function parsePax(buf: Buffer): PaxRecords {
  const records = new Map<string, Buffer>();
  let off = 0;
  while (off < buf.length) {
    if (buf[off] === 0 && buf.subarray(off).every((b) => b === 0)) break;
    const sp = buf.indexOf(0x20, off);
    const lenText = sp < 0 ? '' : buf.toString('latin1', off, sp);
    if (!/^[1-9][0-9]{0,15}$/.test(lenText)) throw malformedPax(off, 'bad record length');
    const end = off + Number(lenText);
    if (end > buf.length || end <= sp + 1 || buf[end - 1] !== 0x0a) throw malformedPax(off, 'bad record length');
    const record = buf.subarray(sp + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw malformedPax(off, 'missing keyword');
    const key = record.subarray(0, eq);
    if (!isUtf8(key) || key.includes(0)) throw malformedPax(off, 'keyword is not UTF-8');
    records.set(key.toString('utf8'), Buffer.from(record.subarray(eq + 1)));
    off = end;
  }
  return records;
}

function malformedPax(off: number, why: string): BerthError {
  return new BerthError('ERR_INVALID_IMAGE', `read tar: parse pax header: ${why} at byte ${off}`);
}
