import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { CLI, berth, startDaemon, stopDaemon } from '../helpers/berth.js';
import { PodSuite, hostPod, waitRunning } from '../helpers/pod-suite.js';

/**
 * Issue 13, `berth exec -t`: runc allocates the pty, berth receives its master over the console
 * socket (SCM_RIGHTS, native addon), puts the local terminal in raw mode, copies both ways,
 * forwards SIGWINCH as TIOCSWINSZ and exits with the command's code. The harness is python3's
 * pty module: berth runs on a real pty whose size the harness sets (before the start, then again
 * mid-session, which makes the kernel send SIGWINCH to berth). Real runc, conmon, busybox sh.
 */

/** Drives one interactive `berth exec -it` session; prints {out, code} as JSON. */
const HARNESS = String.raw`
import fcntl, json, os, pty, select, struct, sys, termios, time
argv = json.loads(sys.argv[1])
def winsz(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    winsz(0, 30, 100)
    os.execv(argv[0], argv)
out = b''
def read_until(marker, limit):
    global out
    end = time.time() + limit
    while marker not in out:
        if time.time() > end:
            raise SystemExit('timeout waiting for %r; got %r' % (marker, out))
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                b = os.read(fd, 4096)
            except OSError:
                return
            if not b:
                return
            out += b
read_until(b'# ', 30)
os.write(fd, b'tty; stty size; echo MA""RK1\r')
read_until(b'MARK1\r\n', 20)
winsz(fd, 40, 120)
time.sleep(0.5)
os.write(fd, b'stty size; echo MA""RK2\r')
read_until(b'MARK2\r\n', 20)
os.write(fd, b'exit 7\r')
read_until(b'\x00never', 20)
_, status = os.waitpid(pid, 0)
print(json.dumps({'out': out.decode('utf-8', 'replace'), 'code': os.waitstatus_to_exitcode(status)}))
`;

function underPty(args: string[]): Promise<{ out: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', HARNESS, JSON.stringify([process.execPath, CLI, ...args])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (code) => {
      clearTimeout(t);
      if (code !== 0) return reject(new Error(`pty harness exited ${code}: ${stderr}${stdout}`));
      resolve(JSON.parse(stdout) as { out: string; code: number });
    });
  });
}

describe('e2e: berth exec -t on a real pty (issue 13)', { timeout: 300_000 }, () => {
  const suite = new PodSuite();

  before(async (t) => {
    if (!requireE2E(t) || !requireTools(t, ['python3'])) return;
    await suite.setUp('berth-exectty-');
    const { env, dir } = suite;
    await fsp.writeFile(path.join(dir, 'tt.yaml'), hostPod('tt', suite.image, ['sh', '-c', 'while true; do sleep 1; done']));
    const r = await berth(env, ['apply', '-f', dir]);
    assert.equal(r.code, 0, r.stderr);
    await waitRunning(env, 'tt');
  });

  after(() => suite.tearDown());

  const session = async (): Promise<void> => {
    const r = await underPty(['--root', suite.env.root, '--state', suite.env.state, 'exec', '-it', 'tt', '--', 'sh']);
    assert.match(r.out, /\/dev\/pts\/\d+\r\n/, r.out);
    assert.match(r.out, /^30 100\r$/m, `initial size: ${r.out}`);
    assert.match(r.out, /^40 120\r$/m, `size after SIGWINCH: ${r.out}`);
    assert.equal(r.code, 7, r.out);
  };

  test('exec -it: a pty inside, the window size and its changes, the exit code', async (t) => {
    if (!suite.ok) return t.skip();
    await session();
  });

  test('regression exec-tty-without-terminal: exec -t without -i gets no terminal (as kubectl), and returns the exit code and the output', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['exec', '-t', 'tt', '--', 'sh', '-c', 'tty; exit 5']);
    assert.equal(r.code, 5, r.stderr);
    assert.equal(r.stdout, 'not a tty\n');
    const missing = await berth(suite.env, ['exec', '-t', 'tt', '--', '/nope']);
    assert.equal(missing.code, 127, missing.stderr);
  });

  test('regression exec-tty-without-terminal: exec -it with piped stdin warns as kubectl and runs without a terminal: the bytes arrive as sent', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['exec', '-it', 'tt', '--', 'sh', '-c', 'tty; od -An -c; exit 3'], { input: 'a\x03b\r\n', timeoutMs: 30_000 });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /Unable to use a TTY - input is not a terminal or the right kind of file/);
    // No echo, no CRLF, ^C not a signal: the command read exactly what was piped.
    assert.equal(r.stdout.replace(/\s+/g, ' ').trim(), 'not a tty a 003 b \\r \\n');
  });

  test('exec -it through a running daemon', async (t) => {
    if (!suite.ok) return t.skip();
    const daemon = await startDaemon(suite.env, suite.dir);
    try {
      await session();
    } finally {
      await stopDaemon(daemon);
    }
  });
});
