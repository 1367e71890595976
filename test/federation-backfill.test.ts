import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { type Login, syncOnce, type TestServer } from './helpers/server.ts';

/**
 * Backfill: a user who joins a room that started on another server pages back through its whole
 * history with /messages, which asks the other server (/backfill, /state_ids) when it runs out of
 * what it holds; what the other server may not show (history before the join, with "joined"
 * visibility) stays out, and an unreachable server leaves /messages answering with what is held.
 */
const V3 = '/_matrix/client/v3';
t.setTimeout(600_000);
const enc = encodeURIComponent;

interface Ev {
  event_id: string;
  type: string;
  sender: string;
  state_key?: string;
  content: Record<string, unknown>;
}

/** Every event /messages gives going back from the end, page by page, and the pages' sizes. */
async function pageBack(s: TestServer, who: Login, roomId: string, limit: number) {
  const events: Ev[] = [];
  let from: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const r = await s.request(
      'GET',
      `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=${limit}${from ? `&from=${enc(from)}` : ''}`,
      { token: who.access_token },
    );
    if (r.statusCode !== 200) throw new Error(`messages ${r.statusCode} ${r.body}`);
    const body = r.json() as { chunk: Ev[]; end?: string };
    events.push(...body.chunk);
    if (body.end === undefined) return events;
    from = body.end;
  }
  throw new Error('no end after 100 pages');
}

const bodies = (events: Ev[]) => events.filter((e) => e.type === 'm.room.message').map((e) => e.content.body);

for (const backend of databaseBackends()) {
  t.test(`backfill on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const createRoom = async (visibility: string) => {
      const r = await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: {
          preset: 'public_chat',
          initial_state: [
            { type: 'm.room.history_visibility', state_key: '', content: { history_visibility: visibility } },
          ],
        },
      });
      t.equal(r.statusCode, 200, r.body);
      return r.json().room_id as string;
    };
    let txn = 0;
    const send = async (roomId: string, body: string) => {
      const r = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t${txn++}`, {
        token: alice.access_token,
        body: { msgtype: 'm.text', body },
      });
      t.equal(r.statusCode, 200, r.body);
    };
    const join = async (roomId: string) => {
      const r = await hs2.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(r.statusCode, 200, r.body);
    };

    t.test('a new member pages back through the whole history, held or not', async (t) => {
      const roomId = await createRoom('shared');
      const sent = Array.from({ length: 25 }, (_, i) => `m${i}`);
      for (const body of sent) await send(roomId, body);
      await join(roomId);
      const mark = (await syncOnce(hs2, bob)).next_batch as string;

      const onHs1 = await pageBack(hs1, alice, roomId, 10);
      const onHs2 = await pageBack(hs2, bob, roomId, 7);
      t.same(bodies(onHs2), [...sent].reverse(), 'every message, newest first, once');
      t.same(
        onHs2.map((e) => e.event_id),
        onHs1.map((e) => e.event_id),
        'the same events in the same order as on the server where the room began',
      );
      t.equal(onHs2.at(-1)?.type, 'm.room.create', 'down to the creation of the room');
      t.ok(
        network.sent.some(
          (r) => r.from === 'hs2.test' && r.uri.startsWith('/_matrix/federation/v1/backfill/'),
        ),
        'hs2 asked hs1 with /backfill',
      );

      // A second pass is served from what hs2 now holds: no more requests.
      const before = network.sent.filter((r) => r.uri.includes('/backfill/')).length;
      t.same(
        (await pageBack(hs2, bob, roomId, 50)).map((e) => e.event_id),
        onHs2.map((e) => e.event_id),
      );
      t.equal(
        network.sent.filter((r) => r.uri.includes('/backfill/')).length,
        before,
        'nothing fetched again',
      );

      // Backfilled history is history: no incremental sync brings it as new.
      const later = await syncOnce(hs2, bob, { since: mark, timeout: '0' });
      t.same(bodies(later.rooms?.join?.[roomId]?.timeline?.events ?? []), [], 'no backfilled event in /sync');

      // And the room's state on hs2 is what it was: bob joined, alice the creator.
      const members = await hs2.request('GET', `${V3}/rooms/${enc(roomId)}/joined_members`, {
        token: bob.access_token,
      });
      t.same(Object.keys(members.json().joined).sort(), [alice.user_id, bob.user_id].sort());

      // /context on a backfilled event works like on any other.
      const m10 = onHs2.find((e) => e.content.body === 'm10')!;
      const ctx = await hs2.request(
        'GET',
        `${V3}/rooms/${enc(roomId)}/context/${enc(m10.event_id)}?limit=4`,
        {
          token: bob.access_token,
        },
      );
      t.equal(ctx.statusCode, 200, ctx.body);
      t.same(bodies(ctx.json().events_before), ['m9', 'm8']);
      t.same(bodies(ctx.json().events_after), ['m11', 'm12']);
    });

    t.test('history the other server may not show stays out', async (t) => {
      const roomId = await createRoom('joined');
      await send(roomId, 'before bob');
      await join(roomId);
      await send(roomId, 'after bob');
      const deadline = Date.now() + 60_000;
      let seen: Ev[] = [];
      while (Date.now() < deadline) {
        seen = await pageBack(hs2, bob, roomId, 10);
        if (bodies(seen).includes('after bob')) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      t.same(bodies(seen), ['after bob'], 'only what bob may see');
      // hs1 gave the message before bob's join as a redacted copy: the graph, not the content.
      const held = await hs2.runtime.services.db
        .selectFrom('pdus')
        .select(['json'])
        .where('room_id', '=', roomId)
        .where('type', '=', 'm.room.message')
        .execute();
      const contents = held.map((r) => (r.json as { content: Record<string, unknown> }).content);
      t.equal(contents.length, 2, 'both messages are in the graph on hs2');
      t.ok(
        contents.some((c) => Object.keys(c).length === 0),
        'the one before the join without its content',
      );
      t.notOk(
        contents.some((c) => c.body === 'before bob'),
        'and its body never reached hs2',
      );
      // A server with no user in the room gets none of it, not even redacted.
      const eve = await hs1.app.inject({
        method: 'GET',
        url: `/_matrix/federation/v1/backfill/${enc(roomId)}?v=x&limit=5`,
      });
      t.equal(eve.statusCode, 401, 'unsigned: refused');
    });

    t.test('an unreachable server leaves /messages with what is held', async (t) => {
      const roomId = await createRoom('shared');
      await send(roomId, 'old news');
      await join(roomId);
      network.cut('hs1.test', 'hs2.test');
      t.teardown(() => network.heal('hs1.test', 'hs2.test'));
      const r = await hs2.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=10`, {
        token: bob.access_token,
      });
      t.equal(r.statusCode, 200, r.body);
      const chunk = r.json().chunk as Ev[];
      t.ok(
        chunk.some((e) => e.type === 'm.room.member' && e.state_key === bob.user_id),
        'the join it holds',
      );
      t.same(bodies(chunk), [], 'nothing it could not fetch');
      network.heal('hs1.test', 'hs2.test');
      // Once hs1 is back, the next page back fetches what was missing.
      t.same(bodies(await pageBack(hs2, bob, roomId, 10)), ['old news']);
    });

    t.test('a malformed or foreign token is refused, not a 500', async (t) => {
      const roomId = await createRoom('shared');
      await join(roomId);
      for (const from of ['s-x', 'nope', 's--1']) {
        const r = await hs2.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&from=${enc(from)}`, {
          token: bob.access_token,
        });
        t.equal(r.statusCode, 400, `from=${from}`);
        t.equal(r.json().errcode, 'M_INVALID_PARAM');
      }
      const carol = await hs2.register('carol');
      const r = await hs2.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b`, {
        token: carol.access_token,
      });
      t.equal(r.statusCode, 403, 'not a member: nothing, and nothing fetched for her');
    });
  });
}
