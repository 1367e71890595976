import t from 'tap';
import { indexHeldEvents } from '../migrations/0015_search.ts';
import { databaseBackends } from './helpers/backends.ts';
import { pastTs, sendText } from './helpers/retention.ts';
import { type Login, okCaller, startTestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely in tests
type Json = Record<string, any>;

/**
 * Server-side search (spec/search.md): alice runs a lab room that bob is in, carol joins a
 * members-only room late and leaves it, mallory is in no room. Ranked and recent order, pages,
 * filters, keys, groups, context, state, highlights; history visibility, encrypted rooms,
 * redactions and retention purges keep events out; malformed requests get 400.
 */
for (const backend of databaseBackends()) {
  t.test(`search on ${backend.name}`, async (t) => {
    t.setTimeout(300_000);
    const s = await startTestServer(t, backend, {
      retentionAllowedMin: 1000,
      retentionPurgeIntervalMs: 0,
    });
    const db = s.runtime.services.db;
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const carol = await s.register('carol');
    const mallory = await s.register('mallory');
    const ok = okCaller(s);
    let txn = 0;
    const send = (who: Login, room: string, body: string) => sendText(s, who, room, body);
    const search = (who: Login, criteria: Json, nextBatch?: string) =>
      s.request('POST', `${V3}/search${nextBatch !== undefined ? `?next_batch=${enc(nextBatch)}` : ''}`, {
        token: who.access_token,
        body: { search_categories: { room_events: criteria } },
      });
    const found = async (who: Login, criteria: Json, nextBatch?: string) => {
      const res = await search(who, criteria, nextBatch);
      if (res.statusCode !== 200) throw new Error(`search: ${res.statusCode} ${res.body}`);
      return res.json().search_categories.room_events as Json;
    };
    const ids = (r: Json) => (r.results as Json[]).map((x) => x.result.event_id as string);

    await ok('PUT', `${V3}/profile/${enc(bob.user_id)}/displayname`, bob, {
      displayname: 'Bob the Biologist',
    });
    const lab = (
      await ok('POST', `${V3}/createRoom`, alice, { preset: 'public_chat', name: 'Martian research' })
    ).room_id as string;
    await ok('POST', `${V3}/join/${enc(lab)}`, bob, {});
    const nameId = (await ok('GET', `${V3}/rooms/${enc(lab)}/state/m.room.name/?format=event`, alice))
      .event_id;
    const m1 = await send(alice, lab, 'The martians are landing near the lab');
    const m2 = await send(bob, lab, 'Martians and men agree: the martian assay replicates, martians say');
    const m3 = await send(alice, lab, 'Lunch at noon');
    const topicId = (
      await ok('PUT', `${V3}/rooms/${enc(lab)}/state/m.room.topic/`, alice, {
        topic: 'Assays',
        'm.topic': { 'm.text': [{ mimetype: 'text/plain', body: 'Mass analysis of dust' }] },
      })
    ).event_id as string;

    t.test('ranked results, with rank, count and the words matched', async (t) => {
      const r = await found(bob, { search_term: 'martians', keys: ['content.body'] });
      t.same(ids(r).sort(), [m1, m2].sort(), 'both messages');
      t.equal(r.count, 2);
      t.equal(ids(r)[0], m2, 'the message that says it three times ranks first');
      t.ok(r.results[0].rank > r.results[1].rank, 'ranks decrease');
      t.same([...r.highlights].sort(), ['Martians', 'martian', 'martians'], 'the words as written');
      t.equal(
        r.results[0].result.content.body,
        'Martians and men agree: the martian assay replicates, martians say',
      );
      t.equal(r.next_batch, undefined, 'no further page');
      // With the name key, the room name matches too ("Martian" stems as "martians" does).
      const withName = await found(bob, { search_term: 'martian', keys: ['content.name'] });
      t.same(ids(withName), [nameId], 'content.name');
      const all = await found(bob, { search_term: 'martian' });
      t.same(ids(all).sort(), [m1, m2, nameId].sort(), 'every key by default');
      const topic = await found(bob, { search_term: 'analysis', keys: ['content.topic'] });
      t.same(ids(topic), [topicId], "the m.topic's text/plain body");
      const prefix = await found(bob, { search_term: 'replic assa', keys: ['content.body'] });
      t.same(ids(prefix), [m2], 'plain words also match as the start of longer words');
      t.same(ids(await found(bob, { search_term: 'replic lunch' })), [], 'every word must match');
      const phrase = await found(bob, { search_term: '"lunch at noon"' });
      t.same(ids(phrase), [m3], 'a quoted phrase');
      const none = await found(bob, { search_term: 'martians -assay', keys: ['content.body'] });
      t.same(ids(none), [m1], 'a word excluded');
    });

    t.test('recent order, pages and groups', async (t) => {
      const more: string[] = [];
      for (let i = 0; i < 5; i++)
        more.push(await send(i % 2 ? bob : alice, lab, `sample ${i} of the spectrometer run`));
      const first = await found(bob, {
        search_term: 'spectrometer',
        order_by: 'recent',
        filter: { limit: 2 },
      });
      t.same(ids(first), [more[4], more[3]], 'newest first');
      t.equal(first.count, 5, 'the first page counts every match');
      t.type(first.next_batch, 'string');
      const second = await found(
        bob,
        { search_term: 'spectrometer', order_by: 'recent', filter: { limit: 2 } },
        first.next_batch,
      );
      t.same(ids(second), [more[2], more[1]]);
      t.equal(second.count, 5, 'the count is carried');
      const third = await found(
        bob,
        { search_term: 'spectrometer', order_by: 'recent', filter: { limit: 2 } },
        second.next_batch,
      );
      t.same(ids(third), [more[0]]);
      t.equal(third.next_batch, undefined, 'the last page');
      // A full page gets a token even when nothing follows (as Synapse gives it; Complement's
      // TestSearch pages so); the page after it is empty and has none.
      const full = await found(bob, {
        search_term: 'spectrometer',
        order_by: 'recent',
        filter: { limit: 5 },
      });
      t.equal(ids(full).length, 5);
      t.type(full.next_batch, 'string', 'a full page has a next_batch');
      const after = await found(
        bob,
        { search_term: 'spectrometer', order_by: 'recent', filter: { limit: 5 } },
        full.next_batch,
      );
      t.same(ids(after), [], 'nothing after it');
      t.equal(after.count, 5, 'the count is carried');
      t.equal(after.next_batch, undefined, 'and no next_batch');

      // Ranked pages: the same results as one ranked answer, in its order.
      const whole = ids(await found(bob, { search_term: 'spectrometer run' }));
      const paged: string[] = [];
      let next: string | undefined;
      do {
        const page = await found(bob, { search_term: 'spectrometer run', filter: { limit: 2 } }, next);
        paged.push(...ids(page));
        next = page.next_batch;
      } while (next !== undefined);
      t.same(paged, whole, 'ranked pages, no repeats');

      const grouped = await found(bob, {
        search_term: 'spectrometer',
        order_by: 'recent',
        filter: { limit: 3 },
        groupings: { group_by: [{ key: 'room_id' }, { key: 'sender' }] },
      });
      t.same(grouped.groups.room_id[lab].results, ids(grouped), 'one room group');
      t.equal(grouped.groups.room_id[lab].order, 1);
      t.same(grouped.groups.sender[alice.user_id].results, [more[4], more[2]]);
      t.same(grouped.groups.sender[bob.user_id].results, [more[3]]);
      const bobsNext = await found(
        bob,
        {
          search_term: 'spectrometer',
          order_by: 'recent',
          filter: { limit: 3 },
          groupings: { group_by: [{ key: 'sender' }] },
        },
        grouped.groups.sender[bob.user_id].next_batch,
      );
      t.same(ids(bobsNext), [more[1]], "the sender group's token pages through bob's results only");
    });

    t.test('filters', async (t) => {
      t.same(ids(await found(bob, { search_term: 'martians', filter: { senders: [bob.user_id] } })), [m2]);
      t.same(
        ids(
          await found(bob, {
            search_term: 'martians',
            keys: ['content.body'],
            filter: { not_senders: [bob.user_id] },
          }),
        ),
        [m1],
      );
      t.same(ids(await found(bob, { search_term: 'martian', filter: { types: ['m.room.name'] } })), [nameId]);
      t.same(
        ids(await found(bob, { search_term: 'martian', filter: { not_types: ['m.room.*'] } })).length,
        0,
      );
      t.same(ids(await found(bob, { search_term: 'martians', filter: { not_rooms: [lab] } })), []);
      t.same(ids(await found(bob, { search_term: 'martians', filter: { rooms: [lab], limit: 1 } })), [m2]);
    });

    t.test('context, profiles and state', async (t) => {
      const r = await found(bob, {
        search_term: 'replicates',
        event_context: { before_limit: 1, after_limit: 1, include_profile: true },
        include_state: true,
      });
      const ctx = r.results[0].context;
      t.same(
        ctx.events_before.map((e: Json) => e.event_id),
        [m1],
      );
      t.same(
        ctx.events_after.map((e: Json) => e.event_id),
        [m3],
      );
      t.type(ctx.start, 'string');
      t.type(ctx.end, 'string');
      t.equal(ctx.profile_info[bob.user_id].displayname, 'Bob the Biologist', "the sender's name then");
      const names = (r.state[lab] as Json[]).filter((e) => e.type === 'm.room.name');
      t.equal(names[0]?.content.name, 'Martian research', 'the room state');
    });

    t.test('history visibility: carol sees only what she could see then', async (t) => {
      const members = (
        await ok('POST', `${V3}/createRoom`, alice, {
          preset: 'public_chat',
          initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }],
        })
      ).room_id as string;
      await send(alice, members, 'xenon plans before carol');
      await ok('POST', `${V3}/join/${enc(members)}`, carol, {});
      const during = await send(alice, members, 'xenon plans while carol is here');
      await ok('POST', `${V3}/rooms/${enc(members)}/leave`, carol, {});
      await send(alice, members, 'xenon plans after carol left');
      t.same(ids(await found(carol, { search_term: 'xenon' })), [during], 'only while she was joined');
      t.equal((await found(alice, { search_term: 'xenon' })).count, 3, 'alice sees all three');
      // Forgetting the room takes it out of her search.
      await ok('POST', `${V3}/rooms/${enc(members)}/forget`, carol, {});
      t.same(ids(await found(carol, { search_term: 'xenon' })), [], 'a forgotten room is not searched');
    });

    t.test('mallory, in no room, finds nothing', async (t) => {
      const r = await found(mallory, { search_term: 'martians' });
      t.same(r.results, []);
      t.equal(r.count, 0);
      const named = await found(mallory, { search_term: 'martians', filter: { rooms: [lab] } });
      t.same(named.results, [], 'naming the room does not open it');
      // A public room's messages are not searched by someone who never joined it.
      const res = await search(mallory, { search_term: 'martian', keys: ['content.name'] });
      t.equal(res.statusCode, 200);
      t.same(res.json().search_categories.room_events.results, []);
    });

    t.test('encrypted rooms are not indexed', async (t) => {
      const secret = (
        await ok('POST', `${V3}/createRoom`, alice, {
          preset: 'private_chat',
          initial_state: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
        })
      ).room_id as string;
      // A client that sends plaintext to an encrypted room: the server still does not index it.
      const plain = await send(alice, secret, 'martians in the encrypted room');
      t.same(ids(await found(alice, { search_term: 'martians' })).includes(plain), false);
      const rows = await db
        .selectFrom('event_search')
        .select('event_id')
        .where('room_id', '=', secret)
        .execute();
      t.same(rows, [], 'no index row in the encrypted room');
    });

    t.test('a redacted event leaves the index', async (t) => {
      const note = await send(alice, lab, 'a quasar note to redact');
      t.same(ids(await found(bob, { search_term: 'quasar' })), [note]);
      await ok('PUT', `${V3}/rooms/${enc(lab)}/redact/${enc(note)}/r${txn++}`, alice, {});
      t.same(ids(await found(bob, { search_term: 'quasar' })), []);
      const rows = await db
        .selectFrom('event_search')
        .select('event_id')
        .where('event_id', '=', note)
        .execute();
      t.same(rows, [], 'its row is gone');
    });

    t.test('a retention purge deletes the index rows of purged events', async (t) => {
      const room = (
        await ok('POST', `${V3}/createRoom`, alice, {
          preset: 'public_chat',
          initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: 5000 } }],
        })
      ).room_id as string;
      const old = [
        await send(alice, room, 'gamma ray burst one'),
        await send(alice, room, 'gamma ray burst two'),
      ];
      const [last] = await db
        .selectFrom('pdus')
        .select('origin_server_ts')
        .where('event_id', '=', old[1]!)
        .execute();
      await pastTs(last!.origin_server_ts + 1);
      const split = Date.now();
      await pastTs(split);
      const young = await send(alice, room, 'gamma ray burst three');
      const indexed = await db
        .selectFrom('event_search')
        .select('event_id')
        .where('room_id', '=', room)
        .execute();
      t.equal(indexed.length, 3, 'three rows before the purge');
      const job = await s.runtime.services.retention.runJob({ now: split + 5000 });
      const purge = job.purges.find((p) => p.roomId === room);
      t.ok(purge, 'the room was purged');
      t.equal(purge?.rows.event_search, 2, 'two index rows deleted');
      const left = await db
        .selectFrom('event_search')
        .select('event_id')
        .where('room_id', '=', room)
        .execute();
      t.same(
        left.map((r) => r.event_id),
        [young],
        'only the young event is indexed',
      );
      t.same(ids(await found(alice, { search_term: 'gamma' })), [young], 'search finds only the young event');
    });

    t.test('migration 0015 indexes the events held before it', async (t) => {
      const before = await db.selectFrom('event_search').select('event_id').orderBy('event_id').execute();
      t.ok(before.length > 10, `${before.length} rows`);
      await db.deleteFrom('event_search').execute();
      t.same(
        ids(await found(bob, { search_term: 'martians', keys: ['content.body'] })),
        [],
        'an empty index finds nothing',
      );
      await indexHeldEvents(db as never);
      const after = await db.selectFrom('event_search').select('event_id').orderBy('event_id').execute();
      t.same(after, before, 'the same rows as the pipeline wrote (no redacted, encrypted or purged events)');
      t.same(
        ids(await found(bob, { search_term: 'martians', keys: ['content.body'] })).sort(),
        [m1, m2].sort(),
      );
    });

    t.test('odd terms are words, not errors', async (t) => {
      for (const term of [
        'the',
        '   ',
        '"unterminated',
        '& | ! ( ) :* <->',
        "'; drop table event_search; --",
        'é🚀',
      ]) {
        const res = await search(bob, { search_term: term });
        t.equal(res.statusCode, 200, `${JSON.stringify(term)}: ${res.body}`);
        t.same(res.json().search_categories.room_events.results, []);
      }
      const noCategory = await s.request('POST', `${V3}/search`, {
        token: bob.access_token,
        body: { search_categories: {} },
      });
      t.equal(noCategory.statusCode, 200);
      t.same(noCategory.json(), { search_categories: {} });
    });

    t.test('malformed requests', async (t) => {
      const bad = async (body: unknown, errcode: string, query = '') => {
        const res = await s.request('POST', `${V3}/search${query}`, {
          token: bob.access_token,
          body: body as Json,
        });
        t.equal(res.statusCode, 400, `${JSON.stringify(body)} ${query}: ${res.body}`);
        t.equal(res.json().errcode, errcode);
      };
      await bad({}, 'M_BAD_JSON');
      await bad({ search_categories: { room_events: {} } }, 'M_BAD_JSON');
      await bad({ search_categories: { room_events: { search_term: 7 } } }, 'M_BAD_JSON');
      await bad(
        { search_categories: { room_events: { search_term: 'x', keys: ['content.secret'] } } },
        'M_BAD_JSON',
      );
      await bad(
        { search_categories: { room_events: { search_term: 'x', order_by: 'oldest' } } },
        'M_BAD_JSON',
      );
      await bad(
        { search_categories: { room_events: { search_term: 'x', filter: { limit: -1 } } } },
        'M_BAD_JSON',
      );
      await bad(
        { search_categories: { room_events: { search_term: 'x', filter: { rooms: 'all' } } } },
        'M_BAD_JSON',
      );
      await bad(
        {
          search_categories: {
            room_events: { search_term: 'x', groupings: { group_by: [{ key: 'type' }] } },
          },
        },
        'M_BAD_JSON',
      );
      await bad({ search_categories: { room_events: { search_term: 'x'.repeat(513) } } }, 'M_BAD_JSON');
      await bad(
        { search_categories: { room_events: { search_term: 'x' } } },
        'M_INVALID_PARAM',
        '?next_batch=nonsense',
      );
      const forged = Buffer.from(
        JSON.stringify({ order: 'rank', position: 1, rank: '1); drop', count: 0 }),
      ).toString('base64url');
      await bad(
        { search_categories: { room_events: { search_term: 'x' } } },
        'M_INVALID_PARAM',
        `?next_batch=${forged}`,
      );
      for (const rank of ['1e99', '1e-99', '-', 'e', 'NaN', '1e-99999', '0.5e+']) {
        const token = Buffer.from(JSON.stringify({ order: 'rank', position: 1, rank, count: 0 })).toString(
          'base64url',
        );
        await bad(
          { search_categories: { room_events: { search_term: 'x' } } },
          'M_INVALID_PARAM',
          `?next_batch=${token}`,
        );
      }
      const farPosition = Buffer.from(
        JSON.stringify({ order: 'recent', position: Number.MAX_SAFE_INTEGER, count: 0 }),
      ).toString('base64url');
      const far = await search(bob, { search_term: 'martians', order_by: 'recent' }, farPosition);
      t.equal(far.statusCode, 200, 'a far position is just a position');
      const first = await found(bob, {
        search_term: 'spectrometer',
        order_by: 'recent',
        filter: { limit: 1 },
      });
      await bad(
        { search_categories: { room_events: { search_term: 'spectrometer', order_by: 'rank' } } },
        'M_INVALID_PARAM',
        `?next_batch=${enc(first.next_batch)}`,
      );
      const notJson = await s.request('POST', `${V3}/search`, {
        token: bob.access_token,
        rawBody: '{',
        headers: { 'content-type': 'application/json' },
      });
      t.equal(notJson.statusCode, 400);
      t.equal(notJson.json().errcode, 'M_NOT_JSON');
      const anonymous = await s.request('POST', `${V3}/search`, { body: { search_categories: {} } });
      t.equal(anonymous.statusCode, 401);
      t.equal(anonymous.json().errcode, 'M_MISSING_TOKEN');
    });
  });
}
