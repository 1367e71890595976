import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, startTestServer, type TestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

/**
 * The user directory: alice has a public plaza, bob and carol share a private lab (where carol
 * uses a room-specific name), mallory is in no room and is seen only by what is public.
 */
for (const backend of databaseBackends()) {
  t.test(`user directory on ${backend.name}`, async (t) => {
    const s: TestServer = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const carol = await s.register('carol');
    const mallory = await s.register('mallory');
    const dan = await s.register('dan');
    const call = (method: 'POST' | 'PUT', url: string, who: Login, body: unknown) =>
      s.request(method, url, { token: who.access_token, body });
    const ok = async (method: 'POST' | 'PUT', url: string, who: Login, body: unknown) => {
      const res = await call(method, url, who, body);
      if (res.statusCode !== 200) throw new Error(`${url}: ${res.body}`);
      return res.json();
    };
    await ok('PUT', `${V3}/profile/${enc(alice.user_id)}/displayname`, alice, {
      displayname: 'Alice Liddell',
    });
    await ok('PUT', `${V3}/profile/${enc(carol.user_id)}/displayname`, carol, {
      displayname: 'Carol Danvers',
    });
    await ok('PUT', `${V3}/profile/${enc(dan.user_id)}/displayname`, dan, { displayname: 'Dan 100%_done' });
    const plaza = (await ok('POST', `${V3}/createRoom`, alice, { preset: 'public_chat' })).room_id;
    const lab = (
      await ok('POST', `${V3}/createRoom`, bob, { preset: 'private_chat', invite: [carol.user_id] })
    ).room_id;
    await ok('POST', `${V3}/join/${enc(lab)}`, carol, {});
    await ok('PUT', `${V3}/rooms/${enc(lab)}/state/m.room.member/${enc(carol.user_id)}`, carol, {
      membership: 'join',
      displayname: 'Secret Carol',
    });
    const dm = (await ok('POST', `${V3}/createRoom`, dan, { preset: 'private_chat', invite: [bob.user_id] }))
      .room_id;
    await ok('POST', `${V3}/join/${enc(dm)}`, bob, {});
    t.ok(plaza && dm);

    const search = (who: Login, body: unknown) => call('POST', `${V3}/user_directory/search`, who, body);
    const ids = async (who: Login, term: string, limit?: number) => {
      const res = await search(who, { search_term: term, ...(limit !== undefined ? { limit } : {}) });
      t.equal(res.statusCode, 200);
      return res.json() as { results: Array<{ user_id: string; display_name?: string }>; limited: boolean };
    };

    // Public room members are found by anyone, by name and by user ID.
    const byName = await ids(mallory, 'alice lid');
    t.same(byName.results, [{ user_id: alice.user_id, display_name: 'Alice Liddell' }]);
    t.equal(byName.limited, false);
    t.same(
      (await ids(mallory, alice.user_id)).results.map((r) => r.user_id),
      [alice.user_id],
    );
    // Private room members only by those who share the room.
    t.same((await ids(mallory, 'carol')).results, [], 'mallory does not see carol');
    t.same((await ids(bob, 'carol')).results, [{ user_id: carol.user_id, display_name: 'Carol Danvers' }]);
    t.same((await ids(bob, 'secret')).results, [], 'a room-specific name is not searchable');
    // Wildcards are literal.
    t.same(
      (await ids(bob, '100%_')).results.map((r) => r.user_id),
      [dan.user_id],
    );
    t.same(
      (await ids(bob, '%')).results.map((r) => r.user_id),
      [dan.user_id],
    );
    // Sharing rooms with others does not make you your own result (Synapse's rule; Complement's
    // TestRoomSpecificUsername* search for their own user ID prefix); a public room's member is
    // found by everyone, themselves included.
    t.same((await ids(bob, bob.user_id)).results, [], 'bob, only in private rooms, does not find himself');
    t.same(
      (await ids(dan, 'dan')).results.map((r) => r.user_id),
      [],
      'nor does dan',
    );
    t.same(
      (await ids(alice, alice.user_id)).results.map((r) => r.user_id),
      [alice.user_id],
      'alice, in the public plaza, does',
    );

    // limit and limited.
    for (const name of ['zed1', 'zed2', 'zed3']) {
      const z = await s.register(name);
      await ok('POST', `${V3}/join/${enc(plaza)}`, z, {});
    }
    const page = await ids(mallory, 'zed', 2);
    t.equal(page.results.length, 2);
    t.equal(page.limited, true);
    const all = await ids(mallory, 'zed', 10);
    t.equal(all.results.length, 3);
    t.equal(all.limited, false);

    // Malformed.
    for (const body of [
      {},
      { search_term: 5 },
      { search_term: 'x', limit: -1 },
      { search_term: 'x'.repeat(300) },
    ]) {
      const res = await search(mallory, body);
      t.equal(res.statusCode, 400, `refused: ${JSON.stringify(body).slice(0, 40)}`);
      t.type(res.json().errcode, 'string');
    }
    const anonymous = await s.request('POST', `${V3}/user_directory/search`, { body: { search_term: 'a' } });
    t.equal(anonymous.statusCode, 401);
  });
}
