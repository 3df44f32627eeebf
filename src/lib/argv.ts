/**
 * The process a container runs, by Kubernetes' rules over the OCI image config: `command`
 * replaces the image Entrypoint and `args` its Cmd; a `command` without `args` drops the Cmd.
 * An empty list counts as none.
 */
export function containerArgv(
  image: { entrypoint?: readonly string[] | null | undefined; cmd?: readonly string[] | null | undefined },
  command: readonly string[] | undefined,
  args: readonly string[] | undefined,
): string[] {
  // As containerd's WithProcessArgs behind the CRI, where an empty list arrives as none: `command: []`
  // keeps the Entrypoint, `args: []` keeps the Cmd, and an Entrypoint of [""] is no Entrypoint
  // (regression empty-command-args).
  const cmdSet = command !== undefined && command.length > 0;
  const argsSet = args !== undefined && args.length > 0;
  if (cmdSet) return [...command, ...(argsSet ? args : [])];
  const ep = image.entrypoint ?? [];
  const entrypoint = ep.length === 1 && ep[0] === '' ? [] : ep;
  return [...entrypoint, ...(argsSet ? args : (image.cmd ?? []))];
}
