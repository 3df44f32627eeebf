import { Duplex } from 'node:stream';
import { Decompress } from 'fzstd';
import { BerthError, messageOf } from '../../lib/errors.js';

/**
 * The zstd stage of the unpacker (`+zstd` layers; Node 20's zlib has no zstd).
 *
 * Decoding is fzstd's (pure JS, streaming). In front of it this module walks the frame
 * structure itself (RFC 8878 §3.1) and hands fzstd one whole block at a time, because fzstd
 * alone would let a hostile blob spend the machine's memory before any limit downstream sees a
 * byte:
 * - fzstd allocates the frame's declared window (up to 2 GiB) when the header arrives, so the
 *   window is checked first against `maxWindowBytes` (default 128 MiB, zstd's own default
 *   decoder limit, `ZSTD_WINDOWLOG_LIMIT_DEFAULT` 27): over it is ERR_LIMIT_EXCEEDED;
 * - fzstd decodes everything it was given in one call, and a 4-byte RLE block expands to up to
 *   2 MiB (it does not enforce the 128 KiB block maximum): a 64 KiB chunk could become gigabytes
 *   before backpressure. Blocks larger than min(window, 128 KiB) are refused here, and each
 *   block's output is yielded (with backpressure) before the next block is decoded, so at most
 *   one block (≤ 128 KiB) is in flight. The byte budget (maxUncompressedBytes) and the diffID
 *   hash are the unpacker's meter, after this stage, exactly as for gzip.
 *
 * Framing rules (as strict as the gzip and tar stages): concatenated frames are one stream
 * (RFC 8878 §3.1); skippable frames are skipped; anything else after a frame — trailing
 * garbage — and a stream that ends inside a frame are ERR_INVALID_IMAGE. Frames that need a
 * dictionary are ERR_UNSUPPORTED (an image layer has no way to name one). The optional XXH64
 * content checksum is not verified (fzstd skips it): the diffID, checked over the whole
 * decompressed stream, is the stronger check and is always made.
 */

export const ZSTD_MAGIC = 0xfd2fb528;
/** Block_Maximum_Size (RFC 8878 §3.1.1.2.3). */
const MAX_BLOCK = 128 * 1024;

export interface ZstdStageOptions {
  /** The largest frame window accepted, in bytes. */
  maxWindowBytes: number;
}

/** Is `head` the start of a zstd frame (regular or skippable)? */
export function isZstdMagic(head: Buffer): boolean {
  if (head.length < 4) return false;
  const m = head.readUInt32LE(0);
  return m === ZSTD_MAGIC || (m & 0xfffffff0) === 0x184d2a50;
}

/**
 * A Duplex: zstd bytes in, the decompressed stream out. Errors are BerthErrors without the
 * layer prefix (the unpacker adds it): ERR_INVALID_IMAGE (malformed, truncated, trailing
 * bytes), ERR_LIMIT_EXCEEDED (`details.limit` = 'maxZstdWindowBytes'), ERR_UNSUPPORTED
 * (dictionaries).
 */
export function createZstdDecoder(opts: ZstdStageOptions): Duplex {
  return new ZstdDecoder(opts.maxWindowBytes);
}

/**
 * Written chunks are held until every block they complete has been decoded and pushed; decoding
 * stops whenever the readable side is full and resumes from `_read`, so one block's output at
 * most is decoded ahead of the consumer. A plain Duplex (not `Duplex.from` of a generator, which
 * on Node 20 never closes when destroyed before its first input: regression
 * zstd-stage-hangs-when-aborted-early).
 */
class ZstdDecoder extends Duplex {
  private readonly walker: FrameWalker;
  /** The write callback of the chunk being decoded: called once it is used up (backpressure upstream). */
  private writeDone: ((err?: Error | null) => void) | undefined;
  private finalDone: ((err?: Error | null) => void) | undefined;
  private pumping = false;
  private ended = false;

  constructor(maxWindowBytes: number) {
    // One decoded block per read (object mode, one buffered): at most a block or two in memory.
    super({ readableObjectMode: true, readableHighWaterMark: 1 });
    this.walker = new FrameWalker(maxWindowBytes);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.walker.add(chunk);
    this.writeDone = cb;
    this.pump();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.finalDone = cb;
    this.pump();
  }

  override _read(): void {
    this.pump();
  }

  private pump(): void {
    if (this.pumping || this.ended || this.destroyed) return;
    this.pumping = true;
    try {
      for (;;) {
        const out = this.walker.step();
        if (out === undefined) {
          // The walker needs more input: release the writer, or end at the stream's end.
          const w = this.writeDone;
          if (w !== undefined) {
            this.writeDone = undefined;
            // The callback may write the next chunk or end the stream right here (both land in
            // this loop: pump is not re-entered), so look again.
            w();
            continue;
          } else if (this.finalDone !== undefined) {
            this.walker.finish();
            this.ended = true;
            this.push(null);
            const f = this.finalDone;
            this.finalDone = undefined;
            f();
          }
          return;
        }
        let room = true;
        for (const b of out) room = this.push(b) && room;
        if (!room) return;
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.pumping = false;
    }
  }
}

type State =
  | { at: 'frame' }
  | { at: 'block'; window: number; checksum: boolean }
  | { at: 'checksum' }
  | { at: 'skip'; left: number };

/** Splits the input into frame headers, blocks, checksums and skippable frames, and decodes blocks. */
class FrameWalker {
  private buf: Buffer = Buffer.alloc(0);
  /** Offset of `buf[0]` in the compressed stream, for messages. */
  private offset = 0;
  private state: State = { at: 'frame' };
  private frames = 0;
  private decoder: Decompress;
  private out: Buffer[] = [];

  constructor(private readonly maxWindow: number) {
    this.decoder = this.newDecoder();
  }

  private newDecoder(): Decompress {
    return new Decompress((data) => {
      if (data.length > 0) this.out.push(Buffer.from(data.buffer, data.byteOffset, data.length));
    });
  }

  add(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  private take(n: number): Buffer {
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.offset += n;
    return b;
  }

  /** Decoded buffers for the next unit, an empty array for a unit without output, undefined when more input is needed. */
  step(): Buffer[] | undefined {
    const s = this.state;
    const buf = this.buf;
    switch (s.at) {
      case 'frame': {
        if (buf.length < 4) return undefined;
        const magic = buf.readUInt32LE(0);
        if ((magic & 0xfffffff0) === 0x184d2a50) {
          if (buf.length < 8) return undefined;
          const left = buf.readUInt32LE(4);
          this.take(8);
          this.state = left === 0 ? { at: 'frame' } : { at: 'skip', left };
          return [];
        }
        if (magic !== ZSTD_MAGIC) {
          throw invalid(
            this.frames === 0 ? 'not a zstd stream (bad magic number)' : `${buf.length} or more bytes after the last zstd frame at byte ${this.offset} are not a zstd frame`,
          );
        }
        if (buf.length < 5) return undefined;
        const fhd = buf[4]!;
        const singleSegment = (fhd >> 5) & 1;
        const hasChecksum = ((fhd >> 2) & 1) === 1;
        const dictFlag = fhd & 3;
        const fcsFlag = fhd >> 6;
        if ((fhd & 8) !== 0) throw invalid(`frame at byte ${this.offset}: reserved header bit set`);
        const dictBytes = [0, 1, 2, 4][dictFlag]!;
        const fcsBytes = fcsFlag === 0 ? singleSegment : [0, 2, 4, 8][fcsFlag]!;
        const headerLen = 5 + (singleSegment ? 0 : 1) + dictBytes + fcsBytes;
        if (buf.length < headerLen) return undefined;
        let pos = 5;
        let window = 0;
        if (!singleSegment) {
          const wd = buf[pos++]!;
          const base = 2 ** (10 + (wd >> 3));
          window = base + (base / 8) * (wd & 7);
        }
        let dictId = 0;
        for (let i = 0; i < dictBytes; i++) dictId += buf[pos + i]! * 2 ** (8 * i);
        pos += dictBytes;
        if (singleSegment) {
          let fcs = 0;
          for (let i = 0; i < fcsBytes; i++) fcs += buf[pos + i]! * 2 ** (8 * i);
          if (fcsBytes === 2) fcs += 256;
          window = fcs;
        }
        if (dictId !== 0) {
          throw new BerthError('ERR_UNSUPPORTED', `decompress zstd: frame at byte ${this.offset} needs dictionary ${dictId}; layers cannot name one`);
        }
        if (window > this.maxWindow) {
          throw new BerthError(
            'ERR_LIMIT_EXCEEDED',
            `decompress zstd: frame at byte ${this.offset} declares a ${window} byte window, over the ${this.maxWindow} byte limit (maxZstdWindowBytes)`,
            { details: { limit: 'maxZstdWindowBytes', window } },
          );
        }
        this.decode(this.take(headerLen), false);
        this.state = { at: 'block', window, checksum: hasChecksum };
        this.frames++;
        return this.flush();
      }
      case 'block': {
        if (buf.length < 3) return undefined;
        const h = buf[0]! | (buf[1]! << 8) | (buf[2]! << 16);
        const last = (h & 1) === 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) throw invalid(`block at byte ${this.offset}: reserved block type`);
        const max = s.window === 0 ? MAX_BLOCK : Math.min(s.window, MAX_BLOCK);
        if (size > max) throw invalid(`block at byte ${this.offset}: ${size} bytes is over the block maximum of ${max}`);
        const len = 3 + (type === 1 ? 1 : size);
        if (buf.length < len) return undefined;
        const block = this.take(len);
        if (!last) {
          this.decode(block, false);
        } else if (s.checksum) {
          this.decode(block, false);
          this.state = { at: 'checksum' };
        } else {
          this.decode(block, true);
          this.endFrame();
        }
        return this.flush();
      }
      case 'checksum': {
        if (buf.length < 4) return undefined;
        this.decode(this.take(4), true);
        this.endFrame();
        return this.flush();
      }
      case 'skip': {
        if (buf.length === 0) return undefined;
        const n = Math.min(buf.length, s.left);
        this.take(n);
        s.left -= n;
        if (s.left === 0) this.state = { at: 'frame' };
        return [];
      }
    }
  }

  /** The input ended: it must end on a frame boundary, after at least one frame. */
  finish(): void {
    if (this.state.at === 'frame' && this.buf.length > 0 && this.frames > 0) {
      throw invalid(`${this.buf.length} bytes after the last zstd frame at byte ${this.offset} are not a zstd frame`);
    }
    if (this.state.at !== 'frame' || this.buf.length > 0) {
      throw invalid(`the stream ends inside a ${this.state.at === 'skip' ? 'skippable frame' : 'frame'} at byte ${this.offset + this.buf.length} (truncated)`);
    }
    if (this.frames === 0) throw invalid('the stream holds no zstd frame');
  }

  private endFrame(): void {
    this.state = { at: 'frame' };
    // A fresh decoder per frame: fzstd's state after a final push is not documented as reusable.
    this.decoder = this.newDecoder();
  }

  private decode(bytes: Buffer, final: boolean): void {
    try {
      this.decoder.push(bytes, final);
    } catch (err) {
      throw invalid(`at byte ${this.offset}: ${messageOf(err)}`);
    }
  }

  private flush(): Buffer[] {
    const out = this.out;
    this.out = [];
    return out;
  }
}

function invalid(reason: string): BerthError {
  return new BerthError('ERR_INVALID_IMAGE', `decompress zstd: ${reason}`);
}
