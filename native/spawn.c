/*
 * berth_spawn: a vfork-style spawn for the external programs berth runs (runc, conmon, CNI
 * plugins, ip, iptables). Node's child_process forks its whole process (libuv uses fork(2) on
 * Linux): the page tables of a ~100 MB daemon are copied and every page the daemon writes
 * afterwards takes a copy-on-write fault, 2–5 ms of the main thread per call, which a pod start
 * pays seven to nine times. Here the child is made with clone(CLONE_VM|CLONE_VFORK), as glibc's
 * posix_spawn does: nothing is copied, and only the calling thread waits until the child has
 * called execve. posix_spawn itself is not used because it leaves glibc's internal signals
 * (32, 33) ignored in the child, and conmon would hand that on through runc to the container.
 *
 * spawn(path, argv, envp, cwd, fds, newGroup) -> pid
 *   path is used as given (the caller resolves PATH); fds[i] becomes descriptor i (3 to 8 of
 *   them, each numbered at least fds.length); every other descriptor of node's is close-on-exec.
 *   The child gets every signal's default disposition, an empty signal mask (as libuv gives its
 *   children) and, with newGroup, a session and process group of its own (setsid, like `detached`).
 * waitExit(pid) -> Promise<{ code: number | null, signal: number | null }>
 *   waitpid(2) on a thread of its own (a pool thread would be held for the child's lifetime),
 *   resolved on the event loop; the pending wait keeps the loop alive, as a child handle does.
 * pipe() -> [readFd, writeFd], both close-on-exec.
 *
 * Errors are thrown like Node's system errors: { code: 'ENOENT', errno: -2, syscall, path }.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "errors.h"

#define MAX_STRING_BYTES (128 * 1024)

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* A JS string as a malloc'ed C string; NULL (with a pending exception) when it is not one. */
static char *string_arg(napi_env env, napi_value v, const char *what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_type(env, what);
    return NULL;
  }
  if (len > MAX_STRING_BYTES) {
    throw_type(env, "spawn: argument too long");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL) {
    throw_type(env, "spawn: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    throw_type(env, "spawn: argument contains a NUL byte");
    return NULL;
  }
  return s;
}

static void free_vec(char **v) {
  if (v == NULL) return;
  for (char **p = v; *p != NULL; p++) free(*p);
  free(v);
}

/* A JS array of strings as a NULL-terminated vector. */
static char **vec_arg(napi_env env, napi_value arr, const char *what) {
  bool is_array = false;
  napi_is_array(env, arr, &is_array);
  if (!is_array) {
    throw_type(env, what);
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  char **v = calloc((size_t)n + 1, sizeof(char *));
  if (v == NULL) {
    throw_type(env, "spawn: out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    napi_get_element(env, arr, i, &el);
    v[i] = string_arg(env, el, what);
    if (v[i] == NULL) {
      free_vec(v);
      return NULL;
    }
  }
  return v;
}

struct child_args {
  const char *path;
  char **argv;
  char **envp;
  const char *cwd;
  const int32_t *fds;
  int nfds;
  bool new_group;
  volatile int err; /* written by the child (shared memory) when it cannot exec */
};

/* The kernel's struct sigaction for rt_sigaction(2): glibc's wrapper refuses its internal
 * signals (32, 33), which this child must reset like every other. */
struct ksigaction {
  void *handler;
  unsigned long flags;
  void *restorer;
  uint64_t mask;
};

#define CHILD_STACK (64 * 1024)

/*
 * Runs in the child, on its own stack, sharing the parent's memory until execve (CLONE_VM |
 * CLONE_VFORK: the parent's thread is suspended meanwhile). Only raw system calls: no locks, no
 * allocation, nothing that could meet a state the parent left half-done. Signals arrive blocked
 * (the parent blocked all before clone); handlers are reset to the default before the mask is
 * emptied, so no handler of node's ever runs here.
 */
static int child_main(void *arg) {
  struct child_args *c = arg;
  struct ksigaction dfl = {.handler = SIG_DFL, .flags = 0, .restorer = NULL, .mask = 0};
  for (long sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
  }
  /* A session of its own, as child_process does for `detached`: its own process group (killed as one)
   * and no controlling terminal of berth's. */
  if (c->new_group && syscall(SYS_setsid) < 0) goto fail;
  for (int i = 0; i < c->nfds; i++) {
    /* fds[i] >= nfds (checked by the caller): never a descriptor moved before it. */
    if (syscall(SYS_dup3, c->fds[i], i, 0) < 0) goto fail;
  }
  if (c->cwd != NULL && syscall(SYS_chdir, c->cwd) != 0) goto fail;
  uint64_t none = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
  syscall(SYS_execve, c->path, c->argv, c->envp);
fail:
  c->err = errno != 0 ? errno : EINVAL;
  syscall(SYS_exit, 127);
  return 127;
}

/* clone(CLONE_VM|CLONE_VFORK) + execve, as glibc's posix_spawn does, but with every signal reset
 * to its default in the child. Returns 0 and the pid, or the errno of what failed. */
static int vfork_exec(struct child_args *c, pid_t *pid) {
  char *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return errno;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int saved = errno;
  pid_t p = clone(child_main, stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
  int e = p < 0 ? errno : 0;
  errno = saved;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  munmap(stack, CHILD_STACK);
  if (e != 0) return e;
  if (c->err != 0) {
    /* It never ran the program: reap it here, its exit tells nothing more. */
    int st;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
    return c->err;
  }
  *pid = p;
  return 0;
}

static napi_value js_spawn(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value a[6];
  napi_get_cb_info(env, info, &argc, a, NULL, NULL);
  if (argc != 6) return throw_type(env, "spawn(path, argv, envp, cwd, fds, newGroup)");
  bool fds_array = false;
  napi_is_array(env, a[4], &fds_array);
  uint32_t nfds = 0;
  if (fds_array) napi_get_array_length(env, a[4], &nfds);
  if (!fds_array || nfds < 3 || nfds > 8) return throw_type(env, "spawn: fds must be an array of 3 to 8 file descriptors");
  int32_t fds[8];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value el;
    napi_get_element(env, a[4], i, &el);
    if (napi_get_value_int32(env, el, &fds[i]) != napi_ok || fds[i] < (int32_t)nfds) return throw_type(env, "spawn: fds must be descriptors above the ones they are moved to");
  }
  bool new_group = false;
  napi_get_value_bool(env, a[5], &new_group);
  napi_valuetype cwd_t;
  napi_typeof(env, a[3], &cwd_t);

  char *path = string_arg(env, a[0], "spawn: path must be a string");
  if (path == NULL) return NULL;
  char **argv = vec_arg(env, a[1], "spawn: argv must be an array of strings");
  char **envp = argv == NULL ? NULL : vec_arg(env, a[2], "spawn: envp must be an array of strings");
  char *cwd = (envp == NULL || cwd_t == napi_null || cwd_t == napi_undefined) ? NULL : string_arg(env, a[3], "spawn: cwd must be a string or null");
  if (argv == NULL || envp == NULL || (cwd == NULL && cwd_t == napi_string)) {
    free(path);
    free_vec(argv);
    free_vec(envp);
    return NULL;
  }

  struct child_args c = {.path = path, .argv = argv, .envp = envp, .cwd = cwd, .fds = fds, .nfds = (int)nfds, .new_group = new_group, .err = 0};
  pid_t pid = -1;
  int e = vfork_exec(&c, &pid);
  napi_value result = NULL;
  if (e != 0) {
    throw_errno(env, e, "spawn", path);
  } else {
    napi_create_int32(env, pid, &result);
  }
  free(path);
  free(cwd);
  free_vec(argv);
  free_vec(envp);
  return result;
}

typedef struct {
  napi_deferred deferred;
  napi_threadsafe_function tsfn;
  pid_t pid;
  int status;
  int err;
} wait_req;

static void *wait_thread(void *p) {
  wait_req *w = p;
  int st = 0;
  pid_t r;
  do {
    r = waitpid(w->pid, &st, 0);
  } while (r < 0 && errno == EINTR);
  w->err = r < 0 ? errno : 0;
  w->status = st;
  /* wait_done frees w, possibly before the call below returns: nothing of w is read after it. */
  napi_threadsafe_function tsfn = w->tsfn;
  napi_call_threadsafe_function(tsfn, w, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

static void wait_done(napi_env env, napi_value js_cb, void *ctx, void *data) {
  (void)js_cb;
  (void)ctx;
  wait_req *w = data;
  if (env == NULL) {
    free(w);
    return;
  }
  if (w->err != 0) {
    const char *name = strerrorname_np(w->err);
    napi_value m, err, code;
    napi_create_string_utf8(env, strerror(w->err), NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &err);
    napi_create_string_utf8(env, name ? name : "UNKNOWN", NAPI_AUTO_LENGTH, &code);
    napi_set_named_property(env, err, "code", code);
    napi_reject_deferred(env, w->deferred, err);
  } else {
    napi_value o, code, sig;
    napi_create_object(env, &o);
    if (WIFEXITED(w->status)) {
      napi_create_int32(env, WEXITSTATUS(w->status), &code);
      napi_get_null(env, &sig);
    } else {
      napi_get_null(env, &code);
      napi_create_int32(env, WIFSIGNALED(w->status) ? WTERMSIG(w->status) : 0, &sig);
    }
    napi_set_named_property(env, o, "code", code);
    napi_set_named_property(env, o, "signal", sig);
    napi_resolve_deferred(env, w->deferred, o);
  }
  free(w);
}

static napi_value js_wait_exit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  napi_get_cb_info(env, info, &argc, a, NULL, NULL);
  int32_t pid = 0;
  if (argc != 1 || napi_get_value_int32(env, a[0], &pid) != napi_ok || pid <= 0) return throw_type(env, "waitExit(pid)");
  wait_req *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_type(env, "waitExit: out of memory");
  w->pid = pid;
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "berth.waitExit", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, wait_done, &w->tsfn) != napi_ok) {
    free(w);
    return throw_type(env, "waitExit: cannot create a threadsafe function");
  }
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, 64 * 1024);
  pthread_t t;
  int e = pthread_create(&t, &at, wait_thread, w);
  pthread_attr_destroy(&at);
  if (e != 0) {
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort);
    free(w);
    return throw_errno(env, e, "pthread_create", "");
  }
  return promise;
}

static napi_value js_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return throw_errno(env, errno, "pipe2", "");
  napi_value arr, r, w;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_int32(env, p[0], &r);
  napi_create_int32(env, p[1], &w);
  napi_set_element(env, arr, 0, r);
  napi_set_element(env, arr, 1, w);
  return arr;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"spawn", NULL, js_spawn, NULL, NULL, NULL, napi_default, NULL},
      {"waitExit", NULL, js_wait_exit, NULL, NULL, NULL, napi_default, NULL},
      {"pipe", NULL, js_pipe, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
