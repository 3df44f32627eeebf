import * as path from 'node:path';
import { BerthError } from './errors.js';

/**
 * A process working directory: a clean absolute path, not under /proc, /sys or /dev
 * (CVE-2024-21626: a cwd there can leak a host file descriptor into the container).
 * Pure, so manifest validation applies the same rule the runtime applies at start.
 * Returns the path without a trailing slash; throws ERR_INVALID_IMAGE naming `where`.
 */
export function checkWorkingDir(dir: string, where: string): string {
  // A trailing slash is fine (Kubernetes accepts "/var/www/"); "..", "." and "//" are not.
  const stripped = dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
  if (!path.isAbsolute(dir) || path.posix.normalize(stripped) !== stripped || dir.includes('\0')) {
    throw new BerthError('ERR_INVALID_IMAGE', `${where}: working dir ${quoteShort(dir)} is not a clean absolute path`);
  }
  for (const bad of ['/proc', '/sys', '/dev']) {
    if (stripped === bad || stripped.startsWith(`${bad}/`)) {
      throw new BerthError('ERR_INVALID_IMAGE', `${where}: working dir ${quoteShort(dir)} lies under ${bad}`);
    }
  }
  return stripped;
}

/**
 * An untrusted value (an image config's WorkingDir or User) quoted for a message, cut to 80
 * characters: a 4 MiB field must not become a 4 MiB error kept in events and status.
 */
export function quoteShort(v: string, max = 80): string {
  return v.length <= max ? JSON.stringify(v) : `${JSON.stringify(v.slice(0, max))}… (${v.length} characters)`;
}
