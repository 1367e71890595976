import t from 'tap';
import { defaultBaseUrl } from '../src/routes/client/versions.routes.ts';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, startTestServer } from './helpers/server.ts';

const [backend] = databaseBackends();
// Four servers (one listening on loopback): more than tap's 120 s on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('versions, well-known and capabilities', async (t) => {
  const s = await startTestServer(t, backend!, { publicBaseUrl: 'https://matrix.conclave.test' });
  const versions = await s.request('GET', '/_matrix/client/versions');
  t.equal(versions.statusCode, 200);
  t.ok(versions.json().versions.includes('v1.1'), 'advertises v1.1, which matrix-js-sdk needs');
  t.equal(versions.headers['access-control-allow-origin'], '*', 'CORS on ordinary responses');

  const wk = await s.request('GET', '/.well-known/matrix/client');
  t.same(wk.json(), { 'm.homeserver': { base_url: 'https://matrix.conclave.test' } });

  const anonymous = await s.request('GET', '/_matrix/client/v3/capabilities');
  t.equal(anonymous.statusCode, 401);
  const alice = await s.register('alice');
  const caps = await s.request('GET', '/_matrix/client/v3/capabilities', { token: alice.access_token });
  t.equal(caps.statusCode, 200);
  const c = caps.json().capabilities;
  t.equal(c['m.room_versions'].default, '12');
  // Every version, 1 and 2 (sender-chosen event IDs) included.
  t.same(
    Object.keys(c['m.room_versions'].available).sort((a, b) => Number(a) - Number(b)),
    ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'],
  );
  t.equal(c['m.change_password'].enabled, true);
});

t.test('HTTP conventions and older paths', async (t) => {
  const s = await startTestServer(t, backend!);
  await t.test('JSON answers say application/json without a charset, errors too', async (t) => {
    const ok = await s.request('GET', '/_matrix/client/versions');
    t.equal(ok.headers['content-type'], 'application/json');
    const missing = await s.request('GET', '/_matrix/client/v3/no-such-endpoint');
    t.equal(missing.statusCode, 404);
    t.equal(missing.headers['content-type'], 'application/json');
    t.equal(missing.json().errcode, 'M_UNRECOGNIZED');
  });

  await t.test('/versions lists the r0 releases, whose paths are served, and v1.1', async (t) => {
    const { versions } = (await s.request('GET', '/_matrix/client/versions')).json();
    t.ok(versions.includes('r0.6.1'));
    t.ok(versions.includes('v1.1'));
    t.notOk(versions.includes('v1.4'), 'not v1.4: threads and relations are not served');
  });

  await t.test(
    '/_matrix/client/r0 and the shipped /unstable paths reach the current endpoints',
    async (t) => {
      const flows = await s.request('GET', '/_matrix/client/r0/login');
      t.equal(flows.statusCode, 200);
      t.ok(flows.json().flows.some((f: { type: string }) => f.type === 'm.login.password'));
      const alice = await s.register('alice');
      // r0-era clients send the user ID in `user` rather than an identifier.
      const login = await s.request('POST', '/_matrix/client/r0/login', {
        body: { type: 'm.login.password', user: alice.user_id, password: PASSWORD },
      });
      t.equal(login.statusCode, 200, 'an older client logs in over r0');
      const whoami = await s.request('GET', '/_matrix/client/r0/account/whoami?x=1', {
        token: alice.access_token,
      });
      t.equal(whoami.json().user_id, alice.user_id, 'query strings survive the alias');
      // matrix-js-sdk's legacy crypto uploads cross-signing keys here: reached (it asks for UIA or a
      // token), not 404.
      const anon = await s.request('POST', '/_matrix/client/unstable/keys/device_signing/upload', {
        body: {},
      });
      t.equal(anon.statusCode, 401);
      t.equal(anon.json().errcode, 'M_MISSING_TOKEN');
      const sigs = await s.request('POST', '/_matrix/client/unstable/keys/signatures/upload', {
        token: alice.access_token,
        body: {},
      });
      t.equal(sigs.statusCode, 200);
      const other = await s.request('GET', '/_matrix/client/unstable/account/whoami', {
        token: alice.access_token,
      });
      t.equal(other.statusCode, 404, 'only the listed unstable paths are aliases');
      t.equal(other.json().errcode, 'M_UNRECOGNIZED');
      const malformed = await s.request('POST', '/_matrix/client/r0/login', { body: { type: 5 } });
      t.equal(malformed.statusCode, 400, 'malformed bodies get the same 400 under r0');
    },
  );
});

t.test('the default well-known names the address the server answers on', async (t) => {
  t.equal(defaultBaseUrl('example.org', '0.0.0.0', 8008), 'http://example.org:8008');
  t.equal(defaultBaseUrl('example.org:8448', '::', 8008), 'http://example.org:8008');
  t.equal(defaultBaseUrl('[::1]:8448', '0.0.0.0', 9000), 'http://[::1]:9000');
  t.equal(defaultBaseUrl('example.org', '::1', 8008), 'http://[::1]:8008');
  const s = await startTestServer(t, backend!, { bindAddress: '127.0.0.1', port: 0 });
  await s.app.listen({ host: '127.0.0.1', port: 0 });
  const address = s.app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const wk = await (await fetch(`http://127.0.0.1:${port}/.well-known/matrix/client`)).json();
  const base = wk['m.homeserver'].base_url as string;
  t.equal(base, `http://127.0.0.1:${port}`, 'plain HTTP, the bound address and the real port');
  const versions = await fetch(`${base}/_matrix/client/versions`);
  t.equal(versions.status, 200, 'a client following it reaches the server');
});

t.test('request log lines carry the errcode of error answers', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const s = await startTestServer(
    t,
    backend!,
    {},
    { logStream: { write: (l) => lines.push(JSON.parse(l)) } },
  );
  await s.request('GET', '/_matrix/client/v3/account/whoami');
  await s.request('POST', '/_matrix/client/v3/login', {
    rawBody: '{not json',
    headers: { 'content-type': 'application/json' },
  });
  await s.request('GET', '/_matrix/client/r0/nothing-here?access_token=secret');
  await s.request('GET', '/_matrix/client/versions');
  const requests = lines.filter((l) => l.msg === 'request');
  t.same(
    requests.map((l) => [l.status, l.errcode]),
    [
      [401, 'M_MISSING_TOKEN'],
      [400, 'M_NOT_JSON'],
      [404, 'M_UNRECOGNIZED'],
      [200, undefined],
    ],
  );
  t.equal(
    requests[2]!.url,
    '/_matrix/client/r0/nothing-here?access_token=***',
    'the URL as called, token masked',
  );
});
