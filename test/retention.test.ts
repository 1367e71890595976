import { randomBytes } from 'node:crypto';
import t from 'tap';
import { MatrixError } from '../src/errors.ts';
import { databaseBackends } from './helpers/backends.ts';
import { pastTs, sendText, tableCount, tracesOf } from './helpers/retention.ts';
import { startTestServer, syncOnce } from './helpers/server.ts';

/**
 * Retention (spec/retention.md): the m.room.retention policy and its checks, the purge job run
 * with a clock the test moves, and what is left of the room afterwards.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely
type Json = Record<string, any>;

const SETTINGS = {
  retentionAllowedMin: 1000,
  retentionAllowedMax: 30 * 86_400_000,
  retentionPurgeIntervalMs: 0,
};

for (const backend of databaseBackends()) {
  t.test(`retention policy on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, SETTINGS);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const room = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat' },
    });
    const roomId: string = room.json().room_id;
    t.equal(
      (await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token })).statusCode,
      200,
    );
    const put = (who: typeof alice, body: unknown, raw?: string) =>
      s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.retention/`, {
        token: who.access_token,
        ...(raw !== undefined ? { rawBody: raw, headers: { 'content-type': 'application/json' } } : { body }),
      });
    const policy = (who: typeof alice, id = roomId) =>
      s.request('GET', `/_conclave/client/v1/rooms/${enc(id)}/retention`, { token: who.access_token });

    t.test('without an event and without a server default, nothing is purged', async (t) => {
      const res = await policy(alice);
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), {
        max_lifetime: null,
        min_lifetime: null,
        source: 'none',
        clamped: false,
        room: null,
        server: { default_max_lifetime: null, allowed_min: 1000, allowed_max: 30 * 86_400_000 },
      });
    });

    t.test('malformed policies are refused with 400 M_BAD_JSON', async (t) => {
      const bad: Array<[string, unknown, string?]> = [
        ['negative', { max_lifetime: -1 }],
        ['zero', { max_lifetime: 0 }],
        ['a float', undefined, '{"max_lifetime": 1.5}'],
        ['huge', { max_lifetime: 4e12 }],
        ['beyond canonical JSON', undefined, '{"max_lifetime": 90071992547409930}'],
        ['a string', { max_lifetime: '86400000' }],
        ['null', { max_lifetime: null }],
        ['missing', {}],
        ['min above max', { max_lifetime: 5000, min_lifetime: 6000 }],
        ['a negative min', { min_lifetime: -5 }],
      ];
      for (const [what, body, raw] of bad) {
        const res = await put(alice, body, raw);
        t.equal(res.statusCode, 400, `${what}: ${res.body}`);
        t.equal(res.json().errcode, 'M_BAD_JSON', what);
      }
      t.equal((await policy(alice)).json().source, 'none', 'no policy was set');
    });

    t.test('a member without the power gets 403, an outsider too', async (t) => {
      const res = await put(bob, { max_lifetime: 86_400_000 });
      t.equal(res.statusCode, 403, res.body);
      t.equal(res.json().errcode, 'M_FORBIDDEN');
      t.equal((await put(mallory, { max_lifetime: 86_400_000 })).statusCode, 403);
    });

    t.test('the room admin sets it; the effective policy is clamped into the allowed range', async (t) => {
      t.equal((await put(alice, { max_lifetime: 500 })).statusCode, 200);
      let res = (await policy(bob)).json() as Json;
      t.equal(res.max_lifetime, 1000, 'raised to the allowed minimum');
      t.equal(res.clamped, true);
      t.same(res.room, { max_lifetime: 500 });
      t.equal((await put(alice, { max_lifetime: 365 * 86_400_000 })).statusCode, 200);
      res = (await policy(bob)).json() as Json;
      t.equal(res.max_lifetime, 30 * 86_400_000, 'lowered to the allowed maximum');
      t.equal((await put(alice, { max_lifetime: 7 * 86_400_000, min_lifetime: 86_400_000 })).statusCode, 200);
      res = (await policy(bob)).json() as Json;
      t.same(
        [res.max_lifetime, res.min_lifetime, res.source, res.clamped],
        [7 * 86_400_000, 86_400_000, 'room', false],
      );
    });

    t.test('the policy endpoint: forbidden to outsiders, malformed IDs refused', async (t) => {
      const res = await policy(mallory);
      t.equal(res.statusCode, 403, res.body);
      const bad = await policy(alice, 'not-a-room');
      t.equal(bad.statusCode, 400, bad.body);
      const unknown = await policy(alice, '!nosuchroom:conclave.test');
      t.equal(unknown.statusCode, 403, unknown.body);
      const anonymous = await s.request('GET', `/_conclave/client/v1/rooms/${enc(roomId)}/retention`);
      t.equal(anonymous.statusCode, 401);
    });

    t.test('createRoom with a malformed initial retention policy creates no room', async (t) => {
      const res = await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: -3 } }] },
      });
      t.equal(res.statusCode, 400, res.body);
      t.equal(res.json().errcode, 'M_BAD_JSON');
    });
  });

  t.test(`the purge job with a moved clock on ${backend.name}`, async (t) => {
    t.setTimeout(240_000);
    const s = await startTestServer(t, backend, SETTINGS);
    const db = s.runtime.database.db;
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const tag = randomBytes(6).toString('hex');
    const room = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: {
        preset: 'public_chat',
        name: 'Short-lived',
        initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: 5000 } }],
      },
    });
    t.equal(room.statusCode, 200, room.body);
    const roomId: string = room.json().room_id;
    await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token });
    const bobBefore = await syncOnce(s, bob);

    // The old history: messages, a receipt, a fully-read marker, a redaction, an edit.
    const oldIds: string[] = [];
    for (let i = 0; i < 30; i++)
      oldIds.push(await sendText(s, i % 2 ? alice : bob, roomId, `old-${tag}-${i}`));
    const receipt = await s.request('POST', `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(oldIds[20]!)}`, {
      token: bob.access_token,
      body: {},
    });
    t.equal(receipt.statusCode, 200, receipt.body);
    const marker = await s.request('POST', `${V3}/rooms/${enc(roomId)}/read_markers`, {
      token: bob.access_token,
      body: { 'm.fully_read': oldIds[21], 'm.read': oldIds[21] },
    });
    t.equal(marker.statusCode, 200, marker.body);
    const redaction = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/redact/${enc(oldIds[3]!)}/r1`, {
      token: alice.access_token,
      body: { reason: 'typo' },
    });
    t.equal(redaction.statusCode, 200, redaction.body);
    oldIds.push(redaction.json().event_id);
    const topic = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, {
      token: alice.access_token,
      body: { topic: `old-topic-${tag}` },
    });
    oldIds.push(topic.json().event_id);
    const newTopic = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, {
      token: alice.access_token,
      body: { topic: `later-topic-${tag}` },
    });
    const laterTopicId: string = newTopic.json().event_id;
    const [last] = await db
      .selectFrom('pdus')
      .select('origin_server_ts')
      .where('event_id', '=', laterTopicId)
      .execute();
    await pastTs(last!.origin_server_ts + 1);
    const split = Date.now();
    await pastTs(split);
    // The young history.
    const youngIds: string[] = [];
    for (let i = 0; i < 5; i++) youngIds.push(await sendText(s, alice, roomId, `young-${tag}-${i}`));

    const sizeOf = async () =>
      Number(
        (
          await db
            .selectFrom('pdus')
            .select((eb) => eb.fn.countAll().as('n'))
            .where('room_id', '=', roomId)
            .executeTakeFirstOrThrow()
        ).n,
      );
    const before = await sizeOf();
    // The clock moved on by max_lifetime: everything before the split is older than 5 s.
    const job = await s.runtime.services.retention.runJob({ now: split + 5000 });
    t.equal(job.ran, true);
    t.equal(job.purges.length, 1, 'one room purged');
    const purge = job.purges[0]!;
    t.equal(purge.roomId, roomId);
    t.ok(purge.eventsDeleted >= 31, `events deleted: ${purge.eventsDeleted}`);
    t.ok(purge.bytesDeleted > 0, `bytes deleted: ${purge.bytesDeleted}`);
    t.comment(
      `deleted ${purge.eventsDeleted} events (${purge.bytesDeleted} bytes), pruned ${purge.eventsPruned}`,
    );
    t.equal(await sizeOf(), before - purge.eventsDeleted);

    t.test('no table holds a purged event ID or body', async (t) => {
      // Old state events the remaining state still names stay, pruned: here at most the old topic.
      const kept = await db
        .selectFrom('pdus')
        .select(['event_id', 'type', 'json'])
        .where('event_id', 'in', oldIds)
        .execute();
      t.ok(
        kept.every((k) => k.type === 'm.room.topic'),
        `kept old events: ${kept.map((k) => k.type)}`,
      );
      t.ok(
        kept.every((k) => JSON.stringify(k.json.content) === '{}'),
        'their content pruned',
      );
      const purged = oldIds.filter((id) => !kept.some((k) => k.event_id === id));
      t.ok(purged.length >= 31);
      t.equal(purged.length, purge.eventsDeleted);
      const traces = await tracesOf(db, [...purged, `old-${tag}`, `old-topic-${tag}`], {
        skipPrevEvents: true,
      });
      t.same(traces, [], `checked ${await tableCount(db)} tables`);
      // Only the signed prev_events of the first young event still name the last old one.
      const withPrev = await tracesOf(db, purged, { skipPrevEvents: false });
      t.same(
        withPrev.map((x) => x.table),
        withPrev.length ? ['pdus'] : [],
      );
      t.ok((withPrev[0]?.count ?? 0) <= 2, 'at most the events right after the cut-off');
    });

    t.test('the audit log names the room, range and counts, never content', async (t) => {
      const records = await s.runtime.services.audit.list({ action: 'retention.purge' });
      t.equal(records.length, 1);
      const r = records[0]!;
      t.equal(r.actor, 'policy:room');
      t.equal(r.target, roomId);
      t.match(r.details, {
        events_deleted: purge.eventsDeleted,
        bytes_deleted: purge.bytesDeleted,
        max_lifetime: 5000,
      });
      t.ok((r.details.to_ts as number) < split && (r.details.from_ts as number) > 0);
      t.notOk(JSON.stringify(r).includes(tag), 'no body in the record');
    });

    t.test('the job run again finds nothing to do', async (t) => {
      const again = await s.runtime.services.retention.runJob({ now: split + 5000 });
      t.same(again.purges, []);
    });

    t.test('clients see the room as if the purged events never existed', async (t) => {
      // /messages backwards from the end, to the start.
      const seen: string[] = [];
      let from: string | undefined;
      for (let page = 0; page < 20; page++) {
        const res = await s.request(
          'GET',
          `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=4${from ? `&from=${from}` : ''}`,
          { token: bob.access_token },
        );
        t.equal(res.statusCode, 200, res.body);
        const body = res.json() as Json;
        seen.push(...body.chunk.map((e: Json) => e.event_id));
        t.notOk(JSON.stringify(body).includes(`old-${tag}`));
        if (!body.end) break;
        from = body.end;
      }
      t.same(
        seen.filter((id) => oldIds.includes(id)),
        [],
        'no purged event in /messages',
      );
      t.same([...youngIds].reverse(), seen.slice(0, 5), 'the young messages, newest first');
      for (const id of oldIds.slice(0, 3)) {
        const res = await s.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(id)}`, {
          token: bob.access_token,
        });
        t.equal(res.statusCode, 404, 'a purged event is not found');
      }
      const ctx = await s.request('GET', `${V3}/rooms/${enc(roomId)}/context/${enc(youngIds[0]!)}?limit=10`, {
        token: bob.access_token,
      });
      t.equal(ctx.statusCode, 200, ctx.body);
      t.notOk(ctx.body.includes(`old-${tag}`));
      t.same(
        ctx.json().events_before.filter((e: Json) => oldIds.includes(e.event_id)),
        [],
        '/context has nothing purged before',
      );
      // Incremental sync from before the purge, and an initial sync.
      const inc = await syncOnce(s, bob, { since: bobBefore.next_batch, timeout: 0 });
      t.notOk(JSON.stringify(inc).includes(`old-${tag}`), 'incremental sync');
      const full = await syncOnce(s, bob);
      const joined = full.rooms.join[roomId];
      t.ok(joined, 'still joined');
      t.notOk(JSON.stringify(full).includes(`old-${tag}`), 'initial sync');
      const state = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state`, { token: bob.access_token });
      t.equal(state.statusCode, 200);
      const names = (state.json() as Json[]).find((e) => e.type === 'm.room.name');
      t.equal(names?.content.name, 'Short-lived', 'the room name is kept');
      const topicNow = (state.json() as Json[]).find((e) => e.type === 'm.room.topic');
      t.equal(topicNow?.event_id, laterTopicId);
    });

    t.test('federation reads: purged events are not served', async (t) => {
      const fed = s.runtime.services.federationRooms;
      for (const id of oldIds.slice(0, 3)) {
        await t.rejects(fed.getEvent('conclave.test', id), MatrixError);
      }
      const back = (await fed.backfill('conclave.test', roomId, [youngIds[4]!], 100)) as Json;
      const ids = back.pdus.map((p: Json) => p.event_id ?? '');
      t.notOk(JSON.stringify(back).includes(`old-${tag}`), 'backfill holds no purged body');
      t.same(
        ids.filter((id: string) => oldIds.includes(id)),
        [],
      );
    });

    t.test('the room stays usable: send, join, read', async (t) => {
      const carol = await s.register('carol');
      t.equal(
        (await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: carol.access_token })).statusCode,
        200,
      );
      const id = await sendText(s, bob, roomId, `after-${tag}`);
      const res = await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, {
        token: carol.access_token,
      });
      t.equal(res.statusCode, 200);
      t.equal(res.json().chunk[0].event_id, id);
      t.notOk(res.body.includes(`old-${tag}`), 'the new member sees nothing purged');
    });

    t.test('the newest message, young at one run, is pruned by a later run once old', async (t) => {
      // Its own room, so that it is the only forward extremity once the clock moves on.
      const r = await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: {
          initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: 5000 } }],
        },
      });
      const lonely: string = r.json().room_id;
      const tsOf = async (id: string) =>
        (
          await db
            .selectFrom('pdus')
            .select('origin_server_ts')
            .where('event_id', '=', id)
            .executeTakeFirstOrThrow()
        ).origin_server_ts;
      const contentOf = async (id: string) =>
        (await db.selectFrom('pdus').select('json').where('event_id', '=', id).executeTakeFirst())?.json
          .content as Json | undefined;
      const first = await sendText(s, alice, lonely, `first-${tag}`);
      await pastTs((await tsOf(first)) + 1);
      const lastId = await sendText(s, alice, lonely, `newest-${tag}`);
      const lastTs = await tsOf(lastId);
      // A run while the newest is young deletes the first and keeps the newest whole.
      const young = await s.runtime.services.retention.runJob({ now: lastTs + 5000 });
      t.ok(
        young.purges.some((p) => p.roomId === lonely),
        'the first run purged the room',
      );
      t.equal(await contentOf(first), undefined, 'the older message is gone');
      t.equal((await contentOf(lastId))?.body, `newest-${tag}`, 'the young one is kept whole');
      // Once it is old it is still a forward extremity (kept), but its content goes.
      const old = await s.runtime.services.retention.runJob({ now: lastTs + 5001 });
      const purge = old.purges.find((p) => p.roomId === lonely);
      t.ok(purge, 'a later run takes the room up again');
      t.ok((purge?.eventsPruned ?? 0) >= 1, `events pruned: ${purge?.eventsPruned}`);
      t.same(await contentOf(lastId), {}, 'its content pruned');
      const again = await s.runtime.services.retention.runJob({ now: lastTs + 5001 });
      t.notOk(
        again.purges.some((p) => p.roomId === lonely),
        'the run after finds nothing more to do there',
      );
    });
  });
}
