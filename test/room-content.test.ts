import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, startTestServer } from './helpers/server.ts';

/**
 * Room version 12's creators (MSC4289) as createRoom and the power levels endpoint see them, and
 * 400 for malformed power levels and create content (Complement's TestMSC4289* tests).
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
const [backend] = databaseBackends();
// Four servers, one after the other: more than tap's 120 s on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('room version 12 creators and malformed content', async (t) => {
  const s = await startTestServer(t, backend!);
  const alice = await s.register('alice');
  const bob = await s.register('bob');
  const charlie = await s.register('charlie');
  const call = (who: Login, method: 'GET' | 'PUT' | 'POST', url: string, body?: unknown) =>
    s.request(method, url, { token: who.access_token, ...(body !== undefined ? { body } : {}) });
  const create = (who: Login, body: Record<string, unknown>) => call(who, 'POST', `${V3}/createRoom`, body);
  const state = async (roomId: string, type: string) =>
    (await call(alice, 'GET', `${V3}/rooms/${enc(roomId)}/state/${type}/`)).json();
  const putLevels = (who: Login, roomId: string, content: unknown) =>
    call(who, 'PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels/`, content);

  t.test('defaults: no creator in users, tombstone needs 150', async (t) => {
    const { room_id } = (await create(alice, {})).json();
    const levels = await state(room_id, 'm.room.power_levels');
    t.same(levels.users, {});
    t.equal(levels.events['m.room.tombstone'], 150);
    const v11 = (await create(alice, { room_version: '11' })).json().room_id;
    const old = await state(v11, 'm.room.power_levels');
    t.equal(old.events['m.room.tombstone'], 100, 'room version 11 keeps 100');
    t.same(old.users, { [alice.user_id]: 100 });
  });

  t.test('power levels listing a creator, or out of range, are 400', async (t) => {
    const { room_id } = (await create(alice, { preset: 'public_chat' })).json();
    await call(bob, 'POST', `${V3}/join/${enc(room_id)}`, {});
    const self = await putLevels(alice, room_id, { users: { [alice.user_id]: 100 } });
    t.equal(self.statusCode, 400);
    t.equal(self.json().errcode, 'M_BAD_JSON');
    const huge = await putLevels(alice, room_id, { users: { [bob.user_id]: 2 ** 53 } });
    t.equal(huge.statusCode, 400, 'beyond canonical JSON integers');
    const text = await putLevels(alice, room_id, { ban: '50' });
    t.equal(text.statusCode, 400, 'a string level in room version 12');
    const badKey = await putLevels(alice, room_id, { users: { bob: 50 } });
    t.equal(badKey.statusCode, 400, 'a users key that is not a user ID');
    const ok = await putLevels(alice, room_id, { users: { [bob.user_id]: 100 } });
    t.equal(ok.statusCode, 200, 'an admin may be listed');
    const raise = await putLevels(bob, room_id, { users: { [bob.user_id]: 1000 } });
    t.equal(raise.statusCode, 403, 'well-formed but not allowed stays 403');
    const kick = await call(alice, 'POST', `${V3}/rooms/${enc(room_id)}/kick`, { user_id: bob.user_id });
    t.equal(kick.statusCode, 200, 'the creator outranks any admin');
    const outsider = await putLevels(charlie, room_id, { users: { [alice.user_id]: 100 } });
    t.equal(outsider.statusCode, 403, 'a non-member is refused, not told about the content');
  });

  t.test('power_level_content_override may not name the creator', async (t) => {
    const refused = await create(alice, {
      invite: [bob.user_id],
      power_level_content_override: { users: { [alice.user_id]: 100 } },
    });
    t.equal(refused.statusCode, 400);
    const allowed = await create(alice, {
      invite: [bob.user_id],
      power_level_content_override: { users: { [bob.user_id]: 100 } },
    });
    t.equal(allowed.statusCode, 200);
    t.same((await state(allowed.json().room_id, 'm.room.power_levels')).users, { [bob.user_id]: 100 });
    const initial = await create(alice, {
      initial_state: [{ type: 'm.room.power_levels', content: { users: { [alice.user_id]: 100 } } }],
    });
    t.equal(initial.statusCode, 400, 'nor may initial_state');
  });

  t.test('additional_creators: validated, kept beside trusted invitees, and in power', async (t) => {
    const bad: unknown[] = [
      'not-an-array',
      ['@foo:example.com', 42],
      ['@foo:example.com', 'not-a-user-id'],
      ['@invalid:dom$ain$.com'],
    ];
    for (const list of bad) {
      const res = await create(alice, {
        preset: 'public_chat',
        creation_content: { additional_creators: list },
      });
      t.equal(res.statusCode, 400, `${JSON.stringify(list)}: 400`);
      t.equal(res.json().errcode, 'M_BAD_JSON');
    }
    const remote = await create(alice, {
      preset: 'public_chat',
      creation_content: { additional_creators: ['@foo:example.com', '@bar:baz.code'] },
    });
    t.equal(remote.statusCode, 200, 'other servers’ users are valid creators');

    const trusted = await create(alice, {
      preset: 'trusted_private_chat',
      is_direct: true,
      invite: [bob.user_id],
      creation_content: { additional_creators: [charlie.user_id] },
    });
    const content = await state(trusted.json().room_id, 'm.room.create');
    t.same([...content.additional_creators].sort(), [bob.user_id, charlie.user_id].sort());

    const { room_id } = (
      await create(alice, { preset: 'public_chat', creation_content: { additional_creators: [bob.user_id] } })
    ).json();
    await call(bob, 'POST', `${V3}/join/${enc(room_id)}`, {});
    const kick = await call(alice, 'POST', `${V3}/rooms/${enc(room_id)}/kick`, { user_id: bob.user_id });
    t.equal(kick.statusCode, 403, 'a creator cannot kick another creator');
    const name = await call(bob, 'PUT', `${V3}/rooms/${enc(room_id)}/state/m.room.name/`, { name: "Bob's" });
    t.equal(name.statusCode, 200, 'the additional creator has power');
    const listed = await putLevels(alice, room_id, { users: { [bob.user_id]: 100 } });
    t.equal(listed.statusCode, 400, 'an additional creator cannot be listed in users');
  });
});

t.test('default_room_version sets the version of rooms created without one', async (t) => {
  const s = await startTestServer(t, backend!, { defaultRoomVersion: '11' });
  const alice = await s.register('alice');
  const created = await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} });
  const roomId: string = created.json().room_id;
  const createEvent = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.create/`, {
    token: alice.access_token,
  });
  t.equal(createEvent.json().room_version, '11');
  const caps = await s.request('GET', `${V3}/capabilities`, { token: alice.access_token });
  t.equal(caps.json().capabilities['m.room_versions'].default, '11');
  const v12 = await s.request('POST', `${V3}/createRoom`, {
    token: alice.access_token,
    body: { room_version: '12' },
  });
  t.equal(v12.statusCode, 200, 'others can still be asked for');
});

t.test('createRoom topic, a second create event, unset member fields', async (t) => {
  const s = await startTestServer(t, backend!);
  const alice = await s.register('alice');
  const mallory = await s.register('mallory');
  const created = await s.request('POST', `${V3}/createRoom`, {
    token: alice.access_token,
    body: {
      topic: 'Test Room',
      initial_state: [{ type: 'm.room.topic', state_key: '', content: { topic: 'Shenanigans' } }],
    },
  });
  const roomId: string = created.json().room_id;
  const topic = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, {
    token: alice.access_token,
  });
  t.same(
    topic.json(),
    { topic: 'Test Room', 'm.topic': { 'm.text': [{ body: 'Test Room' }] } },
    'topic wins, rich form too',
  );
  for (const who of [alice, mallory]) {
    const again = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.create/`, {
      token: who.access_token,
      body: { room_version: '12' },
    });
    t.equal(again.statusCode, 400, 'a second create event is malformed');
    t.equal(again.json().errcode, 'M_BAD_JSON');
  }
  await s.request('PUT', `/_matrix/client/v3/profile/${enc(alice.user_id)}/displayname`, {
    token: alice.access_token,
    body: { displayname: 'Alice' },
  });
  const members = await s.request('GET', `${V3}/rooms/${enc(roomId)}/joined_members`, {
    token: alice.access_token,
  });
  t.same(members.json().joined[alice.user_id], { display_name: 'Alice', avatar_url: null });
});

t.test('setting the same state twice is idempotent', async (t) => {
  const s = await startTestServer(t, backend!);
  const alice = await s.register('alice');
  const bob = await s.register('bob');
  const { room_id } = (
    await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat' },
    })
  ).json();
  const put = (who: Login, content: unknown) =>
    s.request('PUT', `${V3}/rooms/${enc(room_id)}/state/m.room.topic/`, {
      token: who.access_token,
      body: content,
    });
  const first = (await put(alice, { topic: 'same', x: { b: 1, a: 2 } })).json().event_id;
  const second = (await put(alice, { x: { a: 2, b: 1 }, topic: 'same' })).json().event_id;
  t.equal(second, first, 'the same content (in any key order) gives the same event');
  const changed = (await put(alice, { topic: 'other' })).json().event_id;
  t.not(changed, first, 'new content is a new event');
  const outsider = await put(bob, { topic: 'other' });
  t.equal(outsider.statusCode, 403, 'a non-member is still refused');
  await s.request('POST', `${V3}/join/${enc(room_id)}`, { token: bob.access_token, body: {} });
  const byBob = await put(bob, { topic: 'other' });
  t.equal(byBob.statusCode, 403, 'the same content from someone without the power is refused, not echoed');
});
