import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCgroupSample } from '../../src/runtime/stats/index.js';

/**
 * Issue 13, `berth stats`: the cgroup counters of `/berth/<id>` on both layouts, laid out as
 * the kernel does in a directory standing in for /sys/fs/cgroup (the e2e test reads the host's
 * real one, which is v1 here, so v2 is pinned here).
 */

const ID = 'default.web.main.0123abcd-0';

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'berth-cg-'));
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
  }
  return root;
}

test('cgroup v2: cpu.stat usage_usec, memory.current minus inactive_file, limits "max" are null', async () => {
  const d = `berth/${ID}`;
  const root = tree({
    'cgroup.controllers': 'cpu memory pids\n',
    [`${d}/cpu.stat`]: 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n',
    [`${d}/memory.current`]: '10485760\n',
    [`${d}/memory.stat`]: 'anon 6291456\nfile 4194304\ninactive_file 2097152\nactive_file 2097152\n',
    [`${d}/memory.max`]: 'max\n',
    [`${d}/pids.current`]: '3\n',
    [`${d}/pids.max`]: '512\n',
  });
  try {
    assert.deepEqual(await readCgroupSample(ID, root), { version: 2, cpuNs: 2_500_000_000, memoryBytes: 8388608, memoryLimitBytes: null, pids: 3, pidsLimit: 512 });
    assert.equal(await readCgroupSample('default.other.c.00000000-0', root), undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('cgroup v1: per-controller directories, cpuacct co-mounted with cpu, the "no limit" sentinel is null', async () => {
  const d = `berth/${ID}`;
  const root = tree({
    [`memory/${d}/memory.usage_in_bytes`]: '20971520\n',
    [`memory/${d}/memory.stat`]: 'cache 4194304\ninactive_file 1\ntotal_inactive_file 4194304\n',
    [`memory/${d}/memory.limit_in_bytes`]: '67108864\n',
    [`cpu,cpuacct/${d}/cpuacct.usage`]: '123456789\n',
    [`pids/${d}/pids.current`]: '1\n',
    [`pids/${d}/pids.max`]: 'max\n',
  });
  try {
    assert.deepEqual(await readCgroupSample(ID, root), { version: 1, cpuNs: 123456789, memoryBytes: 16777216, memoryLimitBytes: 67108864, pids: 1, pidsLimit: null });
    writeFileSync(path.join(root, 'memory', d, 'memory.limit_in_bytes'), '9223372036854771712\n');
    assert.equal((await readCgroupSample(ID, root))?.memoryLimitBytes, null);
    writeFileSync(path.join(root, 'pids', d, 'pids.current'), 'garbage\n');
    await assert.rejects(readCgroupSample(ID, root), /read cgroup pids.current: expected a number/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
