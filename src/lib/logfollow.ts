import { promises as fsp, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { criRecordDecoder, type CriMessage } from './crilog.js';
import { sleep } from './time.js';

/**
 * `berth logs` over conmon's CRI log file: the messages (or with `raw` the record lines),
 * filtered by `sinceMs`, the last `tail`, optionally with their timestamps; with `follow`,
 * new output until the container stops or the signal aborts. Bytes are decoded with a
 * StringDecoder, so a UTF-8 character split across two reads is printed whole.
 *
 * Rotation: `berth up` renames a full log to `<file>.1` and has conmon open a new one
 * (Runtime.rotateLogs), so the previous file is read first, then the current one. While
 * following, a file replaced under the same path (another inode) has its old descriptor
 * drained to its end first, then `<file>.1` is read too if it is neither the file just drained
 * nor the new one (two rotations between polls), then the new file from its start. So nothing is
 * skipped or repeated across a rotation; three rotations within one poll (200 ms) would lose
 * the middle file. A file that shrank in place (a truncating writer) is read again from its
 * start.
 */
export interface FollowOptions {
  raw: boolean;
  timestamps: boolean;
  sinceMs?: number;
  tail?: number;
  follow: boolean;
  /** Asked every ~500 ms while following: false ends the follow (the container stopped). */
  running: () => Promise<boolean>;
  signal?: AbortSignal;
  /**
   * Output, whole lines: `stream` says which of the container's streams they came from (`berth
   * run` keeps them apart as podman run does; `berth logs` merges them, as kubectl logs does).
   * Raw record lines come as stdout.
   */
  write: (text: string, stream: 'stdout' | 'stderr') => void;
  /** How often the file is polled (default 200 ms) and `running` asked (default 500 ms). */
  pollMs?: number;
  checkMs?: number;
  /**
   * Subscribes a kick that ends the current wait at once (the container's pod changed: it may have
   * stopped), so `running` is asked then and not only at the next poll; returns the unsubscribe.
   */
  wake?: (kick: () => void) => () => void;
  /** Largest piece read at once (default CHUNK; tests make it small to cross boundaries). */
  chunkBytes?: number;
}

const CHUNK = 1024 * 1024;

interface Line {
  text: string;
  stream: 'stdout' | 'stderr';
}

export async function readLog(file: string, o: FollowOptions): Promise<void> {
  const records = criRecordDecoder();
  let text = new StringDecoder('utf8');
  let carryRaw = '';
  const render = (chunk: string, final: boolean): Line[] => {
    if (o.raw) {
      const lines = (carryRaw + chunk).split('\n');
      carryRaw = final ? '' : (lines.pop() ?? '');
      return lines.filter((l) => l !== '' && (o.sinceMs === undefined || Date.parse(l.split(' ')[0] ?? '') >= o.sinceMs)).map((text) => ({ text, stream: 'stdout' }));
    }
    const msgs: CriMessage[] = [...records.push(chunk), ...(final ? records.flush() : [])];
    return msgs
      .filter((m) => o.sinceMs === undefined || Date.parse(m.time) >= o.sinceMs)
      .map((m) => ({ text: o.timestamps ? `${m.time} ${m.message}` : m.message, stream: m.stream }));
  };
  // Consecutive lines of one stream go out in one write.
  const writeLines = (lines: readonly Line[]): void => {
    for (let i = 0; i < lines.length; ) {
      const stream = lines[i]?.stream ?? 'stdout';
      let j = i;
      while (j < lines.length && lines[j]?.stream === stream) j++;
      o.write(`${lines.slice(i, j).map((l) => l.text).join('\n')}\n`, stream);
      i = j;
    }
  };
  // Inodes already read (whole or through fh), so no file is shown twice.
  const seen = new Set<number>();
  // Files are read in pieces of at most CHUNK bytes, never whole: a log can be larger than a
  // string may be (regression logs-read-whole-file), and `--tail` keeps only its last lines.
  const chunkBytes = o.chunkBytes ?? CHUNK;
  const readRange = async (h: FileHandle, from: number, to: number, dec: StringDecoder, consume: (s: string) => void): Promise<number> => {
    let off = from;
    while (off < to) {
      const buf = Buffer.allocUnsafe(Math.min(chunkBytes, to - off));
      const { bytesRead } = await h.read(buf, 0, buf.length, off);
      if (bytesRead === 0) break;
      off += bytesRead;
      consume(dec.write(buf.subarray(0, bytesRead)));
    }
    return off;
  };
  const readWhole = async (f: string, consume: (s: string) => void): Promise<void> => {
    const h = await fsp.open(f, 'r').catch(() => undefined);
    if (h === undefined) return;
    try {
      const { ino, size } = await h.stat();
      if (seen.has(ino)) return;
      seen.add(ino);
      const dec = new StringDecoder('utf8');
      await readRange(h, 0, size, dec, consume);
      consume(dec.end());
    } finally {
      await h.close();
    }
  };
  const openTracked = async (f: string): Promise<FileHandle | undefined> => {
    const h = await fsp.open(f, 'r').catch(() => undefined);
    const st = await h?.stat().catch(() => undefined);
    if (st !== undefined) seen.add(st.ino);
    return h;
  };
  let fh = await openTracked(file);
  let offset = 0;
  const readMore = async (consume: (s: string) => void): Promise<void> => {
    if (fh === undefined) return;
    const { size } = await fh.stat();
    if (size <= offset) return;
    offset = await readRange(fh, offset, size, text, consume);
  };
  // What is there now; without -f an unfinished last message is shown too. Without --tail the
  // lines go out as they are read; with it only the last ones are kept.
  let kept: Line[] = [];
  const take = (chunk: string, final: boolean): void => {
    const lines = render(chunk, final);
    if (o.tail === undefined) {
      writeLines(lines);
      return;
    }
    for (const l of lines) kept.push(l);
    if (kept.length > 2 * o.tail + 1024) kept = kept.slice(-o.tail);
  };
  // No current file mid-rotation (renamed, conmon not yet reopened): the rotated file is the one
  // still written to, so it is followed; else it is the previous file, read first (opened after
  // the current one: a rotation in between makes it the same inode, read once).
  if (fh === undefined) fh = await openTracked(`${file}.1`);
  else await readWhole(`${file}.1`, (s) => take(s, false));
  await readMore((s) => take(s, false));
  if (!o.follow) take('', true);
  if (o.tail !== undefined) writeLines(o.tail === 0 ? [] : kept.slice(-o.tail));
  if (!o.follow) {
    await fh?.close();
    return;
  }
  // Following, records go out as they come: a partial (P) record's text at once, without a
  // newline, as the kubelet writes it, so a prompt or a progress line shows before its newline
  // (regression partial-line-held-while-following); the message's F record ends the line.
  // The message the first read left unfinished is written first.
  let inMessage = false;
  let showing = true;
  const shown = (time: string): boolean => o.sinceMs === undefined || Date.parse(time) >= o.sinceMs;
  const pending = o.raw ? undefined : records.takePartial();
  if (pending !== undefined) {
    inMessage = true;
    showing = shown(pending.time);
    if (showing) o.write(`${o.timestamps ? `${pending.time} ` : ''}${pending.message}`, pending.stream);
  }
  const emit = (chunk: string): void => {
    if (o.raw) {
      writeLines(render(chunk, false));
      return;
    }
    for (const r of records.records(chunk)) {
      if (!inMessage) {
        showing = shown(r.time);
        if (showing) o.write(`${o.timestamps ? `${r.time} ` : ''}${r.text}${r.partial ? '' : '\n'}`, r.stream);
      } else if (showing) o.write(`${r.text}${r.partial ? '' : '\n'}`, r.stream);
      inMessage = r.partial;
    }
  };
  let lastCheck = Date.now();
  let running = true;
  // Ends the current wait: a kick from `wake`, or the caller's abort. Renewed once a kick is seen.
  let kick = new AbortController();
  const onKick = (): void => kick.abort();
  const unsubscribe = o.wake?.(onKick);
  o.signal?.addEventListener('abort', onKick, { once: true });
  try {
    for (;;) {
      const onDisk: Stats | undefined = await fsp.stat(file).catch(() => undefined);
      const mine = fh === undefined ? undefined : await fh.stat().catch(() => undefined);
      if (onDisk !== undefined && (mine === undefined || onDisk.ino !== mine.ino)) {
        // Replaced under the same path: finish the old file, then any rotated file never opened, then the new one from its start.
        await readMore(emit);
        await readWhole(`${file}.1`, emit);
        await fh?.close();
        fh = await openTracked(file);
        offset = 0;
        text = new StringDecoder('utf8');
      } else if (mine !== undefined && mine.size < offset) {
        // Truncated in place (conmon's rotation): start over from the beginning.
        offset = 0;
        text = new StringDecoder('utf8');
        records.reset();
        carryRaw = '';
      }
      await readMore(emit);
      if (o.signal?.aborted === true || !running) break;
      if (kick.signal.aborted || Date.now() - lastCheck >= (o.checkMs ?? 500)) {
        if (kick.signal.aborted) kick = new AbortController();
        lastCheck = Date.now();
        running = await o.running();
        // Stopped: once more for what it wrote last, then the end.
        if (!running) continue;
      }
      await sleep(o.pollMs ?? 200, kick.signal).catch(() => undefined);
    }
    // The end: what is left of the last read (an unfinished message was shown as it came).
    if (o.raw) writeLines(render(text.end(), true));
    else emit(text.end());
  } finally {
    unsubscribe?.();
    o.signal?.removeEventListener('abort', onKick);
    await fh?.close();
  }
}
