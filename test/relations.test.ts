import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, okCaller, startTestServer, syncOnce } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V1 = '/_matrix/client/v1';
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely in tests
type Json = Record<string, any>;

/**
 * Relations and threads: alice runs a lab room (history visible to members from their join on),
 * bob is a member from the start and starts threads, carol joins later, mallory is an outsider.
 */
for (const backend of databaseBackends()) {
  t.test(`relations and threads on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const carol = await s.register('carol');
    const mallory = await s.register('mallory');
    const ok = okCaller(s);
    const room = (
      await ok('POST', `${V3}/createRoom`, alice, {
        preset: 'public_chat',
        initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }],
      })
    ).room_id as string;
    await ok('POST', `${V3}/join/${enc(room)}`, bob, {});
    let txn = 0;
    const send = async (who: Login, content: Json, type = 'm.room.message') =>
      (await ok('PUT', `${V3}/rooms/${enc(room)}/send/${type}/t${txn++}`, who, content)).event_id as string;
    const text = (body: string, rel?: Json) => ({
      msgtype: 'm.text',
      body,
      ...(rel ? { 'm.relates_to': rel } : {}),
    });

    const root = await send(alice, text('Does the assay replicate?'));
    const reply1 = await send(bob, text('First run: yes', { rel_type: 'm.thread', event_id: root }));
    const reply2 = await send(bob, text('Second run: yes', { rel_type: 'm.thread', event_id: root }));
    const edit = await send(alice, {
      ...text('* Does the assay replicate at 37 °C?', { rel_type: 'm.replace', event_id: root }),
      'm.new_content': text('Does the assay replicate at 37 °C?'),
    });
    // An edit by someone else is no valid edit.
    const foreignEdit = await send(bob, {
      ...text('* hijacked', { rel_type: 'm.replace', event_id: root }),
      'm.new_content': text('hijacked'),
    });
    const reaction = await send(
      alice,
      { 'm.relates_to': { rel_type: 'm.annotation', event_id: root, key: '👍' } },
      'm.reaction',
    );
    const reference = await send(bob, text('see also', { rel_type: 'm.reference', event_id: root }));
    // A relation of a relation: an edit of bob's first reply.
    const replyEdit = await send(bob, {
      ...text('* First run: yes (n=3)', { rel_type: 'm.replace', event_id: reply1 }),
      'm.new_content': text('First run: yes (n=3)'),
    });
    const other = await send(bob, text('Another question'));
    const otherReply = await send(alice, text('Answer', { rel_type: 'm.thread', event_id: other }));

    const relUrl = (event: string, tail = '', q = '') =>
      `${V1}/rooms/${enc(room)}/relations/${enc(event)}${tail}${q}`;
    const ids = (r: Json) => (r.chunk as Json[]).map((e) => e.event_id);

    // Every relation, newest first, up to the default limit of 5.
    const all = await ok('GET', relUrl(root), bob);
    t.same(ids(all), [reference, reaction, foreignEdit, edit, reply2], 'newest first, five by default');
    t.type(all.next_batch, 'string');
    const rest = await ok('GET', relUrl(root, '', `?from=${enc(all.next_batch)}`), bob);
    t.same(ids(rest), [reply1], 'the next page');
    t.equal(rest.next_batch, undefined, 'no page after the last');
    // By relation type, and by relation and event type.
    t.same(ids(await ok('GET', relUrl(root, '/m.thread'), bob)), [reply2, reply1]);
    t.same(ids(await ok('GET', relUrl(root, '/m.annotation/m.reaction'), bob)), [reaction]);
    t.same(ids(await ok('GET', relUrl(root, '/m.annotation/m.room.message'), bob)), []);
    // Forwards, one at a time.
    const f1 = await ok('GET', relUrl(root, '/m.thread', '?dir=f&limit=1'), bob);
    t.same(ids(f1), [reply1]);
    const f2 = await ok('GET', relUrl(root, '/m.thread', `?dir=f&limit=1&from=${enc(f1.next_batch)}`), bob);
    t.same(ids(f2), [reply2]);
    // A sync token bounds a forward page: nothing after it.
    const sync = await syncOnce(s, bob);
    t.same(ids(await ok('GET', relUrl(root, '', `?dir=f&from=${enc(sync.next_batch)}`), bob)), []);
    // recurse: relations of relations too.
    const deep = await ok('GET', relUrl(root, '/m.replace', '?recurse=true&limit=10'), bob);
    t.same(ids(deep), [replyEdit, foreignEdit, edit]);
    t.equal(deep.recursion_depth, 3);
    t.same(ids(await ok('GET', relUrl(root, '/m.replace', '?limit=10'), bob)), [foreignEdit, edit]);

    // Aggregations in unsigned: on /event, /messages, /sync and /relations.
    const event = await ok('GET', `${V3}/rooms/${enc(room)}/event/${enc(root)}`, bob);
    const relations = event.unsigned['m.relations'];
    t.equal(relations['m.thread'].count, 2);
    t.equal(relations['m.thread'].latest_event.event_id, reply2);
    t.equal(relations['m.thread'].current_user_participated, true, 'bob replied');
    t.equal(relations['m.replace'].event_id, edit, 'the latest edit by the sender, not the foreign one');
    t.equal(event.content.body, 'Does the assay replicate?', 'the original content is left as it is');
    t.same(relations['m.reference'], { chunk: [{ event_id: reference }] });
    const asAlice = await ok('GET', `${V3}/rooms/${enc(room)}/event/${enc(root)}`, alice);
    t.equal(asAlice.unsigned['m.relations']['m.thread'].current_user_participated, true, 'alice started it');
    const messages = await ok('GET', `${V3}/rooms/${enc(room)}/messages?dir=b&limit=50`, bob);
    const inHistory = (messages.chunk as Json[]).find((e) => e.event_id === root);
    t.equal(inHistory?.unsigned['m.relations']['m.thread'].count, 2, '/messages bundles too');
    const initial = await syncOnce(s, bob, {
      filter: JSON.stringify({ room: { timeline: { limit: 50 } } }),
    });
    const inSync = (initial.rooms.join[room].timeline.events as Json[]).find((e) => e.event_id === root);
    t.equal(inSync?.unsigned['m.relations']['m.replace'].event_id, edit, '/sync bundles too');
    // An incremental sync bundles what relates to the events it serves (here from the same
    // range, which the sync reads from memory), and nothing on the others.
    const before = await syncOnce(s, bob, { since: initial.next_batch as string, timeout: '0' });
    const fresh = await send(alice, text('A new result'));
    const plain = await send(alice, text('Unrelated'));
    const freshEdit = await send(alice, {
      ...text('* A new result, checked', { rel_type: 'm.replace', event_id: fresh }),
      'm.new_content': text('A new result, checked'),
    });
    const incremental = await syncOnce(s, bob, { since: before.next_batch as string, timeout: '0' });
    const served = incremental.rooms.join[room].timeline.events as Json[];
    t.same(
      served.map((e) => e.event_id),
      [fresh, plain, freshEdit],
    );
    t.equal(
      served[0]?.unsigned['m.relations']?.['m.replace']?.event_id,
      freshEdit,
      'an incremental sync bundles the edit',
    );
    t.equal(served[1]?.unsigned?.['m.relations'], undefined, 'nothing on an event without relations');
    const reply1Served = (await ok('GET', relUrl(root, '/m.thread', '?dir=f&limit=1'), bob)).chunk[0];
    t.equal(reply1Served.unsigned['m.relations']['m.replace'].event_id, replyEdit, 'relations carry theirs');

    // Threads, by latest activity.
    const threads = await ok('GET', `${V1}/rooms/${enc(room)}/threads`, bob);
    t.same(ids(threads), [other, root]);
    t.equal(threads.chunk[0].unsigned['m.relations']['m.thread'].latest_event.event_id, otherReply);
    const page1 = await ok('GET', `${V1}/rooms/${enc(room)}/threads?limit=1`, bob);
    t.same(ids(page1), [other]);
    const page2 = await ok(
      'GET',
      `${V1}/rooms/${enc(room)}/threads?limit=1&from=${enc(page1.next_batch)}`,
      bob,
    );
    t.same(ids(page2), [root]);
    t.equal(page2.next_batch, undefined);
    // A new reply moves a thread to the front.
    const reply3 = await send(alice, text('Third run: no', { rel_type: 'm.thread', event_id: root }));
    t.same(ids(await ok('GET', `${V1}/rooms/${enc(room)}/threads`, bob)), [root, other]);

    // Redacted replies no longer count.
    await ok('PUT', `${V3}/rooms/${enc(room)}/redact/${enc(reply3)}/r1`, alice, {});
    const afterRedaction = await ok('GET', `${V3}/rooms/${enc(room)}/event/${enc(root)}`, bob);
    t.equal(afterRedaction.unsigned['m.relations']['m.thread'].count, 2);
    t.equal(afterRedaction.unsigned['m.relations']['m.thread'].latest_event.event_id, reply2);

    // carol joins later: history from before her join is hidden, threads included.
    await ok('POST', `${V3}/join/${enc(room)}`, carol, {});
    t.same(ids(await ok('GET', `${V1}/rooms/${enc(room)}/threads`, carol)), []);
    const hidden = await s.request('GET', relUrl(root), { token: carol.access_token });
    t.equal(hidden.statusCode, 404, 'a parent she may not see is not found');
    const carolRoot = await send(carol, text('New here: where is the protocol?'));
    await send(bob, text('In the wiki', { rel_type: 'm.thread', event_id: carolRoot }));
    t.same(ids(await ok('GET', `${V1}/rooms/${enc(room)}/threads`, carol)), [carolRoot]);
    // include=participated.
    t.same(ids(await ok('GET', `${V1}/rooms/${enc(room)}/threads?include=participated`, alice)), [
      other,
      root,
    ]);
    t.same(ids(await ok('GET', `${V1}/rooms/${enc(room)}/threads?include=participated`, carol)), [carolRoot]);

    // Forbidden: an outsider.
    const outsiderRel = await s.request('GET', relUrl(root), { token: mallory.access_token });
    t.equal(outsiderRel.statusCode, 404);
    t.equal(outsiderRel.json().errcode, 'M_NOT_FOUND');
    const outsiderThreads = await s.request('GET', `${V1}/rooms/${enc(room)}/threads`, {
      token: mallory.access_token,
    });
    t.equal(outsiderThreads.statusCode, 403);
    t.equal(outsiderThreads.json().errcode, 'M_FORBIDDEN');

    // Malformed.
    for (const q of ['?dir=x', '?limit=-1', '?from=garbage', '?recurse=maybe']) {
      const res = await s.request('GET', relUrl(root, '', q), { token: bob.access_token });
      t.equal(res.statusCode, 400, `relations${q}`);
      t.type(res.json().errcode, 'string');
    }
    for (const q of ['?include=some', '?limit=0', '?from=x1']) {
      const res = await s.request('GET', `${V1}/rooms/${enc(room)}/threads${q}`, { token: bob.access_token });
      t.equal(res.statusCode, 400, `threads${q}`);
    }
    const badRoom = await s.request('GET', `${V1}/rooms/not-a-room/threads`, { token: bob.access_token });
    t.equal(badRoom.statusCode, 400);
    const unknownEvent = await s.request('GET', relUrl('$nope'), { token: bob.access_token });
    t.equal(unknownEvent.statusCode, 404);
    const noToken = await s.request('GET', relUrl(root));
    t.equal(noToken.statusCode, 401);
  });
}
