import { readFileSync } from 'node:fs';
import { loadAddon } from './addon.js';

/**
 * Typed access to the `berth_sys` N-API addon (native/sys.c): the Linux syscalls Node lacks.
 *
 * The addon is built by `npm ci` / `npm install` (the package's `install` script runs
 * `node-gyp rebuild`) into `build/Release/berth_sys.node` at the package root. It is loaded on first
 * use, so modules that import this file still work on hosts where the addon was never built; the
 * first call then throws ERR_PRECONDITION.
 *
 * Every function but `syncfs` is synchronous (one metadata syscall); none follows a final symlink. Failures are thrown as Node-style system
 * errors: `err.code` is the errno name ('EPERM', 'ENOENT', …), `err.errno` the negative errno.
 * Paths may be strings (UTF-8) or Buffers (raw bytes; see E9); embedded NULs are rejected.
 */
export type SysPath = string | Buffer;

interface SysBinding {
  mknod(path: SysPath, mode: number, dev: number): void;
  lsetxattr(path: SysPath, name: string, value: Buffer): void;
  lgetxattr(path: SysPath, name: string): Buffer | null;
  llistxattr(path: SysPath): string[];
  syncfs(path: SysPath): Promise<void>;
  tryLockExclusive(fd: number): boolean;
  mount(source: SysPath, target: SysPath, fstype: string, flags: number, data: SysPath | null, cwd: SysPath | null): Promise<void>;
  umount2(target: SysPath, flags: number): Promise<void>;
  consoleListen(path: SysPath): number;
  consoleReceive(listenFd: number): number | null;
  setWindowSize(fd: number, rows: number, cols: number): void;
  setChildSubreaper(): void;
  waitPid(pid: number): { code?: number; signal?: number } | null;
  rawOutput(fd: number): void;
  realDirBeneath(root: SysPath | number, rel: SysPath): boolean | undefined;
  x32Served(): boolean | undefined;
  createBeneath(rootFd: number, rel: SysPath, mode: number): number | undefined;
  closeFd(fd: number): void;
}

/** Every function sys() requires of the addon (an older build lacking one is refused). */
const BINDING_FUNCTIONS: readonly (keyof SysBinding)[] = ['mknod', 'lsetxattr', 'lgetxattr', 'llistxattr', 'syncfs', 'tryLockExclusive', 'mount', 'umount2', 'consoleListen', 'consoleReceive', 'setWindowSize', 'setChildSubreaper', 'waitPid', 'rawOutput', 'realDirBeneath', 'x32Served', 'createBeneath', 'closeFd'];

let binding: SysBinding | undefined;

function sys(): SysBinding {
  return (binding ??= loadAddon<SysBinding>('berth_sys', BINDING_FUNCTIONS));
}

/**
 * flock(2) LOCK_EX|LOCK_NB on an open fd: true when taken, false when held elsewhere. The lock
 * belongs to the open file description, so closing the fd or dying releases it.
 */
export function tryLockExclusive(fd: number): boolean {
  return sys().tryLockExclusive(fd);
}

/**
 * Whether `rel` names, below the directory `root`, a directory reached through real directories
 * only: one openat2(2) with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV, which walks every
 * component in the kernel and fails on any symlink, `..` above `root` or mount point. false when a
 * component is missing, a symlink or no directory; undefined when this kernel (or a seccomp filter)
 * does not offer openat2. Opens nothing that stays open. `root` may be an open directory fd instead of
 * a path (a layer's writer keeps one for all its entries: no path walk to the root per entry).
 */
export function realDirBeneath(root: SysPath | number, rel: SysPath): boolean | undefined {
  return sys().realDirBeneath(root, rel);
}

/**
 * Whether the kernel runs x32-ABI system calls (x86_64 only): true or false as the kernel answers
 * one getpid through the x32 entry; undefined on other architectures, when the answer was neither,
 * or when this process is itself under a seccomp filter (/proc/self/status `Seccomp:` not 0),
 * since a filter, not the kernel, would answer and might kill the process for asking.
 */
export function x32Served(): boolean | undefined {
  if (process.arch !== 'x64') return undefined;
  let status: string;
  try {
    status = readFileSync('/proc/self/status', 'utf8');
  } catch {
    return undefined;
  }
  if (/^Seccomp:\s*0$/m.exec(status) === null) return undefined;
  return sys().x32Served();
}

/**
 * A new regular file at `rel` below the directory open as `rootFd`, open for writing (mode as given,
 * less the umask), made by one openat2(O_CREAT|O_EXCL|O_NOFOLLOW) that walks every parent afresh
 * and accepts real directories only (RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV). undefined
 * when it could not be made that way, for any reason: the caller then resolves the parent itself.
 * Close the fd with closeFd, not fs.closeSync: in a worker thread node warns about every fd fs
 * closes that fs did not open (regression native-fd-closed-by-fs-warns).
 */
export function createBeneath(rootFd: number, rel: SysPath, mode: number): number | undefined {
  return sys().createBeneath(rootFd, rel, mode);
}

/** close(2) of an fd the addon opened (createBeneath). */
export function closeFd(fd: number): void {
  sys().closeFd(fd);
}

/** mknod(2). `mode` includes the file type bits (fs.constants.S_IFCHR, S_IFBLK, S_IFIFO). */
export function mknod(path: SysPath, mode: number, dev: number): void {
  sys().mknod(path, mode, dev);
}

/** lsetxattr(2) with flags 0: creates or replaces. */
export function lsetxattr(path: SysPath, name: string, value: Buffer): void {
  sys().lsetxattr(path, name, value);
}

/** lgetxattr(2); null when the attribute does not exist (ENODATA). */
export function lgetxattr(path: SysPath, name: string): Buffer | null {
  return sys().lgetxattr(path, name);
}

/** llistxattr(2): the attribute names visible to this process. */
export function llistxattr(path: SysPath): string[] {
  return sys().llistxattr(path);
}

/** syncfs(2) on the filesystem holding `path`, on the libuv thread pool. */
export function syncfs(path: SysPath): Promise<void> {
  return sys().syncfs(path);
}

/**
 * A listening unix socket at `path` for runc's `--console-socket` (non-blocking, close-on-exec);
 * the caller closes the fd and unlinks the path.
 */
export function consoleListen(path: SysPath): number {
  return sys().consoleListen(path);
}

/**
 * Accepts one pending connection on a `consoleListen` socket and returns the descriptor it sent
 * with SCM_RIGHTS (the pty master runc allocated); null while nobody has connected yet. Throws
 * EBADF when the peer sent no descriptor.
 */
export function consoleReceive(listenFd: number): number | null {
  return sys().consoleReceive(listenFd);
}

/** TIOCSWINSZ: sets a terminal's size; on a pty master the kernel sends SIGWINCH to the slave's foreground group. */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  sys().setWindowSize(fd, rows, cols);
}

/**
 * mount(2) on the libuv thread pool. `cwd`, when given, is the directory relative paths in
 * `data` resolve against (overlay's lowerdirs): the call runs on a thread of its own that
 * unshares its fs_struct, so the process's working directory never moves.
 */
export function mount(o: { source: SysPath; target: SysPath; fstype: string; flags?: number; data?: SysPath; cwd?: SysPath }): Promise<void> {
  return sys().mount(o.source, o.target, o.fstype, o.flags ?? 0, o.data ?? null, o.cwd ?? null);
}

/** umount2(2) on the libuv thread pool (an overlay's unmount syncs its upper filesystem). */
export function umount2(target: SysPath, flags = 0): Promise<void> {
  return sys().umount2(target, flags);
}

/**
 * prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants become this process's children instead of
 * init's. For the short-lived `berth exec -t` process only: a daemon that set it would inherit
 * every conmon it starts (conmon double-forks).
 */
export function setChildSubreaper(): void {
  sys().setChildSubreaper();
}

/** waitpid(pid, WNOHANG): null while it runs, else its exit code or the signal number that ended it. */
export function waitPid(pid: number): { code?: number; signal?: number } | null {
  return sys().waitPid(pid);
}

/** Clears OPOST on a terminal (cfmakeraw's output half; node's raw mode keeps ONLCR). setRawMode(false) restores it. */
export function rawOutput(fd: number): void {
  sys().rawOutput(fd);
}

/** Largest major and minor the kernel's 32-bit dev_t encoding can carry (12 and 20 bits). */
export const MAX_DEV_MAJOR = 0xfff;
export const MAX_DEV_MINOR = 0xfffff;

/**
 * glibc's makedev() for the range the kernel accepts. Multiplication, not `<<`, because the result
 * can exceed 2^31.
 */
export function makedev(major: number, minor: number): number {
  if (!Number.isInteger(major) || major < 0 || major > MAX_DEV_MAJOR) throw new RangeError(`device major ${major} out of range`);
  if (!Number.isInteger(minor) || minor < 0 || minor > MAX_DEV_MINOR) throw new RangeError(`device minor ${minor} out of range`);
  return (minor & 0xff) + (major & 0xfff) * 0x100 + (minor & 0xfff00) * 0x1000;
}
