import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, REPO } from '../helpers/berth.js';
import { requireTools } from '../helpers/prereq.js';

/**
 * Issue 12 (operability): packaging/berth.service passes `systemd-analyze verify` (Debian
 * package systemd; it loads units offline, so it runs in a container where systemd is not
 * PID 1). verify refuses an ExecStart whose binary does not exist, and /usr/local/bin/berth
 * exists only after scripts/demo.sh, so the unit is verified as `berth install-service`
 * writes it with `--bin` pointing at an executable wrapper around this build's CLI and
 * `--manifests`/`--unit-file` in a temp dir; only those two Exec lines differ from the
 * shipped file.
 */

const TEMPLATE = path.join(REPO, 'packaging/berth.service');

describe('e2e: systemd unit (berth install-service)', () => {
  let ok = true;
  let dir = '';
  let wrapper = '';
  let fakeBin = '';

  before((t) => {
    ok = requireTools(t, ['systemd-analyze']);
    dir = mkdtempSync(path.join(os.tmpdir(), 'berth-unit-'));
    wrapper = path.join(dir, 'bin', 'berth');
    fakeBin = path.join(dir, 'fake-path');
  });
  after(async () => {
    if (dir !== '') await fsp.rm(dir, { recursive: true, force: true });
  });

  /** berth with a PATH whose first entry has a `systemctl` that leaves a mark when run. */
  const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [CLI, '--root', path.join(dir, 'root'), '--state', path.join(dir, 'state'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${fakeBin}:${process.env['PATH'] ?? '/usr/bin:/bin'}` },
      timeout: 30_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  test('the shipped unit: berth check before, berth up /etc/berth/manifests, Restart=always, KillMode=process, TimeoutStopSec above the 10 s drain', () => {
    const text = readFileSync(TEMPLATE, 'utf8');
    const directive = (k: string): string[] => [...text.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1] ?? '');
    assert.deepEqual(directive('Type'), ['simple']);
    assert.deepEqual(directive('ExecStartPre'), ['/usr/local/bin/berth check']);
    assert.deepEqual(directive('ExecStart'), ['/usr/local/bin/berth up /etc/berth/manifests']);
    assert.deepEqual(directive('Restart'), ['always']);
    assert.deepEqual(directive('KillMode'), ['process']);
    const stop = Number(directive('TimeoutStopSec')[0]);
    assert.ok(stop > 10 && stop <= 30, `TimeoutStopSec=${stop}`);
    assert.deepEqual(directive('WantedBy'), ['multi-user.target']);
  });

  test('install-service writes a unit that passes systemd-analyze verify, creates the manifests dir, prints the systemctl lines and never runs systemctl', async (t) => {
    if (!ok) return t.skip();
    await fsp.mkdir(path.dirname(wrapper), { recursive: true });
    await fsp.writeFile(wrapper, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`, { mode: 0o755 });
    await fsp.mkdir(fakeBin, { recursive: true });
    const mark = path.join(dir, 'systemctl-ran');
    await fsp.writeFile(path.join(fakeBin, 'systemctl'), `#!/bin/sh\necho "$@" >> ${mark}\n`, { mode: 0o755 });

    const manifests = path.join(dir, 'etc', 'manifests');
    const unit = path.join(dir, 'systemd', 'berth.service');
    const dry = run(['install-service', '--dry-run', '--bin', wrapper, '--manifests', manifests, '--unit-file', unit]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^KillMode=process$/m);
    assert.equal(existsSync(unit), false, '--dry-run writes nothing');
    assert.equal(existsSync(manifests), false, '--dry-run creates nothing');

    const r = run(['install-service', '--bin', wrapper, '--manifests', manifests, '--unit-file', unit]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(unit, 'utf8'), dry.stdout, 'the unit written is the one --dry-run prints');
    assert.ok((await fsp.stat(manifests)).isDirectory());
    assert.match(r.stdout, /^ {2}systemctl daemon-reload && systemctl enable --now berth$/m);
    if (!existsSync('/run/systemd/system')) assert.match(r.stdout, /note: systemd is not running on this machine \(PID 1 is .+\)/);
    assert.equal(existsSync(mark), false, 'install-service ran systemctl');

    // Apart from the two Exec lines (and PATH when node is not on systemd's), the shipped file.
    const shipped = readFileSync(TEMPLATE, 'utf8').split('\n');
    const written = readFileSync(unit, 'utf8').split('\n').filter((l) => !l.startsWith('Environment=PATH='));
    assert.deepEqual(written.filter((l) => !l.startsWith('ExecStart')), shipped.filter((l) => !l.startsWith('ExecStart')));
    assert.ok(written.includes(`ExecStart=${wrapper} --root ${path.join(dir, 'root')} --state ${path.join(dir, 'state')} up ${manifests}`), written.join('\n'));

    const v = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 60_000 });
    // verify also complains about unknown keys and bad values on stderr without failing: none may mention the unit.
    const aboutUnit = `${v.stdout}${v.stderr}`.split('\n').filter((l) => l.includes('berth'));
    assert.equal(v.status, 0, `systemd-analyze verify ${unit}:\n${v.stdout}${v.stderr}`);
    assert.deepEqual(aboutUnit, [], 'systemd-analyze verify prints nothing about the unit');

    // And verify does catch a broken unit, so the pass above means something.
    const broken = path.join(dir, 'systemd', 'broken.service');
    await fsp.writeFile(broken, readFileSync(unit, 'utf8').replaceAll(wrapper, path.join(dir, 'no-such-berth')));
    const b = spawnSync('systemd-analyze', ['verify', broken], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(b.status, 0, `${b.stdout}${b.stderr}`);
  });

  test('install-service refuses a manifests path a unit file would need to quote', () => {
    const r = run(['install-service', '--dry-run', '--manifests', '/etc/berth/my manifests']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--manifests "\/etc\/berth\/my manifests": only letters/);
  });
});
