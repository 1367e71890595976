import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, SERVER_NAME, startTestServer, syncOnce } from './helpers/server.ts';

/** POST /rooms/{roomId}/upgrade: the replacement room, the state carried over, the tombstone. */
const V3 = '/_matrix/client/v3';
t.setTimeout(600_000);
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`room upgrades on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const call = (method: 'GET' | 'POST' | 'PUT', url: string, who?: Login, body?: unknown) =>
      s.request(method, url, {
        ...(who ? { token: who.access_token } : {}),
        ...(body !== undefined ? { body } : {}),
      });
    const created = await call('POST', `${V3}/createRoom`, alice, {
      room_version: '10',
      preset: 'private_chat',
      name: 'Assay v1',
      topic: 'the old room',
      room_alias_name: 'assay',
      invite: [bob.user_id],
      initial_state: [
        { type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } },
      ],
    });
    t.equal(created.statusCode, 200, created.body);
    const oldRoom = created.json().room_id as string;
    t.equal((await call('POST', `${V3}/join/${enc(oldRoom)}`, bob, {})).statusCode, 200);
    const upgradeUrl = `${V3}/rooms/${enc(oldRoom)}/upgrade`;

    t.test('refused: no token, not a member, without the power, malformed', async (t) => {
      t.equal((await call('POST', upgradeUrl, undefined, { new_version: '12' })).statusCode, 401);
      const outsider = await call('POST', upgradeUrl, mallory, { new_version: '12' });
      t.equal(outsider.statusCode, 403, outsider.body);
      const member = await call('POST', upgradeUrl, bob, { new_version: '12' });
      t.equal(member.statusCode, 403, 'bob is a member without the power to replace the room');
      t.equal(member.json().errcode, 'M_FORBIDDEN');
      for (const body of [{}, { new_version: 12 }, { new_version: '' }]) {
        const r = await call('POST', upgradeUrl, alice, body);
        t.equal(r.statusCode, 400, `${JSON.stringify(body)} is refused`);
        t.match(r.json().errcode, /^M_(BAD_JSON|INVALID_PARAM|MISSING_PARAM)$/);
      }
      const unknownVersion = await call('POST', upgradeUrl, alice, { new_version: '99' });
      t.equal(unknownVersion.statusCode, 400);
      t.equal(unknownVersion.json().errcode, 'M_UNSUPPORTED_ROOM_VERSION');
      const badCreator = await call('POST', upgradeUrl, alice, {
        new_version: '12',
        additional_creators: ['nope'],
      });
      t.equal(badCreator.statusCode, 400);
      t.equal(badCreator.json().errcode, 'M_INVALID_PARAM');
      const state = await call('GET', `${V3}/rooms/${enc(oldRoom)}/state/m.room.tombstone`, alice);
      t.equal(state.statusCode, 404, 'nothing was changed by the refusals');
    });

    t.test(
      'alice upgrades to version 12: a new room with the old state, the old one tombstoned',
      async (t) => {
        // Push rules for the old room, which follow each local member to the new one.
        const rule = (who: Login, kind: string, id: string, body: unknown) =>
          call('PUT', `${V3}/pushrules/global/${kind}/${enc(id)}`, who, body);
        t.equal((await rule(alice, 'room', oldRoom, { actions: ['dont_notify'] })).statusCode, 200);
        t.equal((await rule(bob, 'room', oldRoom, { actions: ['dont_notify'] })).statusCode, 200);
        const overrideId = `quiet-${oldRoom}`;
        const bobOverride = await rule(bob, 'override', overrideId, {
          actions: [],
          conditions: [{ kind: 'event_match', key: 'room_id', pattern: oldRoom }],
        });
        t.equal(bobOverride.statusCode, 200, bobOverride.body);

        const res = await call('POST', upgradeUrl, alice, { new_version: '12' });
        t.equal(res.statusCode, 200, res.body);
        const newRoom = res.json().replacement_room as string;
        type Rule = { rule_id: string; actions: unknown[]; conditions?: { pattern?: string }[] };
        const rulesOf = async (who: Login) =>
          (await call('GET', `${V3}/pushrules/global/`, who)).json() as Record<string, Rule[]>;
        const alicesRoomRules = (await rulesOf(alice)).room!;
        t.same(
          alicesRoomRules.filter((r) => r.rule_id === newRoom).map((r) => r.actions),
          [['dont_notify']],
          "the upgrader's room rule is copied to the new room",
        );
        t.ok(
          alicesRoomRules.some((r) => r.rule_id === oldRoom),
          'and stays for the old one',
        );
        t.notOk(
          (await rulesOf(bob)).room!.some((r) => r.rule_id === newRoom),
          'bob, not joined yet, has no rule for the new room',
        );
        t.not(newRoom, oldRoom);

        const tombstone = await call('GET', `${V3}/rooms/${enc(oldRoom)}/state/m.room.tombstone`, alice);
        t.equal(tombstone.json().replacement_room, newRoom, 'the old room points to the new one');
        const oldLevels = (
          await call('GET', `${V3}/rooms/${enc(oldRoom)}/state/m.room.power_levels`, alice)
        ).json();
        t.ok(
          oldLevels.events_default >= 50 && oldLevels.invite >= 50,
          'ordinary members can no longer talk there',
        );
        const said = await call('PUT', `${V3}/rooms/${enc(oldRoom)}/send/m.room.message/late`, bob, {
          msgtype: 'm.text',
          body: 'too late',
        });
        t.equal(said.statusCode, 403, 'bob cannot send in the old room any more');

        const createEvent = (
          await call('GET', `${V3}/rooms/${enc(newRoom)}/state/m.room.create`, alice)
        ).json();
        t.same(createEvent.predecessor, { room_id: oldRoom });
        t.equal(createEvent.room_version, '12');
        const stateOf = async (type: string) =>
          (await call('GET', `${V3}/rooms/${enc(newRoom)}/state/${type}`, alice)).json();
        t.equal((await stateOf('m.room.name')).name, 'Assay v1');
        t.equal((await stateOf('m.room.topic')).topic, 'the old room');
        t.equal((await stateOf('m.room.encryption')).algorithm, 'm.megolm.v1.aes-sha2', 'still encrypted');
        t.equal((await stateOf('m.room.join_rules')).join_rule, 'invite');
        const levels = await stateOf('m.room.power_levels');
        t.notOk(alice.user_id in (levels.users ?? {}), 'the v12 creator is not listed in users');
        t.equal((await stateOf('m.room.canonical_alias')).alias, `#assay:${SERVER_NAME}`);
        const alias = await call('GET', `${V3}/directory/room/${enc(`#assay:${SERVER_NAME}`)}`, alice);
        t.equal(alias.json().room_id, newRoom, 'the alias moved');

        const synced = await syncOnce(s, bob);
        t.ok(synced.rooms.invite?.[newRoom], 'bob is invited to the new room');
        t.equal((await call('POST', `${V3}/join/${enc(newRoom)}`, bob, {})).statusCode, 200);
        const bobs = await rulesOf(bob);
        t.same(
          bobs.room!.filter((r) => r.rule_id === newRoom).map((r) => r.actions),
          [['dont_notify']],
          'joining the new room copies his room rule',
        );
        const copied = bobs.override!.find((r) => r.rule_id === `quiet-${newRoom}`);
        t.same(
          copied?.conditions,
          [{ kind: 'event_match', key: 'room_id', pattern: newRoom }],
          'and his override',
        );
        const pushed = (await syncOnce(s, bob)).account_data.events.find(
          (e: { type: string }) => e.type === 'm.push_rules',
        );
        t.ok(
          pushed.content.global.room.some((r: Rule) => r.rule_id === newRoom),
          'the copy reaches /sync as m.push_rules account data',
        );
      },
    );
  });
}
