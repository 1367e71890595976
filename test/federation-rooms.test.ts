import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { type Login, syncOnce, type TestServer } from './helpers/server.ts';

/**
 * Two and three homeservers in one test, each with its own server name and database, federating
 * through the in-process network: remote joins (by room ID and by alias), messages both ways,
 * membership changes seen everywhere, and what a server may not read.
 */
const V3 = '/_matrix/client/v3';
// Several homeservers in one process, on a loaded 2-core machine: more than tap's default 120 s.
t.setTimeout(600_000);
const enc = encodeURIComponent;

/** Syncs until `done` holds for the room's timeline, or fails after the deadline. */
async function waitForTimeline(
  s: TestServer,
  who: Login,
  roomId: string,
  done: (events: Array<{ type: string; sender: string; content: Record<string, unknown> }>) => boolean,
  timeoutMs = 60_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=200`, {
      token: who.access_token,
    });
    if (r.statusCode === 200) {
      const chunk = (
        r.json().chunk as Array<{ type: string; sender: string; content: Record<string, unknown> }>
      )
        .slice()
        .reverse();
      if (done(chunk)) return chunk;
    }
    if (Date.now() > deadline)
      throw new Error(`timeline condition not met in ${timeoutMs} ms: ${r.body.slice(0, 500)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const bodies = (events: Array<{ type: string; content: Record<string, unknown> }>) =>
  events.filter((e) => e.type === 'm.room.message').map((e) => e.content.body);

for (const backend of databaseBackends()) {
  t.test(`rooms across servers on ${backend.name}`, async (t) => {
    const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test', 'hs3.test']);
    const [hs1, hs2, hs3] = servers as [TestServer, TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const carol = await hs3.register('carol');

    const created = await hs1.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat', room_alias_name: 'lab', name: 'Lab' },
    });
    t.equal(created.statusCode, 200);
    const roomId: string = created.json().room_id;

    t.test('bob on hs2 joins by room ID through hs1', async (t) => {
      const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(join.statusCode, 200, join.body);
      const members = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/joined_members`, {
        token: alice.access_token,
      });
      t.ok(members.json().joined[bob.user_id], 'hs1 has bob joined');
      const synced = await syncOnce(hs2, bob);
      t.ok(synced.rooms.join[roomId], 'the room is in bob sync on hs2');
      const name = await hs2.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.name`, {
        token: bob.access_token,
      });
      t.equal(name.json().name, 'Lab', `hs2 has the room state: ${name.statusCode} ${name.body}`);
    });

    t.test('carol on hs3 joins by alias', async (t) => {
      const join = await hs3.request('POST', `${V3}/join/${enc('#lab:hs1.test')}`, {
        token: carol.access_token,
        body: {},
      });
      t.equal(join.statusCode, 200, join.body);
      t.equal(join.json().room_id, roomId);
    });

    t.test('messages from all three servers arrive everywhere, once and in the same order', async (t) => {
      const senders: Array<[TestServer, Login, string]> = [
        [hs1, alice, 'a'],
        [hs2, bob, 'b'],
        [hs3, carol, 'c'],
      ];
      const expected: string[] = [];
      // 100 messages, taking turns.
      for (let i = 0; i < 100; i++) {
        const [s, who, tag] = senders[i % senders.length]!;
        const body = `${tag}${i}`;
        expected.push(body);
        const r = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${body}`, {
          token: who.access_token,
          body: { msgtype: 'm.text', body },
        });
        t.equal(r.statusCode, 200);
        // Wait until every server has it, so the order is one everyone agrees on.
        for (const [other, reader] of senders) {
          await waitForTimeline(other, reader, roomId, (events) => bodies(events).includes(body));
        }
      }
      for (const [s, who, tag] of senders) {
        const events = await waitForTimeline(s, who, roomId, (ev) => bodies(ev).length >= expected.length);
        t.same(bodies(events), expected, `server of ${tag}: every message once, in order`);
      }
    });

    t.test('a kick of a remote user takes effect on every server', async (t) => {
      const kick = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/kick`, {
        token: alice.access_token,
        body: { user_id: carol.user_id, reason: 'test' },
      });
      t.equal(kick.statusCode, 200, kick.body);
      for (const [s, who] of [
        [hs1, alice],
        [hs2, bob],
      ] as const) {
        await waitForTimeline(s, who, roomId, (ev) =>
          ev.some((e) => e.type === 'm.room.member' && e.content.membership === 'leave'),
        );
        const members = await s.request('GET', `${V3}/rooms/${enc(roomId)}/joined_members`, {
          token: who.access_token,
        });
        t.notOk(members.json().joined[carol.user_id], 'carol is gone');
      }
      const refused = await hs3.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/after-kick`, {
        token: carol.access_token,
        body: { msgtype: 'm.text', body: 'still here?' },
      });
      t.equal(refused.statusCode, 403, 'carol may no longer send');
    });
  });
}
