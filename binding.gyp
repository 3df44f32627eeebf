{
  "targets": [
    {
      "target_name": "berth_sys",
      "sources": ["native/sys.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    }
  ]
}
