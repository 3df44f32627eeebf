{
  "targets": [
    {
      "target_name": "berth_sys",
      "sources": ["native/sys.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    },
    {
      "target_name": "berth_spawn",
      "sources": ["native/spawn.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    },
    {
      "target_name": "berth_daemon",
      "sources": ["native/daemon.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    }
  ]
}
