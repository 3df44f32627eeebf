/*
 * Node-style system errors for berth's addons (berth_sys, berth_spawn, berth_daemon):
 * { message: 'ENOENT: No such file or directory, mknod '/x'', code: 'ENOENT', errno: -2, syscall, path },
 * thrown and NULL returned, so a binding can `return throw_errno(...)`. The including file defines
 * _GNU_SOURCE (strerrorname_np) before its first system header.
 */
#ifndef BERTH_NATIVE_ERRORS_H
#define BERTH_NATIVE_ERRORS_H

#include <node_api.h>
#include <stdio.h>
#include <string.h>

static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  char msg[4096 + 128];
  const char *code = strerrorname_np(e);
  if (code == NULL) code = "UNKNOWN";
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

#endif
