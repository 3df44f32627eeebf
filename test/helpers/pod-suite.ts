import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { PodStatus } from '../../src/reconciler/status.js';
import { startDemoFixture, type DemoFixture } from './demo.js';
import { berth, cleanupEnv, makeEnv, stopDaemon, waitFor, type BerthEnv, type berthUp } from './berth.js';

/**
 * The set-up most e2e suites of pods share: a temp berth instance, the demo fixture's registry
 * (holding `image`), an empty manifests directory `dir` and, when the suite starts one, a `berth
 * up` daemon. `setUp` in the suite's `before` (after its prerequisite checks), `tearDown` in its
 * `after`; `ok` is false until `setUp` ran (the tests then skip).
 */
export class PodSuite {
  #env: BerthEnv | undefined;
  #demo: DemoFixture | undefined;
  /** Stopped (SIGKILL) by `tearDown`. */
  daemon: ReturnType<typeof berthUp> | undefined;

  get ok(): boolean {
    return this.#env !== undefined;
  }

  get env(): BerthEnv {
    if (this.#env === undefined) throw new Error('pod suite not set up');
    return this.#env;
  }

  get demo(): DemoFixture {
    if (this.#demo === undefined) throw new Error('pod suite has no demo fixture');
    return this.#demo;
  }

  /** `<env.dir>/manifests`. */
  get dir(): string {
    return path.join(this.env.dir, 'manifests');
  }

  /** The demo image in the fixture's registry. */
  get image(): string {
    return `${this.demo.registry.host}/berth/demo:1.0`;
  }

  async setUp(prefix: string): Promise<void> {
    this.#env = makeEnv(prefix);
    this.#demo = await startDemoFixture();
    await fsp.mkdir(this.dir);
  }

  /** Stops the daemon, deletes what `dir` declares (failures ignored), removes the instance, stops the registry. */
  async tearDown(): Promise<void> {
    if (this.#env === undefined) return;
    if (this.daemon !== undefined) await stopDaemon(this.daemon);
    await berth(this.#env, ['delete', '-f', this.dir]).catch(() => undefined);
    await cleanupEnv(this.#env);
    await this.#demo?.stop();
  }
}

/**
 * A hostNetwork pod `name` (grace period 1 s) of one container `main` running `command` in `image`;
 * `containerFields`: more fields of that container, one YAML line each (`imagePullPolicy: Never`).
 */
export function hostPod(name: string, image: string, command: readonly string[], containerFields: readonly string[] = []): string {
  return [
    'apiVersion: v1',
    'kind: Pod',
    `metadata: {name: ${name}}`,
    'spec:',
    '  hostNetwork: true',
    '  terminationGracePeriodSeconds: 1',
    '  containers:',
    '    - name: main',
    `      image: ${image}`,
    `      command: ${JSON.stringify(command)}`,
    ...containerFields.map((f) => `      ${f}`),
    '',
  ].join('\n');
}

/** `berth status -o json`: the pods by name. */
export async function podStatuses(env: BerthEnv): Promise<Map<string, PodStatus>> {
  const s = await berth(env, ['status', '-o', 'json']);
  return new Map((JSON.parse(s.stdout) as { pods: PodStatus[] }).pods.map((p) => [p.name, p]));
}

/** Waits until every pod in `names` has status Running (polled every `stepMs`). */
export function waitRunning(env: BerthEnv, names: string | readonly string[], timeoutMs = 60_000, stepMs = 100): Promise<true> {
  const all = typeof names === 'string' ? [names] : names;
  return waitFor(`${all.join(', ')} running`, async () => {
    const st = await podStatuses(env);
    return all.every((n) => st.get(n)?.status === 'Running') ? true : undefined;
  }, timeoutMs, stepMs);
}
