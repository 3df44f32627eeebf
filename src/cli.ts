#!/usr/bin/env node
import { Command, Option } from 'commander';
import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BerthError, isBerthError, messageOf } from './lib/errors.js';
import { createLogger, type Logger } from './lib/log.js';
import { humanAge } from './lib/time.js';
import type { Runtime } from './runtime/index.js';

/**
 * The composition root: parses flags into one Config, builds the runtime, prints, and
 * maps errors to exit codes: 0 ok · 1 runtime failure · 2 invalid input.
 * `diff`: 0 no changes · 1 changes pending · 2 error (like `kubectl diff`).
 */

interface GlobalOpts {
  root: string;
  state: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

interface Config {
  root: string;
  state: string;
  log: Logger;
}

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_INVALID = 2;

let activeCommand = '';

function version(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  try {
    return (JSON.parse(readFileSync(path.resolve(here, '../../package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function config(cmd: Command): Config {
  const g = cmd.optsWithGlobals() as GlobalOpts;
  return { root: path.resolve(g.root), state: path.resolve(g.state), log: createLogger(g.logLevel) };
}

async function openRuntime(cfg: Config): Promise<Runtime> {
  const { Runtime } = await import('./runtime/index.js');
  return Runtime.open({ root: cfg.root, state: cfg.state, log: cfg.log });
}

/** The inventory source a -f argument stands for: an absolute path, or "-" for stdin. */
function sourceOf(filename: string): string {
  return filename === '-' ? '-' : path.resolve(filename);
}

/** Opens the runtime for one command and always closes it (releases the lock and SQLite). */
async function withRuntime(cfg: Config, fn: (rt: Runtime) => Promise<void>): Promise<void> {
  const rt = await openRuntime(cfg);
  try {
    await fn(rt);
  } finally {
    await rt.close();
  }
}

function exitCodeFor(err: unknown): number {
  if (isBerthError(err) && (err.code === 'ERR_INVALID_MANIFEST' || err.code === 'ERR_INVALID_ARGUMENT')) return EXIT_INVALID;
  return EXIT_FAILURE;
}

/** Reads one manifest stream from stdin (`-f -`) with the manifest size limit (rule M1). */
async function readStdin(): Promise<string> {
  const { MAX_MANIFEST_FILE_BYTES } = await import('./reconciler/manifest.js');
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin) {
    n += (c as Buffer).length;
    if (n > MAX_MANIFEST_FILE_BYTES) throw new BerthError('ERR_INVALID_MANIFEST', `read stdin: exceeds the ${MAX_MANIFEST_FILE_BYTES} byte limit`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Where -f points: a path, or stdin's text for `-f -` (read once, with the size limit). */
async function manifestInput(filename: string): Promise<import('./reconciler/manifest.js').ManifestInput> {
  return filename === '-' ? { path: '-', stdinText: await readStdin() } : { path: filename };
}

/** Loads manifests for apply/diff; prints every problem and fails with exit 2. */
async function loadOrFail(file: string): Promise<import('./reconciler/desired.js').DesiredPod[]> {
  const { loadManifests, formatProblem } = await import('./reconciler/manifest.js');
  const res = await loadManifests(await manifestInput(file));
  if (res.problems.length > 0) {
    for (const p of res.problems) process.stderr.write(`error: ${formatProblem(p)}\n`);
    throw new BerthError('ERR_INVALID_MANIFEST', `${res.problems.length} problem(s) in ${res.badFiles.length} file(s); nothing was changed`);
  }
  return res.pods;
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 3))).join('').trimEnd()).join('\n') + '\n';
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('berth')
    .description('Declarative single-host container reconciler: YAML manifests in, runc containers running.')
    .version(version(), '--version')
    .option('--root <dir>', 'persistent state: database, content, snapshots, logs', '/var/lib/berth')
    .option('--state <dir>', 'runtime state: runc root, conmon files, lock', '/run/berth')
    .addOption(new Option('--log-level <level>', 'log level for the JSON logs on stderr').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('warn'))
    .showHelpAfterError()
    // Before any .command(): subcommands copy this setting when they are created, so a usage
    // error anywhere exits 2 (invalid input) instead of commander's 1 ("changes pending" for diff).
    .exitOverride()
    .configureHelp({ sortSubcommands: false })
    .hook('preAction', (_t, action) => {
      activeCommand = action.name();
    });

  program
    .command('apply')
    .description('make this machine match the manifests in a file or directory')
    .requiredOption('-f, --filename <path>', 'manifest file or directory (recursive), or - for stdin')
    .option('--prune', 'delete pods previously applied from this path that it no longer declares')
    .option('--dry-run', 'print the plan and change nothing')
    .action(async (o: { filename: string; prune?: boolean; dryRun?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      const desired = await loadOrFail(o.filename);
      // As kubectl: nothing to apply is a mistake (and with --prune it would delete everything)
      // — except `apply --prune -f DIR` of a directory, which says "this directory declares
      // nothing now" (GitOps: its files were removed).
      const { statSync } = await import('node:fs');
      const pruneDir = o.prune === true && o.filename !== '-' && statSync(o.filename, { throwIfNoEntry: false })?.isDirectory() === true;
      if (desired.length === 0 && !pruneDir) {
        throw new BerthError('ERR_INVALID_MANIFEST', `apply ${o.filename}: no objects passed to apply`);
      }
      const { computePlan, executePlan } = await import('./reconciler/reconcile.js');
      const { renderPlan } = await import('./reconciler/render.js');
      await withRuntime(cfg, async (rt) => {
        await rt.withLock('apply', async () => {
          if (o.dryRun !== true) await rt.sweep();
          const prune = o.prune === true ? { prune: { sources: [sourceOf(o.filename)] } } : {};
          const plan = await computePlan(rt, { desired, repair: o.dryRun !== true, ...prune }, cfg.log);
          if (o.dryRun === true) {
            process.stdout.write(renderPlan(plan) || 'no changes\n');
            return;
          }
          const res = await executePlan(rt, plan, cfg.log);
          const failed = new Set(res.failed.map((f) => f.step));
          for (const s of plan.steps) {
            if (!failed.has(s)) process.stdout.write(`${(await import('./reconciler/render.js')).renderStep(s)}\n`);
          }
          if (plan.steps.length === 0) process.stdout.write('no changes\n');
          for (const f of res.failed) process.stderr.write(`error: ${f.error.message}\n`);
          for (const b of plan.blocked) process.stderr.write(`error: ${b.key}: ${b.reason}\n`);
          if (res.failed.length > 0 || plan.blocked.length > 0) process.exitCode = EXIT_FAILURE;
        });
      });
    });

  program
    .command('diff')
    .description('print what apply would do; exit 0 no changes, 1 changes pending, 2 error')
    .requiredOption('-f, --filename <path>', 'manifest file or directory (recursive), or - for stdin')
    .option('--prune', 'include deletions that apply --prune would make')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { filename: string; prune?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      const desired = await loadOrFail(o.filename);
      const { computePlan } = await import('./reconciler/reconcile.js');
      const { renderPlan, planToJson } = await import('./reconciler/render.js');
      await withRuntime(cfg, async (rt) => {
        const prune = o.prune === true ? { prune: { sources: [sourceOf(o.filename)] } } : {};
        const plan = await rt.withLock('diff', () => computePlan(rt, { desired, repair: false, ...prune }, cfg.log));
        process.stdout.write(o.output === 'json' ? `${JSON.stringify(planToJson(plan), null, 2)}\n` : renderPlan(plan));
        process.exitCode = plan.steps.length > 0 || plan.blocked.length > 0 ? 1 : 0;
      });
    });

  program
    .command('delete')
    .description('stop and delete pods: those a file or directory names (-f), or one by name (delete pod NAME)')
    .argument('[kind]', 'pod (with NAME)')
    .argument('[name]', 'pod name')
    .option('-f, --filename <path>', 'manifest file or directory, or - for stdin; only kind and name are read, so a file that no longer validates still works')
    .option('-n, --namespace <ns>', 'namespace for delete pod NAME', 'default')
    .action(async (kind: string | undefined, name: string | undefined, o: { filename?: string; namespace: string }, cmd: Command) => {
      const cfg = config(cmd);
      let wanted: { key: string; where: string }[];
      let problems = 0;
      if (o.filename !== undefined) {
        if (kind !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', 'delete: give either -f PATH or pod NAME, not both');
        const { declaredPodKeys, formatProblem } = await import('./reconciler/manifest.js');
        const res = await declaredPodKeys(await manifestInput(o.filename));
        for (const p of res.problems) process.stderr.write(`error: ${formatProblem(p)}\n`);
        problems = res.problems.length;
        wanted = res.keys.map((k) => ({ key: k.key, where: `${k.file}:${k.line}` }));
      } else {
        if (kind === undefined || name === undefined || !['pod', 'pods', 'po'].includes(kind.toLowerCase())) {
          throw new BerthError('ERR_INVALID_ARGUMENT', 'delete: give -f PATH or pod NAME');
        }
        wanted = [{ key: `${o.namespace}/${name}`, where: 'command line' }];
      }
      const { executePlan } = await import('./reconciler/reconcile.js');
      const { renderStep } = await import('./reconciler/render.js');
      const { recordedGracePeriodMs } = await import('./reconciler/plan.js');
      await withRuntime(cfg, async (rt) => {
        await rt.withLock('delete', async () => {
          const recorded = new Map(rt.state.listPods().map((p) => [p.key, p]));
          const steps = [...new Set(wanted.map((w) => w.key))]
            .filter((key) => recorded.has(key))
            .map((key) => ({ kind: 'delete-pod' as const, podKey: key, graceMs: recordedGracePeriodMs(recorded.get(key)?.spec), reason: 'deleted' }));
          const res = await executePlan(rt, { steps, blocked: [] }, cfg.log);
          for (const s of steps) process.stdout.write(`${renderStep(s)}\n`);
          if (o.filename === undefined && steps.length === 0) {
            throw new BerthError('ERR_NOT_FOUND', `delete pod ${wanted[0]?.key ?? ''}: not found`);
          }
          if (steps.length === 0) process.stdout.write('nothing to delete\n');
          for (const f of res.failed) process.stderr.write(`error: ${f.error.message}\n`);
          if (res.failed.length > 0) process.exitCode = EXIT_FAILURE;
          else if (problems > 0) process.exitCode = EXIT_INVALID;
        });
      });
    });

  program
    .command('up')
    .description('watch a manifest directory and keep this machine converged to it (Ctrl-C leaves containers running)')
    .argument('<dir>', 'manifest directory')
    .option('--resync <seconds>', 'full resync period', '30')
    .action(async (dir: string, o: { resync: string }, cmd: Command) => {
      const cfg = config(cmd);
      const { statSync } = await import('node:fs');
      if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
        throw new BerthError('ERR_INVALID_ARGUMENT', `up ${dir}: not a directory`);
      }
      const resync = Number(o.resync);
      if (!Number.isFinite(resync) || resync < 1) {
        throw new BerthError('ERR_INVALID_ARGUMENT', `up --resync ${JSON.stringify(o.resync)}: must be a number of seconds, at least 1`);
      }
      const { runUp } = await import('./daemon/up.js');
      const rt = await openRuntime(cfg);
      const ac = new AbortController();
      const stop = (): void => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      let first = true;
      let lastInvalid = '';
      try {
        process.stdout.write(`berth: watching ${path.resolve(dir)} (Ctrl-C stops watching; containers keep running)\n`);
        await runUp({
          dir,
          rt,
          log: cfg.log,
          resyncMs: resync * 1000,
          signal: ac.signal,
          onPass: ({ steps, failed, lines, errors, invalid }) => {
            for (const l of lines) process.stdout.write(`${l}\n`);
            for (const e of errors) process.stdout.write(`! ${e}\n`);
            // Invalid files are shown when the set changes, not on every resync.
            const invalidNow = invalid.join('\n');
            if (invalidNow !== lastInvalid) {
              for (const p of invalid) process.stdout.write(`! invalid manifest (last good objects kept): ${p}\n`);
              if (invalid.length === 0 && lastInvalid !== '') process.stdout.write('berth: all manifests valid again\n');
              lastInvalid = invalidNow;
            }
            if (invalid.length > 0 && errors.length === 0 && (steps > 0 || first)) {
              process.stdout.write(`berth: converged to the last good objects; ${invalid.length} manifest problem(s) to fix\n`);
            } else if (errors.length > 0) {
              process.stdout.write(`berth: not converged (${failed} of ${steps} step(s) failed); retrying on the next change or resync\n`);
            } else if (steps > 0 || first) {
              process.stdout.write(`berth: converged (${steps} step(s)); next: berth ps, berth logs POD\n`);
            }
            first = false;
          },
        });
        process.stdout.write('berth: stopped watching; containers keep running (berth ps)\n');
      } finally {
        await rt.close();
      }
    });

  program
    .command('ps')
    .alias('pods')
    .description('list pods and containers with state, PID, image digest and age')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (o: { output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withRuntime(cfg, async (rt) => {
        // No lock: a read-only observation must not wait behind a long pull of `berth up`.
        const pods = await rt.observe({ repair: false });
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(pods.map((p) => ({ key: p.key, source: p.source, containers: p.containers.map(({ live: _l, ...c }) => c) })), null, 2)}\n`);
          return;
        }
        const rows = [['POD', 'CONTAINER', 'STATE', 'PID', 'IMAGE', 'DIGEST', 'AGE']];
        const now = Date.now();
        for (const p of pods) {
          for (const c of p.containers) {
            const state = c.state === 'exited' ? `exited(${c.exitCode ?? '?'})` : c.state;
            rows.push([p.key, c.name, state, c.state === 'running' ? String(c.pid ?? '-') : '-', c.imageRef, c.imageDigest.slice(7, 19), humanAge(now - c.createdAt)]);
          }
          if (p.containers.length === 0) rows.push([p.key, '-', 'pending', '-', '-', '-', humanAge(now - p.createdAt)]);
        }
        process.stdout.write(table(rows));
      });
    });

  program
    .command('logs')
    .description('print a container\'s output from its log (--raw: the CRI log lines with time, stream and tag)')
    .argument('<target>', 'POD or POD/CONTAINER (namespace default unless -n)')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('--tail <n>', 'only the last N lines')
    .option('--raw', 'print CRI log lines unchanged')
    .option('-f, --follow', 'keep printing new output until the container stops or Ctrl-C')
    .action(async (target: string, o: { namespace: string; tail?: string; raw?: boolean; follow?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      const parts = target.split('/');
      if (parts.length > 2 || parts.some((p) => p === '')) throw new BerthError('ERR_INVALID_ARGUMENT', `logs ${target}: expected POD or POD/CONTAINER`);
      const [podName, ctrName] = parts;
      let tail: number | undefined;
      if (o.tail !== undefined) {
        tail = Number(o.tail);
        if (!Number.isSafeInteger(tail) || tail < 0) throw new BerthError('ERR_INVALID_ARGUMENT', `logs --tail ${JSON.stringify(o.tail)}: must be a whole number, 0 or more`);
      }
      const key = `${o.namespace}/${podName ?? ''}`;
      await withRuntime(cfg, async (rt) => {
        const cs = rt.state.listContainers(key).filter((c) => ctrName === undefined || c.name === ctrName);
        if (cs.length === 0) throw new BerthError('ERR_NOT_FOUND', `logs ${target}: no such pod or container in namespace ${o.namespace}`);
        const names = new Set(cs.map((c) => c.name));
        if (ctrName === undefined && names.size > 1) {
          throw new BerthError('ERR_INVALID_ARGUMENT', `logs ${target}: pod has several containers, name one: ${[...names].join(', ')}`);
        }
        const c = cs[cs.length - 1];
        if (c === undefined) return;
        const { criDecoder } = await import('./runtime/index.js');
        const file = rt.logPath(c.podKey, c.name, c.id);
        const { promises: fsp } = await import('node:fs');
        const text = await fsp.readFile(file, 'utf8').catch(() => '');
        let offset = Buffer.byteLength(text);
        const dec = criDecoder();
        let lines = o.raw === true ? text.split('\n').filter((l) => l !== '') : dec.push(text);
        // Without -f an unfinished last line is shown too; with -f it may still be completed.
        if (o.follow !== true && o.raw !== true) lines.push(...dec.flush());
        if (tail !== undefined) lines = tail === 0 ? [] : lines.slice(-tail);
        process.stdout.write(lines.length > 0 ? `${lines.join('\n')}\n` : '');
        if (o.follow !== true) return;
        // Follow until the container stops (like kubectl logs -f) or Ctrl-C.
        const ac = new AbortController();
        process.once('SIGINT', () => ac.abort());
        const { sleep } = await import('./lib/time.js');
        for (;;) {
          const fh = await fsp.open(file, 'r').catch(() => undefined);
          if (fh !== undefined) {
            const { size } = await fh.stat();
            if (size > offset) {
              const buf = Buffer.alloc(size - offset);
              await fh.read(buf, 0, buf.length, offset);
              offset = size;
              const chunk = buf.toString('utf8');
              const out = o.raw === true ? chunk.split('\n').filter((l) => l !== '') : dec.push(chunk);
              if (out.length > 0) process.stdout.write(`${out.join('\n')}\n`);
            }
            await fh.close();
          }
          if (ac.signal.aborted || !(await rt.isRunning(c.id))) break;
          await sleep(250, ac.signal).catch(() => undefined);
        }
        if (o.raw !== true) for (const m of dec.flush()) process.stdout.write(`${m}\n`);
      });
    });

  const images = program.command('images').description('manage images');
  images
    .command('ls')
    .description('list local images')
    .action(async (_o: unknown, cmd: Command) => {
      const cfg = config(cmd);
      await withRuntime(cfg, async (rt) => {
        const rows = [['REF', 'DIGEST']];
        for (const i of rt.images.list()) rows.push([i.ref, i.digest]);
        process.stdout.write(table(rows));
      });
    });
  images
    .command('pull')
    .description('pull an image into the content store and unpack it')
    .argument('<ref>', 'image reference')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const cfg = config(cmd);
      await withRuntime(cfg, async (rt) => {
        const img = await rt.withLock('pull', () => rt.pullImage(ref));
        process.stdout.write(`${img.ref} ${img.digest}\n`);
      });
    });

  program
    .command('check')
    .description('check host prerequisites (root, runc, conmon, overlayfs, cgroups) and the state (fsck); exit 1 on a failure')
    .action(async (_o: unknown, cmd: Command) => {
      const cfg = config(cmd);
      const { checkHost } = await import('./runtime/index.js');
      const findings = await checkHost();
      if (!findings.some((f) => f.level === 'fail')) {
        await withRuntime(cfg, async (rt) => {
          findings.push(...(await rt.withLock('check', () => rt.fsck())));
        });
      }
      for (const f of findings) process.stdout.write(`${f.level.padEnd(4)}  ${f.what.padEnd(10)}  ${f.detail}\n`);
      if (findings.some((f) => f.level === 'fail')) process.exitCode = EXIT_FAILURE;
    });

  program
    .command('version')
    .description('print berth, runc and conmon versions')
    .action(async () => {
      const { execFileSync } = await import('node:child_process');
      const first = (cmd: string): string => {
        try {
          return execFileSync(cmd, ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? '';
        } catch {
          return 'not found';
        }
      };
      process.stdout.write(`berth ${version()}\nnode ${process.version}\n${first('runc')}\n${first('conmon')}\n`);
    });

  return program;
}

async function main(): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander printed help/version or the usage error already.
      process.exitCode = code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help' ? EXIT_OK : EXIT_INVALID;
      return;
    }
    process.stderr.write(`error: ${messageOf(err)}\n`);
    // kubectl diff: any error is exit 2, since 1 means "changes pending".
    process.exitCode = activeCommand === 'diff' ? EXIT_INVALID : exitCodeFor(err);
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1])) {
  await main();
}
