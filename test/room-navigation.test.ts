import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { pastTs, sendText } from './helpers/retention.ts';
import { type Login, okCaller, SERVER_NAME, startTestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V1 = '/_matrix/client/v1';
const V3 = '/_matrix/client/v3';
const NHEKO = '/_matrix/client/unstable/im.nheko.summary';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely in tests
type Json = Record<string, any>;

/**
 * timestamp_to_event, room summaries and the space hierarchy (spec/spaces.md): alice runs a
 * lab space with public, private and suggested rooms and a sub-space; bob is invited to one
 * room, carol joins a members-only room late, mallory is in nothing.
 */
for (const backend of databaseBackends()) {
  t.test(`room navigation on ${backend.name}`, async (t) => {
    t.setTimeout(300_000);
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const carol = await s.register('carol');
    const mallory = await s.register('mallory');
    const ok = okCaller(s);
    const send = (who: Login, room: string, body: string) => sendText(s, who, room, body);
    const tsOf = async (who: Login, room: string, id: string) =>
      (await ok('GET', `${V3}/rooms/${enc(room)}/event/${enc(id)}`, who)).origin_server_ts as number;
    const createRoom = async (who: Login, body: Json) =>
      (await ok('POST', `${V3}/createRoom`, who, body)).room_id as string;
    const get = (url: string, who?: Login) => s.request('GET', url, who ? { token: who.access_token } : {});
    const expectError = async (url: string, who: Login | undefined, status: number, errcode: string) => {
      const res = await get(url, who);
      t.equal(res.statusCode, status, `${url}: ${res.body}`);
      t.equal(res.json().errcode, errcode, url);
    };

    t.test('timestamp_to_event', async (t) => {
      const room = await createRoom(alice, {
        preset: 'public_chat',
        initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }],
      });
      const first = await send(alice, room, 'first');
      const t1 = await tsOf(alice, room, first);
      await pastTs(t1);
      const second = await send(alice, room, 'second');
      const t2 = await tsOf(alice, room, second);
      const url = (ts: number, dir: string) =>
        `${V1}/rooms/${enc(room)}/timestamp_to_event?ts=${ts}&dir=${dir}`;

      const at = await ok('GET', url(t1, 'f'), alice);
      t.same(at, { event_id: first, origin_server_ts: t1 }, 'at the time, forwards: that event');
      t.equal((await ok('GET', url(t1 + 1, 'f'), alice)).event_id, second, 'just after: the next one');
      t.equal((await ok('GET', url(t2, 'b'), alice)).event_id, second, 'at the time, backwards');
      t.equal((await ok('GET', url(t2 - 1, 'b'), alice)).event_id, first, 'just before: the one before');
      await expectError(url(t2 + 3_600_000, 'f'), alice, 404, 'M_NOT_FOUND');
      await expectError(url(0, 'b'), alice, 404, 'M_NOT_FOUND');

      // carol joins later: what came before her join is not hers to see.
      await pastTs(t2);
      const join = (await ok('POST', `${V3}/join/${enc(room)}`, carol, {})).room_id as string;
      t.equal(join, room);
      const afterFirst = await ok('GET', url(t1, 'f'), carol);
      const state = await ok(
        'GET',
        `${V3}/rooms/${enc(room)}/state/m.room.member/${enc(carol.user_id)}?format=event`,
        carol,
      );
      t.equal(afterFirst.event_id, state.event_id, 'from the first message on, carol sees her join first');
      // Back from the second message: not the messages, but the room's set-up before its history
      // became members-only (the default, shared, lets later members see that).
      const before = await ok('GET', url(t2, 'b'), carol);
      t.notOk([first, second].includes(before.event_id), 'neither message');
      t.ok(before.origin_server_ts < t1, 'an event from before them');
      // Forbidden and malformed.
      await expectError(url(t1, 'f'), mallory, 403, 'M_FORBIDDEN');
      await expectError(`${V1}/rooms/${enc(room)}/timestamp_to_event?dir=f`, alice, 400, 'M_MISSING_PARAM');
      await expectError(
        `${V1}/rooms/${enc(room)}/timestamp_to_event?ts=${t1}`,
        alice,
        400,
        'M_MISSING_PARAM',
      );
      await expectError(
        `${V1}/rooms/${enc(room)}/timestamp_to_event?ts=soon&dir=f`,
        alice,
        400,
        'M_INVALID_PARAM',
      );
      await expectError(
        `${V1}/rooms/${enc(room)}/timestamp_to_event?ts=-5&dir=f`,
        alice,
        400,
        'M_INVALID_PARAM',
      );
      await expectError(url(t1, 'sideways'), alice, 400, 'M_INVALID_PARAM');
      await expectError(
        `${V1}/rooms/${enc(room)}/timestamp_to_event?ts=99999999999999999999&dir=f`,
        alice,
        400,
        'M_INVALID_PARAM',
      );
      t.equal(
        (await get(`${V1}/rooms/${enc(room)}/timestamp_to_event?ts=${Number.MAX_SAFE_INTEGER}&dir=b`, alice))
          .statusCode,
        200,
        'the largest time is a time',
      );
      await expectError(
        `${V1}/rooms/not-a-room/timestamp_to_event?ts=1&dir=f`,
        alice,
        400,
        'M_INVALID_PARAM',
      );
      await expectError(url(t1, 'f'), undefined, 401, 'M_MISSING_TOKEN');
    });

    // The lab space: C (suggested, order "a"), A (order "b"), B (private), the sub-space S2
    // with D and a link back to the space, and a room of another server.
    const space = await createRoom(alice, {
      preset: 'public_chat',
      name: 'Lab',
      topic: 'Everything of the lab',
      room_alias_name: 'lab',
      creation_content: { type: 'm.space' },
    });
    const roomA = await createRoom(alice, { preset: 'public_chat', name: 'A' });
    const roomB = await createRoom(alice, { preset: 'private_chat', name: 'B', invite: [bob.user_id] });
    const roomC = await createRoom(alice, { preset: 'public_chat', name: 'C' });
    const sub = await createRoom(alice, {
      preset: 'public_chat',
      name: 'S2',
      creation_content: { type: 'm.space' },
    });
    const roomD = await createRoom(alice, { preset: 'public_chat', name: 'D' });
    const restricted = await createRoom(alice, {
      preset: 'private_chat',
      name: 'Members of the lab',
      initial_state: [
        {
          type: 'm.room.join_rules',
          content: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: space }] },
        },
      ],
    });
    const encrypted = await createRoom(alice, {
      preset: 'public_chat',
      initial_state: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
    });
    const child = async (parent: string, childId: string, content: Json = {}) => {
      await ok('PUT', `${V3}/rooms/${enc(parent)}/state/m.space.child/${enc(childId)}`, alice, {
        via: [SERVER_NAME],
        ...content,
      });
    };
    await child(space, roomA, { order: 'b' });
    await child(space, roomB);
    await child(space, roomC, { order: 'a', suggested: true });
    await child(space, '!elsewhere:remote.test');
    await child(space, sub);
    await child(sub, roomD);
    await child(sub, space);
    // A room that is not a space has no children: this link is ignored.
    const roomE = await createRoom(alice, { preset: 'public_chat', name: 'E' });
    await child(roomA, roomE);
    // A child event without `via` is no child.
    await ok('PUT', `${V3}/rooms/${enc(space)}/state/m.space.child/${enc(restricted)}`, alice, {});

    t.test('room summary', async (t) => {
      const anonymous = await get(`${V1}/room_summary/${enc(`#lab:${SERVER_NAME}`)}`);
      t.equal(anonymous.statusCode, 200, anonymous.body);
      t.match(anonymous.json(), {
        room_id: space,
        name: 'Lab',
        topic: 'Everything of the lab',
        canonical_alias: `#lab:${SERVER_NAME}`,
        join_rule: 'public',
        room_type: 'm.space',
        num_joined_members: 1,
        world_readable: false,
        guest_can_join: false,
        room_version: '12',
      });
      t.notOk('membership' in anonymous.json(), 'no membership without a token');
      t.equal((await ok('GET', `${V1}/room_summary/${enc(space)}`, alice)).membership, 'join');
      t.equal((await ok('GET', `${V1}/room_summary/${enc(space)}`, mallory)).membership, 'leave');
      for (const path of [`${NHEKO}/summary/${enc(space)}`, `${NHEKO}/rooms/${enc(space)}/summary`]) {
        const unstable = await ok('GET', path, bob);
        t.equal(unstable.room_id, space, path);
        t.equal(unstable['im.nheko.summary.room_version'], '12');
      }
      t.equal(
        (await ok('GET', `${V1}/room_summary/${enc(encrypted)}`, alice)).encryption,
        'm.megolm.v1.aes-sha2',
      );
      // A private room: its members and invitees only.
      t.equal((await ok('GET', `${V1}/room_summary/${enc(roomB)}`, bob)).membership, 'invite');
      await expectError(`${V1}/room_summary/${enc(roomB)}`, mallory, 404, 'M_NOT_FOUND');
      await expectError(`${V1}/room_summary/${enc(roomB)}`, undefined, 404, 'M_NOT_FOUND');
      // A restricted room: to members of the allowed room.
      await ok('POST', `${V3}/join/${enc(space)}`, carol, {});
      const r = await ok('GET', `${V1}/room_summary/${enc(restricted)}`, carol);
      t.same(r.allowed_room_ids, [space]);
      t.equal(r.join_rule, 'restricted');
      await expectError(`${V1}/room_summary/${enc(restricted)}`, mallory, 404, 'M_NOT_FOUND');
      // Malformed.
      await expectError(`${V1}/room_summary/nonsense`, alice, 400, 'M_INVALID_PARAM');
      await expectError(`${V1}/room_summary/${enc('#bad alias')}`, alice, 400, 'M_INVALID_PARAM');
      await expectError(`${V1}/room_summary/${enc(`#nowhere:${SERVER_NAME}`)}`, alice, 404, 'M_NOT_FOUND');
      await expectError(`${V1}/room_summary/${enc(`!unknown:${SERVER_NAME}`)}`, alice, 404, 'M_NOT_FOUND');
      const badToken = await s.request('GET', `${V1}/room_summary/${enc(space)}`, { token: 'not-a-token' });
      t.equal(badToken.statusCode, 401);
      t.equal(badToken.json().errcode, 'M_UNKNOWN_TOKEN');
    });

    t.test('space hierarchy', async (t) => {
      const url = (q = '') => `${V1}/rooms/${enc(space)}/hierarchy${q}`;
      const names = (r: Json) => (r.rooms as Json[]).map((x) => x.name);
      const mal = await ok('GET', url(), mallory);
      t.same(
        names(mal),
        ['Lab', 'C', 'A', 'S2', 'D'],
        'depth first, by order then time; B is private; E hangs from A, which is no space',
      );
      t.same(
        (mal.rooms as Json[]).find((r) => r.name === 'A')?.children_state,
        [],
        'a room that is no space shows no children',
      );
      t.equal(mal.next_batch, undefined);
      const top = mal.rooms[0];
      t.equal(top.room_type, 'm.space');
      t.same(
        (top.children_state as Json[]).map((c) => c.state_key),
        [roomC, roomA, roomB, '!elsewhere:remote.test', sub],
        'children_state: the children with via, in order',
      );
      t.ok(
        (top.children_state as Json[]).every(
          (c) => c.type === 'm.space.child' && typeof c.origin_server_ts === 'number',
        ),
      );
      t.same(names(await ok('GET', url(), bob)), ['Lab', 'C', 'A', 'B', 'S2', 'D'], 'bob is invited to B');
      t.same(names(await ok('GET', url('?max_depth=1'), mallory)), ['Lab', 'C', 'A', 'S2'], 'max_depth');
      t.same(names(await ok('GET', url('?max_depth=0'), mallory)), ['Lab'], 'max_depth 0: the room alone');
      const suggested = await ok('GET', url('?suggested_only=true'), mallory);
      t.same(names(suggested), ['Lab', 'C'], 'suggested_only');
      t.same(
        (suggested.rooms[0].children_state as { state_key: string }[]).map((c) => c.state_key),
        [roomC],
        "and the space's children_state lists only the suggested child",
      );

      const pages: string[][] = [];
      let from: string | undefined;
      do {
        const page = await ok('GET', url(`?limit=2${from ? `&from=${enc(from)}` : ''}`), mallory);
        pages.push(names(page));
        from = page.next_batch;
        if (pages.length === 1) {
          await expectError(url(`?limit=2&max_depth=1&from=${enc(from!)}`), mallory, 400, 'M_INVALID_PARAM');
          await expectError(
            url(`?limit=2&suggested_only=true&from=${enc(from!)}`),
            mallory,
            400,
            'M_INVALID_PARAM',
          );
          await expectError(
            `${V1}/rooms/${enc(sub)}/hierarchy?limit=2&from=${enc(from!)}`,
            mallory,
            400,
            'M_INVALID_PARAM',
          );
        }
      } while (from !== undefined);
      t.same(pages, [['Lab', 'C'], ['A', 'S2'], ['D']], 'pages of two');

      // Forbidden and malformed.
      await expectError(`${V1}/rooms/${enc(roomB)}/hierarchy`, mallory, 403, 'M_FORBIDDEN');
      await expectError(`${V1}/rooms/${enc(`!unknown:${SERVER_NAME}`)}/hierarchy`, alice, 403, 'M_FORBIDDEN');
      await expectError(url('?limit=0'), alice, 400, 'M_INVALID_PARAM');
      await expectError(url('?max_depth=-1'), alice, 400, 'M_INVALID_PARAM');
      await expectError(url('?suggested_only=perhaps'), alice, 400, 'M_INVALID_PARAM');
      await expectError(url('?from=garbage'), alice, 400, 'M_INVALID_PARAM');
      await expectError(`${V1}/rooms/not-a-room/hierarchy`, alice, 400, 'M_INVALID_PARAM');
      await expectError(url(), undefined, 401, 'M_MISSING_TOKEN');
    });
  });
}
