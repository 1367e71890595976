/**
 * The server serves the web client's build under its base path, beside the API: files with the
 * right types and headers, every other path still the Matrix 404, a base path of its own, and
 * off when configured so. The build here is a small one made by the test.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

const [backend] = databaseBackends();

function fakeBuild(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'conclave-web-'));
  mkdirSync(path.join(dir, 'assets'));
  writeFileSync(
    path.join(dir, 'index.html'),
    '<!doctype html><title>Conclave</title><script src="./assets/app-1a2b.js"></script>',
  );
  writeFileSync(path.join(dir, 'assets', 'app-1a2b.js'), 'console.log("client")');
  writeFileSync(path.join(dir, 'assets', 'crypto-3c4d.wasm'), Buffer.from([0, 0x61, 0x73, 0x6d]));
  return dir;
}

t.test('serves the client at / beside the API', async (t) => {
  const root = fakeBuild();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const s = await startTestServer(t, backend!, { webClient: '/' }, { webClientRoot: root });

  const index = await s.request('GET', '/');
  t.equal(index.statusCode, 200);
  t.match(index.headers['content-type'], /^text\/html/);
  t.match(index.body, /<title>Conclave<\/title>/);
  t.equal(index.headers['cache-control'], 'no-cache', 'index.html is revalidated, so a new build is seen');
  t.match(index.headers['content-security-policy'], /script-src 'self' 'wasm-unsafe-eval'/);
  t.match(index.headers['content-security-policy'], /frame-ancestors 'none'/);
  t.equal(index.headers['x-content-type-options'], 'nosniff');

  const js = await s.request('GET', '/assets/app-1a2b.js');
  t.equal(js.statusCode, 200);
  t.match(js.headers['content-type'], /javascript/);
  t.match(js.headers['cache-control'], /immutable/, 'hashed assets are cached for good');
  const wasm = await s.request('GET', '/assets/crypto-3c4d.wasm');
  t.equal(wasm.headers['content-type'], 'application/wasm', 'WebAssembly is served so it can be streamed');

  // The API is unchanged around it.
  const versions = await s.request('GET', '/_matrix/client/versions');
  t.equal(versions.statusCode, 200);
  for (const url of [
    '/_matrix/client/v3/nothing',
    '/assets/missing.js',
    '/../package.json',
    '/%2e%2e/package.json',
  ]) {
    const res = await s.request('GET', url);
    t.equal(res.statusCode, 404, `${url} is not found`);
    t.equal(res.json().errcode, 'M_UNRECOGNIZED', `${url} gets the Matrix 404`);
  }
  const post = await s.request('POST', '/');
  t.equal(post.statusCode, 405, 'the client is read-only');
  t.equal(post.json().errcode, 'M_UNRECOGNIZED');
});

t.test('a base path of its own', async (t) => {
  const root = fakeBuild();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const s = await startTestServer(t, backend!, { webClient: '/chat/' }, { webClientRoot: root });
  t.equal((await s.request('GET', '/chat/')).statusCode, 200);
  t.equal((await s.request('GET', '/chat/assets/app-1a2b.js')).statusCode, 200);
  const top = await s.request('GET', '/');
  t.equal(top.statusCode, 404);
  t.equal(top.json().errcode, 'M_UNRECOGNIZED');
});

t.test('off: no client, only the API', async (t) => {
  const root = fakeBuild();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const s = await startTestServer(t, backend!, { webClient: '' }, { webClientRoot: root });
  const res = await s.request('GET', '/');
  t.equal(res.statusCode, 404);
  t.equal(res.json().errcode, 'M_UNRECOGNIZED');
});

t.test('a missing build is explained, not a crash', async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), 'conclave-web-empty-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const s = await startTestServer(t, backend!, { webClient: '/' }, { webClientRoot: root });
  const res = await s.request('GET', '/');
  t.equal(res.statusCode, 503);
  t.match(res.body, /npm run build -w web/);
});

t.test('CONCLAVE_WEB_CLIENT: off, a path, or an error naming the setting', async (t) => {
  t.equal(loadConfig({}).webClient, '/', 'served at / by default');
  t.equal(loadConfig({ CONCLAVE_WEB_CLIENT: 'off' }).webClient, '');
  t.equal(loadConfig({ CONCLAVE_WEB_CLIENT: '/chat' }).webClient, '/chat/', 'a trailing slash is added');
  t.equal(loadConfig({ CONCLAVE_WEB_CLIENT: '/a/b/' }).webClient, '/a/b/');
  for (const bad of ['chat', '/_matrix/', '/_conclave/x', '/.well-known/', '/../x/', '/a b/', 'http://x/']) {
    t.throws(
      () => loadConfig({ CONCLAVE_WEB_CLIENT: bad }),
      ConfigError,
      `${JSON.stringify(bad)} is refused`,
    );
    t.throws(() => loadConfig({ CONCLAVE_WEB_CLIENT: bad }), /CONCLAVE_WEB_CLIENT/);
  }
});
