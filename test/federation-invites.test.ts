import t from 'tap';
import type { Pdu } from '../src/protocol/event.ts';
import { hashAndSignEvent } from '../src/protocol/event-signing.ts';
import { computeEventId, roomIdFromCreateEvent } from '../src/protocol/hashes.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import { getRoomVersion } from '../src/protocol/room-versions.ts';
import { databaseBackends } from './helpers/backends.ts';
import {
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
  xMatrixHeader,
} from './helpers/federation.ts';
import { type Login, syncOnce, type TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/** Across servers on a loaded machine: a minute. */
const untilLong = <T>(what: string, check: () => Promise<T | undefined | false>) =>
  until(what, check, 60_000);

/**
 * Invites across servers (server-server API: Inviting to a room, Rejecting invites): alice on hs1
 * invites users of hs2, whose server co-signs each invite; one accepts (joining through the
 * inviter's server), one rejects (make_leave/send_leave through it), one is invited at room
 * creation. Eve's raw server sends hs2 invites that must be refused.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

async function membershipOn(s: TestServer, who: Login, roomId: string, userId: string) {
  const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`, {
    token: who.access_token,
  });
  return r.statusCode === 200 ? (r.json().membership as string) : undefined;
}

for (const backend of databaseBackends()) {
  t.test(`invites across servers on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const mallory = await hs1.register('mallory');
    const bob = await hs2.register('bob');
    const dave = await hs2.register('dave');
    const erin = await hs2.register('erin');
    const created = await hs1.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'private_chat', name: 'Private lab', topic: 'invite only' },
    });
    t.equal(created.statusCode, 200);
    const roomId = created.json().room_id as string;

    t.test('bob on hs2 is invited, sees the room in his sync, and joins through hs1', async (t) => {
      const invite = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: alice.access_token,
        body: { user_id: bob.user_id },
      });
      t.equal(invite.statusCode, 200, invite.body);
      t.equal(
        await membershipOn(hs1, alice, roomId, bob.user_id),
        'invite',
        'hs1 has the invite in the room',
      );
      const events = await untilLong('the invite in bob sync', async () => {
        const synced = await syncOnce(hs2, bob);
        return synced.rooms.invite[roomId]?.invite_state.events as JsonObject[] | undefined;
      });
      const types = events.map((e) => e.type);
      t.ok(types.includes('m.room.name'), 'the stripped state names the room');
      t.ok(types.includes('m.room.join_rules'));
      const create = events.find((e) => e.type === 'm.room.create')!;
      t.equal(
        roomIdFromCreateEvent(create),
        roomId,
        'the create event crossed whole and is the room ID hash (MSC4311)',
      );
      const own = events.find((e) => e.type === 'm.room.member' && e.state_key === bob.user_id);
      t.equal((own?.content as JsonObject).membership, 'invite');
      t.equal(own?.sender, alice.user_id);

      const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(join.statusCode, 200, join.body);
      t.equal(await membershipOn(hs1, alice, roomId, bob.user_id), 'join', 'hs1 has bob joined');
      const synced = await syncOnce(hs2, bob);
      t.ok(synced.rooms.join[roomId], 'the room is now joined in bob sync');
      t.notOk(synced.rooms.invite[roomId], 'and no longer an invite');
    });

    t.test('dave rejects his invite; hs1 sees him leave', async (t) => {
      const invite = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: alice.access_token,
        body: { user_id: dave.user_id },
      });
      t.equal(invite.statusCode, 200, invite.body);
      // hs2 is in the room now (bob joined): the invite also comes through the room's graph.
      await untilLong(
        'the invite in dave sync',
        async () => (await syncOnce(hs2, dave)).rooms.invite[roomId],
      );
      const reject = await hs2.request('POST', `${V3}/rooms/${enc(roomId)}/leave`, {
        token: dave.access_token,
        body: {},
      });
      t.equal(reject.statusCode, 200, reject.body);
      await untilLong('dave left on hs1', async () =>
        (await membershipOn(hs1, alice, roomId, dave.user_id)) === 'leave' ? true : undefined,
      );
      t.pass('hs1 has the rejection');
    });

    t.test('erin, invited at creation to a room hs2 is not in, rejects through hs1', async (t) => {
      const dm = await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'trusted_private_chat', is_direct: true, invite: [erin.user_id] },
      });
      t.equal(dm.statusCode, 200, dm.body);
      const dmId = dm.json().room_id as string;
      t.equal(await membershipOn(hs1, alice, dmId, erin.user_id), 'invite');
      const stripped = await untilLong('the invite in erin sync', async () => {
        const synced = await syncOnce(hs2, erin);
        return synced.rooms.invite[dmId]?.invite_state.events as JsonObject[] | undefined;
      });
      const own = stripped.find((e) => e.type === 'm.room.member' && e.state_key === erin.user_id);
      t.equal((own?.content as JsonObject).is_direct, true, 'is_direct reaches the invitee');
      const reject = await hs2.request('POST', `${V3}/rooms/${enc(dmId)}/leave`, {
        token: erin.access_token,
        body: { reason: 'not now' },
      });
      t.equal(reject.statusCode, 200, reject.body);
      t.equal(await membershipOn(hs1, alice, dmId, erin.user_id), 'leave', 'hs1 took the leave');
      const after = await syncOnce(hs2, erin);
      t.notOk(after.rooms.invite[dmId], 'the invite is gone from erin sync');
    });

    t.test('alice withdraws an invite to a room hs2 is not in: the invitee sees it left', async (t) => {
      const ursula = await hs2.register('ursula');
      const made = await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'private_chat', invite: [ursula.user_id] },
      });
      t.equal(made.statusCode, 200, made.body);
      const id = made.json().room_id as string;
      const invited = await untilLong('the invite in ursula sync', async () => {
        const synced = await syncOnce(hs2, ursula);
        return synced.rooms.invite[id] ? synced : undefined;
      });
      const kick = await hs1.request('POST', `${V3}/rooms/${enc(id)}/kick`, {
        token: alice.access_token,
        body: { user_id: ursula.user_id, reason: 'sent by mistake' },
      });
      t.equal(kick.statusCode, 200, kick.body);
      const left = await untilLong('the room left in ursula incremental sync', async () => {
        const synced = await syncOnce(hs2, ursula, {
          since: invited.next_batch,
          filter: JSON.stringify({ room: { include_leave: true } }),
        });
        return synced.rooms.leave[id];
      });
      const leave = (left.timeline.events as JsonObject[]).find(
        (e) => e.type === 'm.room.member' && e.state_key === ursula.user_id,
      );
      t.equal(
        (leave?.content as JsonObject | undefined)?.membership,
        'leave',
        'the leave is in the timeline',
      );
      t.equal(leave?.sender, alice.user_id, 'sent by the inviter');
      t.pass('the withdrawal reached ursula');
    });

    t.test('an invite to a room hs2 is in can be accepted before hs1 sends it on', async (t) => {
      // bob (hs2) is joined, so hs2's copy of the room is live; hold back hs1's transactions to
      // hs2, so the invite is known to hs2 only from PUT /invite.
      const real = network.servers.get('hs2.test')!;
      let holdSends = true;
      network.servers.set('hs2.test', {
        inject: (opts) =>
          holdSends && opts.url.startsWith('/_matrix/federation/v1/send/')
            ? Promise.resolve({ statusCode: 503, headers: {}, rawPayload: Buffer.from('{}') })
            : real.inject(opts),
      });
      t.teardown(() => {
        network.servers.set('hs2.test', real);
      });
      const frank = await hs2.register('frank');
      const invite = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: alice.access_token,
        body: { user_id: frank.user_id },
      });
      t.equal(invite.statusCode, 200, invite.body);
      t.equal(
        await membershipOn(hs2, bob, roomId, frank.user_id),
        'invite',
        "the invite is in hs2's room state",
      );
      const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}`, {
        token: frank.access_token,
        body: {},
      });
      t.equal(join.statusCode, 200, join.body);
      holdSends = false;
      network.servers.set('hs2.test', real);
      await untilLong('hs1 has frank joined', async () =>
        (await membershipOn(hs1, alice, roomId, frank.user_id)) === 'join' ? true : undefined,
      );
      t.pass('hs1 took the join');
    });

    t.test('forbidden and malformed invites from the client side', async (t) => {
      const outsider = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: mallory.access_token,
        body: { user_id: '@frank:hs2.test' },
      });
      t.equal(outsider.statusCode, 403, 'a user not in the room cannot invite');
      const unknownServer = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: alice.access_token,
        body: { user_id: '@nobody:unreachable.test' },
      });
      t.equal(unknownServer.statusCode, 502, 'a server that cannot be reached: 502, nothing stored');
      t.equal(unknownServer.json().errcode, 'M_UNKNOWN');
      t.equal(await membershipOn(hs1, alice, roomId, '@nobody:unreachable.test'), undefined);
      const noUser = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: alice.access_token,
        body: { user_id: '@ghost:hs2.test' },
      });
      t.equal(noUser.statusCode, 404, `hs2 has no such user: ${noUser.body}`);
      t.equal(await membershipOn(hs1, alice, roomId, '@ghost:hs2.test'), undefined, 'nothing stored');
    });

    t.test('invites from a hostile server are refused by hs2', async (t) => {
      const eve = rawServer('eve.test');
      network.servers.set(
        'eve.test',
        rawServerEndpoint(() => rawServerKeys(eve)),
      );
      const rv = getRoomVersion('10')!;
      const eveRoom = '!evil:eve.test';
      const make = (fields: Partial<Pdu> & { content: JsonObject }, key = eve.key) => {
        const unsigned = {
          type: 'm.room.member',
          room_id: eveRoom,
          sender: '@eve:eve.test',
          state_key: bob.user_id,
          origin_server_ts: Date.now(),
          depth: 5,
          prev_events: ['$x'],
          auth_events: ['$y'],
          ...fields,
        };
        const pdu = hashAndSignEvent(unsigned, rv, 'eve.test', key.keyId, key.seed) as Pdu;
        return { pdu, id: computeEventId(pdu, rv) };
      };
      const put = (id: string, body: JsonObject) => {
        const uri = `/_matrix/federation/v2/invite/${enc(eveRoom)}/${enc(id)}`;
        return hs2.app.inject({
          method: 'PUT',
          url: uri,
          headers: {
            authorization: xMatrixHeader(eve, { method: 'PUT', uri, destination: 'hs2.test', content: body }),
            'content-type': 'application/json',
          },
          payload: JSON.stringify(body),
        });
      };
      const good = make({ content: { membership: 'invite' } });
      const accepted = await put(good.id, { event: good.pdu as unknown as JsonObject, room_version: '10' });
      t.equal(accepted.statusCode, 200, `a well-formed invite is co-signed: ${accepted.body}`);
      t.ok((accepted.json().event.signatures as JsonObject)['hs2.test'], 'with hs2 signature');

      const otherKey = rawServer('eve.test', 'other').key;
      const badSig = make({ content: { membership: 'invite' }, origin_server_ts: Date.now() + 1 }, otherKey);
      const r1 = await put(badSig.id, { event: badSig.pdu as unknown as JsonObject, room_version: '10' });
      t.equal(r1.statusCode, 403, 'a bad signature');
      const foreign = make({ content: { membership: 'invite' }, sender: '@someone:hs1.test' });
      const r2 = await put(foreign.id, { event: foreign.pdu as unknown as JsonObject, room_version: '10' });
      t.equal(r2.statusCode, 403, 'a sender of another server');
      const notInvite = make({ content: { membership: 'join' } });
      const r3 = await put(notInvite.id, {
        event: notInvite.pdu as unknown as JsonObject,
        room_version: '10',
      });
      t.equal(r3.statusCode, 400, 'not an invite');
      const r4 = await put('$wrongid', { event: good.pdu as unknown as JsonObject, room_version: '10' });
      t.equal(r4.statusCode, 400, 'an event ID that is not the event');
      const r5 = await put(good.id, { event: good.pdu as unknown as JsonObject, room_version: '999' });
      t.equal(r5.statusCode, 400);
      t.equal(r5.json().errcode, 'M_INCOMPATIBLE_ROOM_VERSION');
      const remoteTarget = make({ content: { membership: 'invite' }, state_key: '@alice:hs1.test' });
      const r6 = await put(remoteTarget.id, {
        event: remoteTarget.pdu as unknown as JsonObject,
        room_version: '10',
      });
      t.equal(r6.statusCode, 400, 'an invite for a user of another server');
      const r7 = await put(good.id, { event: 'nope', room_version: '10' } as unknown as JsonObject);
      t.equal(r7.statusCode, 400, 'a body that is no event');
      const synced = await syncOnce(hs2, bob);
      t.ok(synced.rooms.invite[eveRoom], 'only the well-formed invite reached bob');
      t.equal(Object.keys(synced.rooms.invite).length, 1);
    });
  });
}
