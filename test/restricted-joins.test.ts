import t from 'tap';
import { authoriserFor } from '../src/events/restricted-joins.ts';
import { getRoomVersion } from '../src/protocol/room-versions.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import type { Login, TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/**
 * Restricted rooms (v8+, and knock_restricted v10+): members of an allowed room may join without
 * an invite, vouched for by a member with the invite level, whose server signs the join. Locally
 * and across servers (make_join names the authoriser, send_join adds the resident's signature).
 */
const V3 = '/_matrix/client/v3';
t.setTimeout(600_000);
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`restricted joins on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const dave = await hs1.register('dave');
    const bob = await hs2.register('bob');
    const carol = await hs2.register('carol');

    const create = async (body: Record<string, unknown>) => {
      const r = await hs1.request('POST', `${V3}/createRoom`, { token: alice.access_token, body });
      t.equal(r.statusCode, 200, r.body);
      return r.json().room_id as string;
    };
    const restrictedTo = (allowed: string[], rule = 'restricted') => ({
      type: 'm.room.join_rules',
      state_key: '',
      content: { join_rule: rule, allow: allowed.map((room_id) => ({ type: 'm.room_membership', room_id })) },
    });
    const createRestricted = (allowed: string[], rule = 'restricted', room_version = '10') =>
      create({ preset: 'private_chat', room_version, initial_state: [restrictedTo(allowed, rule)] });
    const join = (s: TestServer, who: Login, roomId: string, via = '?via=hs1.test') =>
      s.request('POST', `${V3}/join/${enc(roomId)}${via}`, { token: who.access_token, body: {} });
    const memberEvent = async (s: TestServer, who: Login, roomId: string, userId: string) =>
      (
        await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}?format=event`, {
          token: who.access_token,
        })
      ).json();

    const space = await create({ preset: 'public_chat', room_version: '10' });
    const restricted = await createRestricted([space]);

    t.test('a local user: refused outside the allowed room, let in once in it', async (t) => {
      const refused = await join(hs1, dave, restricted, '');
      t.equal(refused.statusCode, 403, refused.body);
      t.equal(refused.json().errcode, 'M_FORBIDDEN');
      t.equal((await join(hs1, dave, space, '')).statusCode, 200);
      const admitted = await join(hs1, dave, restricted, '');
      t.equal(admitted.statusCode, 200, admitted.body);
      const event = await memberEvent(hs1, alice, restricted, dave.user_id);
      t.equal(event.content.membership, 'join');
      t.equal(event.content.join_authorised_via_users_server, alice.user_id, 'alice vouched for dave');
    });

    t.test(
      'a member re-joining to change their name sends no authoriser, whatever the client says',
      async (t) => {
        for (const [s, who] of [
          [hs1, dave],
          [hs1, alice],
        ] as const) {
          const rename = await s.request(
            'PUT',
            `${V3}/rooms/${enc(restricted)}/state/m.room.member/${enc(who.user_id)}`,
            {
              token: who.access_token,
              body: {
                membership: 'join',
                displayname: 'Renamed',
                join_authorised_via_users_server: 'unused',
              },
            },
          );
          t.equal(rename.statusCode, 200, rename.body);
          const event = await memberEvent(s, alice, restricted, who.user_id);
          t.equal(event.content.displayname, 'Renamed');
          t.notOk('join_authorised_via_users_server' in event.content, 'the bogus authoriser was dropped');
        }
        const outsider = await hs1.register('outsider');
        const forced = await hs1.request(
          'PUT',
          `${V3}/rooms/${enc(restricted)}/state/m.room.member/${enc(outsider.user_id)}`,
          {
            token: outsider.access_token,
            body: { membership: 'join', join_authorised_via_users_server: alice.user_id },
          },
        );
        t.equal(forced.statusCode, 403, 'a user outside the room cannot name an authoriser to get in');
      },
    );

    t.test('a user of another server: make_join names the authoriser, send_join co-signs', async (t) => {
      t.equal((await join(hs2, bob, space)).statusCode, 200, 'bob joins the allowed room');
      const admitted = await join(hs2, bob, restricted);
      t.equal(admitted.statusCode, 200, admitted.body);
      const made = network.sent.find(
        (r) =>
          r.from === 'hs2.test' && r.uri.startsWith(`/_matrix/federation/v1/make_join/${enc(restricted)}`),
      );
      t.ok(made, 'hs2 asked hs1 for a template');
      for (const s of [hs1, hs2]) {
        const event = await memberEvent(s, s === hs1 ? alice : bob, restricted, bob.user_id);
        t.equal(event.content?.membership, 'join', `bob is joined on ${s === hs1 ? 'hs1' : 'hs2'}`);
        t.equal(event.content?.join_authorised_via_users_server, alice.user_id);
      }
      const members = await hs1.request('GET', `${V3}/rooms/${enc(restricted)}/joined_members`, {
        token: alice.access_token,
      });
      t.ok(members.json().joined[bob.user_id], 'hs1 holds the join it signed');
    });

    t.test('a user of another server outside the allowed room is refused', async (t) => {
      const refused = await join(hs2, carol, restricted);
      t.equal(refused.statusCode, 403, refused.body);
      t.equal(refused.json().errcode, 'M_FORBIDDEN');
    });

    t.test('an allowed room this server is not in: it cannot vouch', async (t) => {
      const unknown = await createRestricted(['!nowhere:elsewhere.test']);
      const refused = await join(hs2, carol, unknown);
      t.equal(refused.statusCode, 400, refused.body);
      t.equal(refused.json().errcode, 'M_UNABLE_TO_AUTHORISE_JOIN');
    });

    t.test('knock_restricted (v10): members of the allowed room join, others are refused', async (t) => {
      const room = await createRestricted([space], 'knock_restricted');
      const admitted = await join(hs2, bob, room);
      t.equal(admitted.statusCode, 200, admitted.body);
      const refused = await join(hs2, carol, room);
      t.equal(refused.statusCode, 403, refused.body);
    });

    t.test('a v7 room has no restricted rule: nobody joins by membership', async (t) => {
      const old = await createRestricted([space], 'restricted', '7');
      const refused = await join(hs1, dave, old, '');
      t.equal(refused.statusCode, 403, refused.body);
    });

    // Complement's TestRestrictedRoomsRemoteJoinFailOver, second half: once no user of hs2 is in
    // the allowed room, hs2's copy of its members is stale, and it must not vouch from it.
    t.test('a server that left the allowed room cannot vouch from what it last knew', async (t) => {
      const services = hs2.runtime.services;
      const state = async () =>
        services.reader.stateIdsAt(services.db, await services.rooms.currentGroup(restricted));
      const rv = getRoomVersion('10')!;
      // erin (hs1) joins the allowed room, not the restricted one.
      const erin = await hs1.register('erin');
      t.equal((await join(hs1, erin, space, '')).statusCode, 200);
      await until('hs2 sees erin in the allowed room', async () =>
        (
          await services.db
            .selectFrom('memberships')
            .select('membership')
            .where('room_id', '=', space)
            .where('user_id', '=', erin.user_id)
            .executeTakeFirst()
        )?.membership === 'join'
          ? true
          : undefined,
      );
      const vouch = async () => {
        try {
          await authoriserFor(services.db, services.reader, rv, await state(), erin.user_id, 'hs2.test');
          return 'vouched';
        } catch (err) {
          return (err as { errcode?: string }).errcode;
        }
      };
      t.not(await vouch(), 'M_UNABLE_TO_AUTHORISE_JOIN', 'while bob is in the allowed room, hs2 can tell');
      const left = await hs2.request('POST', `${V3}/rooms/${enc(space)}/leave`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(left.statusCode, 200, left.body);
      t.equal(await vouch(), 'M_UNABLE_TO_AUTHORISE_JOIN', 'after bob left, it cannot');
    });

    // Complement's TestRestrictedRoomsRemoteJoinFailOver: a join routed through a server that
    // cannot grant it fails, even though the room ID names one that could.
    t.test('a remote join goes only through the servers the request names', async (t) => {
      const open = await create({ preset: 'public_chat', room_version: '10' });
      const viaNowhere = await join(hs2, carol, open, '?via=nowhere.test');
      t.not(viaNowhere.statusCode, 200, 'not through hs1, which the request did not name');
      t.equal(
        (await memberEvent(hs1, alice, open, carol.user_id)).content?.membership,
        undefined,
        'hs1 never saw carol',
      );
      const failOver = await join(hs2, carol, open, '?via=nowhere.test&via=hs1.test');
      t.equal(failOver.statusCode, 200, 'naming hs1 after it fails over to hs1');
    });
  });
}
