import { execFileSync } from 'node:child_process';
import { removeBridgeRules, splitRule } from '../../src/runtime/network/index.js';

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

/**
 * The chains portmap and firewall create once per host (CNI-HOSTPORT-*, CNI-FORWARD,
 * CNI-ADMIN) and their jumps, removed when no per-pod rule is left in them.
 */
export function removeIdleCniChains(): void {
  const saved = sh('iptables-save', []);
  if (/^-A CNI-(DN|FORWARD .*-d |HOSTPORT-DNAT .*CNI-DN)/m.test(saved) || /^-A CNI-[0-9a-f]{24}/m.test(saved)) return;
  for (const [table, chains] of [
    ['nat', ['CNI-HOSTPORT-DNAT', 'CNI-HOSTPORT-SETMARK', 'CNI-HOSTPORT-MASQ']],
    ['filter', ['CNI-FORWARD', 'CNI-ADMIN']],
  ] as const) {
    const rules = sh('iptables-save', ['-t', table]).split('\n');
    for (const l of rules) {
      const m = /^-A (\S+) (.*-j (CNI-\S+).*)$/.exec(l);
      if (m === null || (m[1] ?? '').startsWith('CNI-')) continue;
      try {
        execFileSync('iptables', ['-t', table, '-D', m[1] ?? '', ...splitRule(m[2] ?? '')], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    for (const c of chains) {
      for (const op of ['-F', '-X']) {
        try {
          execFileSync('iptables', ['-t', table, op, c], { stdio: 'ignore' });
        } catch {
          // not there
        }
      }
    }
  }
}

/**
 * A test's (or bench's) network, gone: its bridge, berth's masquerade and forward rules for it (left
 * when a daemon was killed before its last pod was deleted), and the shared CNI chains no pod uses.
 */
export async function removeTestBridge(bridge: string): Promise<void> {
  try {
    execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
  } catch {
    // never created
  }
  await removeBridgeRules(bridge).catch(() => undefined);
  removeIdleCniChains();
}
