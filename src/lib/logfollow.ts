import { promises as fsp, type Stats } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { criRecordDecoder, type CriMessage } from './crilog.js';
import { sleep } from './time.js';

/**
 * `berth logs` over conmon's CRI log file: the messages (or with `raw` the record lines),
 * filtered by `sinceMs`, the last `tail`, optionally with their timestamps; with `follow`,
 * new output until the container stops or the signal aborts. Bytes are decoded with a
 * StringDecoder, so a UTF-8 character split across two reads is printed whole.
 *
 * Rotation: conmon truncates the file when it passes --log-size-max. A file that shrank is
 * read again from its start; a file replaced under the same path (another inode) has its old
 * descriptor drained to its end first. So nothing is skipped or repeated across a rotation
 * (what was written between two polls and then truncated away is lost, as with any
 * truncating writer: the poll interval bounds it).
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
  write: (text: string) => void;
  /** How often the file is polled (default 200 ms) and `running` asked (default 500 ms). */
  pollMs?: number;
  checkMs?: number;
}

export async function readLog(file: string, o: FollowOptions): Promise<void> {
  const records = criRecordDecoder();
  let text = new StringDecoder('utf8');
  let carryRaw = '';
  const render = (chunk: string, final: boolean): string[] => {
    if (o.raw) {
      const lines = (carryRaw + chunk).split('\n');
      carryRaw = final ? '' : (lines.pop() ?? '');
      return lines.filter((l) => l !== '' && (o.sinceMs === undefined || Date.parse(l.split(' ')[0] ?? '') >= o.sinceMs));
    }
    const msgs: CriMessage[] = [...records.push(chunk), ...(final ? records.flush() : [])];
    return msgs.filter((m) => o.sinceMs === undefined || Date.parse(m.time) >= o.sinceMs).map((m) => (o.timestamps ? `${m.time} ${m.message}` : m.message));
  };
  let fh = await fsp.open(file, 'r').catch(() => undefined);
  let offset = 0;
  const readMore = async (): Promise<string> => {
    if (fh === undefined) return '';
    const { size } = await fh.stat();
    if (size <= offset) return '';
    const buf = Buffer.alloc(size - offset);
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    offset += bytesRead;
    return text.write(buf.subarray(0, bytesRead));
  };
  // What is there now; without -f an unfinished last message is shown too.
  let lines = render(await readMore(), !o.follow);
  if (o.tail !== undefined) lines = o.tail === 0 ? [] : lines.slice(-o.tail);
  if (lines.length > 0) o.write(`${lines.join('\n')}\n`);
  if (!o.follow) {
    await fh?.close();
    return;
  }
  const emit = (chunk: string): void => {
    const out = render(chunk, false);
    if (out.length > 0) o.write(`${out.join('\n')}\n`);
  };
  let lastCheck = Date.now();
  let running = true;
  try {
    for (;;) {
      const onDisk: Stats | undefined = await fsp.stat(file).catch(() => undefined);
      const mine = fh === undefined ? undefined : await fh.stat().catch(() => undefined);
      if (onDisk !== undefined && (mine === undefined || onDisk.ino !== mine.ino)) {
        // Replaced under the same path: finish the old file, then read the new one from its start.
        emit(await readMore());
        await fh?.close();
        fh = await fsp.open(file, 'r').catch(() => undefined);
        offset = 0;
        text = new StringDecoder('utf8');
      } else if (mine !== undefined && mine.size < offset) {
        // Truncated in place (conmon's rotation): start over from the beginning.
        offset = 0;
        text = new StringDecoder('utf8');
        records.reset();
        carryRaw = '';
      }
      emit(await readMore());
      if (o.signal?.aborted === true || !running) break;
      if (Date.now() - lastCheck >= (o.checkMs ?? 500)) {
        lastCheck = Date.now();
        running = await o.running();
      }
      await sleep(o.pollMs ?? 200, o.signal).catch(() => undefined);
    }
    // The end: an unfinished message is shown.
    const rest = render(text.end(), true);
    if (rest.length > 0) o.write(`${rest.join('\n')}\n`);
  } finally {
    await fh?.close();
  }
}
