import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * A static C probe for seccomp tests: `probe vmsplice|personality-bsd|personality-query|chroot|x32-getpid`
 * prints "<probe> ok" (exit 0) or "<probe> errno=<n>" (exit 1). Static, so it runs in any rootfs.
 * x32-getpid is getpid through the x32 entry (x86_64 only; elsewhere exit 2).
 */
export const PROBE_C = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* "<probe> ok" and exit 0, or "<probe> errno=<n>" and exit 1; exit 2 for a usage or setup error. */
static int report(const char *probe, long rc) {
  if (rc == -1) {
    printf("%s errno=%d\n", probe, errno);
    return 1;
  }
  printf("%s ok\n", probe);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: probe vmsplice|personality-bsd|personality-query|chroot|x32-getpid\n");
    return 2;
  }
  const char *p = argv[1];
  if (strcmp(p, "vmsplice") == 0) {
    int fds[2];
    static char byte = 'x';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    if (pipe(fds) != 0) {
      printf("pipe errno=%d\n", errno);
      return 2;
    }
    return report(p, syscall(SYS_vmsplice, fds[1], &iov, 1UL, 0U));
  }
  /* Raw syscalls: glibc wrappers must not substitute another call. */
  if (strcmp(p, "personality-bsd") == 0) return report(p, syscall(SYS_personality, 0x0006UL));
  if (strcmp(p, "personality-query") == 0) return report(p, syscall(SYS_personality, 0xffffffffUL));
  if (strcmp(p, "chroot") == 0) return report(p, syscall(SYS_chroot, "/"));
  if (strcmp(p, "x32-getpid") == 0) {
#if defined(__x86_64__)
    return report(p, syscall(0x40000000L | SYS_getpid));
#else
    fprintf(stderr, "x32-getpid: not x86_64\n");
    return 2;
#endif
  }
  fprintf(stderr, "unknown probe %s\n", p);
  return 2;
}
`;

/** Compiles the probe into `dir` with gcc -static; returns its path. */
export function buildSeccompProbe(dir: string): string {
  writeFileSync(path.join(dir, 'probe.c'), PROBE_C);
  const probe = path.join(dir, 'probe');
  execFileSync('gcc', ['-static', '-O2', '-Wall', '-Werror', '-o', probe, path.join(dir, 'probe.c')], { stdio: ['ignore', 'pipe', 'pipe'] });
  return probe;
}
