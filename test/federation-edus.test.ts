import t from 'tap';
import type { JsonObject } from '../src/protocol/json.ts';
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

/**
 * EDUs across servers (server-server API: Typing Notifications, Receipts, Presence, Server
 * ACLs): alice on hs1 and bob on hs2 share a room; their typing, read receipts and presence
 * reach each other's /sync; a private receipt stays home; eve's server may not speak for bob nor
 * for a user of hers who is not in the room; malformed EDUs do not fail a transaction; a receipt
 * made while hs2 is unreachable arrives (the latest one) once it is back; and once the room's
 * ACL denies hs2, its typing and receipts are dropped.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

/** Across servers on a loaded machine: a minute. */
const untilLong = <T>(what: string, check: () => Promise<T | undefined | false>) =>
  until(what, check, 60_000);

// biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
type Sync = Record<string, any>;
const ephemeral = (sync: Sync, roomId: string): Array<{ type: string; content: JsonObject }> =>
  sync.rooms?.join?.[roomId]?.ephemeral?.events ?? [];
const typingIn = (sync: Sync, roomId: string): string[] =>
  (ephemeral(sync, roomId).find((e) => e.type === 'm.typing')?.content.user_ids as string[]) ?? [];
/** The receipts of `userId` in the room's sync, as { eventId, type, data }. */
const receiptsOf = (sync: Sync, roomId: string, userId: string) => {
  const out: Array<{ eventId: string; type: string; data: JsonObject }> = [];
  for (const e of ephemeral(sync, roomId)) {
    if (e.type !== 'm.receipt') continue;
    for (const [eventId, byType] of Object.entries(e.content as Record<string, Record<string, JsonObject>>))
      for (const [type, byUser] of Object.entries(byType))
        if (byUser[userId]) out.push({ eventId, type, data: byUser[userId] as JsonObject });
  }
  return out;
};

for (const backend of databaseBackends()) {
  t.test(`EDUs across servers on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const eve = rawServer('eve.test');
    network.servers.set(
      'eve.test',
      rawServerEndpoint(() => rawServerKeys(eve)),
    );
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const roomId = (
      await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'public_chat' },
      })
    ).json().room_id as string;
    const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
      token: bob.access_token,
      body: {},
    });
    t.equal(join.statusCode, 200, join.body);
    const send = async (s: TestServer, who: Login, body: string) => {
      const r = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${body}`, {
        token: who.access_token,
        body: { msgtype: 'm.text', body },
      });
      t.equal(r.statusCode, 200, r.body);
      return r.json().event_id as string;
    };
    /** Waits until the event is on `s` (so a receipt for it can be made there). */
    const arrived = (s: TestServer, who: Login, eventId: string) =>
      untilLong(`${eventId} on ${s.runtime.config.serverName}`, async () => {
        const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(eventId)}`, {
          token: who.access_token,
        });
        return r.statusCode === 200;
      });
    const typing = (s: TestServer, who: Login, on: boolean, timeout = 30_000) =>
      s.request('PUT', `${V3}/rooms/${enc(roomId)}/typing/${enc(who.user_id)}`, {
        token: who.access_token,
        body: on ? { typing: true, timeout } : { typing: false },
      });
    const receipt = (s: TestServer, who: Login, type: string, eventId: string, body: JsonObject = {}) =>
      s.request('POST', `${V3}/rooms/${enc(roomId)}/receipt/${type}/${enc(eventId)}`, {
        token: who.access_token,
        body,
      });
    /** EDUs of `type` that `from` sent to `to` so far. */
    const eduSent = (from: string, to: string, type: string): JsonObject[] =>
      network.sent
        .filter((r) => r.from === from && r.destination === to && r.uri.includes('/federation/v1/send/'))
        .flatMap((r) => (JSON.parse(Buffer.from(r.body ?? '').toString() || '{}').edus ?? []) as JsonObject[])
        .filter((e) => e.edu_type === type);

    t.test('typing crosses both ways, and stopping too', async (t) => {
      t.equal((await typing(hs1, alice, true)).statusCode, 200);
      await untilLong('alice typing on hs2', async () =>
        typingIn(await syncOnce(hs2, bob), roomId).includes(alice.user_id),
      );
      t.equal((await typing(hs2, bob, true)).statusCode, 200);
      await untilLong('bob typing on hs1', async () =>
        typingIn(await syncOnce(hs1, alice), roomId).includes(bob.user_id),
      );
      t.equal((await typing(hs1, alice, false)).statusCode, 200);
      await untilLong('alice stopped on hs2', async () => {
        const users = typingIn(await syncOnce(hs2, bob), roomId);
        return !users.includes(alice.user_id);
      });
      t.same(
        eduSent('hs1.test', 'hs2.test', 'm.typing').map((e) => e.content),
        [
          { room_id: roomId, user_id: alice.user_id, typing: true },
          { room_id: roomId, user_id: alice.user_id, typing: false },
        ],
        'hs1 sent alice starting and stopping',
      );
      await typing(hs2, bob, false);
    });

    t.test('a typing notice that runs out is stopped on the other server too', async (t) => {
      t.equal((await typing(hs1, alice, true, 500)).statusCode, 200);
      await untilLong('alice typing on hs2', async () =>
        hs2.runtime.services.typing.typingUsers(roomId).includes(alice.user_id),
      );
      // hs2 would keep a remote notice for a minute: it ends because hs1 said so.
      await untilLong(
        'alice no longer typing on hs2',
        async () => !hs2.runtime.services.typing.typingUsers(roomId).includes(alice.user_id),
      );
      t.same(eduSent('hs1.test', 'hs2.test', 'm.typing').at(-1)?.content, {
        room_id: roomId,
        user_id: alice.user_id,
        typing: false,
      });
    });

    t.test('read receipts cross both ways, threaded ones with their thread; private ones stay', async (t) => {
      const first = await send(hs1, alice, 'hello');
      await arrived(hs2, bob, first);
      t.equal((await receipt(hs2, bob, 'm.read', first)).statusCode, 200);
      const seenByAlice = await untilLong('bob read receipt on hs1', async () => {
        const mine = receiptsOf(await syncOnce(hs1, alice), roomId, bob.user_id);
        return mine.find((r) => r.eventId === first && r.type === 'm.read');
      });
      t.type(seenByAlice.data.ts, 'number');
      t.notOk('thread_id' in seenByAlice.data, 'unthreaded');

      const second = await send(hs2, bob, 'hi back');
      await arrived(hs1, alice, second);
      t.equal((await receipt(hs1, alice, 'm.read.private', second)).statusCode, 200);
      t.equal((await receipt(hs1, alice, 'm.read', second, { thread_id: first })).statusCode, 200);
      const threaded = await untilLong('alice threaded receipt on hs2', async () => {
        const hers = receiptsOf(await syncOnce(hs2, bob), roomId, alice.user_id);
        return hers.find((r) => r.eventId === second && r.type === 'm.read');
      });
      t.equal(threaded.data.thread_id, first, 'the thread goes with it');
      await hs1.runtime.services.sender.idle();
      const sent = eduSent('hs1.test', 'hs2.test', 'm.receipt');
      t.ok(sent.length > 0);
      t.notOk(
        sent.some((e) => JSON.stringify(e.content).includes('m.read.private')),
        'no private receipt was sent',
      );
      const stored = await hs2.runtime.services.db
        .selectFrom('receipts')
        .select('receipt_type')
        .where('user_id', '=', alice.user_id)
        .execute();
      t.same(
        stored.map((r) => r.receipt_type),
        ['m.read'],
        'hs2 holds no private receipt of alice',
      );
    });

    t.test('presence crosses both ways and answers GET /presence/{userId}/status', async (t) => {
      const set = await hs1.request('PUT', `${V3}/presence/${enc(alice.user_id)}/status`, {
        token: alice.access_token,
        body: { presence: 'online', status_msg: 'in the lab' },
      });
      t.equal(set.statusCode, 200, set.body);
      const seen = await untilLong('alice presence in bob sync', async () => {
        const events = (await syncOnce(hs2, bob)).presence?.events as Array<{
          sender: string;
          content: JsonObject;
        }>;
        return events?.find((e) => e.sender === alice.user_id && e.content.status_msg === 'in the lab');
      });
      t.equal(seen.content.presence, 'online');
      const status = await hs2.request('GET', `${V3}/presence/${enc(alice.user_id)}/status`, {
        token: bob.access_token,
      });
      t.equal(status.statusCode, 200);
      t.equal(status.json().presence, 'online');
      t.equal(status.json().status_msg, 'in the lab');

      await hs2.request('PUT', `${V3}/presence/${enc(bob.user_id)}/status`, {
        token: bob.access_token,
        body: { presence: 'unavailable', status_msg: 'away' },
      });
      await untilLong('bob presence in alice sync', async () => {
        const events = (await syncOnce(hs1, alice)).presence?.events as Array<{
          sender: string;
          content: JsonObject;
        }>;
        return events?.find((e) => e.sender === bob.user_id && e.content.presence === 'unavailable');
      });
      const bobs = await hs1.request('GET', `${V3}/presence/${enc(bob.user_id)}/status`, {
        token: alice.access_token,
      });
      t.equal(bobs.json().status_msg, 'away');
      // The remote user's row is not swept here: their server says when they go idle.
      await hs1.runtime.services.presence.sweep();
      const after = await hs1.request('GET', `${V3}/presence/${enc(bob.user_id)}/status`, {
        token: alice.access_token,
      });
      t.equal(after.json().presence, 'unavailable');
    });

    /** A transaction from eve's server to hs1. */
    const eveSends = (txnId: string, content: JsonObject) => {
      const uri = `/_matrix/federation/v1/send/${txnId}`;
      return hs1.app.inject({
        method: 'PUT',
        url: uri,
        headers: {
          authorization: xMatrixHeader(eve, { method: 'PUT', uri, destination: 'hs1.test', content }),
          'content-type': 'application/json',
        },
        payload: JSON.stringify(content),
      });
    };

    t.test("a server may not send typing, receipts or presence for another server's users", async (t) => {
      const eventId = await send(hs1, alice, 'for eve');
      const res = await eveSends('forged', {
        origin: 'eve.test',
        origin_server_ts: Date.now(),
        pdus: [],
        edus: [
          { edu_type: 'm.typing', content: { room_id: roomId, user_id: bob.user_id, typing: true } },
          // eve's own user, but not in the room.
          { edu_type: 'm.typing', content: { room_id: roomId, user_id: '@eve:eve.test', typing: true } },
          {
            edu_type: 'm.receipt',
            content: { [roomId]: { 'm.read': { [bob.user_id]: { event_ids: [eventId], data: { ts: 1 } } } } },
          },
          {
            edu_type: 'm.presence',
            content: {
              push: [{ user_id: bob.user_id, presence: 'online', last_active_ago: 0, status_msg: 'forged' }],
            },
          },
        ],
      });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { pdus: {} });
      t.same(hs1.runtime.services.typing.typingUsers(roomId), [], 'nobody typing');
      const forgedReceipt = await hs1.runtime.services.db
        .selectFrom('receipts')
        .select('user_id')
        .where('event_id', '=', eventId)
        .execute();
      t.same(forgedReceipt, [], 'no receipt stored');
      const bobs = await hs1.request('GET', `${V3}/presence/${enc(bob.user_id)}/status`, {
        token: alice.access_token,
      });
      t.not(bobs.json().status_msg, 'forged');
    });

    t.test('malformed EDUs are dropped; the transaction still answers 200', async (t) => {
      const dispatcher = hs1.runtime.services.federationRooms.edus;
      const ignoredBefore = dispatcher.ignored;
      const res = await eveSends('malformed', {
        origin: 'eve.test',
        origin_server_ts: Date.now(),
        pdus: [],
        edus: [
          'not an object',
          { edu_type: 7, content: {} },
          { edu_type: 'm.typing' },
          { edu_type: 'm.typing', content: { room_id: 5, user_id: [], typing: 'yes' } },
          {
            edu_type: 'm.receipt',
            content: { 'not a room': { 'm.read': 1 }, [roomId]: { 'm.read': { x: 1 } } },
          },
          {
            edu_type: 'm.receipt',
            content: { [roomId]: { 'm.read': { '@eve:eve.test': { event_ids: 'x' } } } },
          },
          { edu_type: 'm.presence', content: { push: 'everyone online' } },
          {
            edu_type: 'm.presence',
            content: { push: [null, { user_id: '@eve:eve.test', presence: 'dancing' }] },
          },
          { edu_type: 'org.example.unknown', content: {} },
        ],
      });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { pdus: {} });
      t.equal(
        dispatcher.ignored - ignoredBefore,
        4,
        'four ignored by the dispatcher (the others by handlers)',
      );
      t.equal(dispatcher.failed, 0, 'no handler failed');
      const tooMany = await eveSends('too-many', {
        origin: 'eve.test',
        pdus: [],
        edus: Array.from({ length: 101 }, () => ({ edu_type: 'm.typing', content: {} })),
      });
      t.equal(tooMany.statusCode, 400, 'more than 100 EDUs is refused');
      t.equal(tooMany.json().errcode, 'M_BAD_JSON');
    });

    t.test('a destination down, then up, gets the latest receipt', async (t) => {
      const one = await send(hs2, bob, 'one');
      const two = await send(hs2, bob, 'two');
      await arrived(hs1, alice, two);
      await hs1.runtime.services.sender.idle();
      network.cut('hs1.test', 'hs2.test');
      t.equal((await receipt(hs1, alice, 'm.read', one)).statusCode, 200);
      t.equal((await receipt(hs1, alice, 'm.read', two)).statusCode, 200);
      await until('hs1 failed to reach hs2', async () => {
        const row = await hs1.runtime.services.db
          .selectFrom('federation_destinations')
          .select('failure_count')
          .where('destination', '=', 'hs2.test')
          .executeTakeFirst();
        return (row?.failure_count ?? 0) > 0;
      });
      t.equal(hs1.runtime.services.sender.ephemeralWaiting('hs2.test'), 1, 'one receipt waits: the latest');
      network.heal('hs1.test', 'hs2.test');
      // hs2 contacting hs1 ends hs1's backoff (as any request from a server does).
      await send(hs2, bob, 'three');
      const got = await untilLong('alice receipt of two on hs2', async () => {
        const hers = receiptsOf(await syncOnce(hs2, bob), roomId, alice.user_id);
        return hers.find((r) => r.type === 'm.read' && r.eventId === two);
      });
      t.ok(got);
      const stored = await hs2.runtime.services.db
        .selectFrom('receipts')
        .select(['event_id', 'thread_id'])
        .where('user_id', '=', alice.user_id)
        .where('receipt_type', '=', 'm.read')
        .where('thread_id', '=', 'main')
        .execute();
      t.same(stored, [{ event_id: two, thread_id: 'main' }]);
    });

    t.test("once the room's ACL denies hs2, its typing and receipts are dropped", async (t) => {
      const last = await send(hs1, alice, 'before the acl');
      await arrived(hs2, bob, last);
      const acl = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.server_acl/`, {
        token: alice.access_token,
        body: { allow: ['*'], deny: ['hs2.test'], allow_ip_literals: false },
      });
      t.equal(acl.statusCode, 200, acl.body);
      const typingBefore = eduSent('hs2.test', 'hs1.test', 'm.typing').length;
      const receiptsBefore = eduSent('hs2.test', 'hs1.test', 'm.receipt').length;
      t.equal((await typing(hs2, bob, true)).statusCode, 200);
      t.equal((await receipt(hs2, bob, 'm.read', last)).statusCode, 200);
      await untilLong('hs2 delivered both to hs1', async () => {
        await hs2.runtime.services.sender.idle();
        return (
          eduSent('hs2.test', 'hs1.test', 'm.typing').length > typingBefore &&
          eduSent('hs2.test', 'hs1.test', 'm.receipt').length > receiptsBefore &&
          hs2.runtime.services.sender.ephemeralWaiting('hs1.test') === 0
        );
      });
      t.notOk(hs1.runtime.services.typing.typingUsers(roomId).includes(bob.user_id), 'typing dropped');
      const stored = await hs1.runtime.services.db
        .selectFrom('receipts')
        .select('event_id')
        .where('user_id', '=', bob.user_id)
        .execute();
      t.notOk(
        stored.some((r) => r.event_id === last),
        'receipt dropped',
      );
    });
  });
}
