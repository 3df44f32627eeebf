import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, test } from 'node:test';
import { sha256 } from '../../src/lib/digest.js';
import { BerthError, type ErrorCode } from '../../src/lib/errors.js';
import { unpackLayer } from '../../src/runtime/unpack/index.js';
import { createZstdDecoder } from '../../src/runtime/unpack/zstd.js';
import { file, MT, tarOf } from '../helpers/hostile.js';

/**
 * The zstd stage's framing rules (src/runtime/unpack/zstd.ts), on frames built by hand so each
 * field is exactly what the case needs: raw and RLE blocks (RFC 8878 §3.1.1.2), skippable
 * frames, window and content-size fields. The integration test issue-14-zstd covers what the
 * zstd tool itself writes.
 */

const MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** A frame header: single-segment with a 4-byte content size `fcs`, or a window byte. */
function header(opts: { fcs?: number; windowByte?: number; dictId?: number; checksum?: boolean }): Buffer {
  const parts: Buffer[] = [MAGIC];
  let fhd = opts.checksum === true ? 0x04 : 0;
  if (opts.dictId !== undefined) fhd |= 1;
  if (opts.fcs !== undefined) fhd |= 0x20 | (2 << 6); // single segment, 4-byte content size
  parts.push(Buffer.from([fhd]));
  if (opts.fcs === undefined) parts.push(Buffer.from([opts.windowByte ?? 0x00]));
  if (opts.dictId !== undefined) parts.push(Buffer.from([opts.dictId]));
  if (opts.fcs !== undefined) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(opts.fcs);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

function blockHeader(type: 0 | 1 | 2 | 3, size: number, last: boolean): Buffer {
  const v = (size << 3) | (type << 1) | (last ? 1 : 0);
  return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]);
}

const raw = (data: Buffer, last: boolean): Buffer => Buffer.concat([blockHeader(0, data.length, last), data]);
const rle = (byte: number, size: number, last: boolean): Buffer => Buffer.concat([blockHeader(1, size, last), Buffer.from([byte])]);

/** One frame holding `data` as raw blocks of at most 128 KiB (window byte 7 << 3: a 128 KiB window). */
function rawFrame(data: Buffer): Buffer {
  const blocks: Buffer[] = [];
  for (let at = 0; at < data.length || at === 0; at += 128 * 1024) {
    const part = data.subarray(at, at + 128 * 1024);
    blocks.push(raw(part, at + 128 * 1024 >= data.length));
  }
  return Buffer.concat([header({ windowByte: 7 << 3 }), ...blocks]);
}

async function decode(input: Buffer, maxWindowBytes = 128 * 2 ** 20, chunk = 7): Promise<{ out: Buffer; largest: number }> {
  const parts: Buffer[] = [];
  let largest = 0;
  const pieces: Buffer[] = [];
  for (let at = 0; at < input.length; at += chunk) pieces.push(input.subarray(at, at + chunk));
  await pipeline(Readable.from(pieces), createZstdDecoder({ maxWindowBytes }), async (src: AsyncIterable<Buffer>) => {
    for await (const c of src) {
      parts.push(c);
      largest = Math.max(largest, c.length);
    }
  });
  return { out: Buffer.concat(parts), largest };
}

async function decodeFails(input: Buffer, code: ErrorCode, re: RegExp, maxWindowBytes?: number): Promise<BerthError> {
  try {
    await decode(input, maxWindowBytes);
  } catch (err) {
    assert.ok(err instanceof BerthError, `a BerthError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, re);
    return err;
  }
  assert.fail('decoding succeeded');
}

describe('issue 14: zstd framing rules', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  test('concatenated frames and skippable frames decode as one stream, fed in 7-byte pieces', async () => {
    const skip = Buffer.concat([Buffer.from([0x5f, 0x2a, 0x4d, 0x18, 3, 0, 0, 0]), Buffer.from('abc')]);
    const input = Buffer.concat([rawFrame(Buffer.from('hello ')), skip, Buffer.concat([header({ fcs: 5 }), rle(0x61, 5, true)]), rawFrame(Buffer.from('!'))]);
    assert.equal((await decode(input)).out.toString(), 'hello aaaaa!');
  });

  test('a frame with a content checksum field: the 4 bytes are consumed, not output', async () => {
    const input = Buffer.concat([header({ windowByte: 0, checksum: true }), raw(Buffer.from('sum'), true), Buffer.from([1, 2, 3, 4]), rawFrame(Buffer.from('+'))]);
    assert.equal((await decode(input)).out.toString(), 'sum+');
  });

  test('window limit: a window of exactly maxZstdWindowBytes is accepted, one byte more is ERR_LIMIT_EXCEEDED', async () => {
    const limit = 1024 * 1024;
    const ok = Buffer.concat([header({ fcs: limit }), raw(Buffer.from('w'), true)]);
    assert.equal((await decode(ok, limit)).out.toString(), 'w');
    const over = Buffer.concat([header({ fcs: limit + 1 }), raw(Buffer.from('w'), true)]);
    const err = await decodeFails(over, 'ERR_LIMIT_EXCEEDED', /1048577 byte window, over the 1048576 byte limit/, limit);
    assert.equal(err.details['limit'], 'maxZstdWindowBytes');
    // Window byte: exponent 31 - 10, no mantissa = 2 GiB, refused under the default limit.
    await decodeFails(Buffer.concat([header({ windowByte: 21 << 3 }), raw(Buffer.from('w'), true)]), 'ERR_LIMIT_EXCEEDED', /2147483648 byte window/);
  });

  test('RLE bomb: 4-byte blocks expand 128 KiB each, and output comes one block at a time', async () => {
    const blocks: Buffer[] = [];
    for (let i = 0; i < 512; i++) blocks.push(rle(0, 128 * 1024, i === 511));
    const input = Buffer.concat([header({ windowByte: 7 << 3 }), ...blocks]);
    assert.ok(input.length < 4096);
    const { out, largest } = await decode(input, undefined, 64 * 1024);
    assert.equal(out.length, 64 * 2 ** 20);
    assert.ok(largest <= 128 * 1024, `largest chunk ${largest}`);
  });

  test('a block over the 128 KiB block maximum is refused before decoding (fzstd would expand it)', async () => {
    await decodeFails(Buffer.concat([header({ windowByte: 10 << 3 }), rle(0, 2 * 2 ** 20 - 1, true)]), 'ERR_INVALID_IMAGE', /over the block maximum of 131072/);
    // and over a smaller window
    await decodeFails(Buffer.concat([header({ fcs: 10 }), rle(0, 11, true)]), 'ERR_INVALID_IMAGE', /over the block maximum of 10/);
  });

  test('malformed streams: bad magic, reserved bit, reserved block type, dictionary, truncation, trailing bytes, no frame', async () => {
    await decodeFails(Buffer.from('this is not zstd at all'), 'ERR_INVALID_IMAGE', /not a zstd stream/);
    const reservedBit = Buffer.concat([MAGIC, Buffer.from([0x08, 0x00]), raw(Buffer.from('x'), true)]);
    await decodeFails(reservedBit, 'ERR_INVALID_IMAGE', /reserved header bit/);
    await decodeFails(Buffer.concat([header({ windowByte: 0 }), blockHeader(3, 1, true), Buffer.from('x')]), 'ERR_INVALID_IMAGE', /reserved block type/);
    await decodeFails(Buffer.concat([header({ windowByte: 0, dictId: 7 }), raw(Buffer.from('x'), true)]), 'ERR_UNSUPPORTED', /needs dictionary 7/);
    const frame = rawFrame(Buffer.from('complete'));
    await decodeFails(frame.subarray(0, frame.length - 2), 'ERR_INVALID_IMAGE', /ends inside a frame .*truncated/);
    await decodeFails(Buffer.concat([frame, Buffer.from('junk!')]), 'ERR_INVALID_IMAGE', /after the last zstd frame/);
    await decodeFails(Buffer.concat([frame, Buffer.alloc(3)]), 'ERR_INVALID_IMAGE', /3 bytes after the last zstd frame/);
    await decodeFails(Buffer.alloc(0), 'ERR_INVALID_IMAGE', /holds no zstd frame/);
    await decodeFails(Buffer.from([0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]), 'ERR_INVALID_IMAGE', /holds no zstd frame/);
  });

  test('unpackLayer: maxUncompressedBytes holds for zstd layers at limit and limit+1; errors name the layer', async () => {
    const tar = tarOf(file('f', Buffer.alloc(300_000, 'z')));
    const blob = rawFrame(tar);
    const layer = { digest: sha256(blob), size: blob.length, diffId: sha256(tar) };
    const scratch = async (): Promise<string> => {
      const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-zstd-unit-'));
      dirs.push(d);
      const dest = path.join(d, 'fs');
      await fsp.mkdir(dest);
      return dest;
    };
    const r = await unpackLayer({ source: Readable.from([blob]), mediaType: MT.zstd, expected: layer, dest: await scratch(), limits: { maxUncompressedBytes: tar.length, minFreeBytes: 0 }, sync: false });
    assert.equal(r.diffId, layer.diffId);
    assert.equal((await fsp.readFile(path.join(dirs[0]!, 'fs', 'f'))).length, 300_000);
    let caught: unknown;
    try {
      await unpackLayer({ source: Readable.from([blob]), mediaType: MT.zstd, expected: layer, dest: await scratch(), limits: { maxUncompressedBytes: tar.length - 1, minFreeBytes: 0 }, sync: false });
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof BerthError);
    assert.equal(caught.code, 'ERR_LIMIT_EXCEEDED');
    assert.ok(caught.message.includes(layer.digest), caught.message);
    const trailing = Buffer.concat([blob, Buffer.from('x')]);
    const tl = { digest: sha256(trailing), size: trailing.length, diffId: layer.diffId };
    caught = undefined;
    try {
      await unpackLayer({ source: Readable.from([trailing]), mediaType: 'application/vnd.docker.image.rootfs.diff.tar.zstd', expected: tl, dest: await scratch(), limits: { minFreeBytes: 0 }, sync: false });
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof BerthError);
    assert.equal(caught.code, 'ERR_INVALID_IMAGE');
    assert.match(caught.message, new RegExp(`^unpack layer ${tl.digest}: decompress zstd: .*after the last zstd frame`));
  });
});
