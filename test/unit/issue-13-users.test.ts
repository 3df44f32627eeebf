import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkRunAsNonRoot, ID_MAX, imageUserForPolicy, MAX_ID_FILE_BYTES, resolveUser } from '../../src/runtime/tasks/users.js';
import { isBerthError, type ErrorCode } from '../../src/lib/errors.js';

/** Issue 13 (Security): image users and groups resolved from the rootfs, confined to it (R1). */

const base = mkdtempSync(path.join(os.tmpdir(), 'berth-users-'));
after(() => rmSync(base, { recursive: true, force: true }));

let n = 0;
/** A fresh rootfs under `base`; `files` maps rootfs-relative paths to contents. */
function rootfs(files: Record<string, string> = {}): string {
  const root = path.join(base, `root-${++n}`);
  mkdirSync(root);
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
  }
  return root;
}

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  'alice:x:1000:1000:Alice:/home/alice:/bin/sh',
  'bob:x:1001:100::/home/bob:/bin/sh',
  '',
].join('\n');
const GROUP = ['root:x:0:', 'users:x:100:alice', 'alice:x:1000:', 'wheel:x:10:alice,bob', 'docker:x:999:carol,alice', ''].join('\n');

const fails = (code: ErrorCode, re: RegExp) => (err: unknown): boolean => {
  assert.ok(isBerthError(err, code), `expected ${code}, got ${String(err)}`);
  assert.match(err.message, re);
  return true;
};

describe('issue-13 users: image User forms', () => {
  const root = rootfs({ 'etc/passwd': PASSWD, 'etc/group': GROUP });

  test('name: uid and primary gid from passwd, every group listing the name', () => {
    assert.deepEqual(resolveUser(root, 'alice'), { uid: 1000, gid: 1000, additionalGids: [1000, 100, 10, 999], name: 'alice' });
    assert.deepEqual(resolveUser(root, 'bob'), { uid: 1001, gid: 100, additionalGids: [100, 10], name: 'bob' });
  });

  test('uid: the passwd entry of that uid gives gid and groups', () => {
    assert.deepEqual(resolveUser(root, '1000'), { uid: 1000, gid: 1000, additionalGids: [1000, 100, 10, 999], name: 'alice' });
    assert.deepEqual(resolveUser(root, '0'), { uid: 0, gid: 0, additionalGids: [0], name: 'root' });
  });

  test('uid without a passwd entry runs with gid 0, as runc and containerd do', () => {
    assert.deepEqual(resolveUser(root, '4242'), { uid: 4242, gid: 0, additionalGids: [0] });
  });

  test('no User, or an empty one, is root', () => {
    assert.deepEqual(resolveUser(root, undefined), { uid: 0, gid: 0, additionalGids: [0], name: 'root' });
    assert.deepEqual(resolveUser(root, ''), { uid: 0, gid: 0, additionalGids: [0], name: 'root' });
  });

  test('name:group, name:gid, uid:group, uid:gid', () => {
    assert.deepEqual(resolveUser(root, 'alice:wheel'), { uid: 1000, gid: 10, additionalGids: [10, 100, 999], name: 'alice' });
    assert.deepEqual(resolveUser(root, 'alice:4000'), { uid: 1000, gid: 4000, additionalGids: [4000, 100, 10, 999], name: 'alice' });
    // An explicit group replaces the passwd primary group (100 here), which bob is not a listed member of.
    assert.deepEqual(resolveUser(root, '1001:docker'), { uid: 1001, gid: 999, additionalGids: [999, 10], name: 'bob' });
    assert.deepEqual(resolveUser(root, '4242:4343'), { uid: 4242, gid: 4343, additionalGids: [4343] });
    assert.deepEqual(resolveUser(root, 'alice:'), resolveUser(root, 'alice'));
  });

  test('an unknown user or group name fails, naming it and the file', () => {
    assert.throws(() => resolveUser(root, 'mallory'), fails('ERR_INVALID_IMAGE', /user "mallory" not found in the image's \/etc\/passwd$/));
    assert.throws(() => resolveUser(root, 'alice:nogroup'), fails('ERR_INVALID_IMAGE', /group "nogroup" not found in the image's \/etc\/group$/));
    assert.throws(() => resolveUser(root, '1000:nogroup', { where: 'container default.web.app' }), fails('ERR_INVALID_IMAGE', /^container default\.web\.app: group "nogroup"/));
  });

  test('more than one colon is refused', () => {
    assert.throws(() => resolveUser(root, 'alice:wheel:extra'), fails('ERR_INVALID_IMAGE', /more than one ':'/));
  });

  test('a hostile name cannot forge a log line', () => {
    assert.throws(() => resolveUser(root, 'evil\nlevel=info msg=ok'), (err: unknown) => isBerthError(err, 'ERR_INVALID_IMAGE') && !err.message.includes('\n'));
  });
});

describe('issue-13 users: Kubernetes overrides', () => {
  const root = rootfs({ 'etc/passwd': PASSWD, 'etc/group': GROUP });

  test('runAsUser replaces the image user, group part included; its passwd entry gives the gid', () => {
    assert.deepEqual(resolveUser(root, 'nobody-in-this-image:nogroup', { runAsUser: 1001 }), { uid: 1001, gid: 100, additionalGids: [100, 10], name: 'bob' });
    assert.deepEqual(resolveUser(root, 'alice', { runAsUser: 5000 }), { uid: 5000, gid: 0, additionalGids: [0] });
  });

  test('runAsGroup replaces the gid; supplementalGroups come last; no duplicates', () => {
    assert.deepEqual(resolveUser(root, 'bob', { runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000, 10, 3000] }), {
      uid: 1000,
      gid: 3000,
      additionalGids: [3000, 100, 10, 999, 4000],
      name: 'alice',
    });
    assert.deepEqual(resolveUser(root, 'alice:wheel', { runAsGroup: 3000 }), { uid: 1000, gid: 3000, additionalGids: [3000, 100, 10, 999], name: 'alice' });
  });

  test('overrides outside 0..2^32-2 are manifest errors', () => {
    for (const bad of [-1, ID_MAX + 1, 1.5, 2 ** 53]) {
      assert.throws(() => resolveUser(root, 'alice', { runAsUser: bad }), fails('ERR_INVALID_MANIFEST', /runAsUser .* is outside 0\.\.4294967294/));
      assert.throws(() => resolveUser(root, 'alice', { runAsGroup: bad }), fails('ERR_INVALID_MANIFEST', /runAsGroup/));
      assert.throws(() => resolveUser(root, 'alice', { supplementalGroups: [1, bad] }), fails('ERR_INVALID_MANIFEST', /supplementalGroups/));
    }
    assert.equal(resolveUser(root, 'alice', { runAsUser: ID_MAX }).uid, ID_MAX);
  });
});

describe('issue-13 users: CVE-2024-40635 id range', () => {
  const root = rootfs({
    'etc/passwd': `${PASSWD}huge:x:4294967295:0::/:/bin/sh\nbiggid:x:2000:4294967295::/:/bin/sh\ncarol:x:3000:3000::/:/bin/sh\n`,
    'etc/group': `${GROUP}overflow:x:4294967296:carol\n`,
  });

  test('numeric ids: 2^32-2 is the largest', () => {
    assert.equal(resolveUser(root, '4294967294').uid, 4294967294);
    assert.equal(resolveUser(root, '0:4294967294').gid, 4294967294);
    for (const u of ['4294967295', '4294967296', '99999999999999999999999', '1000:4294967295']) {
      assert.throws(() => resolveUser(root, u), fails('ERR_INVALID_IMAGE', /is outside 0\.\.4294967294/), u);
    }
  });

  test('an out-of-range id in a matching passwd or group entry is refused, not wrapped', () => {
    assert.throws(() => resolveUser(root, 'huge'), fails('ERR_INVALID_IMAGE', /uid of user "huge" .* is outside/));
    assert.throws(() => resolveUser(root, 'biggid'), fails('ERR_INVALID_IMAGE', /primary gid of user "biggid"/));
    assert.throws(() => resolveUser(root, 'carol'), fails('ERR_INVALID_IMAGE', /gid of group "overflow"/));
    assert.throws(() => resolveUser(root, 'alice:overflow'), fails('ERR_INVALID_IMAGE', /gid of group "overflow"/));
  });
});

describe('issue-13 users: missing and malformed files', () => {
  test('no /etc at all: numeric ids work, names fail clearly', () => {
    const root = rootfs();
    assert.deepEqual(resolveUser(root, '1000'), { uid: 1000, gid: 0, additionalGids: [0] });
    assert.deepEqual(resolveUser(root, '1000:50', { supplementalGroups: [60] }), { uid: 1000, gid: 50, additionalGids: [50, 60] });
    assert.throws(() => resolveUser(root, 'alice'), fails('ERR_INVALID_IMAGE', /user "alice" not found in the image's \/etc\/passwd \(the image has none\)/));
    assert.throws(() => resolveUser(root, '0:wheel'), fails('ERR_INVALID_IMAGE', /group "wheel" not found in the image's \/etc\/group \(the image has none\)/));
  });

  test('a rootfs that is not there is ERR_NOT_FOUND, not "user not found"', () => {
    assert.throws(() => resolveUser(path.join(base, 'no-such-root'), '1000'), fails('ERR_NOT_FOUND', /rootfs .*no-such-root/));
  });

  test('/etc is a file: same as missing', () => {
    const root = rootfs({ etc: 'not a directory' });
    assert.equal(resolveUser(root, '1000').uid, 1000);
    assert.throws(() => resolveUser(root, 'alice'), fails('ERR_INVALID_IMAGE', /\(the image has none\)/));
  });

  test('malformed lines are skipped, never read as uid 0', () => {
    const root = rootfs({
      'etc/passwd': [
        'alice', // one field
        'alice:x::0:::', // empty uid (runc reads 0)
        'alice:x:zero:0::/:/bin/sh',
        'alice:x:-1:0::/:/bin/sh',
        'alice:x: 0:0::/:/bin/sh',
        '+alice:x:0:0::/:/bin/sh', // NIS compat
        '#alice:x:0:0::/:/bin/sh',
        ':x:0:0::/:/bin/sh', // no name
        'alice:x:1000:1000::/home/alice:/bin/sh\r', // CRLF file
        'alice:x:0:0:second entry:/:/bin/sh', // first valid entry wins
        'mallory:x:0',
        '',
      ].join('\n'),
      'etc/group': ['wheel:x:ten:alice', 'wheel', 'staff:x:50:alice\r', ''].join('\n'),
    });
    assert.deepEqual(resolveUser(root, 'alice'), { uid: 1000, gid: 1000, additionalGids: [1000, 50], name: 'alice' });
    assert.throws(() => resolveUser(root, 'mallory'), fails('ERR_INVALID_IMAGE', /user "mallory" not found/));
    assert.throws(() => resolveUser(root, 'alice:wheel'), fails('ERR_INVALID_IMAGE', /group "wheel" not found/));
  });

  test('long lines: a 1 MiB line before the entry, a group listing 20,000 members', () => {
    const members = Array.from({ length: 20_000 }, (_, i) => `user${i}`);
    const root = rootfs({
      'etc/passwd': `filler:x:5:5:${'g'.repeat(1024 * 1024)}:/:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n`,
      'etc/group': `big:x:77:${members.join(',')},alice\n`,
    });
    assert.deepEqual(resolveUser(root, 'alice'), { uid: 1000, gid: 1000, additionalGids: [1000, 77], name: 'alice' });
  });

  test(`a file larger than ${MAX_ID_FILE_BYTES} bytes is refused with ERR_LIMIT_EXCEEDED; at the limit it is read`, () => {
    const atLimit = rootfs({ 'etc/passwd': 'alice:x:1000:1000::/:/bin/sh\n' });
    truncateSync(path.join(atLimit, 'etc/passwd'), MAX_ID_FILE_BYTES);
    assert.equal(resolveUser(atLimit, 'alice').uid, 1000);
    const over = rootfs({ 'etc/passwd': 'alice:x:1000:1000::/:/bin/sh\n' });
    truncateSync(path.join(over, 'etc/passwd'), MAX_ID_FILE_BYTES + 1);
    assert.throws(() => resolveUser(over, 'alice'), fails('ERR_LIMIT_EXCEEDED', /\/etc\/passwd is larger than/));
  });

  test('a fifo or a directory in place of /etc/passwd is refused without blocking', () => {
    const fifo = rootfs({ 'etc/group': GROUP });
    execFileSync('mkfifo', [path.join(fifo, 'etc/passwd')]);
    assert.throws(() => resolveUser(fifo, 'alice'), fails('ERR_INVALID_IMAGE', /\/etc\/passwd is not a regular file/));
    const dir = rootfs();
    mkdirSync(path.join(dir, 'etc/passwd'), { recursive: true });
    assert.throws(() => resolveUser(dir, '1000'), fails('ERR_INVALID_IMAGE', /\/etc\/passwd is not a regular file/));
  });
});

describe('issue-13 users: R1 confined resolution (CVE-2024-9676 class)', () => {
  /**
   * The canary lives outside every rootfs: it claims alice is uid 0. Any resolution that reads it
   * turns alice into root; a confined one either finds the image's own file or none.
   */
  const hostDir = path.join(base, 'host');
  mkdirSync(path.join(hostDir, 'etc'), { recursive: true });
  const canary = path.join(hostDir, 'etc', 'passwd');
  writeFileSync(canary, 'alice:x:0:0:canary from the host:/:/bin/sh\n');
  writeFileSync(path.join(hostDir, 'etc', 'group'), 'canary:x:4711:alice\n');

  test('absolute symlink to a host file: re-rooted, the host file is never read', () => {
    const root = rootfs();
    mkdirSync(path.join(root, 'etc'));
    symlinkSync(canary, path.join(root, 'etc', 'passwd'));
    assert.throws(() => resolveUser(root, 'alice'), fails('ERR_INVALID_IMAGE', /user "alice" not found/));
    // The same absolute path inside the rootfs is what the link means there.
    mkdirSync(path.dirname(path.join(root, canary)), { recursive: true });
    writeFileSync(path.join(root, canary), 'alice:x:1234:1234::/:/bin/sh\n');
    assert.equal(resolveUser(root, 'alice').uid, 1234);
  });

  test('relative symlink climbing with .. chains: clamped at the root', () => {
    const root = rootfs({ 'etc/group': GROUP });
    const climb = `${'../'.repeat(30)}${path.relative('/', canary)}`;
    symlinkSync(climb, path.join(root, 'etc', 'passwd'));
    assert.throws(() => resolveUser(root, 'alice'), fails('ERR_INVALID_IMAGE', /user "alice" not found/));
    mkdirSync(path.dirname(path.join(root, canary)), { recursive: true });
    writeFileSync(path.join(root, canary), 'alice:x:2345:2345::/:/bin/sh\n');
    assert.equal(resolveUser(root, 'alice').uid, 2345);
  });

  test('/etc itself a symlink to a host directory: neither passwd nor group of the host is read', () => {
    const root = rootfs();
    symlinkSync(path.join(hostDir, 'etc'), path.join(root, 'etc'));
    assert.throws(() => resolveUser(root, 'alice'), fails('ERR_INVALID_IMAGE', /not found/));
    assert.deepEqual(resolveUser(root, '1000'), { uid: 1000, gid: 0, additionalGids: [0] }, 'no group 4711 from the host');
    const relative = rootfs();
    symlinkSync(path.relative(relative, path.join(hostDir, 'etc')), path.join(relative, 'etc'));
    assert.throws(() => resolveUser(relative, 'alice'), fails('ERR_INVALID_IMAGE', /not found/));
  });

  test('symlinks inside the rootfs are followed (images do ship /etc/passwd as a link)', () => {
    const root = rootfs({ 'usr/share/base/passwd': PASSWD, 'usr/share/base/group': GROUP });
    mkdirSync(path.join(root, 'etc'));
    symlinkSync('/usr/share/base/passwd', path.join(root, 'etc', 'passwd'));
    symlinkSync('../usr/share/base/group', path.join(root, 'etc', 'group'));
    assert.deepEqual(resolveUser(root, 'alice'), { uid: 1000, gid: 1000, additionalGids: [1000, 100, 10, 999], name: 'alice' });
  });

  test('a symlink loop stops after 40 hops with a clear error', () => {
    const root = rootfs();
    mkdirSync(path.join(root, 'etc'));
    symlinkSync('passwd', path.join(root, 'etc', 'passwd'));
    assert.throws(() => resolveUser(root, '1000'), fails('ERR_INVALID_IMAGE', /more than 40 symlinks/));
  });

  test('a link resolving to the root itself is not a file', () => {
    const root = rootfs();
    mkdirSync(path.join(root, 'etc'));
    symlinkSync('../../..', path.join(root, 'etc', 'passwd'));
    assert.throws(() => resolveUser(root, '1000'), fails('ERR_INVALID_IMAGE', /is not a regular file/));
  });
});

describe('issue-13 users: runAsNonRoot, as the kubelet checks it', () => {
  test('uid 0, or no user at all, runs as root and is refused', () => {
    assert.throws(() => checkRunAsNonRoot(0, undefined, 'container default.web.app'), fails('ERR_INVALID_MANIFEST', /^container default\.web\.app: container has runAsNonRoot and image will run as root$/));
    assert.throws(() => checkRunAsNonRoot(undefined, undefined, 'c'), fails('ERR_INVALID_MANIFEST', /image will run as root/));
    assert.throws(() => checkRunAsNonRoot(undefined, '', 'c'), fails('ERR_INVALID_MANIFEST', /image will run as root/));
  });

  test('a user name cannot be verified and is refused', () => {
    assert.throws(() => checkRunAsNonRoot(undefined, 'alice', 'c'), fails('ERR_INVALID_MANIFEST', /image has non-numeric user \("alice"\), cannot verify user is non-root/));
  });

  test('a non-zero uid passes, with or without a name', () => {
    checkRunAsNonRoot(1000, undefined, 'c');
    checkRunAsNonRoot(1000, 'alice', 'c');
  });

  test('what the kubelet knows of an image user without its files', () => {
    assert.deepEqual(imageUserForPolicy(undefined), { uid: 0 });
    assert.deepEqual(imageUserForPolicy(''), { uid: 0 });
    assert.deepEqual(imageUserForPolicy('1000:50'), { uid: 1000 });
    assert.deepEqual(imageUserForPolicy('0'), { uid: 0 });
    assert.deepEqual(imageUserForPolicy('alice:50'), { name: 'alice' });
    assert.deepEqual(imageUserForPolicy(':50'), { uid: 0 });
  });
});
