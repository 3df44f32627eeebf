import { BerthError, errnoCode, messageOf, type ErrorCode } from './errors.js';

/**
 * A failed syscall on a local file, as a berth error that says it was the local disk and names
 * the path. Callers that also move bytes over the network (the content store fed by a registry
 * body) wrap their file system calls with this, so that a full disk is never mistaken for a
 * broken download and fetched again (issue 14): ERR_NETWORK is for the wire only.
 *
 * ENOSPC, EDQUOT and the descriptor and memory limits are ERR_RESOURCE_EXHAUSTED (the host ran
 * short); EIO, EROFS, EACCES and every other errno are ERR_IO. A BerthError passes unchanged.
 */
export function localIoError(err: unknown, what: string, file: string): BerthError {
  if (err instanceof BerthError) return err;
  const errno = errnoCode(err);
  const [code, reason] = classify(errno);
  return new BerthError(code, `${what}: ${reason} (${file}): ${messageOf(err)}`, {
    cause: err,
    details: { path: file, ...(errno !== undefined ? { errno } : {}) },
  });
}

function classify(errno: string | undefined): [ErrorCode, string] {
  switch (errno) {
    case 'ENOSPC':
      return ['ERR_RESOURCE_EXHAUSTED', 'no space left on the local disk'];
    case 'EDQUOT':
      return ['ERR_RESOURCE_EXHAUSTED', 'disk quota exceeded on the local disk'];
    case 'EMFILE':
    case 'ENFILE':
      return ['ERR_RESOURCE_EXHAUSTED', 'out of file descriptors writing to the local disk'];
    case 'ENOMEM':
      return ['ERR_RESOURCE_EXHAUSTED', 'out of memory writing to the local disk'];
    case 'EIO':
      return ['ERR_IO', 'I/O error on the local disk'];
    case 'EROFS':
      return ['ERR_IO', 'the local file system is read-only'];
    case 'EACCES':
    case 'EPERM':
      return ['ERR_IO', 'permission denied on the local disk'];
    default:
      return ['ERR_IO', 'local file system error'];
  }
}
