import t from 'tap';
import type { Pdu, RoomEvent } from '../src/protocol/event.ts';
import { stateTuple } from '../src/protocol/event.ts';
import { hashAndSignEvent } from '../src/protocol/event-signing.ts';
import { computeEventId } from '../src/protocol/hashes.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import { getRoomVersion } from '../src/protocol/room-versions.ts';
import { generateSigningKey, type SigningKey } from '../src/protocol/signing.ts';
import * as store from '../src/storage/events.repository.ts';
import { databaseBackends } from './helpers/backends.ts';
import {
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
  xMatrixHeader,
} from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';

/**
 * Eve runs a hostile server (raw signed requests from the test, with a key hs1 fetches from
 * eve.test). Every kind of bad event she sends is refused, rejected or dropped: none reaches a
 * client or changes the room's state, and hs1 keeps serving.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

for (const backend of databaseBackends()) {
  t.test(`a hostile server on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test']);
    const hs1 = servers[0] as TestServer;
    const eve = rawServer('eve.test');
    network.servers.set(
      'eve.test',
      rawServerEndpoint(() => rawServerKeys(eve)),
    );
    const rv = getRoomVersion('12')!;
    const alice = await hs1.register('alice');
    const bob = await hs1.register('bob');
    const room = async (body: JsonObject) =>
      (await hs1.request('POST', `${V3}/createRoom`, { token: alice.access_token, body })).json()
        .room_id as string;
    const roomId = await room({ preset: 'public_chat', topic: 'the real topic' });
    const privateRoom = await room({ preset: 'private_chat' });
    await hs1.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} });

    /** A request signed by eve's server (or as `as`, another signer). */
    const signed = (method: 'GET' | 'PUT' | 'POST', uri: string, content?: JsonObject, as = eve) =>
      hs1.app.inject({
        method,
        url: uri,
        headers: {
          authorization: xMatrixHeader(as, {
            method,
            uri,
            destination: 'hs1.test',
            ...(content ? { content } : {}),
          }),
          ...(content ? { 'content-type': 'application/json' } : {}),
        },
        ...(content ? { payload: JSON.stringify(content) } : {}),
      });
    const services = hs1.runtime.services;
    const stateOf = async (r: string) =>
      services.reader.stateIdsAt(services.db, await services.rooms.currentGroup(r));
    /** An event of eve's server on top of the room's extremities, auth events from its state. */
    const eveEvent = async (
      r: string,
      fields: { type: string; sender: string; content: JsonObject; state_key?: string },
      opts: { key?: SigningKey; prev?: string[] } = {},
    ): Promise<RoomEvent> => {
      const st = await stateOf(r);
      const auth = [
        st.get(stateTuple('m.room.power_levels', '')),
        st.get(stateTuple('m.room.member', fields.sender)),
        ...(fields.type === 'm.room.member'
          ? [
              st.get(stateTuple('m.room.join_rules', '')),
              st.get(stateTuple('m.room.member', fields.state_key!)),
            ]
          : []),
      ].filter((id, i, all): id is string => id !== undefined && all.indexOf(id) === i);
      const prev = opts.prev ?? (await store.forwardExtremityIds(services.db, r));
      const depth = Math.max(0, ...(await store.getPdus(services.db, prev)).map((p) => p.depth)) + 1;
      const key = opts.key ?? eve.key;
      const pdu = hashAndSignEvent(
        { ...fields, room_id: r, origin_server_ts: Date.now(), depth, prev_events: prev, auth_events: auth },
        rv,
        'eve.test',
        key.keyId,
        key.seed,
      ) as Pdu;
      return { ...pdu, event_id: computeEventId(pdu, rv) };
    };
    const wire = (e: RoomEvent) => {
      const { event_id: _id, ...pdu } = e;
      return pdu as unknown as JsonObject;
    };
    let txn = 0;
    const sendTxn = async (events: RoomEvent[], txnId = `t${txn++}`) => {
      const res = await signed('PUT', `/_matrix/federation/v1/send/${txnId}`, {
        origin: 'eve.test',
        origin_server_ts: Date.now(),
        pdus: events.map(wire),
      });
      return { status: res.statusCode, body: res.json() as { pdus: Record<string, { error?: string }> } };
    };
    const clientSees = async (eventId: string) => {
      const r = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=200`, {
        token: alice.access_token,
      });
      return (r.json().chunk as Array<{ event_id: string }>).some((e) => e.event_id === eventId);
    };

    // Eve joins the public room the regular way.
    const evan = '@evan:eve.test';
    const made = await signed('GET', `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(evan)}?ver=12`);
    t.equal(made.statusCode, 200, made.body);
    const join = await eveEvent(roomId, {
      type: 'm.room.member',
      sender: evan,
      state_key: evan,
      content: { membership: 'join' },
    });
    const joined = await signed(
      'PUT',
      `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(join.event_id)}`,
      wire(join),
    );
    t.equal(joined.statusCode, 200, joined.body);
    // The deprecated v1 gives the same answer as [200, answer]: here a duplicate of the join.
    const againV1 = await signed(
      'PUT',
      `/_matrix/federation/v1/send_join/${enc(roomId)}/${enc(join.event_id)}`,
      wire(join),
    );
    t.equal(againV1.statusCode, 200, againV1.body);
    t.equal(againV1.json()[0], 200);
    t.equal(againV1.json()[1].event.sender, evan, 'v1: the join in the answer');
    t.ok(Array.isArray(againV1.json()[1].state), 'v1: with the state');
    const notAJoin = await signed(
      'PUT',
      `/_matrix/federation/v1/send_join/${enc(roomId)}/${enc(join.event_id)}`,
      { ...wire(join), type: 'm.room.message' },
    );
    t.equal(notAJoin.statusCode, 400, 'v1 refuses what is not a join, as v2');
    // /event_auth: the join's auth chain, with the v12 create event it rests on (not listed).
    const auth = await signed(
      'GET',
      `/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc(join.event_id)}`,
    );
    t.equal(auth.statusCode, 200, auth.body);
    const chainIds = (auth.json().auth_chain as Array<Record<string, unknown>>).map((e) =>
      computeEventId(e as unknown as Pdu, rv),
    );
    t.ok(chainIds.includes(`$${roomId.slice(1)}`), 'the create event is in the chain');
    for (const id of join.auth_events)
      t.ok(chainIds.includes(id), `the join's auth event ${id} is in the chain`);
    t.notOk(chainIds.includes(join.event_id), 'not the event itself');
    const unknownAuth = await signed(
      'GET',
      `/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc('$nope')}`,
    );
    t.equal(unknownAuth.statusCode, 404);
    const stateBefore = await stateOf(roomId);

    t.test('requests without a valid signature are refused', async (t) => {
      const res = await signed(
        'PUT',
        '/_matrix/federation/v1/send/x',
        { pdus: [] },
        rawServer('eve.test', 'other'),
      );
      t.equal(res.statusCode, 401);
      t.equal(res.json().errcode, 'M_UNAUTHORIZED');
    });

    t.test('a bad signature, a bad content hash and a sender of another server are dropped', async (t) => {
      const badSig = await eveEvent(
        roomId,
        { type: 'm.room.message', sender: evan, content: { body: 'x' } },
        { key: generateSigningKey('ed25519:k') },
      );
      const goodHash = await eveEvent(roomId, {
        type: 'm.room.message',
        sender: evan,
        content: { body: 'signed text' },
      });
      const badHash = { ...goodHash, content: { body: 'swapped text' } };
      const forged = await eveEvent(roomId, {
        type: 'm.room.message',
        sender: alice.user_id,
        content: { body: 'as alice' },
      });
      const res = await sendTxn([badSig, badHash, forged]);
      t.equal(res.status, 200);
      for (const e of [badSig, badHash, forged]) {
        t.ok(res.body.pdus[e.event_id]?.error, `refused: ${res.body.pdus[e.event_id]?.error}`);
        t.notOk(await clientSees(e.event_id), 'no client sees it');
      }
      t.equal(
        (await store.getPdus(services.db, [badSig.event_id, forged.event_id])).length,
        0,
        'none stored',
      );
    });

    t.test('events that fail the authorization rules are rejected', async (t) => {
      const ban = await eveEvent(roomId, {
        type: 'm.room.member',
        sender: evan,
        state_key: alice.user_id,
        content: { membership: 'ban' },
      });
      const topic = await eveEvent(roomId, {
        type: 'm.room.topic',
        sender: evan,
        state_key: '',
        content: { topic: 'eve was here' },
      });
      const sneak = '@sneak:eve.test';
      const joinPrivate = await eveEvent(privateRoom, {
        type: 'm.room.member',
        sender: sneak,
        state_key: sneak,
        content: { membership: 'join' },
      });
      const notIn = await eveEvent(privateRoom, {
        type: 'm.room.message',
        sender: evan,
        content: { body: 'not a member' },
      });
      const res = await sendTxn([ban, topic, joinPrivate, notIn]);
      for (const e of [ban, topic, joinPrivate, notIn]) {
        t.ok(res.body.pdus[e.event_id]?.error, `rejected: ${res.body.pdus[e.event_id]?.error}`);
      }
      const now = await stateOf(roomId);
      t.same(
        [...now].filter(([k]) => !k.startsWith('m.room.member\u0000@evan')),
        [...stateBefore].filter(([k]) => !k.startsWith('m.room.member\u0000@evan')),
        'the room state is unchanged',
      );
      const members = await hs1.request('GET', `${V3}/rooms/${enc(privateRoom)}/joined_members`, {
        token: alice.access_token,
      });
      t.notOk(members.json().joined[sneak], 'no one joined the invite-only room');
      const topicNow = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, {
        token: alice.access_token,
      });
      t.equal(topicNow.json().topic, 'the real topic');
    });

    t.test('a replayed transaction is answered as the first time and changes nothing', async (t) => {
      const msg = await eveEvent(roomId, { type: 'm.room.message', sender: evan, content: { body: 'once' } });
      const first = await sendTxn([msg], 'replay');
      t.same(first.body.pdus[msg.event_id], {}, 'accepted');
      const other = await eveEvent(roomId, {
        type: 'm.room.message',
        sender: evan,
        content: { body: 'sneaked in a replay' },
      });
      const again = await sendTxn([other], 'replay');
      t.same(again.body, first.body, 'the first answer again');
      t.equal(
        (await store.getPdus(services.db, [other.event_id])).length,
        0,
        'the replay carried nothing in',
      );
      t.ok(await clientSees(msg.event_id), 'the real message is delivered, once');
    });

    t.test('a flood of missing prev events is bounded and the server keeps serving', async (t) => {
      const fakes = Array.from({ length: 20 }, (_, i) => `$${'A'.repeat(42)}${String.fromCharCode(65 + i)}`);
      const flood = await eveEvent(
        roomId,
        { type: 'm.room.message', sender: evan, content: { body: 'flood' } },
        { prev: fakes },
      );
      const started = Date.now();
      const res = await sendTxn([flood]);
      t.equal(res.status, 200);
      t.ok(res.body.pdus[flood.event_id]?.error, 'not accepted');
      t.notOk(await clientSees(flood.event_id));
      const versions = await hs1.request('GET', '/_matrix/client/versions');
      t.equal(versions.statusCode, 200, `still serving (the flood took ${Date.now() - started} ms)`);
      const tooMany = await signed('PUT', '/_matrix/federation/v1/send/big', {
        pdus: Array.from({ length: 51 }, () => ({})),
      });
      t.equal(tooMany.statusCode, 400, 'more than 50 PDUs is refused');
    });

    t.test('a restricted join naming our user as authoriser, without make_join, is not signed', async (t) => {
      // A restricted room admitting members of the private room, which no one of eve's is in.
      const restricted = await room({
        preset: 'private_chat',
        initial_state: [
          {
            type: 'm.room.join_rules',
            state_key: '',
            content: {
              join_rule: 'restricted',
              allow: [{ type: 'm.room_membership', room_id: privateRoom }],
            },
          },
        ],
      });
      const madeRestricted = await signed(
        'GET',
        `/_matrix/federation/v1/make_join/${enc(restricted)}/${enc(evan)}?ver=12`,
      );
      t.equal(madeRestricted.statusCode, 403, 'make_join refuses: evan is in no allowed room');
      // The auth rules alone would let it in (alice is joined with the invite level): the
      // authorising server must check the allowed rooms before it signs.
      const forged = await eveEvent(restricted, {
        type: 'm.room.member',
        sender: evan,
        state_key: evan,
        content: { membership: 'join', join_authorised_via_users_server: alice.user_id },
      });
      const res = await signed(
        'PUT',
        `/_matrix/federation/v2/send_join/${enc(restricted)}/${enc(forged.event_id)}`,
        wire(forged),
      );
      t.equal(res.statusCode, 403, res.body);
      t.equal(res.json().errcode, 'M_FORBIDDEN');
      const members = await hs1.request('GET', `${V3}/rooms/${enc(restricted)}/joined_members`, {
        token: alice.access_token,
      });
      t.notOk(members.json().joined[evan], 'evan is not in the room');
    });
  });
}
