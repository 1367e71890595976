import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { SERVER_NAME, startTestServer, type TestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`profiles and account data on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const mallory = await s.register('mallory');
    const aliceId = encodeURIComponent(alice.user_id);

    t.test('display name and avatar', async (t) => {
      const initial = await s.request('GET', `${V3}/profile/${aliceId}`, { token: mallory.access_token });
      t.equal(initial.statusCode, 200);
      t.same(initial.json(), { displayname: 'alice' }, 'the localpart is the first display name');

      const set = await s.request('PUT', `${V3}/profile/${aliceId}/displayname`, {
        token: alice.access_token,
        body: { displayname: 'Alice Liddell' },
      });
      t.equal(set.statusCode, 200);
      const avatar = await s.request('PUT', `${V3}/profile/${aliceId}/avatar_url`, {
        token: alice.access_token,
        body: { avatar_url: `mxc://${SERVER_NAME}/abc123` },
      });
      t.equal(avatar.statusCode, 200);
      const name = await s.request('GET', `${V3}/profile/${aliceId}/displayname`, {
        token: mallory.access_token,
      });
      t.same(name.json(), { displayname: 'Alice Liddell' });
      const all = await s.request('GET', `${V3}/profile/${aliceId}`, { token: alice.access_token });
      t.same(all.json(), { displayname: 'Alice Liddell', avatar_url: `mxc://${SERVER_NAME}/abc123` });

      const forged = await s.request('PUT', `${V3}/profile/${aliceId}/displayname`, {
        token: mallory.access_token,
        body: { displayname: 'pwned' },
      });
      t.equal(forged.statusCode, 403);
      t.equal(forged.json().errcode, 'M_FORBIDDEN');
      const still = await s.request('GET', `${V3}/profile/${aliceId}/displayname`, {
        token: alice.access_token,
      });
      t.same(still.json(), { displayname: 'Alice Liddell' }, "mallory's attempt changed nothing");

      const badAvatar = await s.request('PUT', `${V3}/profile/${aliceId}/avatar_url`, {
        token: alice.access_token,
        body: { avatar_url: 'https://example.org/x.png' },
      });
      t.equal(badAvatar.statusCode, 400);
      t.equal(badAvatar.json().errcode, 'M_INVALID_PARAM');
      const cleared = await s.request('PUT', `${V3}/profile/${aliceId}/avatar_url`, {
        token: alice.access_token,
        body: { avatar_url: '' },
      });
      t.equal(cleared.statusCode, 200);
      const noAvatar = await s.request('GET', `${V3}/profile/${aliceId}/avatar_url`, {
        token: alice.access_token,
      });
      t.equal(noAvatar.statusCode, 404);

      const unknown = await s.request('GET', `${V3}/profile/${encodeURIComponent(`@ghost:${SERVER_NAME}`)}`, {
        token: alice.access_token,
      });
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      const invalid = await s.request('GET', `${V3}/profile/not-a-user`, { token: alice.access_token });
      t.equal(invalid.statusCode, 400);
    });

    t.test('a profile change reaches the rooms the user is joined to', async (t) => {
      const enc = encodeURIComponent;
      const room = (
        await s.request('POST', `${V3}/createRoom`, {
          token: alice.access_token,
          body: { preset: 'public_chat' },
        })
      ).json().room_id;
      const left = (
        await s.request('POST', `${V3}/createRoom`, {
          token: alice.access_token,
          body: { preset: 'public_chat' },
        })
      ).json().room_id;
      await s.request('POST', `${V3}/join/${enc(room)}`, { token: mallory.access_token, body: {} });
      await s.request('POST', `${V3}/rooms/${enc(left)}/leave`, { token: alice.access_token, body: {} });
      const memberOf = async (roomId: string) =>
        s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.member/${aliceId}`, {
          token: mallory.access_token,
        });

      const set = await s.request('PUT', `${V3}/profile/${aliceId}/displayname`, {
        token: alice.access_token,
        body: { displayname: 'Dr Alice' },
      });
      t.equal(set.statusCode, 200);
      const member = await memberOf(room);
      t.same(member.json(), { membership: 'join', displayname: 'Dr Alice' }, 'the room has the new name');
      const avatar = await s.request('PUT', `${V3}/profile/${aliceId}/avatar_url`, {
        token: alice.access_token,
        body: { avatar_url: 'mxc://conclave.test/face' },
      });
      t.equal(avatar.statusCode, 200);
      t.same(
        (await memberOf(room)).json(),
        { membership: 'join', displayname: 'Dr Alice', avatar_url: 'mxc://conclave.test/face' },
        'and the avatar, keeping the name',
      );
      const leftState = await s.request('GET', `${V3}/rooms/${enc(left)}/state`, {
        token: alice.access_token,
      });
      const leftMember = leftState
        .json()
        .find(
          (e: { type: string; state_key: string }) =>
            e.type === 'm.room.member' && e.state_key === alice.user_id,
        );
      t.equal(leftMember?.content.membership, 'leave', 'a room alice left gets no new member event');
      t.notOk(leftMember?.content.displayname === 'Dr Alice');
    });

    t.test('global and per-room account data', async (t) => {
      const url = `${V3}/user/${aliceId}/account_data/org.example.settings`;
      const put = await s.request('PUT', url, {
        token: alice.access_token,
        body: { theme: 'dark', order: 0.5 },
      });
      t.equal(put.statusCode, 200);
      const got = await s.request('GET', url, { token: alice.access_token });
      t.same(got.json(), { theme: 'dark', order: 0.5 });
      const replaced = await s.request('PUT', url, { token: alice.access_token, body: { theme: 'light' } });
      t.equal(replaced.statusCode, 200);
      t.same((await s.request('GET', url, { token: alice.access_token })).json(), { theme: 'light' });

      const roomId = encodeURIComponent(`!room:${SERVER_NAME}`);
      const roomUrl = `${V3}/user/${aliceId}/rooms/${roomId}/account_data/m.tag`;
      t.equal((await s.request('GET', roomUrl, { token: alice.access_token })).statusCode, 404);
      const tag = { tags: { 'm.favourite': { order: 0.1 } } };
      t.equal((await s.request('PUT', roomUrl, { token: alice.access_token, body: tag })).statusCode, 200);
      t.same((await s.request('GET', roomUrl, { token: alice.access_token })).json(), tag);
      t.equal(
        (await s.request('GET', `${V3}/user/${aliceId}/account_data/m.tag`, { token: alice.access_token }))
          .statusCode,
        404,
        'room account data is not global account data',
      );

      for (const [method, target] of [
        ['GET', url],
        ['PUT', url],
        ['GET', roomUrl],
        ['PUT', roomUrl],
      ] as const) {
        const res = await s.request(method, target, { token: mallory.access_token, body: { evil: true } });
        t.equal(
          res.statusCode,
          403,
          `mallory ${method} ${target.includes('rooms') ? 'room' : 'global'} data`,
        );
        t.equal(res.json().errcode, 'M_FORBIDDEN');
        t.notOk(res.body.includes('light'), 'the refusal leaks no content');
      }
      const serverManaged = await s.request('PUT', `${V3}/user/${aliceId}/account_data/m.fully_read`, {
        token: alice.access_token,
        body: { event_id: '$x' },
      });
      t.equal(serverManaged.statusCode, 405, 'm.fully_read is set by read markers, not here');
      t.equal(serverManaged.json().errcode, 'M_BAD_JSON');
      const notObject = await s.request('PUT', url, { token: alice.access_token, body: ['a'] });
      t.equal(notObject.statusCode, 400);
      t.equal(notObject.json().errcode, 'M_BAD_JSON');
      t.same(
        (await s.request('GET', url, { token: alice.access_token })).json(),
        { theme: 'light' },
        'still there',
      );
    });
  });
}

for (const backend of databaseBackends()) {
  t.test(`profile lookups without a token and across servers on ${backend.name}`, async (t) => {
    const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test'], () => ({
      requireAuthForProfileRequests: false,
    }));
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    await hs2.request('PUT', `${V3}/profile/${enc(bob.user_id)}/displayname`, {
      token: bob.access_token,
      body: { displayname: 'Bob of hs2' },
    });

    const open = await hs1.request('GET', `${V3}/profile/${enc(alice.user_id)}/displayname`);
    t.equal(open.statusCode, 200, 'a profile is public without a token (as in the spec and Synapse)');
    t.same(open.json(), { displayname: 'alice' });
    const badToken = await hs1.request('GET', `${V3}/profile/${enc(alice.user_id)}`, { token: 'nonsense' });
    t.equal(badToken.statusCode, 401, 'a token that is given must be valid');
    t.equal(badToken.json().errcode, 'M_UNKNOWN_TOKEN');

    const remote = await hs1.request('GET', `${V3}/profile/${enc(bob.user_id)}`, {
      token: alice.access_token,
    });
    t.equal(remote.statusCode, 200, remote.body);
    t.same(remote.json(), { displayname: 'Bob of hs2' }, "bob's profile, asked of hs2");
    const remoteField = await hs1.request('GET', `${V3}/profile/${enc(bob.user_id)}/displayname`);
    t.same(remoteField.json(), { displayname: 'Bob of hs2' }, 'one field, without a token');
    const remoteAvatar = await hs1.request('GET', `${V3}/profile/${enc(bob.user_id)}/avatar_url`);
    t.equal(remoteAvatar.statusCode, 404, 'a field the remote user has not set');

    const missing = await hs1.request('GET', `${V3}/profile/${enc('@nobody:hs2.test')}`);
    t.equal(missing.statusCode, 404, "hs2's 404 is ours");
    t.equal(missing.json().errcode, 'M_NOT_FOUND');
    const unreachable = await hs1.request('GET', `${V3}/profile/${enc('@who:nowhere.test')}`);
    t.equal(unreachable.statusCode, 502, 'a server that cannot be reached is a 502');
    t.equal(unreachable.json().errcode, 'M_UNKNOWN');
    const malformed = await hs1.request('GET', `${V3}/profile/${enc('not-a-user')}`);
    t.equal(malformed.statusCode, 400);
    t.equal(malformed.json().errcode, 'M_INVALID_PARAM');
  });

  t.test(`profiles need a token by default on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const anonymous = await s.request('GET', `${V3}/profile/${enc(alice.user_id)}`);
    t.equal(anonymous.statusCode, 401);
    t.equal(anonymous.json().errcode, 'M_MISSING_TOKEN');
    const withToken = await s.request('GET', `${V3}/profile/${enc(alice.user_id)}`, {
      token: alice.access_token,
    });
    t.same(withToken.json(), { displayname: 'alice' });
  });
}
