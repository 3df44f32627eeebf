import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { requireE2E } from '../helpers/prereq.js';
import { CLI, berth, startDaemon, waitFor } from '../helpers/berth.js';
import { PodSuite, hostPod, podStatuses, waitRunning } from '../helpers/pod-suite.js';

/**
 * Issue 13, "log rotation by size keeping the previous file": with --container-log-max-size,
 * `berth up` renames a full log to `<log>.1` and has conmon reopen (its control fifo), so the
 * directory holds at most the current file and one previous; `berth logs` prints the previous
 * file then the current one; `berth logs -f` running across several rotations prints every
 * line exactly once, in order. Real conmon 2.1.6 and runc; the container writes 50 lines a
 * second (about 2.7 KiB/s), so several rotations happen while the follower reads. Regression
 * (found writing this test): conmon also had --log-size-max, and conmon 2.1.6 never resets its
 * byte count on a requested reopen, so it truncated a current file mid-way (lines lost).
 */

const MAX = 8192;
const LINES = 1000;

describe('e2e: container log rotation keeps one previous file (issue 13)', { timeout: 300_000 }, () => {
  const suite = new PodSuite();

  before(async (t) => {
    if (!requireE2E(t)) return;
    await suite.setUp('berth-logrot-');
    // Waits for SIGUSR1 (sent by the test to the container's PID 1 once the follower runs: not
    // `berth exec`, since under a chroot such as fresh-machine's runc exec does not enter the
    // container's mount namespace), then writes LINES lines.
    const script = `go=; trap 'go=1' USR1; while [ -z "$go" ]; do sleep 0.1; done; i=0; while [ $i -lt ${LINES} ]; do echo "line-$i"; i=$((i+1)); [ $((i % 5)) -eq 0 ] && sleep 0.1; done; echo done; sleep 3600`;
    await fsp.writeFile(path.join(suite.dir, 'chatty.yaml'), hostPod('chatty', suite.image, ['sh', '-c', script]));
    suite.daemon = await startDaemon(suite.env, suite.dir, { extra: ['--resync', '30', '--container-log-max-size', String(MAX)] });
    await waitRunning(suite.env, 'chatty');
  });

  after(() => suite.tearDown());

  test('logs -f across rotations loses and repeats no line (regression: conmon-size-limit-truncates-rotated-log); the directory keeps the current and one previous file', async (t) => {
    if (!suite.ok) return t.skip();
    const { env } = suite;
    const follower = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, 'logs', '-f', 'chatty'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    follower.stdout.on('data', (b: Buffer) => (out += b.toString()));
    follower.stderr.on('data', (b: Buffer) => (err += b.toString()));
    try {
      const pid = (await podStatuses(env)).get('chatty')?.containers[0]?.pid;
      assert.ok(typeof pid === 'number' && pid > 0, 'the container has a pid');
      // The follower is attached once it has printed nothing yet but is running: give it a moment.
      await new Promise((r) => setTimeout(r, 500));
      process.kill(pid, 'SIGUSR1');
      const logDir = path.join(env.root, 'logs', 'default_chatty', 'main');
      let rotations = 0;
      let lastFirst = '';
      await waitFor('all lines followed', async () => {
        // Count rotations as they happen: the first line of the .1 file changes with each one.
        const files = await fsp.readdir(logDir).catch(() => [] as string[]);
        const prev = files.find((f) => f.endsWith('.log.1'));
        if (prev !== undefined) {
          const first = (await fsp.readFile(path.join(logDir, prev), 'utf8').catch(() => '')).split('\n')[0] ?? '';
          if (first !== lastFirst) {
            rotations++;
            lastFirst = first;
          }
        }
        return out.includes('\ndone\n') ? true : undefined;
      }, 90_000, 200);
      const lines = out.split('\n').filter((l) => l.startsWith('line-'));
      assert.deepEqual(lines, Array.from({ length: LINES }, (_, i) => `line-${i}`), `followed output differs (stderr: ${err})`);
      assert.ok(rotations >= 3, `expected several rotations, saw ${rotations}`);

      const files = (await fsp.readdir(logDir)).sort();
      assert.equal(files.length, 2, `current and previous only: ${files.join(', ')}`);
      assert.match(files[0] ?? '', /\.log$/);
      assert.equal(files[1], `${files[0] ?? ''}.1`);
      const prevSize = (await fsp.stat(path.join(logDir, files[1] ?? ''))).size;
      assert.ok(prevSize >= MAX && prevSize < 3 * MAX, `previous file holds about one rotation's worth: ${prevSize}`);

      // Plain `logs`: the previous file, then the current one, consecutive lines ending with the last.
      const plain = await berth(env, ['logs', 'chatty']);
      assert.equal(plain.code, 0, plain.stderr);
      const shown = plain.stdout.split('\n').filter((l) => l.startsWith('line-')).map((l) => Number(l.slice(5)));
      assert.equal(shown.at(-1), LINES - 1);
      assert.ok(shown.length < LINES, 'older rotated files are gone');
      const summary = await Promise.all(
        files.map(async (f) => {
          const text = (await fsp.readFile(path.join(logDir, f), 'utf8')).trim().split('\n');
          return `${f}: ${text.length} lines, ${text[0] ?? ''} … ${text.at(-1) ?? ''}`;
        }),
      );
      assert.deepEqual(shown, Array.from({ length: shown.length }, (_, i) => (shown[0] ?? 0) + i), `previous then current, no gap: ${summary.join('; ')}`);
    } finally {
      follower.kill('SIGINT');
    }
  });

  test('--container-log-max-size below 4096 is refused with exit 2', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['--container-log-max-size', '100', 'status']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--container-log-max-size 100: expected a size of at least 4096 bytes/);
  });
});
