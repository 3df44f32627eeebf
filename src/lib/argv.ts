/**
 * The process a container runs, by Kubernetes' rules over the OCI image config: `command`
 * replaces the image Entrypoint and `args` its Cmd; a `command` without `args` drops the Cmd.
 */
export function containerArgv(
  image: { entrypoint?: readonly string[] | null | undefined; cmd?: readonly string[] | null | undefined },
  command: readonly string[] | undefined,
  args: readonly string[] | undefined,
): string[] {
  const entrypoint = command ?? image.entrypoint ?? [];
  const cmd = args ?? (command !== undefined ? [] : (image.cmd ?? []));
  return [...entrypoint, ...cmd];
}
