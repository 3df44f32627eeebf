/*
 * berth_daemon: two process-level calls for `berth up`.
 *
 * execve(2): `berth up` replaces its own process image with a node started with the daemon's
 * memory flags (V8 reads the young generation's size only when the isolate is created). Node 20
 * has no process.execve (added in 22.15/23.11), and a launcher that spawned the daemon would stay
 * resident beside it and have to forward signals, exit codes, the systemd main PID and inherited
 * sockets. With execve the process keeps its pid, its parent, the descriptors it is told to keep
 * and its pending signals.
 *
 * Node marks every descriptor it inherited close-on-exec at start-up (libuv's
 * uv_disable_stdio_inheritance), stdio included, so the caller names the ones the new image must
 * get (0, 1, 2 and systemd's LISTEN_FDS): their FD_CLOEXEC is cleared just before execve and set
 * again if execve fails. Node's own descriptors stay close-on-exec.
 *
 * malloc_trim(3): glibc keeps freed memory in its arenas (one per thread that allocated: the
 * libuv pool, V8's compiler and GC helpers); the idle daemon hands it back to the kernel.
 *
 * A separate addon from berth_sys so that it is loaded only by `berth up`.
 * Errors are thrown like Node's system errors: { code: 'ENOENT', errno: -2, syscall: 'execve', path }.
 */
#define _GNU_SOURCE /* strerrorname_np */
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"

#define MAX_ARG_BYTES (128 * 1024)

/* A JS string as a malloc'd NUL-terminated C string; NULL with a pending TypeError (embedded NUL included). */
static char *dup_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "execve: arguments must be strings");
    return NULL;
  }
  if (len > MAX_ARG_BYTES) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "execve: argument too long");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL) {
    napi_throw_error(env, "ENOMEM", "execve: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "execve: an argument contains a NUL byte");
    return NULL;
  }
  return s;
}

static void free_vector(char **vec, uint32_t n) {
  if (vec == NULL) return;
  for (uint32_t i = 0; i < n; i++) free(vec[i]);
  free(vec);
}

/* A JS array of strings as a NULL-terminated malloc'd vector; NULL with a pending exception. */
static char **dup_vector(napi_env env, napi_value arr, uint32_t *count) {
  bool is_array = false;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "execve: argv and env must be arrays of strings");
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  char **vec = calloc((size_t)n + 1, sizeof(char *));
  if (vec == NULL) {
    napi_throw_error(env, "ENOMEM", "execve: out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    if (napi_get_element(env, arr, i, &el) != napi_ok || (vec[i] = dup_string(env, el)) == NULL) {
      free_vector(vec, i);
      return NULL;
    }
  }
  *count = n;
  return vec;
}

/* Sets or clears FD_CLOEXEC on each fd of the list; fds that are not open are skipped. */
static void set_cloexec(const int32_t *fds, uint32_t n, int on) {
  for (uint32_t i = 0; i < n; i++) {
    int flags = fcntl(fds[i], F_GETFD);
    if (flags < 0) continue;
    fcntl(fds[i], F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC));
  }
}

/*
 * execve(path: string, argv: string[], env: string[] ("K=V"), keepFds: number[]): returns only
 * by throwing.
 */
static napi_value Execve(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value args[4];
  bool is_array = false;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc != 4 || napi_is_array(env, args[3], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "execve(path, argv, env, keepFds)");
    return NULL;
  }
  uint32_t nkeep = 0;
  napi_get_array_length(env, args[3], &nkeep);
  if (nkeep > 1024) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "execve: too many descriptors to keep");
    return NULL;
  }
  int32_t keep[1024];
  uint32_t nvalid = 0;
  for (uint32_t i = 0; i < nkeep; i++) {
    napi_value el;
    int32_t fd;
    if (napi_get_element(env, args[3], i, &el) != napi_ok || napi_get_value_int32(env, el, &fd) != napi_ok || fd < 0) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "execve: keepFds must be descriptor numbers");
      return NULL;
    }
    /* Only descriptors that are close-on-exec now are changed (and changed back on failure). */
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC)) keep[nvalid++] = fd;
  }
  char *path = dup_string(env, args[0]);
  if (path == NULL) return NULL;
  uint32_t nargv = 0, nenv = 0;
  char **argv = dup_vector(env, args[1], &nargv);
  if (argv == NULL) {
    free(path);
    return NULL;
  }
  char **envp = dup_vector(env, args[2], &nenv);
  if (envp == NULL) {
    free(path);
    free_vector(argv, nargv);
    return NULL;
  }
  set_cloexec(keep, nvalid, 0);
  execve(path, argv, envp);
  int e = errno;
  set_cloexec(keep, nvalid, 1);
  free_vector(argv, nargv);
  free_vector(envp, nenv);
  napi_value r = throw_errno(env, e, "execve", path);
  free(path);
  return r;
}

/* mallocTrim(): malloc_trim(0) over every arena; true when memory was returned to the kernel. */
static napi_value MallocTrim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_get_boolean(env, malloc_trim(0) == 1, &r);
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "execve", NAPI_AUTO_LENGTH, Execve, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "execve", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "mallocTrim", NAPI_AUTO_LENGTH, MallocTrim, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "mallocTrim", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
