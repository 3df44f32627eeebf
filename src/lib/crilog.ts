/**
 * conmon's k8s-file log format (the CRI log format): one line per write,
 * `<RFC3339Nano> <stdout|stderr> <P|F> <message>`, where P marks a partial line that
 * continues in the next record and F ends it.
 */
export interface CriDecoder {
  /** Feeds raw log text (any chunking); returns the complete messages they finish. */
  push(chunk: string): string[];
  /** The unfinished message, if any (a P record without its F). */
  flush(): string[];
}

/** One complete message: the time of its first record, its stream and text. */
export interface CriMessage {
  time: string;
  stream: 'stdout' | 'stderr';
  message: string;
}

/** One record line: `partial` when its tag is P (the message goes on in the next record). */
export interface CriRecord {
  time: string;
  stream: 'stdout' | 'stderr';
  partial: boolean;
  text: string;
}

export interface CriRecordDecoder {
  push(chunk: string): CriMessage[];
  flush(): CriMessage[];
  /**
   * The records themselves, P ones included, as they come (for following: the kubelet writes a
   * partial record's text at once, without a newline). Shares the line buffer with push; a
   * message push had started and not finished is handed out first by `takePartial`.
   */
  records(chunk: string): CriRecord[];
  /** The message push started and has not finished (its P records so far), removed from the decoder. */
  takePartial(): CriMessage | undefined;
  /** Forgets an incomplete record line (the file was truncated under it). */
  reset(): void;
}

export function criRecordDecoder(): CriRecordDecoder {
  let carry = ''; // an incomplete record line (no newline yet)
  let partial: CriMessage | undefined; // P records waiting for their F
  const parse = (chunk: string): CriRecord[] => {
    const lines = (carry + chunk).split('\n');
    carry = lines.pop() ?? '';
    const out: CriRecord[] = [];
    for (const l of lines) {
      // The content is everything after the tag, as the kubelet's parseCRILog takes it: `[^]`,
      // not `.`, which stops at \r, U+2028 and U+2029 and dropped such lines (CRLF output,
      // progress bars). A tag may carry more flags after a colon (`F:x`); the first decides.
      const m = /^(\S+) (stdout|stderr) ([PF])(?::\S*)? ?([^]*)$/.exec(l);
      if (m === null) continue;
      out.push({ time: m[1] ?? '', stream: m[2] === 'stderr' ? 'stderr' : 'stdout', partial: m[3] === 'P', text: m[4] ?? '' });
    }
    return out;
  };
  return {
    push(chunk: string): CriMessage[] {
      const out: CriMessage[] = [];
      for (const r of parse(chunk)) {
        if (partial === undefined) partial = { time: r.time, stream: r.stream, message: r.text };
        else partial.message += r.text;
        if (!r.partial) {
          out.push(partial);
          partial = undefined;
        }
      }
      return out;
    },
    flush(): CriMessage[] {
      const out = partial !== undefined ? [partial] : [];
      partial = undefined;
      return out;
    },
    records: parse,
    takePartial(): CriMessage | undefined {
      const p = partial;
      partial = undefined;
      return p;
    },
    reset(): void {
      carry = '';
    },
  };
}

export function criDecoder(): CriDecoder {
  const d = criRecordDecoder();
  return {
    push: (chunk) => d.push(chunk).map((m) => m.message),
    flush: () => d.flush().map((m) => m.message),
  };
}
