import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BerthError, errnoCode, isBerthError } from '../../lib/errors.js';
import { runProcess, spawnChild } from '../../lib/exec.js';
import { resolveExecutable } from '../../lib/spawn.js';
import { mkdirp, readFileIfExists } from '../../lib/fsx.js';
import type { Logger } from '../../lib/log.js';
import { sleep } from '../../lib/time.js';
import { readProcFile } from '../../lib/proc.js';
import { setChildSubreaper, waitPid } from '../../lib/sys.js';
import { ExecTerminal } from './terminal.js';

export interface TaskPaths {
  /** runc --root */
  runcRoot: string;
  /** conmon --exit-dir: one file per container id holding the exit code */
  exitDir: string;
  /** conmon persist dirs and attach sockets live below this */
  stateDir: string;
}

export interface TaskStatus {
  id: string;
  status: 'created' | 'running' | 'stopped' | 'paused' | 'creating';
  pid: number;
  bundle: string;
  annotations?: Record<string, string>;
}

/** Deadlines for the external processes the driver waits on. */
export interface TaskDriverOptions {
  /** Each runc call (start, state, list, kill, delete); at expiry runc is SIGKILLed. Default 10 s. */
  runcTimeoutMs?: number;
  /** conmon's report of `runc create` (the pid or an error); at expiry conmon is SIGKILLed. Default 30 s. */
  createTimeoutMs?: number;
}

/** A stop waiting out its grace period: sent when the signal is, and with `over` when the wait ends (live progress). */
export interface GraceWait {
  id: string;
  signal: string;
  graceMs: number;
  /** Epoch ms when SIGKILL follows. */
  killAt: number;
  over?: 'exited' | 'killed';
}

export interface CreateTaskOptions {
  id: string;
  bundle: string; // holds config.json and the mounted rootfs
  spec: Record<string, unknown>;
  logPath: string;
  /**
   * conmon's --log-size-max: past it conmon replaces the file with an empty one (the content is
   * lost). Absent: no limit, and `rotateLog` keeps the size. Not both: conmon 2.1.6 counts
   * bytes since its own last truncation and never resets the count on a requested reopen, so a
   * limit would cut rotated logs at arbitrary points.
   */
  logSizeMax?: number;
}

/**
 * Task driver: one conmon per container, which runs `runc create` and then owns the
 * container's stdio, log file and exit code. conmon double-forks, so berth is not the
 * parent of conmon or of the container, and `kill -9` of berth changes nothing for
 * running containers (rule S1). berth then calls `runc start`.
 *
 * Idempotency: `delete` and `kill` of a container runc does not know succeed (a gone
 * container is already in the wanted state); `create` of an existing id fails with
 * ERR_ALREADY_EXISTS.
 *
 * Deadlines: no call waits on runc or conmon for longer than its deadline (TaskDriverOptions).
 * A wedged runc (a stuck cgroup freeze, a hung fuse mount in the rootfs) is killed with its
 * process group and the call fails with ERR_TIMEOUT (retryable), naming the operation and id.
 */
export class TaskDriver {
  private readonly runcTimeoutMs: number;
  private readonly createTimeoutMs: number;
  private readonly graceListeners = new Set<(w: GraceWait) => void>();

  constructor(
    private readonly paths: TaskPaths,
    private readonly log: Logger,
    private readonly binaries: { runc: string; conmon: string } = { runc: 'runc', conmon: 'conmon' },
    options: TaskDriverOptions = {},
  ) {
    this.runcTimeoutMs = options.runcTimeoutMs ?? 10_000;
    this.createTimeoutMs = options.createTimeoutMs ?? 30_000;
  }

  async init(): Promise<void> {
    await mkdirp(this.paths.runcRoot);
    await mkdirp(this.paths.exitDir);
    await mkdirp(path.join(this.paths.stateDir, 'conmon'));
    await mkdirp(path.join(this.paths.stateDir, 'sock'));
  }

  /**
   * Runs `runc --root … args` under the runc deadline. A failure whose runc message matches
   * `gone` resolves undefined: the caller's idempotent outcome (the container is already gone).
   * Other failures are ERR_RUNTIME with runc's last error; the deadline is ERR_TIMEOUT.
   */
  private async runc(op: string, id: string | undefined, args: string[], gone?: RegExp): Promise<string | undefined> {
    try {
      // The absolute path, found once: a bare name makes every call try each PATH entry in turn.
      const { stdout } = await runProcess(await this.runcPath(), ['--root', this.paths.runcRoot, ...args], { timeoutMs: this.runcTimeoutMs, what: `${op}: runc` });
      return stdout;
    } catch (err) {
      const details = id === undefined ? {} : { id };
      if (isBerthError(err, 'ERR_TIMEOUT')) {
        throw new BerthError('ERR_TIMEOUT', `${op}: runc did not answer within ${this.runcTimeoutMs / 1000}s (killed)`, {
          cause: err,
          details: { ...details, timeoutMs: this.runcTimeoutMs },
        });
      }
      if (err instanceof BerthError) throw err;
      const text = stderrOf(err);
      if (gone?.test(text) === true) return undefined;
      throw new BerthError('ERR_RUNTIME', `${op}: ${text}`, { cause: err, details });
    }
  }

  persistDir(id: string): string {
    return path.join(this.paths.stateDir, 'conmon', id);
  }

  exitFile(id: string): string {
    return path.join(this.paths.exitDir, id);
  }

  /** Writes config.json, starts conmon (which runs `runc create`), returns the container pid. */
  async create(o: CreateTaskOptions): Promise<number> {
    // runc keeps <root>/<id>/state.json per container: a stat instead of a `runc state` process.
    if (await fsp.access(path.join(this.paths.runcRoot, o.id, 'state.json')).then(() => true, () => false)) {
      throw new BerthError('ERR_ALREADY_EXISTS', `create task ${o.id}: runc already has a container with this id`);
    }
    // No fsync: runc reads it at once, and a bundle is never reused after a crash (the intent row is
    // rolled back and the container created anew), so durability buys nothing here.
    await fsp.writeFile(path.join(o.bundle, 'config.json'), JSON.stringify(o.spec, null, 2), { mode: 0o600 });
    const persist = this.persistDir(o.id);
    await fsp.rm(persist, { recursive: true, force: true });
    await fsp.rm(this.exitFile(o.id), { force: true });
    // conmon writes <persist>/exit before <exit-dir>/<id>: the directory must exist or neither is written.
    await mkdirp(persist);
    await mkdirp(path.dirname(o.logPath));
    const args = [
      '--api-version', '1',
      '-c', o.id,
      '-u', o.id,
      '-n', o.id,
      '-r', await this.runcPath(),
      '-b', o.bundle,
      '-p', path.join(persist, 'pidfile'),
      '--persist-dir', persist,
      '--exit-dir', this.paths.exitDir,
      '--conmon-pidfile', path.join(persist, 'conmon.pid'),
      '--socket-dir-path', path.join(this.paths.stateDir, 'sock'),
      '-l', `k8s-file:${o.logPath}`,
      ...(o.logSizeMax !== undefined ? ['--log-size-max', String(o.logSizeMax)] : []),
      '--log-level', 'warning',
      '--runtime-arg', '--root',
      '--runtime-arg', this.paths.runcRoot,
      '--runtime-arg', '--log',
      '--runtime-arg', path.join(persist, 'runc.log'),
    ];
    // Through lib/exec's vfork-style spawn when the addon is there: no fork of the daemon per container.
    const child = spawnChild(await this.conmonPath(), args, {
      // conmon writes an `oom` marker into its working directory as well as its persist dir:
      // the bundle, never whatever directory berth was started from.
      cwd: o.bundle,
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', _OCI_SYNCPIPE: '3' },
    });
    const sync = child.stdio[3];
    const stderr = child.stdio[2];
    if (sync === null || sync === undefined || stderr === null || stderr === undefined) {
      throw new BerthError('ERR_INTERNAL', `create task ${o.id}: conmon pipes missing`);
    }
    let errText = '';
    stderr.on('data', (b: Buffer) => {
      if (errText.length < 4096) errText += b.toString('utf8');
    });
    let syncText = '';
    sync.on('data', (b: Buffer) => {
      syncText += b.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const spawnErr = new Promise<never>((_, reject) =>
      child.on('error', (err) => reject(new BerthError('ERR_PRECONDITION', `create task ${o.id}: start conmon: ${err.message}`, { cause: err }))),
    );
    // conmon's daemon child writes one JSON line with the pid (or -1 and a message) and
    // keeps the pipe open while the container runs, so wait for the line, not for EOF.
    const syncLine = new Promise<void>((resolve) => {
      sync.on('data', () => {
        if (syncText.includes('\n')) resolve();
      });
      sync.on('close', () => resolve());
    });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BerthError('ERR_TIMEOUT', `create task ${o.id}: conmon did not report within ${this.createTimeoutMs / 1000}s (killed)`, {
              details: { id: o.id, timeoutMs: this.createTimeoutMs },
            }),
          ),
        this.createTimeoutMs,
      );
    });
    try {
      await Promise.race([Promise.all([syncLine, exited]), spawnErr, deadline]);
    } catch (err) {
      // conmon (or the runc create under it) hangs: kill what was started, both conmon's
      // first process group and its daemonised child, so nothing outlives the error.
      await this.killConmon(o.id, child.pid);
      await this.delete(o.id).catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
      sync.destroy();
      stderr.destroy();
      child.unref();
    }
    const line = syncText.trim().split('\n')[0] ?? '';
    let msg: { data?: number; pid?: number; message?: string } = {};
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      // fall through: no or garbled sync message
    }
    const pid = msg.data ?? msg.pid ?? -1;
    if (pid <= 0) {
      const runcLog = (await readFileIfExists(path.join(persist, 'runc.log'))) ?? '';
      const reason = msg.message ?? lastRuncError(runcLog) ?? errText.trim() ?? 'no pid reported';
      await this.delete(o.id).catch(() => undefined);
      throw new BerthError('ERR_RUNTIME', `create task ${o.id}: ${reason || 'conmon reported no pid'}`, { details: { id: o.id } });
    }
    return pid;
  }

  private async conmonPath(): Promise<string> {
    return resolveExecutable(this.binaries.conmon, process.env['PATH']) ?? this.binaries.conmon;
  }

  /** Found once per name and PATH (lib/spawn's cache, shared with every other external call). */
  private async runcPath(): Promise<string> {
    const found = resolveExecutable(this.binaries.runc, process.env['PATH']);
    if (found !== null) return found;
    throw new BerthError('ERR_PRECONDITION', `find runc: ${this.binaries.runc} is not on PATH (install the Debian package runc)`);
  }

  async start(id: string): Promise<void> {
    await this.runc(`start task ${id}`, id, ['start', id]);
  }

  /**
   * Runs `argv` in the running container (`runc exec`, the container's own user, env, cwd and
   * security settings) to completion within `timeoutMs`; resolves its exit code and output. A
   * command that cannot be started (not found, the container gone) is exit code 126/127-like:
   * ERR_RUNTIME with runc's words; the deadline is ERR_TIMEOUT (the exec is killed).
   */
  async exec(id: string, argv: readonly string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
    // runc's child calls setsid(): killing runc's process group at the deadline leaves the command
    // running in the container. Its pid file says whom to kill (regression exec-timeout-leaks-command).
    const pidFile = path.join(this.persistDir(id), `exec-${randomBytes(6).toString('hex')}.pid`);
    try {
      await mkdirp(this.persistDir(id));
      const { stdout, stderr } = await runProcess(this.binaries.runc, ['--root', this.paths.runcRoot, 'exec', '--pid-file', pidFile, id, ...argv], {
        timeoutMs,
        what: `exec in ${id}: runc`,
        maxStdoutBytes: 64 * 1024,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      if (err instanceof BerthError && err.code === 'ERR_TIMEOUT') await killExecCommand(pidFile);
      if (err instanceof BerthError) throw err;
      const e = err as { code?: number | null; stdout?: string; stderr?: string };
      if (typeof e.code === 'number' && e.code !== 255) return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
      throw new BerthError('ERR_RUNTIME', `exec in ${id}: ${stderrOf(err)}`, { cause: err, details: { id } });
    } finally {
      await fsp.rm(pidFile, { force: true }).catch(() => undefined);
    }
  }

  /**
   * `berth exec`: runs `argv` in the running container (`runc exec`: the container's user, env,
   * cwd and security settings) with this process's stdout and stderr, and its stdin when
   * `stdin` (else /dev/null). No deadline: it lasts as long as the command, like `kubectl
   * exec`; runc shares this process group, so a Ctrl-C on the terminal reaches runc, which
   * passes it to the command (SIGTERM and SIGHUP sent to this process are passed on too).
   * Resolves the command's exit code (128+n when signal n ended it). When runc cannot start
   * the command, `failure` holds runc's words (runc also printed them on stderr) and the
   * code is 127 for a command not found, else 126 (podman's codes).
   *
   * With `tty`, runc allocates a pty in the container (`exec -t --console-socket`) and sends
   * its master here over SCM_RIGHTS (the native addon receives it: node's net module cannot).
   * Then this terminal goes raw (when stdin is one and `stdin` is set), stdin is copied to the
   * master and the master to stdout, and each SIGWINCH sets this terminal's size on the master
   * (TIOCSWINSZ), as kubectl's resize queue and podman's attach do.
   */
  async execAttached(id: string, argv: readonly string[], o: { stdin: boolean; tty?: boolean }): Promise<{ code: number; failure?: string }> {
    const runc = await this.runcPath();
    // runc's own error goes to this file as JSON, to tell it from the command's stderr and exit code 255.
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-exec-'));
    const logFile = path.join(dir, 'runc.log');
    const base = ['--root', this.paths.runcRoot, '--log', logFile, '--log-format', 'json', 'exec'];
    const pidFile = path.join(dir, 'pid');
    let terminal: ExecTerminal | undefined;
    // Where SIGTERM and SIGHUP sent to berth go: runc, then (with a terminal) the command itself.
    let target: (sig: NodeJS.Signals) => void = () => undefined;
    // Without a terminal runc shares this process group, so a Ctrl-C reached it already; with one
    // (raw mode sends ^C as a byte) a SIGINT sent to berth itself is passed to the command.
    const onInt = (): void => {
      if (terminal !== undefined) target('SIGINT');
    };
    const onTerm = (): void => target('SIGTERM');
    const onHup = (): void => target('SIGHUP');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    process.on('SIGHUP', onHup);
    try {
      if (o.tty === true) {
        // runc 1.1 takes --console-socket only with -d ("cannot use console socket if runc will
        // not detach"): runc then exits once the command runs, and the command, orphaned, is
        // re-parented to this process (a subreaper), which collects its exit status itself.
        setChildSubreaper();
        terminal = new ExecTerminal(path.join(dir, 'console.sock'));
      }
      const args = terminal === undefined ? [...base, id, ...argv] : [...base, '-d', '-t', '--console-socket', terminal.socketPath, '--pid-file', pidFile, id, ...argv];
      const child = spawn(runc, args, { stdio: [o.stdin && terminal === undefined ? 'inherit' : 'ignore', 'inherit', 'inherit'] });
      target = (sig) => void child.kill(sig);
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
        child.once('error', (err) => reject(new BerthError('ERR_PRECONDITION', `exec in ${id}: start runc: ${err.message}`, { cause: err })));
        child.once('exit', (code, signal) => resolve({ code, signal }));
      });
      exited.catch(() => undefined);
      if (terminal !== undefined) await terminal.attach({ id, exited, stdin: o.stdin, timeoutMs: this.runcTimeoutMs, kill: () => void child.kill('SIGKILL') });
      const res = await exited;
      if (terminal !== undefined && res.code === 0) {
        const pid = Number.parseInt((await readFileIfExists(pidFile)) ?? '', 10);
        if (!Number.isSafeInteger(pid) || pid <= 0) throw new BerthError('ERR_RUNTIME', `exec in ${id}: runc wrote no pid file`, { details: { id } });
        target = (sig) => {
          try {
            process.kill(pid, sig);
          } catch {
            // already gone: its status is waiting to be collected
          }
        };
        const status = await waitForExit(pid);
        await terminal.drained(500);
        return { code: status.code ?? 128 + (status.signal ?? 9) };
      }
      if (res.code === null) return { code: 128 + (os.constants.signals[res.signal ?? 'SIGKILL'] ?? 9) };
      // With -d, any failure of runc is its own (the command never ran); without, 255 may be the command's.
      if (res.code !== 255 && terminal === undefined) return { code: res.code };
      const failure = lastRuncError((await readFileIfExists(logFile)) ?? '');
      if (failure === undefined) return { code: res.code };
      return { code: /not found|no such file/i.test(failure) ? 127 : 126, failure };
    } finally {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.off('SIGHUP', onHup);
      terminal?.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Size rotation keeping one previous file, as the kubelet's containerLogMaxSize with
   * containerLogMaxFiles=2: once `logPath` holds `maxBytes` or more it is renamed to
   * `<logPath>.1` (replacing the one before) and conmon is told over its control fifo
   * (`<bundle>/ctl`, message "2 0 0": reopen logs; conmon 2.1.6 has no SIGUSR1 reopen) to open
   * a new file, which it creates as `<logPath>.tmp` and renames into place. Until conmon reads
   * the message it keeps writing to the renamed file, so no line is lost.
   * Returns true when it rotated. A conmon that is gone (no reader on the fifo: ENXIO) means the
   * container stopped; nothing is rotated then. Idempotent below the size.
   */
  async rotateLog(o: { bundle: string; logPath: string; maxBytes: number }): Promise<boolean> {
    const st = await fsp.stat(o.logPath).catch(() => undefined);
    if (st === undefined || st.size < o.maxBytes) return false;
    // O_NONBLOCK: opening a fifo for writing must not wait for a reader that is gone.
    const ctl = await fsp.open(path.join(o.bundle, 'ctl'), fsc.O_WRONLY | fsc.O_NONBLOCK).catch((err: unknown) => {
      if (['ENXIO', 'ENOENT'].includes(errnoCode(err) ?? '')) return undefined;
      throw new BerthError('ERR_IO', `rotate log ${o.logPath}: open conmon's control fifo: ${(err as Error).message}`, { cause: err });
    });
    if (ctl === undefined) return false;
    try {
      await fsp.rename(o.logPath, `${o.logPath}.1`);
      await ctl.write('2 0 0\n');
    } finally {
      await ctl.close();
    }
    return true;
  }

  /** runc's view of one container; undefined when runc does not know it. */
  async state(id: string): Promise<TaskStatus | undefined> {
    const stdout = await this.runc(`state of task ${id}`, id, ['state', id], /does not exist|not exist|no such file/i);
    return stdout === undefined ? undefined : (JSON.parse(stdout) as TaskStatus);
  }

  async list(): Promise<TaskStatus[]> {
    const stdout = (await this.runc('list tasks', undefined, ['list', '--format', 'json'])) ?? '';
    const parsed = JSON.parse(stdout.trim() === '' ? 'null' : stdout) as TaskStatus[] | null;
    return parsed ?? [];
  }

  /** Sends a signal to the container's init. A container that is gone or stopped is success. */
  async kill(id: string, signal: string): Promise<void> {
    await this.runc(`kill task ${id} ${signal}`, id, ['kill', id, signal], /does not exist|not running|process already finished|container not running/i);
  }

  /**
   * Signals every process in the container's cgroup (`runc kill --all`), for a container that
   * joined another's PID namespace: its init's end does not end what it started, as it does in
   * a PID namespace of its own (containerd's shim kills them all on such an init's exit).
   */
  async killAll(id: string, signal: string): Promise<void> {
    await this.runc(`kill all of task ${id} ${signal}`, id, ['kill', '--all', id, signal], /does not exist|not running|process already finished|container not running/i);
  }

  /** Whether the container's config.json joins a PID namespace by path (a pod's shareProcessNamespace). */
  async sharesPidNamespace(bundle: string): Promise<boolean> {
    const text = await readFileIfExists(path.join(bundle, 'config.json'));
    if (text === undefined) return false;
    try {
      const spec = JSON.parse(text) as { linux?: { namespaces?: { type?: string; path?: string }[] } };
      return spec.linux?.namespaces?.some((n) => n.type === 'pid' && typeof n.path === 'string' && n.path !== '') === true;
    } catch {
      return false;
    }
  }

  /** The exit code conmon recorded, or undefined while the container has not exited. */
  async exitCode(id: string): Promise<number | undefined> {
    const text = await readFileIfExists(this.exitFile(id));
    if (text === undefined || text.trim() === '') return undefined;
    const n = Number(text.trim());
    return Number.isInteger(n) ? n : undefined;
  }

  /** Calls `fn` for each stop that waits out a grace period, as it starts and ends (GraceWait). */
  onGraceWait(fn: (w: GraceWait) => void): () => void {
    this.graceListeners.add(fn);
    return () => this.graceListeners.delete(fn);
  }

  /**
   * Stops the container: `signal` (default SIGTERM), then SIGKILL after `graceMs`.
   * Resolves with the exit code once conmon has recorded it (or runc reports stopped).
   */
  async stop(id: string, graceMs: number, signal = 'SIGTERM'): Promise<number | undefined> {
    // conmon wrote the exit file: the container has ended, no runc process needs asking.
    const known = await this.exitCode(id);
    if (known !== undefined) return known;
    const st = await this.state(id);
    if (st === undefined || st.status === 'stopped') return this.exitCode(id);
    if (st.status === 'created') {
      // Never started: nothing to signal gracefully.
      await this.kill(id, 'SIGKILL');
    } else {
      await this.kill(id, signal);
      const wait: GraceWait = { id, signal, graceMs, killAt: Date.now() + graceMs };
      if (graceMs > 0) for (const l of this.graceListeners) l(wait);
      let exited = false;
      try {
        exited = await this.waitExit(id, graceMs);
      } finally {
        if (graceMs > 0) for (const l of this.graceListeners) l({ ...wait, over: exited ? 'exited' : 'killed' });
      }
      if (exited) return this.exitCode(id);
      this.log.info({ id, graceMs }, 'grace period over, sending SIGKILL');
      await this.kill(id, 'SIGKILL');
    }
    await this.waitExit(id, 10_000);
    return this.exitCode(id);
  }

  /**
   * Waits until runc reports stopped/gone and conmon wrote the exit file, up to `ms` (plus at
   * most one runc deadline for the state call in flight). A state call that times out ends
   * the wait with its ERR_TIMEOUT.
   */
  async waitExit(id: string, ms: number): Promise<boolean> {
    // conmon's exit file is the cheap signal (a file read, no process); runc is asked only
    // now and then, for a container whose conmon died and will never write it.
    const until = Date.now() + ms;
    let delay = 5;
    let askRuncAt = Date.now() + 100;
    for (;;) {
      if ((await this.exitCode(id)) !== undefined) return true;
      if (Date.now() >= askRuncAt) {
        const st = await this.state(id);
        if (st === undefined || (st.status === 'stopped' && ((await this.exitCode(id)) !== undefined || !(await this.conmonAlive(id))))) return true;
        askRuncAt = Date.now() + 200;
      }
      if (Date.now() >= until) return false;
      await sleep(Math.min(delay, Math.max(1, until - Date.now())));
      delay = Math.min(delay * 2, 50);
    }
  }


  private async killConmon(id: string, firstPid: number | undefined): Promise<void> {
    const daemon = await this.conmonPid(id);
    // The daemonised conmon leads its own session, so its group also holds a hung `runc create`.
    const pids = [firstPid === undefined ? undefined : -firstPid, daemon === undefined ? undefined : -daemon, daemon];
    for (const p of pids) {
      if (p === undefined) continue;
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  async conmonPid(id: string): Promise<number | undefined> {
    const t = await readFileIfExists(path.join(this.persistDir(id), 'conmon.pid'));
    const n = Number(t?.trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  }

  /**
   * For a container whose init is gone but whose exit file is not written: waits for conmon,
   * which writes it once it has reaped the init. True once the file holds the code; false at once
   * when conmon is gone too (nobody will write it: the container vanished) or after `ms`.
   */
  async exitRecorded(id: string, ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    let delay = 1;
    for (;;) {
      if ((await this.exitCode(id)) !== undefined) return true;
      if (!(await this.conmonAlive(id))) return (await this.exitCode(id)) !== undefined;
      if (Date.now() >= until) return false;
      await sleep(delay);
      delay = Math.min(delay * 2, 20);
    }
  }

  async conmonAlive(id: string): Promise<boolean> {
    const pid = await this.conmonPid(id);
    if (pid === undefined) return false;
    // Read as conmon may be exiting: gone at the open or at the read is not alive (regression conmon-exit-esrch).
    const cmd = readProcFile(`/proc/${pid}/cmdline`);
    return cmd !== undefined && cmd.includes(id);
  }

  /**
   * Removes the container from runc (force: kills it first) and conmon's files.
   * A container runc does not know is success.
   */
  async delete(id: string): Promise<void> {
    await this.runc(`delete task ${id}`, id, ['delete', '--force', id], /does not exist|not exist/i);
    // conmon exits once the container is gone; give it a moment to flush logs and exit files.
    for (let i = 0; i < 50 && (await this.conmonAlive(id)); i++) await sleep(20);
    await fsp.rm(this.persistDir(id), { recursive: true, force: true });
    await fsp.rm(this.exitFile(id), { force: true });
    await fsp.rm(path.join(this.paths.stateDir, 'sock', id), { recursive: true, force: true }).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }
}

function stderrOf(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'stderr' in err) {
    const s = String((err as { stderr: unknown }).stderr).trim();
    if (s !== '') return lastRuncError(s) ?? s;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Polls waitpid(WNOHANG) for an adopted child (libuv reaps only the children it spawned). */
async function waitForExit(pid: number): Promise<{ code?: number; signal?: number }> {
  for (;;) {
    const st = waitPid(pid);
    if (st !== null) return st;
    await sleep(20);
  }
}

/** runc logs JSON lines or logrus text; the last error message is the useful one. */
function lastRuncError(log: string): string | undefined {
  const lines = log.trim().split('\n').reverse();
  for (const l of lines) {
    try {
      const j = JSON.parse(l) as { level?: string; msg?: string };
      if (j.level === 'error' && j.msg) return j.msg;
    } catch {
      const m = /level=error msg="((?:[^"\\]|\\.)*)"/.exec(l);
      if (m?.[1] !== undefined) return m[1].replace(/\\"/g, '"');
    }
  }
  return undefined;
}

/**
 * Kills a timed-out `runc exec` command and what it started: its process group (runc's child is
 * a session leader), then the process itself. The pid comes from runc's --pid-file; none yet
 * means runc never started the command.
 */
async function killExecCommand(pidFile: string): Promise<void> {
  const text = await fsp.readFile(pidFile, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}
