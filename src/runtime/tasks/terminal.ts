import { closeSync, rmSync } from 'node:fs';
import * as tty from 'node:tty';
import { BerthError } from '../../lib/errors.js';
import { consoleListen, consoleReceive, rawOutput, setWindowSize } from '../../lib/sys.js';

/**
 * The local end of `berth exec -t`: the console socket runc sends the pty master to, and the
 * copy loops between this process's stdio and that master.
 *
 * Lifecycle: constructed before runc starts (the socket must listen when runc connects);
 * `attach` waits for the master (or for runc to exit first: then there is nothing to attach and
 * runc's own error tells why); `drained` waits, after runc exited, for the last output; `close`
 * restores the local terminal and releases every descriptor. `close` is idempotent.
 */
export class ExecTerminal {
  private listenFd: number | undefined;
  private master: tty.ReadStream | undefined;
  /** The master's descriptor, owned by `master` (closed when it is destroyed); kept for TIOCSWINSZ. */
  private masterFd = -1;
  private ended: Promise<void> = Promise.resolve();
  private restore: (() => void)[] = [];

  constructor(readonly socketPath: string) {
    this.listenFd = consoleListen(socketPath);
  }

  /**
   * Waits for runc to send the pty master, then wires it up. Resolves without a terminal when
   * runc exits before connecting (a missing container, a command that cannot start). No master
   * within `timeoutMs` kills runc and fails with ERR_TIMEOUT.
   */
  async attach(o: { id: string; exited: Promise<unknown>; stdin: boolean; timeoutMs: number; kill: () => void }): Promise<void> {
    let gone = false;
    void o.exited.then(
      () => (gone = true),
      () => (gone = true),
    );
    const deadline = Date.now() + o.timeoutMs;
    let fd: number | null = null;
    for (;;) {
      fd = consoleReceive(this.listenFd ?? -1);
      if (fd !== null || gone) break;
      if (Date.now() > deadline) {
        o.kill();
        throw new BerthError('ERR_TIMEOUT', `exec in ${o.id}: runc sent no terminal within ${o.timeoutMs / 1000}s (killed)`, { details: { id: o.id } });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    // runc may have connected just before it exited: one last look.
    fd ??= consoleReceive(this.listenFd ?? -1);
    this.closeListener();
    if (fd === null) return;
    // The master is a tty: one TTY handle (a duplex net.Socket underneath) reads and writes it.
    const master = new tty.ReadStream(fd);
    this.master = master;
    this.masterFd = fd;
    this.resize();
    const onWinch = (): void => this.resize();
    process.on('SIGWINCH', onWinch);
    this.restore.push(() => process.off('SIGWINCH', onWinch));
    this.ended = new Promise<void>((resolve) => {
      // EIO on the master is the slave's last close: the normal end of a pty, not a failure.
      master.on('error', () => resolve());
      master.on('end', () => resolve());
      master.on('close', () => resolve());
    });
    master.on('data', (b: Buffer) => process.stdout.write(b));
    if (o.stdin) {
      const input = process.stdin;
      if (input.isTTY) {
        input.setRawMode(true);
        this.restore.push(() => input.setRawMode(false));
        // The remote pty already turned \n into \r\n; a second ONLCR here would print \r\r\n.
        rawOutput(input.fd);
      }
      // {end: false}: the end of local input must not shut the terminal the command still writes to;
      // piped input ends with VEOF (^D) instead, which the pty's line discipline reads as end of file.
      input.pipe(master, { end: false });
      if (!input.isTTY) input.once('end', () => void master.write('\x04'));
      this.restore.push(() => {
        input.unpipe(master);
        input.pause();
      });
    }
  }

  /** After runc exited: waits up to `ms` for the master's end (a background process may hold the slave open). */
  async drained(ms: number): Promise<void> {
    if (this.master === undefined) return;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.ended, new Promise<void>((r) => (t = setTimeout(r, ms)))]);
    if (t !== undefined) clearTimeout(t);
  }

  close(): void {
    for (const f of this.restore.splice(0).reverse()) {
      try {
        f();
      } catch {
        // restoring a terminal that went away (the harness closed it) is not an error of the exec
      }
    }
    this.master?.destroy();
    this.master = undefined;
    this.masterFd = -1;
    this.closeListener();
  }

  private closeListener(): void {
    if (this.listenFd === undefined) return;
    closeSync(this.listenFd);
    this.listenFd = undefined;
    rmSync(this.socketPath, { force: true });
  }

  /** This terminal's size onto the master; nothing when stdout is not a terminal. */
  private resize(): void {
    if (this.master === undefined || !process.stdout.isTTY) return;
    const [cols, rows] = process.stdout.getWindowSize();
    setWindowSize(this.masterFd, rows, cols);
  }
}
