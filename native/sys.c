/*
 * berth_sys: the few Linux syscalls Node does not expose, used by the layer
 * unpacker. mknod(2) for whiteouts, fifos and devices; l*xattr(2) for the
 * overlay opaque marker and PAX xattrs. All calls are synchronous: each is a
 * single metadata syscall on a local filesystem.
 *
 * Errors are thrown as Error objects shaped like Node's system errors:
 * { code: 'EPERM', errno: -1, syscall: 'mknod', path: '...' }.
 */
#define _GNU_SOURCE /* syncfs */
#define NAPI_VERSION 8
#include <node_api.h>
#include <sys/file.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>

#define MAX_PATH_BYTES 4096
#define MAX_NAME_BYTES 256

static const char *errno_name(int e) {
  switch (e) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF) E(EAGAIN)
    E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV)
    E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ETXTBSY) E(EFBIG)
    E(ENOSPC) E(ESPIPE) E(EROFS) E(EMLINK) E(ERANGE) E(ENAMETOOLONG)
    E(ENOSYS) E(ENOTEMPTY) E(ELOOP) E(ENODATA) E(EOPNOTSUPP) E(EDQUOT)
    E(EOVERFLOW) E(ECANCELED)
#undef E
    default: return "UNKNOWN";
  }
}

/* Throws a system error and returns NULL so callers can `return throw_errno(...)`. */
static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  char msg[MAX_PATH_BYTES + 128];
  const char *code = errno_name(e);
  snprintf(msg, sizeof msg, "%s: %s, %s '%s'", code, strerror(e), syscall, path);
  napi_value jmsg, jcode, err, v;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode) != napi_ok) return NULL;
  if (napi_create_error(env, jcode, jmsg, &err) != napi_ok) return NULL;
  napi_set_named_property(env, err, "code", jcode);
  if (napi_create_int32(env, -e, &v) == napi_ok) napi_set_named_property(env, err, "errno", v);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, err, "syscall", v);
  if (napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, err, "path", v);
  napi_throw(env, err);
  return NULL;
}

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
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return throw_type(env, "fd must be a non-negative number");
  int r;
  do { r = flock(fd, LOCK_EX | LOCK_NB); } while (r != 0 && errno == EINTR);
  if (r != 0 && errno != EWOULDBLOCK) return throw_errno(env, errno, "flock", "");
  napi_get_boolean(env, r == 0, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "syncfs", NULL, js_syncfs, NULL, NULL, NULL, napi_enumerable, NULL },
    { "tryLockExclusive", NULL, js_try_lock_exclusive, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
