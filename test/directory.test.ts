import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import {
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
  xMatrixHeader,
} from './helpers/federation.ts';
import { SERVER_NAME, startTestServer, type TestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

interface Chunk {
  room_id: string;
  name?: string;
  topic?: string;
  canonical_alias?: string;
  num_joined_members: number;
  world_readable: boolean;
  guest_can_join: boolean;
  join_rule?: string;
  room_type?: string;
}

/**
 * Room aliases and the published room directory: alice runs a public plaza and a private lab,
 * bob joins the plaza, mallory is an outsider.
 */
for (const backend of databaseBackends()) {
  t.test(`directory on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token?: string, body?: unknown) =>
      s.request(method, url, {
        ...(token !== undefined ? { token } : {}),
        ...(body !== undefined ? { body } : {}),
      });
    const createRoom = async (body: Record<string, unknown>) => {
      const res = await call('POST', `${V3}/createRoom`, alice.access_token, body);
      if (res.statusCode !== 200) throw new Error(`createRoom: ${res.body}`);
      return res.json().room_id as string;
    };
    const aliasUrl = (alias: string) => `${V3}/directory/room/${enc(alias)}`;
    const visibilityUrl = (roomId: string) => `${V3}/directory/list/room/${enc(roomId)}`;
    const plazaAlias = `#plaza:${SERVER_NAME}`;

    const plaza = await createRoom({
      visibility: 'public',
      preset: 'public_chat',
      name: 'Plaza',
      topic: 'Open discussion for everyone',
      room_alias_name: 'plaza',
    });
    const lab = await createRoom({
      visibility: 'private',
      preset: 'private_chat',
      name: 'Secret Lab',
      topic: 'Unpublished results',
      room_alias_name: 'lab',
    });
    // Published at creation, but invite-only: a private room all the same.
    const vault = await createRoom({ visibility: 'public', preset: 'private_chat', name: 'Vault' });
    const join = await call('POST', `${V3}/join/${enc(plazaAlias)}`, bob.access_token, {});
    t.equal(join.statusCode, 200, join.body);

    t.test('the directory lists only the public room, without a token', async (t) => {
      const res = await call('GET', `${V3}/publicRooms`);
      t.equal(res.statusCode, 200, res.body);
      const body = res.json();
      t.same(body.chunk, [
        {
          room_id: plaza,
          name: 'Plaza',
          topic: 'Open discussion for everyone',
          canonical_alias: plazaAlias,
          num_joined_members: 2,
          world_readable: false,
          guest_can_join: false,
          join_rule: 'public',
        },
      ]);
      t.equal(body.total_room_count_estimate, 1);
      t.notOk(body.next_batch, 'no next page');
      t.notOk(body.prev_batch, 'no previous page');
      for (const secret of ['Secret Lab', 'Unpublished', 'Vault', lab, vault]) {
        t.notOk(res.body.includes(secret), `nothing of the private rooms (${secret})`);
      }
      const own = await call('GET', `${V3}/publicRooms?server=${enc(SERVER_NAME)}`);
      t.same(own.json().chunk, body.chunk, 'naming this server is the same as naming none');
    });

    t.test('POST /publicRooms needs a token and filters by search term', async (t) => {
      const bare = await call('POST', `${V3}/publicRooms`, undefined, {});
      t.equal(bare.statusCode, 401);
      t.equal(bare.json().errcode, 'M_MISSING_TOKEN');
      const all = await call('POST', `${V3}/publicRooms`, mallory.access_token, {});
      t.equal(all.statusCode, 200, all.body);
      t.same(
        all.json().chunk.map((c: Chunk) => c.room_id),
        [plaza],
      );
      for (const term of ['PLAZA', 'open disc', 'plaza:conclave']) {
        const hit = await call('POST', `${V3}/publicRooms`, mallory.access_token, {
          filter: { generic_search_term: term },
        });
        t.same(
          hit.json().chunk.map((c: Chunk) => c.room_id),
          [plaza],
          `"${term}" finds the plaza`,
        );
      }
      for (const term of ['secret', 'vault', 'nothing like it']) {
        const miss = await call('POST', `${V3}/publicRooms`, mallory.access_token, {
          filter: { generic_search_term: term },
        });
        t.same(miss.json().chunk, [], `"${term}" finds nothing`);
        t.equal(miss.json().total_room_count_estimate, 0);
      }
      const thirdParty = await call('POST', `${V3}/publicRooms`, mallory.access_token, {
        third_party_instance_id: 'irc-libera',
      });
      t.same(thirdParty.json().chunk, [], 'no room is on a third-party network');
      const allNetworks = await call('POST', `${V3}/publicRooms`, mallory.access_token, {
        include_all_networks: true,
      });
      t.same(
        allNetworks.json().chunk.map((c: Chunk) => c.room_id),
        [plaza],
      );
    });

    t.test('bad /publicRooms requests', async (t) => {
      const cases: Array<[string, Awaited<ReturnType<typeof call>>, number, string]> = [
        ['limit not a number', await call('GET', `${V3}/publicRooms?limit=many`), 400, 'M_INVALID_PARAM'],
        ['limit zero', await call('GET', `${V3}/publicRooms?limit=0`), 400, 'M_INVALID_PARAM'],
        ['garbage token', await call('GET', `${V3}/publicRooms?since=garbage`), 400, 'M_INVALID_PARAM'],
        [
          'forged token',
          await call('GET', `${V3}/publicRooms?since=f${Buffer.from('{"a":1}').toString('base64url')}`),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'bad server name',
          await call('GET', `${V3}/publicRooms?server=${enc('no spaces')}`),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'another server',
          await call('GET', `${V3}/publicRooms?server=elsewhere.example`),
          404,
          'M_NOT_FOUND',
        ],
        [
          'filter of the wrong type',
          await call('POST', `${V3}/publicRooms`, alice.access_token, { filter: 'plaza' }),
          400,
          'M_BAD_JSON',
        ],
        [
          'limit as a string in the body',
          await call('POST', `${V3}/publicRooms`, alice.access_token, { limit: '5' }),
          400,
          'M_BAD_JSON',
        ],
        [
          'all networks and one network',
          await call('POST', `${V3}/publicRooms`, alice.access_token, {
            include_all_networks: true,
            third_party_instance_id: 'irc',
          }),
          400,
          'M_INVALID_PARAM',
        ],
      ];
      for (const [what, res, status, errcode] of cases) {
        t.equal(res.statusCode, status, `${what}: ${status}`);
        t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      }
    });

    t.test('pagination walks every room once, both ways', async (t) => {
      const names = ['Garden', 'Harbor', 'Market', 'Quay'];
      const extra: string[] = [];
      for (const name of names) extra.push(await createRoom({ visibility: 'public', name }));
      // Bob joins two of them: the order is most members first, then room ID.
      for (const roomId of extra.slice(0, 2)) {
        await call('POST', `${V3}/rooms/${enc(roomId)}/join`, bob.access_token, {});
      }
      const full = (await call('GET', `${V3}/publicRooms`)).json();
      t.equal(full.total_room_count_estimate, 5);
      const expected = full.chunk as Chunk[];
      const counts = expected.map((c) => c.num_joined_members);
      t.same(
        counts,
        [...counts].sort((a, b) => b - a),
        'largest rooms first',
      );

      const pages: string[][] = [];
      let since: string | undefined;
      do {
        const url = `${V3}/publicRooms?limit=2${since ? `&since=${enc(since)}` : ''}`;
        const res = await call('GET', url);
        t.equal(res.statusCode, 200, res.body);
        const body = res.json();
        t.equal(body.total_room_count_estimate, 5);
        if (pages.length === 0) t.notOk(body.prev_batch, 'the first page has no prev_batch');
        else t.ok(body.prev_batch, 'later pages have a prev_batch');
        pages.push(body.chunk.map((c: Chunk) => c.room_id));
        since = body.next_batch;
      } while (since && pages.length < 10);
      t.same(
        pages.map((p) => p.length),
        [2, 2, 1],
      );
      t.same(
        pages.flat(),
        expected.map((c) => c.room_id),
        'every room once, in order',
      );

      // Forward with POST, then back.
      const firstPage = await call('POST', `${V3}/publicRooms`, alice.access_token, { limit: 2 });
      const secondPage = await call('POST', `${V3}/publicRooms`, alice.access_token, {
        limit: 2,
        since: firstPage.json().next_batch,
      });
      t.same(
        secondPage.json().chunk.map((c: Chunk) => c.room_id),
        pages[1],
        'POST paginates the same way',
      );
      const back = await call('GET', `${V3}/publicRooms?limit=2&since=${enc(secondPage.json().prev_batch)}`);
      t.same(
        back.json().chunk.map((c: Chunk) => c.room_id),
        pages[0],
        'prev_batch leads back to the first page',
      );
      t.notOk(back.json().prev_batch, 'and that page is the first');
      t.ok(back.json().next_batch);
      const emptySince = await call('GET', `${V3}/publicRooms?limit=2&since=`);
      t.same(
        emptySince.json().chunk.map((c: Chunk) => c.room_id),
        pages[0],
        'an empty since is the first page',
      );

      const searched = await call('POST', `${V3}/publicRooms`, alice.access_token, {
        limit: 1,
        filter: { generic_search_term: 'ar' },
      });
      t.equal(searched.json().total_room_count_estimate, 3, 'Garden, Harbor and Market match "ar"');
      t.equal(searched.json().chunk.length, 1);
      t.ok(searched.json().next_batch);
    });

    t.test('room types filter', async (t) => {
      const space = await createRoom({
        visibility: 'public',
        name: 'Science space',
        creation_content: { type: 'm.space' },
      });
      const spaces = await call('POST', `${V3}/publicRooms`, alice.access_token, {
        filter: { room_types: ['m.space'] },
      });
      t.same(
        spaces.json().chunk.map((c: Chunk) => [c.room_id, c.room_type]),
        [[space, 'm.space']],
      );
      const plain = await call('POST', `${V3}/publicRooms`, alice.access_token, {
        filter: { room_types: [null] },
      });
      t.notOk(
        plain.json().chunk.some((c: Chunk) => c.room_id === space),
        'null asks for rooms without a type',
      );
      t.equal(plain.json().chunk.length, 5);
      const none = await call('POST', `${V3}/publicRooms`, alice.access_token, {
        filter: { room_types: [] },
      });
      t.equal(none.json().chunk.length, 6, 'an empty list filters nothing');
    });

    t.test('aliases: create, resolve, list', async (t) => {
      const alias = `#town-square:${SERVER_NAME}`;
      const put = await call('PUT', aliasUrl(alias), alice.access_token, { room_id: plaza });
      t.equal(put.statusCode, 200, put.body);
      t.same(put.json(), {});
      const get = await call('GET', aliasUrl(alias));
      t.equal(get.statusCode, 200, 'resolving needs no token');
      t.same(get.json(), { room_id: plaza, servers: [SERVER_NAME] });

      const list = await call('GET', `${V3}/rooms/${enc(plaza)}/aliases`, bob.access_token);
      t.equal(list.statusCode, 200);
      t.same(list.json().aliases, [plazaAlias, alias], 'a member sees the local aliases');
      const outsider = await call('GET', `${V3}/rooms/${enc(plaza)}/aliases`, mallory.access_token);
      t.equal(outsider.statusCode, 403, 'an outsider does not');
      t.equal(outsider.json().errcode, 'M_FORBIDDEN');
      const labAliases = await call('GET', `${V3}/rooms/${enc(lab)}/aliases`, mallory.access_token);
      t.equal(labAliases.statusCode, 403);
      t.notOk(labAliases.body.includes('#lab'));
      const unknown = await call(
        'GET',
        `${V3}/rooms/${enc('!nowhere:conclave.test')}/aliases`,
        mallory.access_token,
      );
      t.equal(unknown.statusCode, 403, 'an unknown room looks the same as a closed one');
      const noToken = await call('GET', `${V3}/rooms/${enc(plaza)}/aliases`);
      t.equal(noToken.statusCode, 401);

      // A world-readable room shows its aliases to anyone.
      const hv = await call(
        'PUT',
        `${V3}/rooms/${enc(plaza)}/state/m.room.history_visibility`,
        alice.access_token,
        { history_visibility: 'world_readable' },
      );
      t.equal(hv.statusCode, 200, hv.body);
      const readable = await call('GET', `${V3}/rooms/${enc(plaza)}/aliases`, mallory.access_token);
      t.equal(readable.statusCode, 200);
      t.same(readable.json().aliases, [plazaAlias, alias]);
      const listed = (await call('GET', `${V3}/publicRooms`))
        .json()
        .chunk.find((c: Chunk) => c.room_id === plaza);
      t.equal(listed.world_readable, true, 'the directory shows it world readable');
      await call('PUT', `${V3}/rooms/${enc(plaza)}/state/m.room.history_visibility`, alice.access_token, {
        history_visibility: 'shared',
      });
    });

    t.test('aliases: the forbidden and the malformed', async (t) => {
      const cases: Array<[string, string, string | undefined, unknown, number, string]> = [
        ['a taken alias', plazaAlias, alice.access_token, { room_id: plaza }, 409, 'M_UNKNOWN'],
        [
          'an alias of another room',
          `#lab:${SERVER_NAME}`,
          alice.access_token,
          { room_id: plaza },
          409,
          'M_UNKNOWN',
        ],
        [
          'mallory, not in the room',
          `#mallory:${SERVER_NAME}`,
          mallory.access_token,
          { room_id: plaza },
          403,
          'M_FORBIDDEN',
        ],
        [
          'mallory, for a private room',
          `#mylab:${SERVER_NAME}`,
          mallory.access_token,
          { room_id: lab },
          403,
          'M_FORBIDDEN',
        ],
        [
          'another server',
          '#plaza2:elsewhere.example',
          alice.access_token,
          { room_id: plaza },
          400,
          'M_INVALID_PARAM',
        ],
        ['no sigil', `plaza2:${SERVER_NAME}`, alice.access_token, { room_id: plaza }, 400, 'M_INVALID_PARAM'],
        ['no server name', '#plaza2', alice.access_token, { room_id: plaza }, 400, 'M_INVALID_PARAM'],
        [
          'an empty localpart',
          `#:${SERVER_NAME}`,
          alice.access_token,
          { room_id: plaza },
          400,
          'M_INVALID_PARAM',
        ],
        [
          'a bad server name',
          '#plaza2:bad server',
          alice.access_token,
          { room_id: plaza },
          400,
          'M_INVALID_PARAM',
        ],
        [
          'not a room ID',
          `#plaza2:${SERVER_NAME}`,
          alice.access_token,
          { room_id: 'plaza' },
          400,
          'M_INVALID_PARAM',
        ],
        [
          'an unknown room',
          `#plaza2:${SERVER_NAME}`,
          alice.access_token,
          { room_id: `!nope:${SERVER_NAME}` },
          404,
          'M_NOT_FOUND',
        ],
        ['no room_id', `#plaza2:${SERVER_NAME}`, alice.access_token, {}, 400, 'M_BAD_JSON'],
        [
          'room_id not a string',
          `#plaza2:${SERVER_NAME}`,
          alice.access_token,
          { room_id: 7 },
          400,
          'M_BAD_JSON',
        ],
        ['no token', `#plaza2:${SERVER_NAME}`, undefined, { room_id: plaza }, 401, 'M_MISSING_TOKEN'],
      ];
      for (const [what, alias, token, body, status, errcode] of cases) {
        const res = await call('PUT', aliasUrl(alias), token, body);
        t.equal(res.statusCode, status, `${what}: ${status}`);
        t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      }
      const owner = await call('GET', aliasUrl(`#lab:${SERVER_NAME}`));
      t.equal(owner.json().room_id, lab, 'a refused PUT changes nothing');
      const missing = await call('GET', aliasUrl(`#mallory:${SERVER_NAME}`));
      t.equal(missing.statusCode, 404);
      t.equal(missing.json().errcode, 'M_NOT_FOUND');
      const remote = await call('GET', aliasUrl('#plaza:elsewhere.example'));
      t.equal(remote.statusCode, 404, 'an alias of a server that cannot be reached is not found');
      const bad = await call('GET', aliasUrl('plaza'));
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const badRoom = await call('GET', `${V3}/rooms/no-sigil/aliases`, alice.access_token);
      t.equal(badRoom.statusCode, 400);
    });

    t.test('aliases: who may delete', async (t) => {
      const bobsAlias = `#bobs-corner:${SERVER_NAME}`;
      t.equal((await call('PUT', aliasUrl(bobsAlias), bob.access_token, { room_id: plaza })).statusCode, 200);
      const townSquare = `#town-square:${SERVER_NAME}`;

      const byMallory = await call('DELETE', aliasUrl(bobsAlias), mallory.access_token);
      t.equal(byMallory.statusCode, 403, 'an outsider may not');
      t.equal(byMallory.json().errcode, 'M_FORBIDDEN');
      const byBob = await call('DELETE', aliasUrl(townSquare), bob.access_token);
      t.equal(byBob.statusCode, 403, "a member without power may not delete alice's alias");
      t.equal((await call('GET', aliasUrl(townSquare))).statusCode, 200, 'it is still there');

      const own = await call('DELETE', aliasUrl(bobsAlias), bob.access_token);
      t.equal(own.statusCode, 200, 'the creator may');
      t.equal((await call('GET', aliasUrl(bobsAlias))).statusCode, 404);
      const again = await call('DELETE', aliasUrl(bobsAlias), bob.access_token);
      t.equal(again.statusCode, 404, 'deleting twice: not found');
      t.equal(again.json().errcode, 'M_NOT_FOUND');

      t.equal((await call('PUT', aliasUrl(bobsAlias), bob.access_token, { room_id: plaza })).statusCode, 200);
      const byModerator = await call('DELETE', aliasUrl(bobsAlias), alice.access_token);
      t.equal(byModerator.statusCode, 200, "a moderator may delete bob's alias");

      const bad = await call('DELETE', aliasUrl('#nocolon'), alice.access_token);
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const remote = await call('DELETE', aliasUrl('#x:elsewhere.example'), alice.access_token);
      t.equal(remote.statusCode, 404);
      const noToken = await call('DELETE', aliasUrl(townSquare));
      t.equal(noToken.statusCode, 401);
    });

    t.test('deleting an alias takes it out of the canonical alias event', async (t) => {
      const townSquare = `#town-square:${SERVER_NAME}`;
      const stateUrl = `${V3}/rooms/${enc(plaza)}/state/m.room.canonical_alias`;
      const set = await call('PUT', stateUrl, alice.access_token, {
        alias: plazaAlias,
        alt_aliases: [townSquare],
      });
      t.equal(set.statusCode, 200, set.body);

      t.equal((await call('DELETE', aliasUrl(townSquare), alice.access_token)).statusCode, 200);
      const afterAlt = await call('GET', stateUrl, alice.access_token);
      t.same(afterAlt.json(), { alias: plazaAlias, alt_aliases: [] }, 'the alt alias is gone');

      t.equal((await call('DELETE', aliasUrl(plazaAlias), alice.access_token)).statusCode, 200);
      const afterMain = await call('GET', stateUrl, alice.access_token);
      t.same(afterMain.json(), { alt_aliases: [] }, 'so is the main alias');
      const listed = (await call('GET', `${V3}/publicRooms`))
        .json()
        .chunk.find((c: Chunk) => c.room_id === plaza);
      t.notOk(listed.canonical_alias, 'the directory no longer shows it');
      const aliases = await call('GET', `${V3}/rooms/${enc(plaza)}/aliases`, alice.access_token);
      t.same(aliases.json().aliases, []);
    });

    t.test('directory visibility', async (t) => {
      const get = async (roomId: string) => call('GET', visibilityUrl(roomId));
      t.same((await get(plaza)).json(), { visibility: 'public' }, 'read without a token');
      t.same((await get(lab)).json(), { visibility: 'private' });
      const unknown = await get(`!nope:${SERVER_NAME}`);
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      const bad = await get('no-sigil');
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');

      const forbidden: Array<[string, string, string]> = [
        ['mallory, an outsider', mallory.access_token, plaza],
        ['bob, a member without power', bob.access_token, plaza],
        ['mallory, on a private room', mallory.access_token, lab],
      ];
      for (const [who, token, roomId] of forbidden) {
        const res = await call('PUT', visibilityUrl(roomId), token, { visibility: 'private' });
        t.equal(res.statusCode, 403, `${who}: 403`);
        t.equal(res.json().errcode, 'M_FORBIDDEN');
      }
      t.same((await get(plaza)).json(), { visibility: 'public' }, 'unchanged');

      const hide = await call('PUT', visibilityUrl(plaza), alice.access_token, { visibility: 'private' });
      t.equal(hide.statusCode, 200, hide.body);
      t.same(hide.json(), {});
      t.same((await get(plaza)).json(), { visibility: 'private' });
      const listing = (await call('GET', `${V3}/publicRooms`)).json();
      t.notOk(
        listing.chunk.some((c: Chunk) => c.room_id === plaza),
        'an unpublished room leaves the directory',
      );
      const show = await call('PUT', visibilityUrl(plaza), alice.access_token, {});
      t.equal(show.statusCode, 200, 'the visibility defaults to public');
      t.same((await get(plaza)).json(), { visibility: 'public' });

      const publishLab = await call('PUT', visibilityUrl(lab), alice.access_token, { visibility: 'public' });
      t.equal(publishLab.statusCode, 200);
      t.same((await get(lab)).json(), { visibility: 'public' });
      const stillHidden = await call('GET', `${V3}/publicRooms`);
      t.notOk(stillHidden.body.includes(lab), 'an invite-only room stays out of the directory');
      t.notOk(stillHidden.body.includes('Secret Lab'));

      const malformed: Array<[string, string, unknown, number, string]> = [
        ['an unknown visibility', plaza, { visibility: 'hidden' }, 400, 'M_BAD_JSON'],
        ['visibility not a string', plaza, { visibility: true }, 400, 'M_BAD_JSON'],
        ['an unknown room', `!nope:${SERVER_NAME}`, { visibility: 'public' }, 404, 'M_NOT_FOUND'],
        ['not a room ID', 'no-sigil', { visibility: 'public' }, 400, 'M_INVALID_PARAM'],
      ];
      for (const [what, roomId, body, status, errcode] of malformed) {
        const res = await call('PUT', visibilityUrl(roomId), alice.access_token, body);
        t.equal(res.statusCode, status, `${what}: ${status}`);
        t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      }
      const noToken = await call('PUT', visibilityUrl(plaza), undefined, { visibility: 'private' });
      t.equal(noToken.statusCode, 401);
    });

    t.test('a server admin may change the visibility of any room', async (t) => {
      const root = await s.register('root');
      await s.runtime.database.db
        .updateTable('users')
        .set({ is_admin: true })
        .where('user_id', '=', root.user_id)
        .execute();
      const res = await call('PUT', visibilityUrl(lab), root.access_token, { visibility: 'private' });
      t.equal(res.statusCode, 200, res.body);
      t.same((await call('GET', visibilityUrl(lab))).json(), { visibility: 'private' });
    });
  });
}

for (const backend of databaseBackends()) {
  t.test(`aliases of another server on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const room = await hs1.request('POST', '/_matrix/client/v3/createRoom', {
      token: alice.access_token,
      body: {},
    });
    const roomId = room.json().room_id as string;
    // Unicode in the alias crosses both hops intact (Complement's TestRemoteAliasRequestsUnderstandUnicode).
    const alias = '#老虎Â£я🤨👉ඞ:hs1.test';
    const url = `/_matrix/client/v3/directory/room/${encodeURIComponent(alias)}`;
    const put = await hs1.request('PUT', url, { token: alice.access_token, body: { room_id: roomId } });
    t.equal(put.statusCode, 200, put.body);

    const resolved = await hs2.request('GET', url);
    t.equal(resolved.statusCode, 200, resolved.body);
    t.equal(resolved.json().room_id, roomId, 'hs2 resolves hs1 alias by asking hs1');
    t.same(resolved.json().servers, ['hs1.test']);
    const missing = await hs2.request(
      'GET',
      `/_matrix/client/v3/directory/room/${encodeURIComponent('#nope:hs1.test')}`,
    );
    t.equal(missing.statusCode, 404);
    t.equal(missing.json().errcode, 'M_NOT_FOUND');

    // A federation query is answered for our own aliases only: it never makes us ask a third server.
    const eve = rawServer('eve.test');
    network.servers.set(
      'eve.test',
      rawServerEndpoint(() => rawServerKeys(eve)),
    );
    const uri = `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(alias)}`;
    const asked = network.sent.filter((r) => r.from === 'hs2.test' && r.destination === 'hs1.test').length;
    const thirdParty = await hs2.app.inject({
      method: 'GET',
      url: uri,
      headers: { authorization: xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs2.test' }) },
    });
    t.equal(thirdParty.statusCode, 404, 'hs2 does not resolve hs1 aliases for eve');
    t.equal(thirdParty.json().errcode, 'M_NOT_FOUND');
    t.equal(
      network.sent.filter((r) => r.from === 'hs2.test' && r.destination === 'hs1.test').length,
      asked,
      'and asked hs1 nothing to do it',
    );
  });
}
