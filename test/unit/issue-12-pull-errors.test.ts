import { test } from 'node:test';
import assert from 'node:assert/strict';
import { explainPullFailure, registryAnswer } from '../../src/reconciler/pull-error.js';
import { podVerdict, wantedBy } from '../../src/reconciler/conditions.js';
import type { DesiredPod } from '../../src/reconciler/desired.js';

/**
 * Issue 12: a pull error says what to check (tag, registry address, credentials) and keeps at
 * most a short one-line excerpt of the registry's body; the pod's condition names file:line.
 */

const REF = '127.0.0.1:5000/berth/demo:nope';
const BODY = '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]} ';

test('pull errors: a 404 is the registry\'s answer in one line plus what to check', () => {
  const msg = explainPullFailure(REF, {
    code: 'ERR_NOT_FOUND',
    message: `fetch manifest ${REF}: 404 from http://127.0.0.1:5000/v2/berth/demo/manifests/nope: ${BODY}`,
    details: { status: 404, body: BODY },
  });
  assert.equal(msg, `pull ${REF}: not found: registry 127.0.0.1:5000 answered 404 "manifest unknown (MANIFEST_UNKNOWN)"; check the tag, the registry address and credentials`);
  assert.doesNotMatch(msg, /detail|\{/, 'no raw JSON');
});

test('pull errors: 401, 5xx, unreachable and other failures', () => {
  assert.match(explainPullFailure(REF, { code: 'ERR_REGISTRY', message: 'x', details: { status: 401, body: '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}' } }),
    /^pull \S+: access denied: registry 127\.0\.0\.1:5000 answered 401 "authentication required \(UNAUTHORIZED\)"; check the tag, the registry address and credentials$/);
  assert.match(explainPullFailure(REF, { code: 'ERR_REGISTRY', message: 'x', details: { status: 503, body: '<html>\n<body>Service Unavailable</body></html>' } }),
    /answered 503 "<html> <body>Service Unavailable<\/body><\/html>"; retried with back-off/);
  assert.equal(explainPullFailure('127.0.0.1:1/absent/image:1', { code: 'ERR_NETWORK', message: 'fetch manifest 127.0.0.1:1/absent/image:1: connect ECONNREFUSED 127.0.0.1:1' }),
    'pull 127.0.0.1:1/absent/image:1: cannot reach registry 127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1; check the registry address (host:port), that the registry runs, and the network');
  assert.equal(explainPullFailure(REF, { code: 'ERR_UNSUPPORTED', message: 'pull x: zstd layers are not supported' }), `pull ${REF}: pull x: zstd layers are not supported`);
});

test('pull errors: a body cut short or not JSON becomes a short single-line excerpt', () => {
  assert.equal(registryAnswer('{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"ber'), 'repository name not known to registry');
  const long = registryAnswer(`line one\nline two ${'x'.repeat(500)}`);
  assert.ok(long.length <= 120 && !long.includes('\n') && long.endsWith('…'), long);
});

test('pull errors: the ImagePullBackOff condition names the pod\'s containers and the manifest file:line', () => {
  const pod: DesiredPod = {
    key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 7, podHash: 'p', hostNetwork: true,
    restartPolicy: 'Always', gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false,
    containers: [
      { name: 'app', image: REF, pullPolicy: 'IfNotPresent', specHash: 'a', env: [], ports: [] },
      { name: 'side', image: 'other/img:1', pullPolicy: 'IfNotPresent', specHash: 'b', env: [], ports: [] },
    ],
  };
  const v = podVerdict({ desired: pod, observed: undefined, generation: 1, images: [{ image: REF, error: 'pull x: not found' }], waiting: [], failed: [], blocked: [], invalid: [] });
  assert.equal(v.phase, 'ImagePullBackOff');
  assert.equal(v.message, 'pull x: not found (wanted by default/web container app at /m/web.yaml:7)');
  assert.equal(v.conditions.find((c) => c.type === 'Ready')?.message, v.message);
  assert.equal(wantedBy([{ podKey: 'a/b', containers: ['x', 'y'], source: '/f.yaml', line: 2 }, { podKey: 'a/c', containers: ['z'], source: '/g.yaml', line: 9 }]),
    ' (wanted by a/b containers x, y at /f.yaml:2; a/c container z at /g.yaml:9)');
});

test('regression pull-error-names-ref-twice: a failure whose message already names the pull keeps one prefix', () => {
  const msg = explainPullFailure(REF, { code: 'ERR_INVALID_IMAGE', message: `pull ${REF}: image is for linux/arm64, not linux/amd64` });
  assert.equal(msg, `pull ${REF}: image is for linux/arm64, not linux/amd64`);
  assert.equal(explainPullFailure(REF, { code: 'ERR_INVALID_IMAGE', message: 'manifest is schema1' }), `pull ${REF}: manifest is schema1`);
});
