import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { statusUrl, syncUntilPresence } from './helpers/presence.ts';
import { startTestServer, syncOnce, type TestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
type Json = Record<string, any>;

/** alice and bob share a room; mallory shares none with them. */
async function people(s: TestServer) {
  const alice = await s.register('alice');
  const bob = await s.register('bob');
  const mallory = await s.register('mallory');
  const room = await s.request('POST', `${V3}/createRoom`, {
    token: alice.access_token,
    body: { preset: 'public_chat' },
  });
  const roomId = room.json().room_id as string;
  const joined = await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} });
  if (joined.statusCode !== 200) throw new Error(joined.body);
  return { alice, bob, mallory, roomId };
}

for (const backend of databaseBackends()) {
  t.test(`presence on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend);
    const { alice, bob, mallory } = await people(s);

    // Before anything was set: offline.
    const initial = await s.request('GET', statusUrl(alice.user_id), { token: alice.access_token });
    t.equal(initial.statusCode, 200);
    t.equal(initial.json().presence, 'offline');

    const bobStart = await syncOnce(s, bob, { set_presence: 'offline' });
    const put = await s.request('PUT', statusUrl(alice.user_id), {
      token: alice.access_token,
      body: { presence: 'online', status_msg: 'Reading papers' },
    });
    t.equal(put.statusCode, 200);
    t.same(put.json(), {});

    const own = (await s.request('GET', statusUrl(alice.user_id), { token: alice.access_token })).json();
    t.equal(own.presence, 'online');
    t.equal(own.status_msg, 'Reading papers');
    t.equal(own.currently_active, true);
    t.type(own.last_active_ago, 'number');

    // bob shares a room with alice: he may read it, and his sync carries it.
    const seen = await s.request('GET', statusUrl(alice.user_id), { token: bob.access_token });
    t.equal(seen.statusCode, 200);
    t.equal(seen.json().presence, 'online');
    const event = await syncUntilPresence(
      s,
      bob,
      bobStart.next_batch,
      alice.user_id,
      (c) => c.presence === 'online' && c.status_msg === 'Reading papers',
    );
    t.equal(event.content.currently_active, true, "bob's sync shows alice online");

    // An initial sync of bob carries alice's current presence.
    const full = await syncOnce(s, bob, { set_presence: 'offline' });
    t.ok(
      full.presence.events.some((e: Json) => e.sender === alice.user_id && e.content.presence === 'online'),
      'initial sync has the presence of room peers',
    );
    // mallory shares no room: neither her sync nor the endpoint shows alice.
    const malloryFull = await syncOnce(s, mallory, { set_presence: 'offline' });
    t.notOk(malloryFull.presence.events.some((e: Json) => e.sender === alice.user_id));
    const refused = await s.request('GET', statusUrl(alice.user_id), { token: mallory.access_token });
    t.equal(refused.statusCode, 403);
    t.equal(refused.json().errcode, 'M_FORBIDDEN');

    // mallory joins alice's room: her next sync brings alice's presence, though it did not change.
    const malloryMark = malloryFull.next_batch as string;
    const roomOf = (await s.request('GET', `${V3}/joined_rooms`, { token: alice.access_token })).json()
      .joined_rooms[0] as string;
    const joinedRoom = await s.request('POST', `${V3}/join/${enc(roomOf)}`, {
      token: mallory.access_token,
      body: {},
    });
    t.equal(joinedRoom.statusCode, 200);
    await syncUntilPresence(s, mallory, malloryMark, alice.user_id, (c) => c.presence === 'online');
    t.pass('a new room member learns the presence of the members she meets');
    await s.request('POST', `${V3}/rooms/${enc(roomOf)}/leave`, { token: mallory.access_token, body: {} });

    // Nobody sets another user's presence.
    const other = await s.request('PUT', statusUrl(alice.user_id), {
      token: bob.access_token,
      body: { presence: 'offline' },
    });
    t.equal(other.statusCode, 403);
    t.equal(other.json().errcode, 'M_FORBIDDEN');

    // set_presence on /sync: a long-poll of bob wakes when alice's sync says unavailable.
    const bobMark = (await syncOnce(s, bob, { set_presence: 'offline' })).next_batch as string;
    const waiting = syncUntilPresence(s, bob, bobMark, alice.user_id, (c) => c.presence === 'unavailable');
    await syncOnce(s, alice, { set_presence: 'unavailable' });
    const unavailable = await waiting;
    t.equal(unavailable.content.status_msg, 'Reading papers', 'the status message is kept');
    t.equal(unavailable.content.currently_active, false);
    // A sync without set_presence is activity: online again.
    const back = syncUntilPresence(s, bob, bobMark, alice.user_id, (c) => c.presence === 'online');
    await syncOnce(s, alice);
    await back;
    t.pass('a plain sync brings alice back online');

    // Malformed.
    for (const body of [
      { presence: 'busy' },
      { status_msg: 'no state' },
      { presence: 'online', status_msg: 7 },
    ]) {
      const res = await s.request('PUT', statusUrl(alice.user_id), { token: alice.access_token, body });
      t.equal(res.statusCode, 400, `PUT ${JSON.stringify(body)} is refused`);
      t.match(res.json().errcode, /^M_(BAD_JSON|INVALID_PARAM|MISSING_PARAM)$/);
    }
    const badId = await s.request('GET', statusUrl('not-a-user'), { token: alice.access_token });
    t.equal(badId.statusCode, 400);
    const badSync = await s.request('GET', `${V3}/sync?set_presence=busy`, { token: alice.access_token });
    t.equal(badSync.statusCode, 400);
    const noToken = await s.request('GET', statusUrl(alice.user_id));
    t.equal(noToken.statusCode, 401);
  });

  t.test(`idle users become unavailable, then offline, on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend, { presenceIdleMs: 1000, presenceOfflineMs: 2500 });
    const { alice, bob } = await people(s);
    const mark = (await syncOnce(s, bob, { set_presence: 'offline' })).next_batch as string;
    // Before alice's last activity: the idle time counts from it, and on a loaded machine her
    // sync may answer well after it began.
    const started = Date.now();
    await syncOnce(s, alice); // online
    const idle = await syncUntilPresence(s, bob, mark, alice.user_id, (c) => c.presence === 'unavailable');
    t.ok(Date.now() - started >= 900, 'not before the idle time');
    t.ok(idle.content.last_active_ago >= 900, 'last_active_ago counts from the last activity');
    await syncUntilPresence(s, bob, mark, alice.user_id, (c) => c.presence === 'offline');
    const status = await s.request('GET', statusUrl(alice.user_id), { token: bob.access_token });
    t.equal(status.json().presence, 'offline');
  });

  t.test(`presence turned off on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, { presence: false });
    const { alice, bob } = await people(s);
    const put = await s.request('PUT', statusUrl(alice.user_id), {
      token: alice.access_token,
      body: { presence: 'online', status_msg: 'here' },
    });
    t.equal(put.statusCode, 200, 'accepted (and dropped)');
    await syncOnce(s, alice);
    const seen = await s.request('GET', statusUrl(alice.user_id), { token: bob.access_token });
    t.same(seen.json(), { presence: 'offline' });
    t.same((await syncOnce(s, bob)).presence.events, []);
    const rows = await s.runtime.services.db.selectFrom('presence').selectAll().execute();
    t.same(rows, [], 'nothing is stored');
  });
}
