import { isUtf8 } from 'node:buffer';
import type { Extract, Header } from 'tar-stream';
import { BerthError } from '../../lib/errors.js';

/**
 * What tar-stream v3 hands us, typed as it really is: `type` is null for unknown type flags and
 * names the long-header types inside the tap; `byteOffset` (untyped upstream) is where the
 * entry's data starts in the uncompressed stream.
 */
export type TarHeader = Omit<Header, 'type' | 'pax' | 'linkname'> & {
  type: Header['type'] | 'pax-header' | 'pax-global-header' | 'gnu-long-path' | 'gnu-long-link-path' | null;
  linkname: string | null;
  pax?: Record<string, string> | null;
  byteOffset?: number;
};

/** An entry's data stream (a streamx Readable). */
export type EntryStream = AsyncIterable<unknown> & {
  resume(): unknown;
  on(event: 'data' | 'end' | 'error' | 'close', listener: (arg: unknown) => void): unknown;
  off(event: 'data' | 'end' | 'error' | 'close', listener: (arg: unknown) => void): unknown;
  destroy(err?: Error): unknown;
};

/** PAX records of one entry: keys decoded as UTF-8 (POSIX), values as the raw bytes. */
export type PaxRecords = ReadonlyMap<string, Buffer>;

/**
 * Watches tar-stream's long-header decoding to close three gaps in its public API:
 *
 * - **Raw PAX values.** tar-stream decodes PAX values as UTF-8, which corrupts binary values such as
 *   `SCHILY.xattr.security.capability` and non-UTF-8 `path`s (E9). We parse the same bytes ourselves,
 *   strictly, and the unpacker takes `path`, `linkpath`, ids, times and xattrs from our copy.
 * - **PAX global headers are ignored** (E9): we do not let tar-stream merge them into later entries,
 *   so a global `path` or `size` cannot rename or re-frame entries.
 * - **Headers must be contiguous.** tar-stream silently skips zero blocks anywhere, while Go's
 *   archive/tar (docker, containerd, scanners) stops at the first zero block. Entries hidden after an
 *   end-of-archive marker would be extracted by us and invisible to every other tool, so a header
 *   that does not start exactly where the previous member ended is rejected.
 *
 * This relies on tar-stream internals (`_decodeLongHeader`, `_header`); `tapTar` checks they exist
 * so an upgrade that renames them fails loudly instead of silently losing PAX data.
 */
export interface TarTap {
  /** Call once per 'entry' event, first thing: checks framing and returns that entry's PAX records. */
  takeEntry(header: TarHeader): PaxRecords | undefined;
}

interface ExtractInternals {
  _decodeLongHeader?: unknown;
  _header?: unknown;
}

const BLOCK = 512;

export function tapTar(extract: Extract, onGlobalHeader: (records: PaxRecords) => void): TarTap {
  const internals = extract as unknown as ExtractInternals;
  const original = internals._decodeLongHeader;
  if (typeof original !== 'function') {
    throw new BerthError('ERR_INTERNAL', 'tap tar-stream: _decodeLongHeader is missing (tar-stream changed)');
  }
  let nextHeaderAt = 0;
  let pending: PaxRecords | undefined;

  // Every header must start where the previous member (header + padded data) ended.
  const advance = (header: TarHeader, dataBytes: number): void => {
    const start = header.byteOffset;
    if (typeof start !== 'number' || !Number.isSafeInteger(start)) {
      throw new BerthError('ERR_INTERNAL', 'tap tar-stream: header.byteOffset is missing (tar-stream changed)');
    }
    if (start - BLOCK !== nextHeaderAt) {
      throw new BerthError(
        'ERR_INVALID_IMAGE',
        `tar header at offset ${start - BLOCK} follows a zero block at ${nextHeaderAt}: entries after an end-of-archive marker are not allowed`,
      );
    }
    nextHeaderAt = start + Math.ceil(dataBytes / BLOCK) * BLOCK;
  };

  internals._decodeLongHeader = function decodeLongHeader(this: ExtractInternals, buf: Buffer): unknown {
    const header = this._header as TarHeader;
    advance(header, buf.length);
    switch (header.type) {
      case 'pax-global-header':
        onGlobalHeader(parsePax(buf));
        return undefined; // not handed to tar-stream: globals must not reach later entries
      case 'pax-header':
        pending = parsePax(buf);
        break;
      default:
        break;
    }
    return (original as (this: unknown, b: Buffer) => unknown).call(this, buf);
  };

  return {
    takeEntry(header) {
      // tar-stream skips no data after a directory header whatever its size field says.
      advance(header, header.type === 'directory' ? 0 : (header.size ?? 0));
      const records = pending;
      pending = undefined;
      if ((records === undefined) !== (header.pax === null || header.pax === undefined)) {
        throw new BerthError('ERR_INTERNAL', 'tap tar-stream: pax records out of step with tar-stream');
      }
      return records;
    },
  };
}

/**
 * Parses PAX extended header records (`"%d %s=%s\n"`, length includes itself) without decoding
 * values. Stricter than tar-stream: any malformed record rejects the layer. Trailing NUL padding is
 * tolerated. Later duplicates win, as in Go.
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
  return new BerthError('ERR_INVALID_IMAGE', `parse pax header: ${why} at byte ${off}`);
}
