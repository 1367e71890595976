import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

const [backend] = databaseBackends();

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
  t.same(Object.keys(c['m.room_versions'].available).sort(), ['10', '11', '12']);
  t.equal(c['m.change_password'].enabled, true);
});
