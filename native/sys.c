/*
 * berth_sys: the few Linux syscalls Node does not expose, used by the layer
 * unpacker. mknod(2) for whiteouts, fifos and devices; l*xattr(2) for the
 * overlay opaque marker and PAX xattrs; and for `berth exec -t` the receiving
 * end of runc's --console-socket (SCM_RIGHTS), TIOCSWINSZ, and the subreaper
 * and waitpid that collect the exit of a process `runc exec -d` started. All calls but
 * syncfs are synchronous and never wait on another process.
 *
 * Errors are thrown as Error objects shaped like Node's system errors:
 * { code: 'EPERM', errno: -1, syscall: 'mknod', path: '...' }.
 */
#define _GNU_SOURCE /* syncfs */
#define NAPI_VERSION 8
#include <node_api.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <linux/openat2.h>

#define MAX_PATH_BYTES 4096
#define MAX_NAME_BYTES 256

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/*
 * Copies a path argument (string → UTF-8, Buffer → raw bytes) into buf as a
 * NUL-terminated C string. Rejects embedded NULs so a name cannot be silently
 * truncated. Returns 0 on success, -1 with a pending exception.
 */
static int get_path(napi_env env, napi_value v, char *buf, size_t cap, const char *what) {
  napi_valuetype t;
  bool is_buffer = false;
  size_t len = 0;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_string) {
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return -1;
    if (len + 1 > cap) { throw_errno(env, ENAMETOOLONG, what, "<long>"); return -1; }
    if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) return -1;
  } else if (napi_is_buffer(env, v, &is_buffer) == napi_ok && is_buffer) {
    void *data = NULL;
    if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) return -1;
    if (len + 1 > cap) { throw_errno(env, ENAMETOOLONG, what, "<long>"); return -1; }
    if (len > 0) memcpy(buf, data, len);
    buf[len] = '\0';
  } else {
    throw_type(env, "path must be a string or a Buffer");
    return -1;
  }
  if (strlen(buf) != len) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "path or name contains a NUL byte");
    return -1;
  }
  return 0;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) { throw_type(env, "missing arguments"); return -1; }
  return 0;
}

/* A file descriptor argument: a non-negative int32, else a TypeError (thrown) and -1. */
static int get_fd(napi_env env, napi_value v, int32_t *fd) {
  if (napi_get_value_int32(env, v, fd) != napi_ok || *fd < 0) { throw_type(env, "fd must be a non-negative number"); return -1; }
  return 0;
}

/* mknod(path, mode, dev): dev is an encoded dev_t (glibc makedev). */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[MAX_PATH_BYTES];
  uint32_t mode;
  int64_t dev;
  if (get_args(env, info, 3, argv) != 0) return NULL;
  if (get_path(env, argv[0], path, sizeof path, "mknod") != 0) return NULL;
  if (napi_get_value_uint32(env, argv[1], &mode) != napi_ok) return throw_type(env, "mode must be a number");
  if (napi_get_value_int64(env, argv[2], &dev) != napi_ok || dev < 0) return throw_type(env, "dev must be a non-negative number");
  if (mknod(path, (mode_t)mode, (dev_t)dev) != 0) return throw_errno(env, errno, "mknod", path);
  return NULL;
}

/* lsetxattr(path, name, value: Buffer): creates or replaces, never follows a final symlink. */
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[MAX_PATH_BYTES], name[MAX_NAME_BYTES];
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  if (get_args(env, info, 3, argv) != 0) return NULL;
  if (get_path(env, argv[0], path, sizeof path, "lsetxattr") != 0) return NULL;
  if (get_path(env, argv[1], name, sizeof name, "lsetxattr") != 0) return NULL;
  if (napi_is_buffer(env, argv[2], &is_buffer) != napi_ok || !is_buffer) return throw_type(env, "value must be a Buffer");
  if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) return NULL;
  if (lsetxattr(path, name, len > 0 ? data : "", len, 0) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

/*
 * realDirBeneath(root, rel) → true when `rel` names, below the directory `root` (a path, or an open
 * directory fd the caller keeps), a directory whose
 * every component is a real directory: one openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
 * RESOLVE_NO_XDEV), so the kernel walks the components afresh and refuses any symlink, `..` out of
 * root or mount crossing on the way. false when a component is missing, is a symlink or is not a
 * directory (the caller then walks the path itself); undefined when the kernel has no openat2
 * (ENOSYS; EPERM from a seccomp filter; EINVAL for flags it predates), so the caller walks every path
 * itself. Nothing is kept open.
 */
static napi_value js_real_dir_beneath(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  char root[MAX_PATH_BYTES], rel[MAX_PATH_BYTES];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  napi_valuetype rt;
  if (napi_typeof(env, argv[0], &rt) != napi_ok) return NULL;
  /* The root as an fd the caller keeps open (a layer's writer, for all its entries), or a path. */
  bool own_root = rt != napi_number;
  int32_t given = -1;
  if (own_root ? get_path(env, argv[0], root, sizeof root, "openat2") != 0 : get_fd(env, argv[0], &given) != 0) return NULL;
  if (get_path(env, argv[1], rel, sizeof rel, "openat2") != 0) return NULL;
  int rootfd = own_root ? open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : given;
  if (rootfd < 0) return throw_errno(env, errno, "open", root); /* only an open of a path fails here */
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
  int e = errno;
  if (own_root) close(rootfd);
  if (fd >= 0) {
    close((int)fd);
    napi_get_boolean(env, true, &out);
    return out;
  }
  switch (e) {
    case ENOENT: case ENOTDIR: case ELOOP: case EXDEV: case EACCES:
    case EAGAIN: /* a concurrent rename elsewhere on the system: let the caller walk it */
      napi_get_boolean(env, false, &out);
      return out;
    case ENOSYS: case EPERM: case E2BIG: case EINVAL:
      napi_get_undefined(env, &out);
      return out;
    default:
      return throw_errno(env, e, "openat2", rel);
  }
}

/*
 * x32Served() → whether this kernel runs x32-ABI system calls: one getpid through the x32 entry
 * (the syscall number with __X32_SYSCALL_BIT set). true when it answers this process's pid, false
 * on ENOSYS (built without CONFIG_X86_X32_ABI, or x32 switched off at boot), undefined for
 * anything else and on any other architecture than x86_64. The caller makes sure no seccomp filter
 * of its own could answer in the kernel's place (a filter may kill the caller for it).
 */
static napi_value js_x32_served(napi_env env, napi_callback_info info) {
  napi_value out;
  (void)info;
#if defined(__x86_64__)
  errno = 0;
  long r = syscall(0x40000000L | 39L /* getpid: common to the x86_64 and x32 tables */);
  int e = errno;
  if (r == (long)getpid()) {
    napi_get_boolean(env, true, &out);
    return out;
  }
  if (r == -1 && e == ENOSYS) {
    napi_get_boolean(env, false, &out);
    return out;
  }
#endif
  napi_get_undefined(env, &out);
  return out;
}

/*
 * createBeneath(rootFd, rel, mode) → an fd open for writing on a regular file just made at `rel`
 * below the directory open as rootFd: one openat2(O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC)
 * with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV, so the kernel walks
 * every parent component afresh, refuses any symlink, `..` above the root or mount crossing, and
 * never follows or opens what is already at `rel` (O_EXCL). undefined on any failure: the caller
 * then takes its own way (a parent to make or to follow with chroot semantics, something to
 * replace, no openat2 here), which meets the same error again if there is one to report.
 */
static napi_value js_create_beneath(napi_env env, napi_callback_info info) {
  napi_value argv[3], out;
  char rel[MAX_PATH_BYTES];
  int32_t rootfd;
  uint32_t mode;
  if (get_args(env, info, 3, argv) != 0) return NULL;
  if (get_fd(env, argv[0], &rootfd) != 0) return NULL;
  if (get_path(env, argv[1], rel, sizeof rel, "openat2") != 0) return NULL;
  if (napi_get_value_uint32(env, argv[2], &mode) != napi_ok || mode > 07777) return throw_type(env, "mode must be a permission mode");
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  how.mode = mode;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
  if (fd < 0) {
    napi_get_undefined(env, &out);
    return out;
  }
  napi_create_int32(env, (int32_t)fd, &out);
  return out;
}

/*
 * closeFd(fd): close(2) of an fd this addon opened (createBeneath). Closed here rather than by
 * fs.closeSync: in a worker thread node tracks the fds fs opened and warns about every fd fs closes
 * that it did not open ("closed but not opened in unmanaged mode"), one warning per file.
 * EINTR counts as closed (Linux releases the fd before it returns EINTR).
 */
static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t fd;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, errno, "close", "<fd>");
  napi_get_undefined(env, &out);
  return out;
}

/* lgetxattr(path, name) → Buffer, or null when the attribute is absent (ENODATA). */
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  char path[MAX_PATH_BYTES], name[MAX_NAME_BYTES];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  if (get_path(env, argv[0], path, sizeof path, "lgetxattr") != 0) return NULL;
  if (get_path(env, argv[1], name, sizeof name, "lgetxattr") != 0) return NULL;
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) {
      if (errno == ENODATA) { napi_get_null(env, &out); return out; }
      return throw_errno(env, errno, "lgetxattr", path);
    }
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf == NULL) return throw_errno(env, ENOMEM, "lgetxattr", path);
    ssize_t m = lgetxattr(path, name, buf, (size_t)n);
    if (m < 0) {
      int e = errno;
      free(buf);
      if (e == ERANGE) continue; /* grew between the two calls */
      if (e == ENODATA) { napi_get_null(env, &out); return out; }
      return throw_errno(env, e, "lgetxattr", path);
    }
    napi_status s = napi_create_buffer_copy(env, (size_t)m, buf, NULL, &out);
    free(buf);
    return s == napi_ok ? out : NULL;
  }
  return throw_errno(env, ERANGE, "lgetxattr", path);
}

/* llistxattr(path) → string[] of attribute names. */
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, s;
  char path[MAX_PATH_BYTES];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (get_path(env, argv[0], path, sizeof path, "llistxattr") != 0) return NULL;
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t n = llistxattr(path, NULL, 0);
    if (n < 0) return throw_errno(env, errno, "llistxattr", path);
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf == NULL) return throw_errno(env, ENOMEM, "llistxattr", path);
    ssize_t m = llistxattr(path, buf, (size_t)n);
    if (m < 0) {
      int e = errno;
      free(buf);
      if (e == ERANGE) continue;
      return throw_errno(env, e, "llistxattr", path);
    }
    if (napi_create_array(env, &out) != napi_ok) { free(buf); return NULL; }
    uint32_t idx = 0;
    for (ssize_t off = 0; off < m;) {
      size_t l = strnlen(buf + off, (size_t)(m - off));
      if (napi_create_string_utf8(env, buf + off, l, &s) != napi_ok ||
          napi_set_element(env, out, idx++, s) != napi_ok) { free(buf); return NULL; }
      off += (ssize_t)l + 1;
    }
    free(buf);
    return out;
  }
  return throw_errno(env, ERANGE, "llistxattr", path);
}

/*
 * syncfs(path) → Promise<void>: flushes the whole filesystem holding path. Runs on the libuv
 * thread pool because it can take seconds on a busy disk.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char path[MAX_PATH_BYTES];
  int err;
  const char *syscall;
} syncfs_job;

static void syncfs_execute(napi_env env, void *data) {
  (void)env;
  syncfs_job *job = data;
  job->err = 0;
  job->syscall = "open";
  int fd = open(job->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { job->err = errno; return; }
  job->syscall = "syncfs";
  if (syncfs(fd) != 0) job->err = errno;
  close(fd);
}

static void syncfs_complete(napi_env env, napi_status status, void *data) {
  syncfs_job *job = data;
  napi_value undef;
  if (status == napi_ok && job->err == 0) {
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, job->deferred, undef);
  } else {
    int e = status == napi_ok ? job->err : ECANCELED;
    /* Build the error through throw_errno, then take it back as a value to reject with. */
    napi_value err;
    throw_errno(env, e, job->syscall, job->path);
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_reject_deferred(env, job->deferred, err);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, name;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  syncfs_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, ENOMEM, "syncfs", "");
  if (get_path(env, argv[0], job->path, sizeof job->path, "syncfs") != 0) { free(job); return NULL; }
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "berth_syncfs", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, syncfs_execute, syncfs_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free(job);
    return NULL;
  }
  return promise;
}

/* tryLockExclusive(fd): flock(fd, LOCK_EX|LOCK_NB). true when taken, false when another open
 * file description holds it; the kernel drops the lock when the holder dies (kill -9 too). */
static napi_value js_try_lock_exclusive(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t fd;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  int r;
  do { r = flock(fd, LOCK_EX | LOCK_NB); } while (r != 0 && errno == EINTR);
  if (r != 0 && errno != EWOULDBLOCK) return throw_errno(env, errno, "flock", "");
  napi_get_boolean(env, r == 0, &out);
  return out;
}

/*
 * consoleListen(path) → fd: a listening unix stream socket (non-blocking, close-on-exec) for
 * runc's --console-socket. runc connects and sends the pty master over SCM_RIGHTS; Node's net
 * module cannot receive descriptors, hence this and consoleReceive.
 */
static napi_value js_console_listen(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  char path[MAX_PATH_BYTES];
  struct sockaddr_un addr;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (get_path(env, argv[0], path, sizeof path, "bind") != 0) return NULL;
  if (strlen(path) >= sizeof addr.sun_path) return throw_errno(env, ENAMETOOLONG, "bind", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", path);
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, strlen(path));
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "bind", path);
  }
  napi_create_int32(env, fd, &out);
  return out;
}

/*
 * consoleReceive(listenFd) → fd | null: accepts one connection without blocking (null when none
 * is pending yet) and receives one descriptor sent with SCM_RIGHTS (runc sends it right after
 * connecting, so the recvmsg is a short blocking read). The received fd is close-on-exec.
 */
static napi_value js_console_receive(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t lfd;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (get_fd(env, argv[0], &lfd) != 0) return NULL;
  int conn;
  do { conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC); } while (conn < 0 && errno == EINTR);
  if (conn < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) { napi_get_null(env, &out); return out; }
    return throw_errno(env, errno, "accept", "");
  }
  char data[1024];
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = { .iov_base = data, .iov_len = sizeof data };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do { n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
  int e = errno;
  close(conn);
  if (n < 0) return throw_errno(env, e, "recvmsg", "");
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
    return throw_errno(env, EBADF, "recvmsg", "no SCM_RIGHTS descriptor");
  int got;
  memcpy(&got, CMSG_DATA(c), sizeof got);
  napi_create_int32(env, got, &out);
  return out;
}

/* setWindowSize(fd, rows, cols): TIOCSWINSZ on a terminal (the pty master of an exec). */
static napi_value js_set_window_size(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  uint32_t rows, cols;
  if (get_args(env, info, 3, argv) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (napi_get_value_uint32(env, argv[1], &rows) != napi_ok || rows > 0xffff) return throw_type(env, "rows must be 0..65535");
  if (napi_get_value_uint32(env, argv[2], &cols) != napi_ok || cols > 0xffff) return throw_type(env, "cols must be 0..65535");
  struct winsize ws;
  memset(&ws, 0, sizeof ws);
  ws.ws_row = (unsigned short)rows;
  ws.ws_col = (unsigned short)cols;
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) return throw_errno(env, errno, "ioctl TIOCSWINSZ", "");
  return NULL;
}

/*
 * mount(source, target, fstype, flags, data, cwd|null) and umount2(target, flags) → Promise<void>,
 * on the libuv pool (an overlay's unmount syncs its upper filesystem, which may take a while).
 * Overlay resolves relative lowerdirs against the caller's working directory, and the
 * process's cwd must not move under the rest of node: a mount with `cwd` runs on a fresh thread
 * that unshares its fs_struct (CLONE_FS) and chdirs there, so only that thread sees it; the
 * pool thread waits for it. A call that blocks in the kernel (a hung lower filesystem) holds
 * its thread until the kernel returns; the caller's deadline stops waiting for it.
 */
#define MAX_MOUNT_DATA_BYTES 4096
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  bool unmount, has_cwd, has_data;
  char source[MAX_PATH_BYTES], target[MAX_PATH_BYTES], fstype[MAX_NAME_BYTES], cwd[MAX_PATH_BYTES];
  char data[MAX_MOUNT_DATA_BYTES + 1];
  unsigned long flags;
  int err;
  const char *syscall;
} mount_job;

static void *mount_thread(void *arg) {
  mount_job *job = arg;
  if (job->has_cwd) {
    job->syscall = "unshare";
    if (unshare(CLONE_FS) != 0) { job->err = errno; return NULL; }
    job->syscall = "chdir";
    if (chdir(job->cwd) != 0) { job->err = errno; return NULL; }
  }
  job->syscall = "mount";
  if (mount(job->source, job->target, job->fstype, job->flags, job->has_data ? job->data : NULL) != 0) job->err = errno;
  return NULL;
}

static void mount_execute(napi_env env, void *data) {
  (void)env;
  mount_job *job = data;
  job->err = 0;
  if (job->unmount) {
    job->syscall = "umount2";
    if (umount2(job->target, (int)job->flags) != 0) job->err = errno;
    return;
  }
  if (!job->has_cwd) { mount_thread(job); return; }
  pthread_t t;
  job->syscall = "pthread_create";
  int e = pthread_create(&t, NULL, mount_thread, job);
  if (e != 0) { job->err = e; return; }
  pthread_join(t, NULL);
}

static void mount_complete(napi_env env, napi_status status, void *data) {
  mount_job *job = data;
  napi_value undef;
  if (status == napi_ok && job->err == 0) {
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, job->deferred, undef);
  } else {
    napi_value err;
    throw_errno(env, status == napi_ok ? job->err : ECANCELED, job->syscall, job->target);
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_reject_deferred(env, job->deferred, err);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* Queues a filled job; its promise, or NULL with the job freed. */
static napi_value queue_mount_job(napi_env env, mount_job *job) {
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, job->unmount ? "berth_umount2" : "berth_mount", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, mount_execute, mount_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free(job);
    return NULL;
  }
  return promise;
}

/* An optional string argument (null/undefined: absent) into buf; -1 with an exception pending. */
static int get_optional_path(napi_env env, napi_value v, char *buf, size_t cap, bool *present) {
  napi_valuetype t;
  *present = false;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_null || t == napi_undefined) return 0;
  if (get_path(env, v, buf, cap, "mount") != 0) return -1;
  *present = true;
  return 0;
}

static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int64_t flags;
  if (get_args(env, info, 6, argv) != 0) return NULL;
  mount_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, ENOMEM, "mount", "");
  if (get_path(env, argv[0], job->source, sizeof job->source, "mount") != 0 ||
      get_path(env, argv[1], job->target, sizeof job->target, "mount") != 0 ||
      get_path(env, argv[2], job->fstype, sizeof job->fstype, "mount") != 0 ||
      get_optional_path(env, argv[4], job->data, sizeof job->data, &job->has_data) != 0 ||
      get_optional_path(env, argv[5], job->cwd, sizeof job->cwd, &job->has_cwd) != 0) { free(job); return NULL; }
  if (napi_get_value_int64(env, argv[3], &flags) != napi_ok || flags < 0) { free(job); return throw_type(env, "flags must be a non-negative number"); }
  job->flags = (unsigned long)flags;
  return queue_mount_job(env, job);
}

static napi_value js_umount2(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t flags;
  if (get_args(env, info, 2, argv) != 0) return NULL;
  mount_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, ENOMEM, "umount2", "");
  job->unmount = true;
  if (get_path(env, argv[0], job->target, sizeof job->target, "umount2") != 0) { free(job); return NULL; }
  if (napi_get_value_int32(env, argv[1], &flags) != napi_ok || flags < 0) { free(job); return throw_type(env, "flags must be a non-negative number"); }
  job->flags = (unsigned long)flags;
  return queue_mount_job(env, job);
}

/*
 * setChildSubreaper(): prctl(PR_SET_CHILD_SUBREAPER, 1). A process started by a child that then
 * exits (runc exec -d) becomes this process's child, so waitPid can collect its status.
 */
static napi_value js_set_child_subreaper(napi_env env, napi_callback_info info) {
  (void)info;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return throw_errno(env, errno, "prctl PR_SET_CHILD_SUBREAPER", "");
  return NULL;
}

/*
 * waitPid(pid) → null while the child runs, else { code } or { signal } (the number). WNOHANG,
 * one pid only: libuv reaps only the pids it spawned, so an adopted child is left to this call.
 */
static napi_value js_wait_pid(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  int32_t pid;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 0) return throw_type(env, "pid must be a positive number");
  int status = 0;
  pid_t r;
  do { r = waitpid(pid, &status, WNOHANG); } while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "waitpid", "");
  if (r == 0) { napi_get_null(env, &out); return out; }
  napi_create_object(env, &out);
  if (WIFEXITED(status)) {
    napi_create_int32(env, WEXITSTATUS(status), &v);
    napi_set_named_property(env, out, "code", v);
  } else {
    napi_create_int32(env, WIFSIGNALED(status) ? WTERMSIG(status) : 0, &v);
    napi_set_named_property(env, out, "signal", v);
  }
  return out;
}

/*
 * rawOutput(fd): clears OPOST on a terminal, the output half of cfmakeraw(3) that libuv's raw
 * mode leaves on (it keeps ONLCR), so bytes a remote pty already translated pass unchanged.
 */
static napi_value js_raw_output(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  struct termios t;
  if (get_args(env, info, 1, argv) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (tcgetattr(fd, &t) != 0) return throw_errno(env, errno, "tcgetattr", "");
  t.c_oflag &= ~(tcflag_t)OPOST;
  if (tcsetattr(fd, TCSANOW, &t) != 0) return throw_errno(env, errno, "tcsetattr", "");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "syncfs", NULL, js_syncfs, NULL, NULL, NULL, napi_enumerable, NULL },
    { "tryLockExclusive", NULL, js_try_lock_exclusive, NULL, NULL, NULL, napi_enumerable, NULL },
    { "mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL },
    { "umount2", NULL, js_umount2, NULL, NULL, NULL, napi_enumerable, NULL },
    { "consoleListen", NULL, js_console_listen, NULL, NULL, NULL, napi_enumerable, NULL },
    { "consoleReceive", NULL, js_console_receive, NULL, NULL, NULL, napi_enumerable, NULL },
    { "setWindowSize", NULL, js_set_window_size, NULL, NULL, NULL, napi_enumerable, NULL },
    { "setChildSubreaper", NULL, js_set_child_subreaper, NULL, NULL, NULL, napi_enumerable, NULL },
    { "waitPid", NULL, js_wait_pid, NULL, NULL, NULL, napi_enumerable, NULL },
    { "rawOutput", NULL, js_raw_output, NULL, NULL, NULL, napi_enumerable, NULL },
    { "realDirBeneath", NULL, js_real_dir_beneath, NULL, NULL, NULL, napi_enumerable, NULL },
    { "x32Served", NULL, js_x32_served, NULL, NULL, NULL, napi_enumerable, NULL },
    { "createBeneath", NULL, js_create_beneath, NULL, NULL, NULL, napi_enumerable, NULL },
    { "closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
