import { pack } from 'tar-stream';

/** A header as tar-stream's pack() takes it. */
export type PackHeader = Parameters<ReturnType<typeof pack>['entry']>[0];

/** A tar of `members` in the order given, written by tar-stream's pack() (no data: an entry without a body). */
export async function packTar(members: readonly { header: PackHeader; data?: string | Buffer | undefined }[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const m of members) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (m.data === undefined) p.entry(m.header, cb);
      else p.entry(m.header, m.data, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}
