import t from 'tap';
import { roomIdFromCreateEvent } from '../src/protocol/hashes.ts';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, startTestServer, syncOnce } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

// biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
type Json = Record<string, any>;

const sync = syncOnce;

const bodies = (room: Json | undefined) =>
  (room?.timeline?.events ?? [])
    .filter((e: Json) => e.type === 'm.room.message')
    .map((e: Json) => e.content.body);

for (const backend of databaseBackends()) {
  t.test(`sync on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const send = (who: Login, roomId: string, body: string, txn: string) =>
      s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${txn}`, {
        token: who.access_token,
        body: { msgtype: 'm.text', body },
      });

    const first = await sync(s, bob);
    t.match(first.next_batch, /^s\d+_\d+$/);
    const room = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'private_chat', name: 'Sync room', invite: [bob.user_id] },
    });
    const roomId: string = room.json().room_id;

    let bobSince = first.next_batch;
    t.test('an invite shows up with stripped state', async (t) => {
      const r = await sync(s, bob, { since: bobSince, timeout: 1000 });
      const invite = r.rooms.invite[roomId];
      t.ok(invite, 'the room is in the invite section');
      const types = invite.invite_state.events.map((e: Json) => e.type);
      t.ok(
        types.includes('m.room.name') && types.includes('m.room.member') && types.includes('m.room.create'),
      );
      const create = invite.invite_state.events.find((e: Json) => e.type === 'm.room.create');
      t.ok(
        typeof create.origin_server_ts === 'number' && create.hashes && create.signatures,
        'the create event comes whole (MSC4311)',
      );
      t.equal(roomIdFromCreateEvent(create), roomId, 'and is the one the room ID derives from');
      t.notOk(
        invite.invite_state.events.some((e: Json) => e.type !== 'm.room.create' && 'origin_server_ts' in e),
        'the other events are stripped',
      );
      t.notOk(r.rooms.join[roomId], 'not joined yet');
      bobSince = r.next_batch;
    });

    t.test('after joining, the room arrives whole', async (t) => {
      await s.request('POST', `${V3}/rooms/${enc(roomId)}/join`, { token: bob.access_token, body: {} });
      const r = await sync(s, bob, { since: bobSince, timeout: 1000 });
      const joined = r.rooms.join[roomId];
      t.ok(joined, 'the room is in the join section');
      const all = [...joined.state.events, ...joined.timeline.events];
      t.ok(
        all.some((e: Json) => e.type === 'm.room.name'),
        'with its state',
      );
      t.ok(
        all.some(
          (e: Json) =>
            e.type === 'm.room.member' && e.state_key === bob.user_id && e.content.membership === 'join',
        ),
      );
      t.equal(joined.summary['m.joined_member_count'], 2);
      bobSince = r.next_batch;
    });

    t.test('a long-poll wakes when a message arrives', async (t) => {
      const started = performance.now();
      const pending = sync(s, bob, { since: bobSince, timeout: 10_000 });
      await new Promise((r) => setTimeout(r, 100));
      await send(alice, roomId, 'wake up', 'w1');
      const r = await pending;
      const elapsed = performance.now() - started;
      t.same(bodies(r.rooms.join[roomId]), ['wake up']);
      t.ok(elapsed < 5000, `woke in ${Math.round(elapsed)} ms, not at the timeout`);
      bobSince = r.next_batch;
      const empty = await sync(s, bob, { since: bobSince, timeout: 0 });
      t.same(empty.rooms.join, {}, 'nothing new: nothing repeated');
    });

    t.test('limited timeline and prev_batch lead to exactly the missed events', async (t) => {
      for (let i = 0; i < 12; i++) await send(alice, roomId, `m${i}`, `l${i}`);
      const filter = JSON.stringify({ room: { timeline: { limit: 5 } } });
      const r = await sync(s, bob, { since: bobSince, filter });
      const joined = r.rooms.join[roomId];
      t.same(bodies(joined), ['m7', 'm8', 'm9', 'm10', 'm11']);
      t.equal(joined.timeline.limited, true);
      const back = await s.request(
        'GET',
        `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=7&from=${joined.timeline.prev_batch}`,
        { token: bob.access_token },
      );
      t.same(
        back.json().chunk.map((e: Json) => e.content.body),
        ['m6', 'm5', 'm4', 'm3', 'm2', 'm1', 'm0'],
        'paging back continues exactly where the timeline starts',
      );
      bobSince = r.next_batch;
    });

    t.test('typing and receipts reach the other member', async (t) => {
      const pending = sync(s, bob, { since: bobSince, timeout: 5000 });
      await s.request('PUT', `${V3}/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`, {
        token: alice.access_token,
        body: { typing: true, timeout: 10_000 },
      });
      const r = await pending;
      const typing = r.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === 'm.typing');
      t.same(typing?.content.user_ids, [alice.user_id]);
      bobSince = r.next_batch;

      const aliceSync = await sync(s, alice);
      const lastId = aliceSync.rooms.join[roomId].timeline.events.at(-1).event_id;
      const receipt = await s.request('POST', `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(lastId)}`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(receipt.statusCode, 200);
      const seen = await sync(s, alice, { since: aliceSync.next_batch, timeout: 2000 });
      const receipts = seen.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === 'm.receipt');
      t.ok(receipts?.content[lastId]?.['m.read']?.[bob.user_id], "alice sees bob's read receipt");

      await s.request('POST', `${V3}/rooms/${enc(roomId)}/receipt/m.read.private/${enc(lastId)}`, {
        token: alice.access_token,
        body: {},
      });
      const bobView = await sync(s, bob, { since: bobSince, timeout: 500 });
      t.notOk(JSON.stringify(bobView).includes('m.read.private'), "alice's private receipt stays hers");
      bobSince = bobView.next_batch;
    });

    t.test('unread counts count messages after the read receipt', async (t) => {
      await send(alice, roomId, 'unread 1', 'u1');
      await send(alice, roomId, 'unread 2', 'u2');
      const r = await sync(s, bob, { since: bobSince });
      t.equal(r.rooms.join[roomId].unread_notifications.notification_count, 2);
      bobSince = r.next_batch;
    });

    t.test('unread counts kept up across incremental syncs agree with a fresh count', async (t) => {
      // An initial sync counts in SQL; incremental syncs add new events to the counts they last
      // returned. After each change both must agree.
      const counts = async () => {
        const inc = await sync(s, bob, { since: bobSince, timeout: 1000 });
        bobSince = inc.next_batch;
        const fresh = await sync(s, bob);
        return {
          incremental: inc.rooms.join[roomId]?.unread_notifications,
          fresh: fresh.rooms.join[roomId].unread_notifications,
        };
      };
      await send(alice, roomId, 'unread 3', 'u3');
      let c = await counts();
      t.same(c.incremental, { notification_count: 3, highlight_count: 0 }, 'a new message adds one');
      t.same(c.incremental, c.fresh);
      const mention = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/u4`, {
        token: alice.access_token,
        body: { msgtype: 'm.text', body: 'bob!', 'm.mentions': { user_ids: [bob.user_id] } },
      });
      c = await counts();
      t.same(c.incremental, { notification_count: 4, highlight_count: 1 }, 'a mention highlights');
      t.same(c.incremental, c.fresh);
      await send(bob, roomId, 'my own message', 'u5');
      c = await counts();
      t.same(c.incremental, { notification_count: 4, highlight_count: 1 }, 'own messages do not count');
      await s.request('PUT', `${V3}/rooms/${enc(roomId)}/redact/${enc(mention.json().event_id)}/r1`, {
        token: alice.access_token,
        body: {},
      });
      c = await counts();
      t.same(
        c.incremental,
        { notification_count: 3, highlight_count: 0 },
        'a redacted message no longer counts',
      );
      t.same(c.incremental, c.fresh);
      const last = await send(alice, roomId, 'unread 5', 'u6');
      await s.request('POST', `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(last.json().event_id)}`, {
        token: bob.access_token,
        body: {},
      });
      c = await counts();
      t.same(c.incremental, { notification_count: 0, highlight_count: 0 }, 'a read receipt clears them');
      t.same(c.incremental, c.fresh);
    });

    t.test('a redaction reaches a timeline served again from an older token', async (t) => {
      // The first sync reads the message (and keeps its row); after the redaction the same range
      // must come back redacted, not from a stale copy.
      const before = (await sync(s, bob, { since: bobSince })).next_batch;
      const sent = await send(alice, roomId, 'soon redacted', 'red1');
      const eventId = sent.json().event_id;
      const first = await sync(s, bob, { since: before });
      t.same(bodies(first.rooms.join[roomId]), ['soon redacted']);
      await s.request('PUT', `${V3}/rooms/${enc(roomId)}/redact/${enc(eventId)}/red1`, {
        token: alice.access_token,
        body: {},
      });
      const again = await sync(s, bob, { since: before });
      const event = again.rooms.join[roomId].timeline.events.find((e: Json) => e.event_id === eventId);
      t.same(event?.content, {}, 'the message comes back redacted');
      t.ok(event?.unsigned?.redacted_because, 'with the redaction that did it');
      bobSince = again.next_batch;
    });

    t.test('account data comes through sync and wakes a long-poll', async (t) => {
      const started = performance.now();
      const pending = sync(s, bob, { since: bobSince, timeout: 10_000 });
      await new Promise((r) => setTimeout(r, 100));
      await s.request('PUT', `${V3}/user/${enc(bob.user_id)}/account_data/org.example.pref`, {
        token: bob.access_token,
        body: { v: 1 },
      });
      const r = await pending;
      t.ok(performance.now() - started < 5000, 'woken by the change, not the timeout');
      t.same(r.account_data.events, [{ type: 'org.example.pref', content: { v: 1 } }]);
      bobSince = r.next_batch;
    });

    t.test('a profile change in the room is a timeline event, not a rejoin', async (t) => {
      await s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.user_id)}`, {
        token: bob.access_token,
        body: { membership: 'join', displayname: 'Bobby' },
      });
      const r = await sync(s, bob, { since: bobSince, timeout: 1000 });
      const joined = r.rooms.join[roomId];
      t.equal(joined.timeline.limited, false, 'not re-sent as a new room');
      t.same(
        joined.timeline.events.map((e: Json) => e.type),
        ['m.room.member'],
        'only the member event',
      );
      bobSince = r.next_batch;
    });

    t.test('a kicked user gets the leave once and nothing after', async (t) => {
      await s.request('POST', `${V3}/rooms/${enc(roomId)}/kick`, {
        token: alice.access_token,
        body: { user_id: bob.user_id },
      });
      await send(alice, roomId, 'secret after kick', 'k1');
      const r = await sync(s, bob, { since: bobSince, timeout: 1000 });
      t.ok(r.rooms.leave[roomId], 'the room is in the leave section');
      t.notOk(JSON.stringify(r).includes('secret after kick'), 'no event after the kick');
      t.notOk(r.rooms.join[roomId]);
      const later = await sync(s, bob, { since: r.next_batch, timeout: 300 });
      t.same(later.rooms, { join: {}, invite: {}, leave: {}, knock: {} });
    });

    t.test('bad tokens and parameters', async (t) => {
      const bad = await s.request('GET', `${V3}/sync?since=garbage`, { token: bob.access_token });
      t.equal(bad.statusCode, 400);
      const badTimeout = await s.request('GET', `${V3}/sync?timeout=soon`, { token: bob.access_token });
      t.equal(badTimeout.statusCode, 400);
      const anon = await s.request('GET', `${V3}/sync`);
      t.equal(anon.statusCode, 401);
    });
  });
}

t.test('a timeline limit of 0 gives the rooms and their state, no events', async (t) => {
  const [backend] = databaseBackends();
  const s = await startTestServer(t, backend!);
  const alice = await s.register('alice');
  const created = await s.request('POST', `${V3}/createRoom`, {
    token: alice.access_token,
    body: { preset: 'public_chat', name: 'Quiet' },
  });
  const roomId: string = created.json().room_id;
  const filter = JSON.stringify({ room: { timeline: { limit: 0 } } });
  const initial = await sync(s, alice, { filter });
  const room = initial.rooms.join[roomId];
  t.same(room.timeline.events, [], 'no timeline events');
  t.equal(room.timeline.limited, true, 'limited: the room has events');
  t.ok(
    room.state.events.some((e: Json) => e.type === 'm.room.name' && e.content.name === 'Quiet'),
    'the state is all there',
  );
  const uploaded = await s.request('POST', `${V3}/user/${enc(alice.user_id)}/filter`, {
    token: alice.access_token,
    body: { room: { timeline: { limit: 0 } } },
  });
  t.equal(uploaded.statusCode, 200, 'a stored filter may say 0 too');

  await s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, {
    token: alice.access_token,
    body: { topic: 'now with a topic' },
  });
  const next = await sync(s, alice, {
    filter: uploaded.json().filter_id,
    since: initial.next_batch,
    timeout: 1000,
  });
  const later = next.rooms.join[roomId];
  t.same(later.timeline.events, []);
  t.ok(
    later.state.events.some((e: Json) => e.type === 'm.room.topic'),
    'state changed since the last sync comes in state',
  );
  const negative = await s.request('GET', `${V3}/sync?filter=${enc('{"room":{"timeline":{"limit":-1}}}')}`, {
    token: alice.access_token,
  });
  t.equal(negative.statusCode, 400, 'a negative limit is still refused');
});

t.test('invites from ignored users are not sent', async (t) => {
  const [backend] = databaseBackends();
  const s = await startTestServer(t, backend!);
  const alice = await s.register('alice');
  const bob = await s.register('bob');
  const chris = await s.register('chris');
  const ignore = await s.request('PUT', `${V3}/user/${enc(alice.user_id)}/account_data/m.ignored_user_list`, {
    token: alice.access_token,
    body: { ignored_users: { [bob.user_id]: {} } },
  });
  t.equal(ignore.statusCode, 200);
  const before = await sync(s, alice);
  const invite = async (who: Login) =>
    (
      await s.request('POST', `${V3}/createRoom`, {
        token: who.access_token,
        body: { preset: 'private_chat', invite: [alice.user_id] },
      })
    ).json().room_id as string;
  const fromBob = await invite(bob);
  const fromChris = await invite(chris);
  const incremental = await sync(s, alice, { since: before.next_batch, timeout: 1000 });
  t.ok(incremental.rooms.invite[fromChris], "chris's invite arrives");
  t.notOk(incremental.rooms.invite[fromBob], "bob's does not");
  const initial = await sync(s, alice);
  t.notOk(initial.rooms.invite[fromBob], 'nor in an initial sync');
});
