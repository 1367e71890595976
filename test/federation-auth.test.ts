// X-Matrix on inbound federation requests, and the first authenticated routes (query/profile,
// query/directory) between in-process servers.
import t from 'tap';
import { FederationError } from '../src/federation/index.ts';
import { databaseBackends } from './helpers/backends.ts';
import {
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
  xMatrixHeader,
} from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';

// Several homeservers per backend: slow to start on a busy machine.
t.setTimeout(300_000);

const PROFILE = '/_matrix/federation/v1/query/profile';

for (const backend of databaseBackends()) {
  t.test(`X-Matrix request authentication on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    await hs1.request('PUT', `/_matrix/client/v3/profile/${encodeURIComponent(alice.user_id)}/displayname`, {
      token: alice.access_token,
      body: { displayname: 'Alice' },
    });
    // eve runs a server the test scripts: it publishes its key like any server.
    const eve = rawServer('eve.test');
    network.servers.set(
      'eve.test',
      rawServerEndpoint(() => rawServerKeys(eve)),
    );
    const uri = `${PROFILE}?user_id=${encodeURIComponent(alice.user_id)}`;
    const signedGet = (authorization: string, url = uri) =>
      hs1.request('GET', url, { headers: { authorization } });

    t.test('a correctly signed request is served, with or without destination', async (t) => {
      const ok = await signedGet(xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs1.test' }));
      t.equal(ok.statusCode, 200, ok.body);
      t.same(ok.json(), { displayname: 'Alice' });
      const legacy = await signedGet(
        xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs1.test' }, { headerDestination: null }),
      );
      t.equal(legacy.statusCode, 200, 'servers before Matrix 1.3 send no destination');
    });

    t.test('the outbound client signs requests that the other server accepts', async (t) => {
      const profile = await hs2.runtime.federation.client.request({
        destination: 'hs1.test',
        method: 'GET',
        path: PROFILE,
        query: { user_id: alice.user_id, field: 'displayname' },
      });
      t.same(profile, { displayname: 'Alice' });
      const sent = network.sent.find((r) => r.from === 'hs2.test' && r.uri.startsWith(PROFILE))!;
      t.match(
        sent.headers.authorization,
        /^X-Matrix origin="hs2\.test",destination="hs1\.test",key="ed25519:/,
      );

      const error = await hs2.runtime.federation.client
        .request({
          destination: 'hs1.test',
          method: 'GET',
          path: PROFILE,
          query: { user_id: '@nobody:hs1.test' },
        })
        .catch((e: unknown) => e);
      t.ok(error instanceof FederationError, 'an error answer is a FederationError');
      if (error instanceof FederationError) {
        t.equal(error.kind, 'http');
        t.equal(error.status, 404);
        t.equal(error.errcode, 'M_NOT_FOUND');
      }
      const unreachable = await hs2.runtime.federation.client
        .request({ destination: 'nowhere.test', method: 'GET', path: '/_matrix/federation/v1/version' })
        .catch((e: unknown) => e);
      t.equal((unreachable as FederationError).kind, 'unreachable');
    });

    t.test('requests that are not properly signed get 401 M_UNAUTHORIZED', async (t) => {
      const good = xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs1.test' });
      const impostor = rawServer('eve.test', 'eve2');
      const cases: Array<[string, Record<string, string>, RegExp, string?]> = [
        ['missing header', {}, /Missing Authorization header/],
        ['a bearer token', { authorization: 'Bearer abc' }, /not of the X-Matrix scheme/],
        [
          'a malformed header',
          { authorization: 'X-Matrix origin="eve.test",key="ed25519:eve1"' },
          /sig parameter/,
        ],
        [
          'an origin that is not a server name',
          { authorization: good.replace('origin="eve.test"', 'origin="eve test"') },
          /not a valid server name/,
        ],
        [
          'the wrong destination',
          { authorization: xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs2.test' }) },
          /signed for destination hs2\.test, but this server is hs1\.test/,
        ],
        [
          'a bad signature',
          { authorization: good.replace(/sig="[^"]+"/, `sig="${'A'.repeat(86)}"`) },
          /does not match the request/,
        ],
        [
          'a signature over another URI',
          {
            authorization: xMatrixHeader(eve, { method: 'GET', uri: `${uri}&x=1`, destination: 'hs1.test' }),
          },
          /does not match the request/,
        ],
        [
          'a key the origin does not have',
          { authorization: xMatrixHeader(impostor, { method: 'GET', uri, destination: 'hs1.test' }) },
          /no key ed25519:eve2 of eve\.test/,
        ],
        [
          'a server that cannot be reached for its keys',
          {
            authorization: xMatrixHeader(rawServer('ghost.test'), {
              method: 'GET',
              uri,
              destination: 'hs1.test',
            }),
          },
          /no key ed25519:eve1 of ghost\.test/,
        ],
        [
          'a signature by another server than the origin claims',
          { authorization: good.replace('origin="eve.test"', 'origin="hs2.test"') },
          /hs2\.test/,
        ],
      ];
      for (const [what, headers, reason] of cases) {
        const res = await hs1.request('GET', uri, { headers });
        t.equal(res.statusCode, 401, what);
        t.equal(res.json().errcode, 'M_UNAUTHORIZED', what);
        t.match(res.json().error, reason, what);
      }
      const bare = await hs1.request('GET', PROFILE);
      t.equal(bare.statusCode, 401, 'a request without parameters needs a signature first');
    });

    t.test('query/profile refuses users of other servers and unknown fields', async (t) => {
      const ask = (query: string) => {
        const u = `${PROFILE}?${query}`;
        return signedGet(xMatrixHeader(eve, { method: 'GET', uri: u, destination: 'hs1.test' }), u);
      };
      const field = await ask(`user_id=${encodeURIComponent(alice.user_id)}&field=displayname`);
      t.same(field.json(), { displayname: 'Alice' });
      const noAvatar = await ask(`user_id=${encodeURIComponent(alice.user_id)}&field=avatar_url`);
      t.equal(noAvatar.statusCode, 404);
      t.equal(noAvatar.json().errcode, 'M_NOT_FOUND');
      const unknown = await ask(`user_id=${encodeURIComponent('@nobody:hs1.test')}`);
      t.equal(unknown.statusCode, 404);
      const remote = await ask(`user_id=${encodeURIComponent('@bob:hs2.test')}`);
      t.equal(remote.statusCode, 400);
      t.equal(remote.json().errcode, 'M_INVALID_PARAM');
      const malformed = await ask('user_id=bob');
      t.equal(malformed.statusCode, 400);
      t.equal(malformed.json().errcode, 'M_INVALID_PARAM');
      const missing = await ask('field=displayname');
      t.equal(missing.statusCode, 400);
    });

    t.test("query/directory resolves this server's aliases", async (t) => {
      const room = await hs1.request('POST', '/_matrix/client/v3/createRoom', {
        token: alice.access_token,
        body: { room_alias_name: 'lab' },
      });
      t.equal(room.statusCode, 200, room.body);
      const roomId = room.json().room_id;
      const found = await hs2.runtime.federation.client.request({
        destination: 'hs1.test',
        method: 'GET',
        path: '/_matrix/federation/v1/query/directory',
        query: { room_alias: '#lab:hs1.test' },
      });
      t.same(found, { room_id: roomId, servers: ['hs1.test'] });
      const ask = (alias: string) => {
        const u = `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(alias)}`;
        return signedGet(xMatrixHeader(eve, { method: 'GET', uri: u, destination: 'hs1.test' }), u);
      };
      t.equal((await ask('#nope:hs1.test')).statusCode, 404);
      t.equal(
        (await ask('#lab:hs2.test')).json().errcode,
        'M_NOT_FOUND',
        "another server's alias is not ours to resolve",
      );
      t.equal((await ask('lab')).json().errcode, 'M_INVALID_PARAM');
    });

    t.test('version needs no signature; unknown federation paths are 404 M_UNRECOGNIZED', async (t) => {
      const version = await hs1.request('GET', '/_matrix/federation/v1/version');
      t.equal(version.statusCode, 200);
      t.equal(version.json().server.name, 'Conclave');
      const unknown = await hs1.request('GET', '/_matrix/federation/v1/nothing');
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_UNRECOGNIZED');
    });
  });
}
