/**
 * Filesystem tree listings for comparing an unpacked rootfs with a reference, and the reference unpacker
 * (skopeo + umoci) to produce one.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp, type BigIntStats } from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

function typeOf(st: BigIntStats): string {
  if (st.isFile()) return 'f';
  if (st.isDirectory()) return 'd';
  if (st.isSymbolicLink()) return 'l';
  if (st.isCharacterDevice()) return 'c';
  if (st.isBlockDevice()) return 'b';
  if (st.isFIFO()) return 'p';
  if (st.isSocket()) return 's';
  return '?';
}

/** glibc's gnu_dev_major/gnu_dev_minor. */
function majorMinor(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Keeps one entry per line and fields space-separated: backslash, whitespace and controls become \xNN (or \uNNNN). */
function escapeField(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\\\s\x00-\x1f\x7f]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

async function fileSha256(p: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(p), h);
  return `sha256:${h.digest('hex')}`;
}

async function describe(abs: string, rel: string): Promise<{ line: string; isDir: boolean }> {
  const st = await fsp.lstat(abs, { bigint: true });
  const type = typeOf(st);
  const mode = (st.mode & 0o7777n).toString(8).padStart(4, '0');
  let size = '-';
  if (type === 'f') size = st.size.toString();
  else if (type === 'c' || type === 'b') size = majorMinor(st.rdev);
  const link = type === 'l' ? escapeField(await fsp.readlink(abs)) : '-';
  const digest = type === 'f' ? await fileSha256(abs) : '-';
  return { line: `${escapeField(rel)} ${type} ${mode} ${st.uid} ${st.gid} ${size} ${link} ${digest}`, isDir: type === 'd' };
}

/**
 * Every path under `root` (root itself excluded), sorted, one line each:
 * `path type mode uid gid size|major:minor|- linktarget|- sha256|-`, with type one of f d l c b p s and mode
 * four octal digits including setuid/setgid/sticky. Uses lstat and never follows symlinks, so it is safe on an
 * untrusted rootfs. Paths are relative with `/` separators; see escapeField for odd characters.
 */
export async function listTree(root: string): Promise<string[]> {
  const lines: { rel: string; line: string }[] = [];
  const walk = async (dirAbs: string, dirRel: string): Promise<void> => {
    const names = await fsp.readdir(dirAbs);
    for (const name of names) {
      const abs = path.join(dirAbs, name);
      const rel = dirRel === '' ? name : `${dirRel}/${name}`;
      const { line, isDir } = await describe(abs, rel);
      lines.push({ rel, line });
      if (isDir) await walk(abs, rel);
    }
  };
  await walk(root, '');
  // Sort by the raw path, not the escaped line, so `a b` and `a/b` order the way the filesystem names them.
  lines.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return lines.map((l) => l.line);
}

/** The tag of `repo:tag` (a colon after the last slash, so `host:port/repo` is not misread); default `latest`. */
function tagOf(repoTag: string): string {
  const colon = repoTag.lastIndexOf(':');
  return colon > repoTag.lastIndexOf('/') ? repoTag.slice(colon + 1) : 'latest';
}

/**
 * Reference unpack with the upstream tools: `skopeo copy` from the plain-HTTP registry into an OCI layout at
 * `<workDir>/layout`, then `umoci unpack` into `<workDir>/bundle`. Returns `<workDir>/bundle/rootfs`.
 * `--insecure-policy` so it works on hosts without /etc/containers/policy.json. Must run as root (umoci
 * then keeps ownership and device nodes as the layers say). Fails if `<workDir>/bundle` already exists.
 */
export async function umociUnpack(registryHost: string, repoTag: string, workDir: string): Promise<string> {
  const tag = tagOf(repoTag);
  const layout = `${path.join(workDir, 'layout')}:${tag}`;
  const bundle = path.join(workDir, 'bundle');
  await fsp.mkdir(workDir, { recursive: true });
  await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${registryHost}/${repoTag}`, `oci:${layout}`]);
  await run('umoci', ['unpack', '--image', layout, bundle]);
  return path.join(bundle, 'rootfs');
}

async function run(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const stderr = typeof err === 'object' && err !== null && 'stderr' in err ? String(err.stderr) : '';
    throw new Error(`run ${cmd} ${args.join(' ')}: failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}
