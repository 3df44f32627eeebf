import { accessSync, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { loadAddon } from './addon.js';

/**
 * The `berth_spawn` addon (native/spawn.c): clone(CLONE_VM|CLONE_VFORK) + execve instead of node's fork(2)-based
 * child_process for short external calls. Loaded on first use; when it was never built,
 * `nativeSpawn()` answers undefined and callers use child_process.
 */
export interface SpawnBinding {
  spawn(file: string, argv: readonly string[], envp: readonly string[], cwd: string | null, fds: readonly number[], newGroup: boolean): number;
  waitExit(pid: number): Promise<{ code: number | null; signal: number | null }>;
  pipe(): [number, number];
}

let binding: SpawnBinding | null | undefined;

export function nativeSpawn(): SpawnBinding | undefined {
  if (binding !== undefined) return binding ?? undefined;
  if (process.env['BERTH_NODE_SPAWN'] === '1') {
    binding = null;
    return undefined;
  }
  try {
    binding = loadAddon<SpawnBinding>('berth_spawn', ['spawn', 'waitExit', 'pipe']);
  } catch {
    // Not built, or built before a function it needs: child_process does the work.
    binding = null;
  }
  return binding ?? undefined;
}

const found = new Map<string, string | null>();

/**
 * `file` as execvp would find it in `PATH` (the child's, as child_process searches it): a name
 * with a slash as given, else the first executable entry; null when there is none. Answers are
 * kept per PATH and name: the external tools berth calls do not move while it runs, and every
 * failed candidate would otherwise cost an execve (six on a host with a long PATH).
 */
export function resolveExecutable(file: string, pathVar: string | undefined): string | null {
  if (file.includes('/')) return file;
  const key = `${pathVar ?? ''}\0${file}`;
  const hit = found.get(key);
  if (hit !== undefined) return hit;
  let out: string | null = null;
  for (const dir of (pathVar ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir === '') continue;
    const candidate = path.join(dir, file);
    try {
      accessSync(candidate, fsc.X_OK);
      out = candidate;
      break;
    } catch {
      // not here
    }
  }
  if (out !== null) found.set(key, out);
  return out;
}
