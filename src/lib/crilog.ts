/**
 * conmon's k8s-file log format (the CRI log format): one line per write,
 * `<RFC3339Nano> <stdout|stderr> <P|F> <message>`, where P marks a partial line that
 * continues in the next record and F ends it.
 */
export interface CriDecoder {
  /** Feeds raw log bytes (any chunking); returns the complete messages they finish. */
  push(chunk: string): string[];
  /** The unfinished message, if any (a P record without its F). */
  flush(): string[];
}

export function criDecoder(): CriDecoder {
  let carry = ''; // an incomplete record line (no newline yet)
  let partial = ''; // message text of P records waiting for their F
  return {
    push(chunk: string): string[] {
      const out: string[] = [];
      const text = carry + chunk;
      const lines = text.split('\n');
      carry = lines.pop() ?? '';
      for (const l of lines) {
        const m = /^\S+ (?:stdout|stderr) ([PF]) ?(.*)$/.exec(l);
        if (m === null) continue;
        partial += m[2] ?? '';
        if (m[1] === 'F') {
          out.push(partial);
          partial = '';
        }
      }
      return out;
    },
    flush(): string[] {
      const out = partial !== '' ? [partial] : [];
      partial = '';
      return out;
    },
  };
}
