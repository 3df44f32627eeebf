import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BerthError } from '../lib/errors.js';

/**
 * `berth install-service`: the systemd unit shipped in packaging/berth.service, with the
 * paths of this installation put into its two Exec lines. berth never runs systemctl: the
 * unit is written and the two commands that enable it are printed (a container or a chroot
 * has no systemd to talk to, and enabling a boot service is the operator's decision).
 */

/** The shipped unit, next to package.json (dist/src/daemon → repository root). */
export const UNIT_TEMPLATE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../packaging/berth.service');

export const DEFAULT_UNIT_FILE = '/etc/systemd/system/berth.service';
export const DEFAULT_MANIFESTS = '/etc/berth/manifests';
export const DEFAULT_BIN = '/usr/local/bin/berth';

/** The two lines of the template that install-service rewrites; anything else is kept verbatim. */
const PRE_LINE = `ExecStartPre=${DEFAULT_BIN} check`;
const START_LINE = `ExecStart=${DEFAULT_BIN} up ${DEFAULT_MANIFESTS}`;

/** systemd's own PATH for services (systemd.exec(5)): node elsewhere needs an Environment line. */
const SYSTEMD_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export interface UnitOptions {
  /** Absolute path of the berth executable the unit runs. */
  bin: string;
  /** Absolute path of the directory `berth up` watches. */
  manifests: string;
  /** Global flags the unit passes to both commands (`--root X`, `--state Y`), already non-default only. */
  globals: readonly string[];
  /** Directory of the node binary; added to PATH when systemd's default PATH lacks it. */
  nodeDir?: string;
}

/**
 * The unit text for this installation. Paths must be absolute and plain: a unit file would
 * need quoting for spaces and escaping for `%` (specifiers) and `$`, so such paths are
 * refused rather than half-escaped. Throws ERR_INVALID_ARGUMENT for those, ERR_INTERNAL when
 * the template no longer has the two lines it rewrites.
 */
export function renderUnit(template: string, o: UnitOptions): string {
  const values: [string, string][] = [['--bin', o.bin], ['--manifests', o.manifests], ...o.globals.map((g): [string, string] => ['global flag', g])];
  for (const [what, v] of values) {
    if (!/^[A-Za-z0-9_./:@+=,-]+$/.test(v)) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `install-service ${what} ${JSON.stringify(v)}: only letters, digits and _ . / : @ + = , - are allowed in a unit file's command line`);
    }
  }
  if (!path.isAbsolute(o.bin) || !path.isAbsolute(o.manifests)) {
    throw new BerthError('ERR_INVALID_ARGUMENT', `install-service: --bin and --manifests must be absolute paths`);
  }
  if (!template.includes(PRE_LINE) || !template.includes(START_LINE)) {
    throw new BerthError('ERR_INTERNAL', `install-service: the unit template no longer contains "${PRE_LINE}" and "${START_LINE}"`);
  }
  const cmd = [o.bin, ...o.globals].join(' ');
  let text = template.replace(PRE_LINE, `ExecStartPre=${cmd} check`).replace(START_LINE, `ExecStart=${cmd} up ${o.manifests}`);
  if (o.nodeDir !== undefined && !SYSTEMD_PATH.includes(o.nodeDir)) {
    if (!/^[A-Za-z0-9_./:@+=,-]+$/.test(o.nodeDir)) throw new BerthError('ERR_INVALID_ARGUMENT', `install-service: node's directory ${JSON.stringify(o.nodeDir)} cannot be put in a unit file`);
    // berth's shebang is `/usr/bin/env node`: node must be on the service's PATH.
    text = text.replace('[Service]\n', `[Service]\nEnvironment=PATH=${[o.nodeDir, ...SYSTEMD_PATH].join(':')}\n`);
  }
  return text;
}

export function readUnitTemplate(): string {
  try {
    return readFileSync(UNIT_TEMPLATE, 'utf8');
  } catch (err) {
    throw new BerthError('ERR_NOT_FOUND', `install-service: read the unit template ${UNIT_TEMPLATE}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Whether this machine was booted with systemd (sd_booted(3): /run/systemd/system exists),
 * and what PID 1 is, for the message when it was not.
 */
export function systemdBooted(): { booted: boolean; pid1: string } {
  let pid1 = 'unknown';
  try {
    pid1 = readFileSync('/proc/1/comm', 'utf8').trim();
  } catch {
    // no /proc: reported as unknown
  }
  return { booted: existsSync('/run/systemd/system'), pid1 };
}

/**
 * Writes the unit (temp file, fsync, rename: a crash never leaves half a unit) and creates
 * the manifests directory. Idempotent: an identical unit is rewritten unchanged.
 */
export async function writeUnit(file: string, text: string, manifests: string): Promise<void> {
  await fsp.mkdir(manifests, { recursive: true, mode: 0o755 });
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.berth-tmp-${process.pid}`;
  try {
    const fh = await fsp.open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(text);
      await fh.chmod(0o644);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw new BerthError('ERR_PRECONDITION', `install-service: write ${file}: ${(err as Error).message}`, { cause: err });
  }
}
