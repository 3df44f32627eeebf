#!/usr/bin/env node
import type { Command } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BerthError, codeOf, errorLine, exitCodeOf, isErrorCode, messageOf, splitCoded } from './lib/errors.js';
import { answerFastPull } from './lib/fast-pull.js';
import { answerFastRead } from './lib/fast-read.js';
import { answerFastRun, randomRunName, runDocument } from './lib/fast-run.js';
import type { Logger } from './lib/log.js';
import { setHostPathAllowList, setPrivilegedAllowed } from './lib/policy.js';
import { podQuery as podQueryOf, psOutput, statusOutput, table, type ReadOutput, type TextOutput } from './lib/pod-views.js';
import { parseDuration } from './lib/time.js';
import type { ManifestProblem } from './reconciler/problem.js';
import type { Runtime } from './runtime/index.js';

/**
 * The composition root: parses flags into one Config, builds the runtime, prints, and
 * maps errors to exit codes: 0 ok · 1 runtime failure · 2 invalid input.
 * `diff`: 0 no changes · 1 changes pending · 2 error (like `kubectl diff`).
 */

interface GlobalOpts {
  root: string;
  state: string;
  podSubnet: string;
  bridge: string;
  allowHostPath: string[];
  allowPrivileged?: boolean;
  registryConfig?: string;
  registryHostsDir?: string;
  containerLogMaxSize?: number;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

interface Config {
  root: string;
  state: string;
  network: { subnet: string; bridge: string };
  allowHostPath: string[];
  allowPrivileged: boolean;
  /** --registry-config: a Docker config.json that must exist; absent: the default one, if any. */
  registryConfig?: string;
  /** --registry-hosts-dir: a certs.d directory that must exist; absent: /etc/berth/certs.d, if it exists. */
  registryHostsDir?: string;
  /** --container-log-max-size in bytes. */
  containerLogMaxBytes?: number;
  log: Logger;
}

/** containerd's layout under berth's name: `<dir>/<host[:port]>/hosts.toml` (runtime/registry/hosts.ts). */
const DEFAULT_REGISTRY_HOSTS_DIR = '/etc/berth/certs.d';

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

/**
 * Loaded by the preAction hook, not imported: the ps/status fast path (lib/fast-read) runs
 * before it and never needs them (each module in the static graph costs start-up time).
 */
let createLogger: typeof import('./lib/log.js').createLogger | undefined;
let formatProblem: typeof import('./reconciler/problem.js').formatProblem | undefined;

function config(cmd: Command): Config {
  const g = cmd.optsWithGlobals() as GlobalOpts;
  const allowHostPath = g.allowHostPath.map((p) => path.resolve(p));
  setHostPathAllowList(allowHostPath);
  setPrivilegedAllowed(g.allowPrivileged === true);
  let log: Logger | undefined;
  // Made when first used: commands answered by the daemon never log.
  return {
    root: path.resolve(g.root),
    state: path.resolve(g.state),
    network: { subnet: g.podSubnet, bridge: g.bridge },
    allowHostPath,
    allowPrivileged: g.allowPrivileged === true,
    ...(g.registryConfig !== undefined ? { registryConfig: path.resolve(g.registryConfig) } : {}),
    ...(g.registryHostsDir !== undefined ? { registryHostsDir: path.resolve(g.registryHostsDir) } : {}),
    ...(g.containerLogMaxSize !== undefined ? { containerLogMaxBytes: g.containerLogMaxSize } : {}),
    get log(): Logger {
      if (createLogger === undefined) throw new BerthError('ERR_INTERNAL', 'config: the logger is loaded by the preAction hook, which did not run');
      return (log ??= createLogger(g.logLevel));
    },
  };
}

async function openRuntime(cfg: Config): Promise<Runtime> {
  const { Runtime, defaultDockerConfigPath } = await import('./runtime/index.js');
  const registryConfig =
    cfg.registryConfig !== undefined ? { path: cfg.registryConfig, required: true } : { path: defaultDockerConfigPath(process.env, os.homedir()), required: false };
  const registryHostsDir =
    cfg.registryHostsDir !== undefined ? { path: cfg.registryHostsDir, required: true } : { path: DEFAULT_REGISTRY_HOSTS_DIR, required: false };
  return Runtime.open({
    root: cfg.root,
    state: cfg.state,
    log: cfg.log,
    network: cfg.network,
    registryConfig,
    registryHostsDir,
    ...(cfg.containerLogMaxBytes !== undefined ? { containerLogMaxBytes: cfg.containerLogMaxBytes } : {}),
  });
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
  return exitCodeOf(codeOf(err));
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

/**
 * Prints manifest problems as apply, diff and validate all do: `error ERR_INVALID_MANIFEST:
 * file:line:col: field: message`, one per line, in the order loadManifests sorted them (file, line, column).
 */
function printProblems(problems: readonly ManifestProblem[]): void {
  if (formatProblem === undefined) throw new BerthError('ERR_INTERNAL', 'print problems: the preAction hook did not run');
  for (const p of problems) process.stderr.write(errorLine('ERR_INVALID_MANIFEST', formatProblem(p)));
}

/** A step's failure as it crossed the controller (or the daemon socket): its code kept. */
function stepErrorLine(e: { code: string; message: string }): string {
  return errorLine(isErrorCode(e.code) ? e.code : 'ERR_INTERNAL', e.message);
}

/** Apply/delete refused before anything ran: a pod another owner (a watched directory) holds. */
function printRefused(refused: readonly string[]): void {
  for (const r of refused) process.stderr.write(errorLine('ERR_CONFLICT', r));
}

/**
 * A pod that cannot start until something outside berth changes (an absent image with
 * imagePullPolicy Never, a missing ConfigMap key, a failed init container): ERR_PRECONDITION,
 * unless its reason is a stored failure, which keeps the code it was recorded with.
 */
function blockedLine(b: { key: string; reason: string }): string {
  const r = splitCoded(b.reason, 'ERR_PRECONDITION');
  return errorLine(r.code, `${b.key}: ${r.message}`);
}

/** What -f names, for the service: an absolute path, or stdin's text (read once, with the limit). */
/**
 * `-f` given once: kubectl takes several, berth reads one file or directory per command, so a
 * second `-f` is refused rather than replacing the first (regression repeated-f-keeps-last).
 */
function oneFilename(v: string, prev: string | undefined): string {
  if (prev !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', `-f ${prev} -f ${v}: give one -f (a file, a directory or -); to use several files, put them in one directory`);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) throw new BerthError('ERR_INVALID_ARGUMENT', `-f ${v}: berth reads local files and directories only; download it first`);
  return v;
}

async function manifestRef(filename: string): Promise<import('./daemon/service.js').ManifestRef> {
  return filename === '-' ? { path: '-', stdinText: await readStdin(), display: '-' } : { path: path.resolve(filename), display: filename };
}

/** Loads manifests in-process for apply/diff; prints every problem and fails with exit 2. */
/** The pods and the ConfigMaps/Secrets of a manifest path, read in this process (exit 2 on a problem). */
async function loadOrFail(
  file: string,
  input?: import('./daemon/service.js').ManifestRef,
): Promise<{ pods: import('./reconciler/desired.js').DesiredPod[]; configs: import('./reconciler/desired.js').DesiredConfig[] }> {
  const { loadManifests } = await import('./reconciler/manifest.js');
  const res = await loadManifests(input?.stdinText !== undefined ? { path: '-', stdinText: input.stdinText } : await manifestInput(file));
  failOnInvalid(res.problems.length > 0 ? { problems: res.problems, badFiles: res.badFiles.length } : undefined);
  return { pods: res.pods, configs: res.configs };
}

/** Manifest problems, from this process or the daemon, printed the same way: exit 2, nothing changed. */
function failOnInvalid(invalid: import('./daemon/service.js').InvalidManifests | undefined): void {
  if (invalid === undefined || invalid.problems.length === 0) return;
  printProblems(invalid.problems);
  throw new BerthError('ERR_INVALID_MANIFEST', `${invalid.problems.length} problem(s) in ${invalid.badFiles} file(s); nothing was changed`);
}

/**
 * Where a command runs: in the daemon (over its socket) when `berth up` runs, else in this
 * process — under the state lock for commands that change state. Both run the same service
 * methods, so output and exit codes are the same either way.
 */
interface Backend {
  readonly remote: boolean;
  /** `onProgress`: each step as it starts and ends (apply, delete), streamed from the daemon. */
  call<T>(method: string, body?: unknown, onProgress?: (e: ProgressEvent) => void): Promise<T>;
  follow?(query: Record<string, string>, onEvent: (e: unknown) => void, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

const LOCK_WAIT_MS = 60_000;

async function openBackend(cfg: Config, mode: { write: boolean; what: string }): Promise<Backend> {
  const { connectDaemon } = await import('./daemon/client.js');
  const socket = path.join(cfg.state, 'berth.sock');
  const remote = (c: import('./daemon/client.js').DaemonClient): Backend => ({
    remote: true,
    call: (m, b, p) => (p === undefined ? c.call(m, b) : c.callStream(m, b, (e) => p(e as ProgressEvent))),
    follow: (q, fn, sig) => c.follow(q, fn, sig),
    close: async () => undefined,
  });
  const first = await connectDaemon(socket);
  if (first !== undefined) return remote(first);
  // In-process, opened at the first call: a command can still fail on its input (a bad
  // manifest, exit 2) before it needs root, the state or the lock.
  type Local = { call: Backend['call']; close: () => Promise<void> };
  let local: Promise<Local> | undefined;
  const open = async (): Promise<Local> => {
    const rt = await openRuntime(cfg);
    try {
      if (mode.write) {
        // The daemon may be starting (lock held, socket not yet served): keep asking both.
        const until = Date.now() + LOCK_WAIT_MS;
        let told = false;
        while (!(await rt.tryLock(mode.what))) {
          const c = await connectDaemon(socket, 500);
          if (c !== undefined) {
            await rt.close();
            return remote(c);
          }
          if (Date.now() > until) throw new BerthError('ERR_LOCKED', `${mode.what}: the state lock is held by another berth and no daemon answers on ${socket}`);
          if (!told) {
            told = true;
            cfg.log.warn({ what: mode.what }, 'waiting for the state lock');
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const { Controller } = await import('./reconciler/controller.js');
      const { BerthService, dispatch } = await import('./daemon/service.js');
      const controller = new Controller({ rt, log: cfg.log, retry: false });
      const service = new BerthService({ rt, log: cfg.log, controller, daemon: false });
      let swept = false;
      return {
        call: async <T,>(method: string, body?: unknown, onProgress?: (e: ProgressEvent) => void): Promise<T> => {
          if (mode.write && !swept && !(method === 'apply' && (body as { dryRun?: boolean } | undefined)?.dryRun === true)) {
            swept = true;
            await rt.sweep();
            controller.watchExits();
          }
          return (await dispatch(service, method, body, onProgress)) as T;
        },
        close: async () => {
          // A run started by a container exit during the command (the old container of a replace)
          // finishes before the database closes under it (regression run-after-close).
          await controller.stop(5_000);
          await rt.close();
        },
      };
    } catch (err) {
      await rt.close();
      throw err;
    }
  };
  return {
    remote: false,
    call: async <T,>(method: string, body?: unknown, onProgress?: (e: ProgressEvent) => void): Promise<T> => {
      local ??= open();
      return (await local).call<T>(method, body, onProgress);
    },
    close: async () => {
      if (local !== undefined) await (await local.catch(() => undefined))?.close();
    },
  };
}

async function withBackend(cfg: Config, mode: { write: boolean; what: string }, fn: (b: Backend) => Promise<void>): Promise<void> {
  const b = await openBackend(cfg, mode);
  try {
    await fn(b);
  } finally {
    await b.close();
  }
}

type StepResult = import('./reconciler/controller.js').StepResult;

type ProgressEvent = import('./reconciler/controller.js').ProgressEvent;

/** Steps that can take a while (a pull, a stop waiting out its grace period) also print when they start. */
const SLOW_STEPS = new Set(['pull', 'replace', 'remove', 'kill', 'delete-pod']);

/**
 * Runs `fn` with live progress of apply/delete/images pull, the same for the daemon and the
 * in-process path (lib/progress): a slow step prints a line when it starts, every step one when
 * it ends, with its duration; a grace period waited out and a pull's layers show on a TTY in
 * place, else as plain lines. Failures are printed once, at the end, on stderr, after the
 * progress is cleared (printResults). `quiet`: no progress at all (nothing is streamed).
 */
async function withProgress<T>(quiet: boolean, fn: (onProgress?: (e: ProgressEvent) => void) => Promise<T>): Promise<T> {
  if (quiet) return fn(undefined);
  const { renderStep } = await import('./reconciler/render.js');
  const { ProgressRenderer } = await import('./lib/progress.js');
  const r = new ProgressRenderer<ProgressEvent['step']>({ out: process.stdout, describe: renderStep, announceStart: (s) => SLOW_STEPS.has(s.kind) });
  try {
    return await fn((e) => r.handle(e));
  } finally {
    r.close();
  }
}

type GcReportView = import('./runtime/index.js').GcReport;

/** `gc` and `images prune`: one line per thing removed (or, dry run, that would be), then the bytes. */
async function printGc(r: GcReportView): Promise<void> {
  const { formatBytes } = await import('./lib/progress.js');
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const x of r.removed) process.stdout.write(`${verb} ${x.kind} ${x.id}${x.kind === 'manifest' || x.kind === 'lease' ? '' : ` (${formatBytes(x.bytes)})`}\n`);
  process.stdout.write(`${r.dryRun ? 'would reclaim' : 'reclaimed'} ${formatBytes(r.bytes)} (${r.removed.length} object${r.removed.length === 1 ? '' : 's'})\n`);
}

/** Prints apply/delete failures (the steps themselves were printed live); returns how many. */
function printResults(steps: readonly StepResult[]): number {
  let failed = 0;
  for (const s of steps) {
    if (s.error === undefined) continue;
    failed++;
    process.stderr.write(stepErrorLine(s.error));
  }
  return failed;
}

function parseTimeout(flag: string, v: string | undefined, def: number): number {
  if (v === undefined) return def;
  const ms = parseDuration(v);
  if (ms === undefined) throw new BerthError('ERR_INVALID_ARGUMENT', `${flag} ${JSON.stringify(v)}: expected a duration such as 30s, 2m, 500ms`);
  return ms;
}

/** A `ps`/`status` query; a selector that does not parse is exit 2 before anything is opened. */
async function podQuery(what: string, names: readonly string[], o: { namespace: string; selector?: string; allNamespaces?: boolean }, cmd?: Command): Promise<import('./daemon/service.js').PodQuery> {
  const q = podQueryOf(what, names, { ...o, namespaceGiven: cmd?.getOptionValueSource('namespace') === 'cli' });
  if (o.selector !== undefined) (await import('./lib/selector.js')).parseSelector(o.selector);
  return q;
}

/** Prints what lib/pod-views rendered for ps/status (yaml here: it needs the YAML library). */
async function printRead(out: ReadOutput & { data?: unknown }): Promise<void> {
  process.stdout.write(out.data !== undefined ? (await import('yaml')).stringify(out.data) : out.stdout);
  if (out.stderr !== '') process.stderr.write(out.stderr);
  if (out.exitCode !== undefined) process.exitCode = out.exitCode;
}

/** --container-log-max-size: bytes, or a binary-suffixed size (Ki, Mi, Gi); at least 4 KiB so a rotation holds whole lines. */
function parseLogSize(v: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(v);
  const n = m === null ? NaN : Number(m[1]) * ({ Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[m[2] ?? ''] ?? 1);
  if (!Number.isSafeInteger(n) || n < 4096) throw new BerthError('ERR_INVALID_ARGUMENT', `--container-log-max-size ${v}: expected a size of at least 4096 bytes (e.g. 10Mi)`);
  return n;
}

export function buildProgram(): Command {
  // Loaded here, not imported: `ps`/`status` answered by the daemon (lib/fast-read) never need it.
  const { createRequire } = process.getBuiltinModule('node:module');
  const { Argument, Command, Option } = createRequire(import.meta.url)('commander') as typeof import('commander');
  const program = new Command();
  program
    .name('berth')
    .description('Declarative single-host container reconciler: YAML manifests in, runc containers running.')
    .version(version(), '--version')
    .option('--root <dir>', 'persistent state: database, content, snapshots, logs', '/var/lib/berth')
    .option('--state <dir>', 'runtime state: runc root, conmon files, lock, daemon socket', '/run/berth')
    .option('--pod-subnet <cidr>', 'IPv4 subnet pod addresses come from (pods without hostNetwork)', '10.89.0.0/16')
    .option('--bridge <name>', "the Linux bridge berth's pods attach to", 'berth0')
    .option('--registry-config <path>', 'Docker config.json with registry credentials (default $DOCKER_CONFIG/config.json, else ~/.docker/config.json)')
    .option('--registry-hosts-dir <dir>', `per-registry mirrors, CAs and client certificates: <dir>/<host[:port]>/hosts.toml as containerd's certs.d (default ${DEFAULT_REGISTRY_HOSTS_DIR})`)
    .option('--container-log-max-size <size>', "rotate a container's log past this size (bytes, or with Ki/Mi/Gi), keeping one previous file, as the kubelet's containerLogMaxSize; berth up rotates (default 10Mi)", parseLogSize)
    .option('--allow-privileged', 'allow containers with securityContext.privileged: true')
    .option('--allow-host-path <prefix>', 'a host path prefix hostPath volumes may use (repeatable; none by default)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .addOption(new Option('--log-level <level>', 'log level for the JSON logs on stderr').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('warn'))
    .showHelpAfterError()
    // Before any .command(): subcommands copy this setting when they are created, so a usage
    // error anywhere exits 2 (invalid input) instead of commander's 1 ("changes pending" for diff).
    .exitOverride()
    .configureHelp({ sortSubcommands: false })
    .hook('preAction', async (_t, action) => {
      createLogger ??= (await import('./lib/log.js')).createLogger;
      formatProblem ??= (await import('./reconciler/problem.js')).formatProblem;
      activeCommand = action.name();
    });

  program
    .command('apply')
    .description('make this machine match the manifests in a file or directory (through berth up when it runs)')
    .requiredOption('-f, --filename <path>', 'manifest file or directory (recursive), or - for stdin', oneFilename)
    .option('--prune', 'delete pods previously applied from this path that it no longer declares')
    .option('--dry-run', 'print the plan and change nothing')
    .option('--force', 'take over pods that a directory watched by berth up owns')
    .option('--wait', 'return when every applied pod is Ready (exit 1 naming the ones that are not by --timeout)')
    .option('--timeout <duration>', 'how long --wait waits (default 60s)')
    .option('-q, --quiet', 'no progress lines (step starts and ends, countdowns, layers); errors and the exit code as ever')
    .action(async (o: { filename: string; prune?: boolean; dryRun?: boolean; force?: boolean; wait?: boolean; timeout?: string; quiet?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      const timeoutMs = parseTimeout('apply --timeout', o.timeout, 60_000);
      // Every stdin apply (and every `berth run`) shares the source `-`: pruning against it would
      // delete pods this input never named (regression prune-stdin-deletes-others).
      if (o.prune === true && o.filename === '-') throw new BerthError('ERR_INVALID_ARGUMENT', 'apply --prune -f -: stdin names no set of pods to prune against; give the file or directory');
      const input = await manifestRef(o.filename);
      const req = {
        input,
        ...(o.prune === true ? { prune: true } : {}),
        ...(o.force === true ? { force: true } : {}),
        ...(o.dryRun === true ? { dryRun: true } : {}),
        ...(o.wait === true ? { wait: true, timeoutMs } : {}),
      };
      await withBackend(cfg, { write: o.dryRun !== true, what: 'apply' }, async (b) => {
        // In-process the manifests are read here, before root, state or lock are needed;
        // the daemon reads them itself (warm parse cache, no validator loaded here).
        const body = b.remote ? req : { ...req, ...(await loadOrFail(o.filename, input)) };
        const res = await withProgress(o.dryRun === true || o.quiet === true, (p) => b.call<import('./daemon/service.js').ApplyResponse>('apply', body, p));
        failOnInvalid(res.invalid);
        printRefused(res.refused);
        if (res.refused.length > 0) {
          process.exitCode = EXIT_FAILURE;
          return;
        }
        const { renderConfigChanges } = await import('./reconciler/configs.js');
        const configLines = renderConfigChanges(res.configs ?? []);
        if (res.plan !== undefined) {
          const { renderPlan } = await import('./reconciler/render.js');
          process.stdout.write(configLines + renderPlan(res.plan) || 'no changes\n');
          return;
        }
        process.stdout.write(configLines);
        const failed = printResults(res.steps);
        if (res.steps.length === 0 && configLines === '') process.stdout.write('no changes\n');
        for (const bl of res.blocked) process.stderr.write(blockedLine(bl));
        if (failed > 0 || res.blocked.length > 0) process.exitCode = EXIT_FAILURE;
        if (res.notReady !== undefined) {
          for (const n of res.notReady) process.stderr.write(errorLine('ERR_TIMEOUT', `pod ${n.key} not ready after ${o.timeout ?? '60s'}: ${n.reason}${n.message !== '' ? `: ${n.message}` : ''}`));
          if (res.notReady.length > 0) process.exitCode = EXIT_FAILURE;
          else if (failed === 0) process.stdout.write(`ready: ${res.keys.filter((k) => res.declared?.includes(k) === true).join(', ')}\n`);
        }
      });
    });

  program
    .command('diff')
    .description('print what apply would do; exit 0 no changes, 1 changes pending, 2 error')
    .requiredOption('-f, --filename <path>', 'manifest file or directory (recursive), or - for stdin', oneFilename)
    .option('--prune', 'include deletions that apply --prune would make')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { filename: string; prune?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      if (o.prune === true && o.filename === '-') throw new BerthError('ERR_INVALID_ARGUMENT', 'diff --prune -f -: stdin names no set of pods to prune against; give the file or directory');
      const input = await manifestRef(o.filename);
      const req = { input, ...(o.prune === true ? { prune: true } : {}) };
      await withBackend(cfg, { write: false, what: 'diff' }, async (b) => {
        const res = await b.call<import('./daemon/service.js').DiffResponse>('diff', b.remote ? req : { ...req, ...(await loadOrFail(o.filename, input)) });
        failOnInvalid(res.invalid);
        const plan = res.plan;
        if (plan === undefined) throw new BerthError('ERR_INTERNAL', 'diff: no plan in the answer');
        const { renderPlan, planToJson } = await import('./reconciler/render.js');
        const { renderConfigChanges } = await import('./reconciler/configs.js');
        const configs = res.configs ?? [];
        process.stdout.write(o.output === 'json' ? `${JSON.stringify({ ...(planToJson(plan) as Record<string, unknown>), configs }, null, 2)}\n` : renderConfigChanges(configs) + renderPlan(plan));
        process.exitCode = plan.steps.length > 0 || plan.blocked.length > 0 || configs.length > 0 ? 1 : 0;
      });
    });

  program
    .command('validate')
    .description('check manifests and list every problem with file:line:col, field and what is allowed; exit 0 valid, 2 not (needs no root, state or registry)')
    .requiredOption('-f, --filename <path>', 'manifest file or directory (recursive), or - for stdin', oneFilename)
    .addOption(new Option('-o, --output <format>', 'output format (json: schemas/validate.json)').choices(['text', 'json']).default('text'))
    .action(async (o: { filename: string; output: string }, cmd: Command) => {
      // Manifests only: no runtime, so --root and --state are neither read nor created.
      const g = cmd.optsWithGlobals() as GlobalOpts;
      setHostPathAllowList(g.allowHostPath.map((p) => path.resolve(p)));
      setPrivilegedAllowed(g.allowPrivileged === true);
      const { loadManifests } = await import('./reconciler/manifest.js');
      let res: import('./reconciler/manifest.js').LoadResult;
      let code: import('./lib/errors.js').ErrorCode = 'ERR_INVALID_MANIFEST';
      try {
        res = await loadManifests(await manifestInput(o.filename));
      } catch (err) {
        // A path that cannot be read is one more problem for a reader of the JSON.
        if (o.output !== 'json' || exitCodeFor(err) !== EXIT_INVALID) throw err;
        code = codeOf(err);
        res = { pods: [], images: [], configs: [], files: [], badFiles: [sourceOf(o.filename)], problems: [{ file: sourceOf(o.filename), line: 1, col: 1, field: '', message: messageOf(err) }] };
      }
      const valid = res.problems.length === 0;
      process.exitCode = valid ? EXIT_OK : EXIT_INVALID;
      if (o.output === 'json') {
        // Each problem carries the code its error line would (scripts key on it either way).
        process.stdout.write(`${JSON.stringify({ valid, problems: res.problems.map((p) => ({ code, ...p })) }, null, 2)}\n`);
        return;
      }
      if (!valid) {
        printProblems(res.problems);
        process.stderr.write(errorLine('ERR_INVALID_MANIFEST', `${res.problems.length} problem(s) in ${res.badFiles.length} file(s)`));
        return;
      }
      const objects = res.pods.length + res.images.length;
      process.stdout.write(`valid: ${objects} object${objects === 1 ? '' : 's'} in ${res.files.length} file${res.files.length === 1 ? '' : 's'}\n`);
    });

  program
    .command('delete')
    .description('delete what a file or directory declares (-f: its pods, ConfigMaps and Secrets), or one object by name (delete pod|configmap|secret NAME)')
    .argument('[kind]', 'pod, configmap or secret (with NAME)')
    .argument('[name]', 'object name')
    .option('-f, --filename <path>', 'manifest file or directory, or - for stdin; only kind and name are read, so a file that no longer validates still works', oneFilename)
    .option('-n, --namespace <ns>', 'namespace for delete pod NAME', 'default')
    .option('--force', 'delete pods that a directory watched by berth up owns (it recreates them while its files declare them)')
    .option('-q, --quiet', 'no progress lines (step starts and ends, grace-period countdowns); errors and the exit code as ever')
    .option('--ignore-not-found', 'a pod that does not exist is not an error (exit 0), as kubectl')
    .action(async (kind: string | undefined, name: string | undefined, o: { filename?: string; namespace: string; force?: boolean; quiet?: boolean; ignoreNotFound?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      let keys: string[];
      let configKeys: string[] = [];
      let problems = 0;
      if (o.filename !== undefined) {
        if (kind !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', 'delete: give either -f PATH or KIND NAME, not both');
        const { declaredPodKeys, formatProblem } = await import('./reconciler/manifest.js');
        const res = await declaredPodKeys(await manifestInput(o.filename));
        for (const p of res.problems) process.stderr.write(errorLine('ERR_INVALID_MANIFEST', formatProblem(p)));
        problems = res.problems.length;
        keys = res.keys.map((k) => k.key);
        configKeys = res.configs.map((k) => k.key);
      } else {
        const k = kind?.toLowerCase() ?? '';
        const configKind = ['configmap', 'configmaps', 'cm'].includes(k) ? 'configmap' : ['secret', 'secrets'].includes(k) ? 'secret' : undefined;
        if (kind === undefined || name === undefined || (configKind === undefined && !['pod', 'pods', 'po'].includes(k))) {
          throw new BerthError('ERR_INVALID_ARGUMENT', 'delete: give -f PATH, or pod|configmap|secret NAME');
        }
        keys = configKind === undefined ? [`${o.namespace}/${name}`] : [];
        if (configKind !== undefined) configKeys = [`${configKind}/${o.namespace}/${name}`];
      }
      await withBackend(cfg, { write: true, what: 'delete' }, async (b) => {
        const req = { keys, ...(configKeys.length > 0 ? { configs: configKeys } : {}), ...(o.filename !== undefined ? { source: sourceOf(o.filename) } : {}), ...(o.force === true ? { force: true } : {}) };
        const res = await withProgress(o.quiet === true, (p) => b.call<import('./daemon/service.js').ApplyResponse & { missing: string[]; configs?: { key: string }[] }>('delete', req, p));
        printRefused(res.refused);
        if (res.refused.length > 0) {
          process.exitCode = EXIT_FAILURE;
          return;
        }
        const failed = printResults(res.steps);
        const deletedConfigs = res.configs ?? [];
        for (const c of deletedConfigs) {
          const [ck, ns, n] = c.key.split('/');
          process.stdout.write(`- ${ck ?? ''} ${ns ?? ''}/${n ?? ''}: deleted\n`);
        }
        // As kubectl: each object the file names that does not exist is an error (exit 1) unless
        // --ignore-not-found (regression delete-missing-silent).
        const missing = o.ignoreNotFound === true ? [] : (res.missing ?? []);
        const what = (k: string): string => (/^(configmap|secret)\//.test(k) ? k.replace('/', ' ') : `pod ${k}`);
        if (o.filename === undefined && res.steps.length === 0 && deletedConfigs.length === 0) {
          if (o.ignoreNotFound === true) return;
          throw new BerthError('ERR_NOT_FOUND', `delete ${what(keys[0] ?? configKeys[0] ?? '')}: not found`);
        }
        for (const k of missing) process.stderr.write(errorLine('ERR_NOT_FOUND', `delete ${what(k)}: not found`));
        if (res.steps.length === 0 && deletedConfigs.length === 0 && missing.length === 0) process.stdout.write('nothing to delete\n');
        if (failed > 0 || missing.length > 0) process.exitCode = EXIT_FAILURE;
        else if (problems > 0) process.exitCode = EXIT_INVALID;
      });
    });

  program
    .command('up')
    .description('run the daemon: watch manifest directories and keep this machine converged (Ctrl-C leaves containers running)')
    .argument('<dir...>', 'manifest directories')
    .option('--resync <seconds>', 'safety-net resync period', '30')
    .option('--metrics-addr <host:port>', 'serve Prometheus metrics on a loopback address, e.g. 127.0.0.1:9464')
    .option('--image-gc-high-threshold <percent>', "disk use of the root's file system at which unused images are removed, least recently used first (checked after pulls and at each resync; 100 turns it off)", '85')
    .option('--image-gc-low-threshold <percent>', 'disk use image GC brings it below', '80')
    .option('--minimum-image-ttl-duration <duration>', 'image GC keeps an unused image recorded less than this long ago, e.g. one pulled for a pod that has not started (0s: none)', '2m')
    .action(async (dirs: string[], o: { resync: string; metricsAddr?: string; imageGcHighThreshold: string; imageGcLowThreshold: string; minimumImageTtlDuration: string }, cmd: Command) => {
      // First, before stdio or anything else is touched: node started with the daemon's memory
      // flags replaces this process (same pid) when they are missing (daemon/reexec.ts).
      const { reexecWithDaemonFlags, forgetReexecEnv, idleCollector } = await import('./daemon/reexec.js');
      const reexec = reexecWithDaemonFlags(process);
      forgetReexecEnv(process.env);
      const cfg = config(cmd);
      if (reexec.failed !== undefined) cfg.log.warn(reexec.failed);
      const { statSync } = await import('node:fs');
      for (const dir of dirs) {
        if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new BerthError('ERR_INVALID_ARGUMENT', `up ${dir}: not a directory`);
      }
      const resync = Number(o.resync);
      if (!Number.isFinite(resync) || resync < 1) {
        throw new BerthError('ERR_INVALID_ARGUMENT', `up --resync ${JSON.stringify(o.resync)}: must be a number of seconds, at least 1`);
      }
      for (const [flag, v] of [['--image-gc-high-threshold', o.imageGcHighThreshold], ['--image-gc-low-threshold', o.imageGcLowThreshold]] as const) {
        if (!/^\d+(\.\d+)?$/.test(v)) throw new BerthError('ERR_INVALID_ARGUMENT', `up ${flag} ${JSON.stringify(v)}: must be a percentage from 0 to 100 (a number, no % sign)`);
      }
      const minAgeMs = o.minimumImageTtlDuration === '0' ? 0 : parseDuration(o.minimumImageTtlDuration);
      if (minAgeMs === undefined) {
        throw new BerthError('ERR_INVALID_ARGUMENT', `up --minimum-image-ttl-duration ${JSON.stringify(o.minimumImageTtlDuration)}: must be a duration such as 2m, 90s or 1h (0s: none)`);
      }
      const imageGc = { highPercent: Number(o.imageGcHighThreshold), lowPercent: Number(o.imageGcLowThreshold), minAgeMs };
      const gcProblem = (await import('./runtime/index.js')).thresholdProblem(imageGc);
      if (gcProblem !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', `up: ${gcProblem}`);
      const { runUp } = await import('./daemon/up.js');
      if (o.metricsAddr !== undefined) (await import('./daemon/metrics.js')).parseMetricsAddr(o.metricsAddr);
      const rt = await openRuntime(cfg);
      const ac = new AbortController();
      const stop = (): void => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        await runUp({
          dirs,
          rt,
          log: cfg.log,
          resyncMs: resync * 1000,
          ...(imageGc.highPercent < 100 ? { imageGc } : {}),
          signal: ac.signal,
          out: (l) => process.stdout.write(`${l}\n`),
          ...(o.metricsAddr !== undefined ? { metricsAddr: o.metricsAddr } : {}),
          // --expose-gc is one of the daemon's flags: a full GC once the queue is idle.
          collectGarbage: idleCollector(globalThis.gc),
        });
        process.stdout.write('berth: stopped watching; containers keep running (berth ps)\n');
      } finally {
        await rt.close();
      }
    });

  program
    .command('ps')
    .alias('pods')
    .description('list pods and containers with state, PID, attempt, image digest and age (-o wide: restarts, last exit, container id)')
    .argument('[pod...]', 'only these pods (namespace default unless -n)')
    .option('-n, --namespace <ns>', 'namespace for POD', 'default')
    .option('-A, --all-namespaces', 'list the pods of every namespace with a NAMESPACE column, as kubectl get -A (-n is then ignored; no pod names)')
    .option('-l, --selector <selector>', 'only pods whose labels match: k=v, k!=v, k, !k, "k in (a,b)", "k notin (a,b)"; comma = and')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'wide', 'json', 'yaml']).default('table'))
    .action(async (names: string[], o: { namespace: string; selector?: string; allNamespaces?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      const query = await podQuery('ps', names, o, cmd);
      await withBackend(cfg, { write: false, what: 'ps' }, async (b) => {
        // Read-only: in-process it takes no lock (it must not wait behind a long pull).
        const pods = await b.call<import('./daemon/service.js').PodListing[]>('pods', query);
        await printRead(psOutput(pods, query, { output: o.output as TextOutput | 'yaml', now: Date.now(), allNamespaces: o.allNamespaces === true }));
      });
    });

  program
    .command('status')
    .description('pods with ready count, status (Running, Pending, CrashLoopBackOff, ImagePullBackOff, InvalidSpec, Paused…), restarts, age and the last error')
    .argument('[pod...]', 'only these pods (namespace default unless -n)')
    .option('-n, --namespace <ns>', 'namespace for POD', 'default')
    .option('-A, --all-namespaces', 'list the pods of every namespace with a NAMESPACE column, as kubectl get -A (-n is then ignored; no pod names)')
    .option('-l, --selector <selector>', 'only pods whose labels match: k=v, k!=v, k, !k, "k in (a,b)", "k notin (a,b)"; comma = and')
    .addOption(new Option('-o, --output <format>', 'output format (wide: containers, source file:line, next try)').choices(['table', 'wide', 'json', 'yaml']).default('table'))
    .action(async (names: string[], o: { namespace: string; selector?: string; allNamespaces?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      const query = await podQuery('status', names, o, cmd);
      await withBackend(cfg, { write: false, what: 'status' }, async (b) => {
        const report = await b.call<import('./reconciler/status.js').StatusReport>('status', query);
        await printRead(statusOutput(report, query, { output: o.output as TextOutput | 'yaml', now: Date.now(), allNamespaces: o.allNamespaces === true }));
      });
    });

  program
    .command('describe')
    .description('one pod in detail: where it is declared, why it is not ready, what each container runs (image entrypoint + args), last exits, conditions, recent events')
    .argument('<pod-or-name>', '"pod" followed by NAME, or the pod name')
    .argument('[name]', 'pod name (namespace default unless -n)')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json', 'yaml']).default('text'))
    .action(async (first: string, second: string | undefined, o: { namespace: string; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      const isKind = ['pod', 'pods', 'po'].includes(first.toLowerCase());
      if (second !== undefined && !isKind) throw new BerthError('ERR_INVALID_ARGUMENT', `describe ${first}: berth describes pods only (describe pod NAME)`);
      const name = second ?? (isKind ? undefined : first);
      if (name === undefined) throw new BerthError('ERR_INVALID_ARGUMENT', 'describe pod: give the pod NAME');
      const podKey = name.includes('/') ? name : `${o.namespace}/${name}`;
      await withBackend(cfg, { write: false, what: 'describe' }, async (b) => {
        const d = await b.call<import('./reconciler/describe.js').PodDescription>('describe', { podKey });
        if (o.output === 'json') process.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
        else if (o.output === 'yaml') process.stdout.write((await import('yaml')).stringify(d));
        else process.stdout.write((await import('./reconciler/describe.js')).renderDescription(d, Date.now()));
      });
    });

  program
    .command('events')
    .description('what happened, oldest first: pulled, created, started, exited, restarted, back-off, pruned, invalid, adopted')
    .option('--follow', 'keep printing new events (needs berth up)')
    .option('--since <duration>', 'only events newer than this (e.g. 10m)')
    .option('--for <pod>', 'only the events of one pod (namespace/name or name)')
    .addOption(new Option('-o, --output <format>', 'output format (json: an array; with --follow one object per line)').choices(['table', 'json']).default('table'))
    .action(async (o: { follow?: boolean; since?: string; for?: string; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      const sinceTs = o.since !== undefined ? Date.now() - parseTimeout('events --since', o.since, 0) : 0;
      const keyPrefix = o.for === undefined ? '' : `pod/${o.for.includes('/') ? o.for : `default/${o.for}`}`;
      type Ev = import('./runtime/index.js').EventRecord;
      const line = (e: Ev): string =>
        o.output === 'json' ? JSON.stringify(e) : `${new Date(e.ts).toISOString()}  ${e.type.padEnd(7)}  ${e.reason.padEnd(10)}  ${e.key}  ${e.message}`;
      await withBackend(cfg, { write: false, what: 'events' }, async (b) => {
        if (o.follow === true) {
          if (b.follow === undefined) throw new BerthError('ERR_PRECONDITION', 'events --follow: no berth up runs on this state (events are written by it)');
          const ac = new AbortController();
          process.once('SIGINT', () => ac.abort());
          process.once('SIGTERM', () => ac.abort());
          await b.follow({ sinceTs: String(sinceTs), keyPrefix, limit: '1000' }, (e) => process.stdout.write(`${line(e as Ev)}\n`), ac.signal);
          return;
        }
        const events = await b.call<Ev[]>('events', { sinceTs, keyPrefix, limit: 1000 });
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(events, null, 2)}\n`);
          return;
        }
        for (const e of events) process.stdout.write(`${line(e)}\n`);
      });
    });

  program
    .command('logs')
    .description('print a container\'s output from its log (--raw: the CRI log lines with time, stream and tag)')
    .argument('<target>', 'POD or POD/CONTAINER (namespace default unless -n); without CONTAINER the one the kubectl.kubernetes.io/default-container annotation names, else the first, as kubectl')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-c, --container <name>', 'container name')
    .option('--tail <n>', 'only the last N lines (-1: all)')
    .option('--raw', 'print CRI log lines unchanged')
    .option('-p, --previous', 'the attempt before the current one (after a restart)')
    .option('-f, --follow', 'keep printing new output until the container stops or Ctrl-C (survives conmon\'s log rotation)')
    .option('--since <duration>', 'only output newer than this (e.g. 10m, 1h)')
    .option('--timestamps', 'prefix each line with its RFC3339 time')
    .action(async (target: string, o: { namespace: string; container?: string; tail?: string; raw?: boolean; previous?: boolean; follow?: boolean; since?: string; timestamps?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      const parts = target.split('/');
      if (parts.length > 2 || parts.some((p) => p === '')) throw new BerthError('ERR_INVALID_ARGUMENT', `logs ${target}: expected POD or POD/CONTAINER`);
      const [podName, ctrPart] = parts;
      const ctrName = ctrPart ?? o.container;
      let tail: number | undefined;
      if (o.tail !== undefined) {
        tail = Number(o.tail);
        if (!Number.isSafeInteger(tail) || tail < -1) throw new BerthError('ERR_INVALID_ARGUMENT', `logs --tail ${JSON.stringify(o.tail)}: must be a whole number, 0 or more (-1: all, as kubectl)`);
        // kubectl's default, -1: every line.
        if (tail === -1) tail = undefined;
      }
      const sinceMs = o.since === undefined ? undefined : Date.now() - parseTimeout('logs --since', o.since, 0);
      const req = { podKey: `${o.namespace}/${podName ?? ''}`, ...(ctrName !== undefined ? { container: ctrName } : {}), ...(o.previous === true ? { previous: true } : {}) };
      await withBackend(cfg, { write: false, what: 'logs' }, async (b) => {
        type Target = import('./daemon/service.js').LogTarget;
        const t = await b.call<Target>('logs', req);
        if (t.warning !== undefined) process.stderr.write(`${t.warning}\n`);
        if (t.defaulted !== undefined) process.stderr.write(`Defaulted container "${t.defaulted.container}" out of: ${t.defaulted.all.join(', ')}\n`);
        const { readLog } = await import('./lib/logfollow.js');
        // Follow until the container stops (like kubectl logs -f) or Ctrl-C.
        const ac = new AbortController();
        if (o.follow === true) process.once('SIGINT', () => ac.abort());
        let running = t.running;
        await readLog(t.file, {
          raw: o.raw === true,
          timestamps: o.timestamps === true,
          ...(sinceMs !== undefined ? { sinceMs } : {}),
          ...(tail !== undefined ? { tail } : {}),
          follow: o.follow === true && t.running,
          signal: ac.signal,
          write: (text) => process.stdout.write(text),
          running: async () => {
            if (!running) return false;
            const now = await b.call<Target>('logs', req).catch(() => undefined);
            running = now !== undefined && now.id === t.id && now.running;
            return running;
          },
        });
      });
    });

  program
    .command('exec')
    .description('run a command in a running container (runc exec: the container\'s user, env and working directory), print its output and exit with its exit code (127: not found, 126: could not be run); runs in this process even while berth up runs')
    .argument('<target>', 'POD or POD/CONTAINER (namespace default unless -n); without CONTAINER the one the kubectl.kubernetes.io/default-container annotation names, else the first, as kubectl')
    .argument('<command...>', 'the command and its arguments, after --')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-c, --container <name>', 'container name')
    .option('-i, --stdin', 'pass this stdin to the command (else it reads /dev/null)')
    .option('-t, --tty', 'allocate a terminal in the container (runc exec -t); with -i this terminal goes raw and its size follows the window')
    .action(async (target: string, argv: string[], o: { namespace: string; container?: string; stdin?: boolean; tty?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      const parts = target.split('/');
      if (parts.length > 2 || parts.some((p) => p === '')) throw new BerthError('ERR_INVALID_ARGUMENT', `exec ${target}: expected POD or POD/CONTAINER`);
      // As kubectl: without `--` the command's own flags would be read as berth's (sh -c is -c CONTAINER).
      if (!process.argv.includes('--')) throw new BerthError('ERR_INVALID_ARGUMENT', `exec ${target}: put the command after --: berth exec ${target} -- ${argv.join(' ')}`);
      const [podName, ctrPart] = parts;
      const ctrName = ctrPart ?? o.container;
      const req = { podKey: `${o.namespace}/${podName ?? ''}`, ...(ctrName !== undefined ? { container: ctrName } : {}) };
      let id = '';
      await withBackend(cfg, { write: false, what: 'exec' }, async (b) => {
        const t = await b.call<import('./daemon/service.js').ExecTarget>('exec', req);
        if (t.warning !== undefined) process.stderr.write(`${t.warning}\n`);
        if (t.defaulted !== undefined) process.stderr.write(`Defaulted container "${t.defaulted.container}" out of: ${t.defaulted.all.join(', ')}\n`);
        id = t.id;
      });
      // kubectl's SetupTTY: a terminal only with -i and a stdin that is one; without -i no
      // terminal at all (nothing would ever write to it), with a piped stdin a warning and none
      // (a terminal would echo the input, turn newlines into CRLF and read control bytes as
      // signals): regression exec-tty-without-terminal.
      let tty = o.tty === true && o.stdin === true;
      if (tty && !process.stdin.isTTY) {
        process.stderr.write('Unable to use a TTY - input is not a terminal or the right kind of file\n');
        tty = false;
      }
      // runc exec changes no state: run in-process, daemon or not (Runtime.execInContainer).
      await withRuntime(cfg, async (rt) => {
        const res = await rt.execInContainer(id, argv, { stdin: o.stdin === true, tty });
        process.exitCode = res.code;
      });
    });

  program
    .command('stats')
    .description('CPU, memory and pids of each running container, read from its cgroup (CPU % over a 0.5 s sample; memory is the working set: usage minus inactive file cache), as podman stats --no-stream')
    .argument('[pod...]', 'only these pods (namespace default unless -n)')
    .option('-n, --namespace <ns>', 'namespace for POD', 'default')
    .option('-l, --selector <selector>', 'only pods whose labels match: k=v, k!=v, k, !k, "k in (a,b)", "k notin (a,b)"; comma = and')
    .addOption(new Option('-o, --output <format>', 'output format (json: an array of {pod, container, id, cpu: {seconds, percent}, memory: {bytes, limitBytes}, pids: {current, limit}}; limits null when unset)').choices(['table', 'json']).default('table'))
    .action(async (names: string[], o: { namespace: string; selector?: string; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      const query = await podQuery('stats', names, o, cmd);
      await withBackend(cfg, { write: false, what: 'stats' }, async (b) => {
        const stats = await b.call<import('./daemon/service.js').ContainerStats[]>('stats', query);
        const found = new Set(stats.map((s) => s.pod));
        for (const k of query.keys ?? []) {
          if (found.has(k)) continue;
          process.stderr.write(errorLine('ERR_NOT_FOUND', `stats ${k}: no such pod or no running container`));
          process.exitCode = EXIT_FAILURE;
        }
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(stats, null, 2)}\n`);
          return;
        }
        const { formatBytes } = await import('./lib/progress.js');
        const rows = [['POD', 'CONTAINER', 'CPU %', 'CPU TIME', 'MEM USAGE / LIMIT', 'MEM %', 'PIDS']];
        for (const s of stats) {
          const limit = s.memory.limitBytes;
          rows.push([
            s.pod,
            s.container,
            `${s.cpu.percent.toFixed(2)}%`,
            `${s.cpu.seconds.toFixed(2)}s`,
            `${formatBytes(s.memory.bytes)} / ${limit === null ? '-' : formatBytes(limit)}`,
            limit === null ? '-' : `${((s.memory.bytes / limit) * 100).toFixed(2)}%`,
            s.pids.limit === null ? String(s.pids.current) : `${s.pids.current} / ${s.pids.limit}`,
          ]);
        }
        process.stdout.write(table(rows));
      });
    });

  const images = program.command('images').description('manage images');
  images
    .command('ls')
    .description('list local images: reference, digest, platform, size of the layers as pulled (compressed) and unpacked, age')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (o: { output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: false, what: 'images' }, async (b) => {
        const list = await b.call<import('./runtime/index.js').ImageSummary[]>('images');
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
          return;
        }
        const { humanAge } = await import('./lib/time.js');
        const { formatBytes } = await import('./lib/progress.js');
        // Decimal units, as podman images and berth df print them (the same image, the same figure).
        const size = (n: number): string => formatBytes(n);
        const rows = [['REF', 'DIGEST', 'PLATFORM', 'SIZE', 'UNPACKED', 'CREATED']];
        for (const i of list) {
          const created = i.created === null ? '<unknown>' : humanAge(Date.now() - Date.parse(i.created));
          rows.push([i.ref, i.digest.slice(0, 19), i.platform, size(i.compressedBytes), size(i.unpackedBytes), created]);
        }
        process.stdout.write(table(rows));
      });
    });
  images
    .command('inspect')
    .description('a local image: its digests, platform, sizes, layers (digest, size, diff id, chain id) and config')
    .argument('<ref>', 'image reference, name@digest, or digest (sha256:<hex>, or a prefix of at least 4 hex digits)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['json', 'yaml']).default('json'))
    .action(async (ref: string, o: { output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: false, what: 'images inspect' }, async (b) => {
        const r = await b.call<unknown>('imagesInspect', { ref });
        if (o.output === 'yaml') process.stdout.write((await import('yaml')).stringify(r));
        else process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      });
    });
  images
    .command('tag')
    .description('name a local image with another reference (no registry is contacted)')
    .argument('<source>', 'a local image: reference, name@digest, or digest (or a prefix of at least 4 hex digits)')
    .argument('<target>', 'the new reference')
    .action(async (src: string, dst: string, _o: unknown, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: true, what: 'images tag' }, async (b) => {
        const r = await b.call<{ ref: string; digest: string }>('imagesTag', { src, dst });
        process.stdout.write(`${r.ref} ${r.digest}\n`);
      });
    });
  images
    .command('import')
    .description('import a docker save tar or an OCI image layout (directory or tar): every blob verified, layers unpacked, names from the archive (RepoTags, ref.name annotations) or --ref; no registry is contacted')
    .argument('<path>', 'the archive file or OCI layout directory')
    .option('--ref <ref>', "name the archive's only image with this reference")
    .action(async (file: string, o: { ref?: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: true, what: 'images import' }, async (b) => {
        const r = await b.call<{ imported: { ref: string; digest: string; format: string }[] }>('imagesImport', { path: path.resolve(file), ...(o.ref !== undefined ? { ref: o.ref } : {}) });
        for (const i of r.imported) process.stdout.write(`${i.ref} ${i.digest}\n`);
      });
    });
  images
    .command('export')
    .description('write local images as an OCI image layout tar (oci-archive, readable by skopeo and umoci): blobs as stored, index.json naming each reference')
    .argument('<ref...>', 'local images: references, name@digest, or digests (an image given by digest is written with all its names)')
    .requiredOption('-o, --output <file>', 'the archive to write (replaced if it exists)')
    .action(async (refs: string[], o: { output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: false, what: 'images export' }, async (b) => {
        const r = await b.call<{ exported: { ref: string; digest: string }[] }>('imagesExport', { refs, file: path.resolve(o.output) });
        for (const i of r.exported) process.stdout.write(`${i.ref} ${i.digest}\n`);
      });
    });
  images
    .command('pull')
    .description('pull an image into the content store and unpack it (through berth up when it runs, with the registry options it was started with)')
    .argument('<ref>', 'image reference')
    .option('--platform <os/arch[/variant]>', "the platform to pick from a multi-platform image (default: this machine's)")
    .option('-q, --quiet', 'no progress lines: print only the result (ref and digest); errors and the exit code as ever')
    .action(async (ref: string, o: { platform?: string; quiet?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      // Who asks: a running berth up refuses a pull whose --root or registry flags differ from its own (daemon/pull.ts).
      const client = {
        root: cmd.getOptionValueSourceWithGlobals('root') === 'default' ? null : cfg.root,
        registryConfig: cfg.registryConfig ?? null,
        registryHostsDir: cfg.registryHostsDir ?? null,
      };
      await withBackend(cfg, { write: true, what: 'pull' }, async (b) => {
        const img = await withProgress(o.quiet === true, (p) => b.call<{ ref: string; digest: string }>('pull', { ref, ...(o.platform !== undefined ? { platform: o.platform } : {}), client }, p));
        process.stdout.write(`${img.ref} ${img.digest}\n`);
      });
    });
  images
    .command('rm')
    .description('forget images (all or none): refused, naming the pods, for an image a recorded pod names or a container runs; berth gc reclaims their space')
    .argument('<ref...>', 'image references, name@digest, or digests (sha256:<hex>, or a prefix of at least 4 hex digits as images ls prints it)')
    .option('-f, --force', 'an image given by digest that has several names loses them all')
    .action(async (refs: string[], o: { force?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: true, what: 'images rm' }, async (b) => {
        const r = await b.call<{ removed: { ref: string; digest: string }[] }>('imagesRemove', { refs, ...(o.force === true ? { force: true } : {}) });
        for (const i of r.removed) process.stdout.write(`removed ${i.ref} ${i.digest}\n`);
        process.stdout.write('run berth gc to reclaim their disk space\n');
      });
    });
  images
    .command('prune')
    .description('forget the images nothing uses (no recorded pod names them, no container runs them), then collect garbage')
    .option('-a, --all', 'every image no container runs, even if a recorded pod names it (that pod pulls it again)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { all?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: true, what: 'images prune' }, async (b) => {
        const r = await b.call<{ images: { ref: string; digest: string }[]; gc: GcReportView }>('imagesPrune', { all: o.all === true });
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        for (const i of r.images) process.stdout.write(`removed ${i.ref} ${i.digest}\n`);
        await printGc(r.gc);
      });
    });

  program
    .command('gc')
    .description('remove what no image, container or recorded pod reaches: manifest and snapshot rows first, then blobs and snapshot directories; prints what went and the bytes reclaimed')
    .option('--dry-run', 'print what would be removed and remove nothing')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { dryRun?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      // A dry run writes nothing, so it neither takes the state lock nor sweeps crash residue first.
      await withBackend(cfg, { write: o.dryRun !== true, what: 'gc' }, async (b) => {
        const r = await b.call<GcReportView>('gc', { dryRun: o.dryRun === true });
        if (o.output === 'json') process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        else await printGc(r);
      });
    });

  program
    .command('df')
    .description('disk use by images (unpacked layers, shared and unique; compressed blobs), containers (writable layers), logs and volumes, and what images prune, images prune --all and gc would reclaim')
    .option('-v, --verbose', 'also one line per image and per volume')
    .addOption(new Option('-o, --output <format>', 'output format (json: schemas/df.json)').choices(['table', 'json']).default('table'))
    .action(async (o: { verbose?: boolean; output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withBackend(cfg, { write: false, what: 'df' }, async (b) => {
        const r = await b.call<import('./runtime/index.js').DiskUsage>('df');
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        const { formatBytes } = await import('./lib/progress.js');
        const pct = (part: number, whole: number): string => (whole === 0 ? '' : ` (${Math.round((part / whole) * 100)}%)`);
        const imageBytes = r.images.layerBytes + r.images.blobBytes;
        const namedActive = r.volumes.items.filter((v) => v.usedBy.length > 0).length;
        const rows = [
          ['TYPE', 'TOTAL', 'ACTIVE', 'SIZE', 'RECLAIMABLE'],
          ['Images', String(r.images.count), String(r.images.active), formatBytes(imageBytes), `${formatBytes(r.images.reclaimableBytes)}${pct(r.images.reclaimableBytes, imageBytes)}`],
          ['Containers', String(r.containers.count), String(r.containers.running), formatBytes(r.containers.bytes), '-'],
          ['Logs', '-', '-', formatBytes(r.logs.bytes), '-'],
          ['Volumes', String(r.volumes.count), String(namedActive), formatBytes(r.volumes.bytes), `${formatBytes(r.volumes.reclaimableBytes)}${pct(r.volumes.reclaimableBytes, r.volumes.bytes)}`],
        ];
        process.stdout.write(table(rows));
        process.stdout.write(
          `\nimages: ${formatBytes(r.images.layerBytes)} unpacked layers (${formatBytes(r.images.sharedLayerBytes)} shared, ${formatBytes(r.images.uniqueLayerBytes)} unique), ${formatBytes(r.images.blobBytes)} compressed blobs\n` +
            `reclaimable: images prune ${formatBytes(r.reclaim.imagesPrune)}, images prune --all ${formatBytes(r.reclaim.imagesPruneAll)}, gc ${formatBytes(r.reclaim.gc)}\n` +
            `file system of ${r.root}: ${r.filesystem.usedPercent}% used (${formatBytes(r.filesystem.usedBytes)} of ${formatBytes(r.filesystem.capacityBytes)})\n`,
        );
        if (o.verbose !== true) return;
        const imgs = [['REF', 'DIGEST', 'LAYERS', 'SIZE', 'SHARED', 'UNIQUE', 'COMPRESSED', 'CONTAINERS', 'LAST USED']];
        for (const i of r.images.items) {
          imgs.push([i.ref, i.digest.slice(0, 19), String(i.layers), formatBytes(i.sizeBytes), formatBytes(i.sharedBytes), formatBytes(i.uniqueBytes), formatBytes(i.compressedBytes), String(i.containers), i.lastUsed ?? '-']);
        }
        process.stdout.write(`\nImages:\n${table(imgs)}`);
        const vols = [['KIND', 'NAME', 'POD', 'SIZE', 'USED BY']];
        for (const v of r.volumes.items) vols.push([v.kind, v.name, v.pod ?? '-', formatBytes(v.bytes), v.usedBy.length > 0 ? v.usedBy.join(',') : '-']);
        process.stdout.write(`\nVolumes:\n${table(vols)}`);
      });
    });

  program
    .command('install-service')
    .description('write the systemd unit (packaging/berth.service) that runs berth up at boot, create the manifests directory and print the systemctl commands that enable it (systemctl is never run)')
    .option('--manifests <dir>', 'the directory the service watches', '/etc/berth/manifests')
    .option('--bin <path>', 'the berth executable the unit runs', '/usr/local/bin/berth')
    .option('--unit-file <path>', 'where the unit is written', '/etc/systemd/system/berth.service')
    .option('--dry-run', 'print the unit and write nothing')
    .action(async (o: { manifests: string; bin: string; unitFile: string; dryRun?: boolean }, cmd: Command) => {
      const cfg = config(cmd);
      const sd = await import('./daemon/systemd.js');
      const { accessSync, constants, realpathSync } = await import('node:fs');
      const manifests = path.resolve(o.manifests);
      const bin = path.resolve(o.bin);
      // Only flags that differ from the defaults, so the usual unit stays the shipped one.
      const globals = [
        ...(cfg.root !== '/var/lib/berth' ? ['--root', cfg.root] : []),
        ...(cfg.state !== '/run/berth' ? ['--state', cfg.state] : []),
        ...(cfg.network.subnet !== '10.89.0.0/16' ? ['--pod-subnet', cfg.network.subnet] : []),
        ...(cfg.network.bridge !== 'berth0' ? ['--bridge', cfg.network.bridge] : []),
        ...cfg.allowHostPath.flatMap((p) => ['--allow-host-path', p]),
        ...(cfg.allowPrivileged ? ['--allow-privileged'] : []),
        ...(cfg.registryConfig !== undefined ? ['--registry-config', cfg.registryConfig] : []),
        ...(cfg.registryHostsDir !== undefined ? ['--registry-hosts-dir', cfg.registryHostsDir] : []),
        ...(cfg.containerLogMaxBytes !== undefined ? ['--container-log-max-size', String(cfg.containerLogMaxBytes)] : []),
      ];
      const text = sd.renderUnit(sd.readUnitTemplate(), { bin, manifests, globals, nodeDir: path.dirname(process.execPath) });
      if (o.dryRun === true) {
        process.stdout.write(text);
        return;
      }
      const unitFile = path.resolve(o.unitFile);
      await sd.writeUnit(unitFile, text, manifests);
      process.stdout.write(`wrote ${unitFile}: berth up ${manifests} (put manifests there)\n`);
      try {
        accessSync(bin, constants.X_OK);
      } catch {
        const cli = realpathSync(fileURLToPath(import.meta.url));
        process.stderr.write(`warning: ${bin} is not an executable; the unit runs it: chmod +x ${cli} && ln -sfn ${cli} ${bin}\n`);
      }
      process.stdout.write('enable and start it:\n  systemctl daemon-reload && systemctl enable --now berth\nits output: journalctl -u berth -f\n');
      const { booted, pid1 } = sd.systemdBooted();
      if (!booted) process.stdout.write(`note: systemd is not running on this machine (PID 1 is ${pid1}): nothing can enable the unit here; run the command above on a machine booted with systemd\n`);
    });

  program
    .command('completion')
    .description('print a shell completion script for berth, generated from its command definitions (bash: source <(berth completion bash))')
    .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh', 'fish']))
    .action(async (shell: 'bash' | 'zsh' | 'fish') => {
      const { completionScript } = await import('./lib/completion.js');
      const { describeCommand } = await import('./lib/cli-model.js');
      process.stdout.write(completionScript(describeCommand(program), shell));
    });

  program
    .command('run')
    .description('run one container from an image outside any manifest (a one-container pod, restartPolicy Never): print its output and exit with its exit code, as podman run and ctr run do')
    .argument('<image>', 'image reference')
    .argument('[command...]', 'command and arguments (after --), replacing the image Entrypoint and Cmd')
    .option('--name <name>', 'pod name (a DNS label; default run-<random>)')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('--rm', 'delete the pod once the container exits')
    .option('-d, --detach', 'start it and print the container id; do not wait')
    .option('--net <mode>', 'network: pod (its own sandbox on berth\'s bridge) or host', 'pod')
    .option('-e, --env <k=v>', 'an environment variable (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .action(async (image: string, command: string[], o: { name?: string; namespace: string; rm?: boolean; detach?: boolean; net: string; env: string[] }, cmd: Command) => {
      const cfg = config(cmd);
      if (o.net !== 'pod' && o.net !== 'host') throw new BerthError('ERR_INVALID_ARGUMENT', `run --net ${JSON.stringify(o.net)}: expected pod or host`);
      if (o.rm === true && o.detach === true) throw new BerthError('ERR_INVALID_ARGUMENT', 'run: --rm and --detach exclude each other');
      const name = o.name ?? randomRunName();
      const env = o.env.map((kv) => {
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new BerthError('ERR_INVALID_ARGUMENT', `run -e ${JSON.stringify(kv)}: expected NAME=VALUE`);
        return { name: kv.slice(0, eq), value: kv.slice(eq + 1) };
      });
      // A berth.dev/v1 Container, checked by the same loader as any manifest (lib/fast-run builds the same).
      const doc = runDocument({ name, namespace: o.namespace, image, command, env, net: o.net });
      const text = JSON.stringify(doc);
      const input = { path: '-', stdinText: text, display: 'berth run' };
      const podKey = `${o.namespace}/${name}`;
      await withBackend(cfg, { write: true, what: 'run' }, async (b) => {
        let body: Record<string, unknown> = { input };
        if (!b.remote) {
          const { parseManifestText } = await import('./reconciler/manifest.js');
          const parsed = parseManifestText(text, '-');
          failOnInvalid(parsed.problems.length > 0 ? { problems: parsed.problems, badFiles: 1 } : undefined);
          body = { input, pods: parsed.pods };
        }
        const res = await withProgress(true, (p) => b.call<import('./daemon/service.js').ApplyResponse>('apply', body, p));
        failOnInvalid(res.invalid);
        const failed = res.steps.find((r) => r.error !== undefined);
        if (failed?.error !== undefined) throw new BerthError(isErrorCode(failed.error.code) ? failed.error.code : 'ERR_INTERNAL', failed.error.message);
        const blocked = res.blocked.map((x) => splitCoded(x.reason, 'ERR_PRECONDITION'));
        if (blocked.length > 0) throw new BerthError(blocked[0]?.code ?? 'ERR_PRECONDITION', res.blocked.map((x, i) => `${x.key}: ${blocked[i]?.message ?? x.reason}`).join('; '));
        type Target = import('./daemon/service.js').LogTarget;
        const t = await b.call<Target>('logs', { podKey });
        if (o.detach === true) {
          process.stdout.write(`${t.id}\n`);
          return;
        }
        const { readLog } = await import('./lib/logfollow.js');
        let running = t.running;
        await readLog(t.file, {
          raw: false,
          timestamps: false,
          follow: true,
          pollMs: 20,
          checkMs: 20,
          write: (out, stream) => (stream === 'stderr' ? process.stderr : process.stdout).write(out),
          running: async () => {
            if (!running) return false;
            const now = await b.call<Target>('logs', { podKey }).catch(() => undefined);
            running = now !== undefined && now.id === t.id && now.running;
            return running;
          },
        });
        const listing = await b.call<{ key: string; containers: { exitCode: number | null; state: string }[] }[]>('pods', { keys: [podKey] });
        const code = listing[0]?.containers[0]?.exitCode ?? 1;
        if (o.rm === true) await b.call('delete', { keys: [podKey], source: '-' });
        process.exitCode = code;
      });
    });

  const volumes = program.command('volumes').description('named volumes (a pod\'s persistentVolumeClaim): they outlive their pods');
  volumes
    .command('ls')
    .description('list named volumes with their size and the pods that name them')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (o: { output: string }, cmd: Command) => {
      const cfg = config(cmd);
      await withRuntime(cfg, async (rt) => {
        const list = await rt.listVolumes();
        if (o.output === 'json') {
          process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
          return;
        }
        const rows = [['NAME', 'SIZE', 'USED BY']];
        for (const v of list) rows.push([v.name, `${v.bytes}B`, v.usedBy.join(',') || '<none>']);
        process.stdout.write(table(rows));
      });
    });
  volumes
    .command('rm')
    .description('remove named volumes and their data; refused for a volume a recorded pod names')
    .argument('<name...>', 'volume names')
    .action(async (names: string[], _o: unknown, cmd: Command) => {
      const cfg = config(cmd);
      await withRuntime(cfg, async (rt) => {
        await rt.removeVolumes(names);
        for (const n of names) process.stdout.write(`- volume ${n}\n`);
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
          // Read-only, like ps: no lock, so it works while berth up runs.
          findings.push(...(await rt.fsck()));
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
    process.stderr.write(errorLine(codeOf(err), messageOf(err)));
    // kubectl diff: any error is exit 2, since 1 means "changes pending".
    process.exitCode = activeCommand === 'diff' ? EXIT_INVALID : exitCodeFor(err);
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  // `ps`/`status`, `run` and `images pull` with a running daemon are answered before commander is even loaded.
  const argv = process.argv.slice(2);
  if (!(await answerFastRead(argv)) && !(await answerFastRun(argv)) && !(await answerFastPull(argv))) await main();
}
