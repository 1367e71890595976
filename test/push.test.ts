import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { conditionHolds, evaluatePushRules, globMatches, splitKey } from '../src/services/push-evaluator.ts';
import { mergeRules } from '../src/services/push-rules.service.ts';
import { defaultPushRules } from '../src/services/push-rules.ts';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, okCaller, PASSWORD, startTestServer, syncOnce } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: notification bodies are read loosely in tests
type Json = Record<string, any>;

t.test('the rule evaluator', async (t) => {
  t.same(splitKey('content.m\\.relates_to.rel_type'), ['content', 'm.relates_to', 'rel_type']);
  t.same(splitKey('a\\\\.b'), ['a\\', 'b'], 'an escaped backslash before a dot');
  t.ok(globMatches('m.room.*', 'm.room.message'));
  t.notOk(globMatches('m.room.*', 'xm.room.message'), 'event_match matches the whole value');
  t.ok(globMatches('CAKE', 'cake'), 'case-insensitive');
  t.ok(globMatches('ca?e', 'cake'));
  t.ok(globMatches('cake', 'I like cake!', true), 'content rules match at word boundaries');
  t.notOk(globMatches('cake', 'pancakes', true), '...and not inside a word');
  // Every character that is not a glob wildcard is literal, including those that are special in
  // a regular expression (`-` once made the pattern itself invalid in unicode mode, and the push
  // work of every event with such a user ID failed).
  t.ok(globMatches('@user-61-bob:hs2', '@user-61-bob:hs2'), 'a hyphen in a user ID');
  for (const c of '-./\\()[]{}|^$+') t.ok(globMatches(`a${c}b`, `a${c}b`), `${c} is literal`);
  t.notOk(globMatches('a.b', 'axb'), 'a dot is not a wildcard');
  t.notOk(globMatches('a+', 'aa'), 'nor is a plus a repetition');
  const ctx = { memberCount: 3, senderPowerLevel: 0, notificationLevel: () => 50 };
  const event = { type: 'm.room.message', sender: '@a:x', room_id: '!r:x', content: { body: 'hi', n: 1 } };
  t.ok(conditionHolds({ kind: 'room_member_count', is: '>=3' }, event, ctx));
  t.notOk(conditionHolds({ kind: 'room_member_count', is: '2' }, event, ctx));
  t.notOk(conditionHolds({ kind: 'room_member_count', is: 'many' }, event, ctx), 'a bad `is` never holds');
  t.ok(conditionHolds({ kind: 'event_property_is', key: 'content.n', value: 1 }, event, ctx));
  t.notOk(conditionHolds({ kind: 'event_property_is', key: 'content.n', value: '1' }, event, ctx), 'typed');
  t.notOk(conditionHolds({ kind: 'sender_notification_permission', key: 'room' }, event, ctx));
  t.notOk(conditionHolds({ kind: 'no_such_kind' }, event, ctx), 'an unknown condition kind never holds');
  const named = { ...ctx, displayName: 'Jean-Luc (lab)' };
  const hail = { ...event, content: { body: 'Hello Jean-Luc (lab), the run is done' } };
  t.ok(conditionHolds({ kind: 'contains_display_name' }, hail, named), 'a display name with - and ()');
  t.notOk(
    conditionHolds({ kind: 'contains_display_name' }, { ...event, content: { body: 'JeanxLuc lab' } }, named),
    'its characters are literal',
  );

  const bob = '@bob:x';
  const message = evaluatePushRules(defaultPushRules(bob), event, ctx)!;
  t.equal(message.ruleId, '.m.rule.message');
  t.ok(message.notify);
  t.notOk(message.highlight);
  const mention = evaluatePushRules(
    defaultPushRules(bob),
    { ...event, content: { body: 'bob?', 'm.mentions': { user_ids: [bob] } } },
    ctx,
  )!;
  t.equal(mention.ruleId, '.m.rule.is_user_mention');
  t.ok(mention.highlight);
  t.same(mention.tweaks, { sound: 'default', highlight: true });
  const notice = evaluatePushRules(
    defaultPushRules(bob),
    { ...event, content: { msgtype: 'm.notice' } },
    ctx,
  )!;
  t.notOk(notice.notify, 'notices are suppressed');
  const muted = mergeRules(bob, { user: {}, defaults: { '.m.rule.master': { enabled: true } } });
  t.notOk(evaluatePushRules(muted, event, ctx)?.notify, 'the master rule silences everything');
  const own = mergeRules(bob, {
    user: { override: [{ rule_id: 'mine', default: false, enabled: true, conditions: [], actions: [] }] },
    defaults: {},
  });
  t.same(
    own.override.slice(0, 3).map((r) => r.rule_id),
    ['.m.rule.master', 'mine', '.m.rule.suppress_notices'],
    "the user's rules come after the master rule and before the other defaults",
  );
});

interface Gateway {
  url: string;
  received: Json[];
  /** Per pushkey: how to answer. */
  behaviour: Map<string, 'ok' | 'fail-once' | 'reject'>;
  close(): Promise<void>;
}

/** A push gateway on loopback that records what it is sent. */
async function startGateway(): Promise<Gateway> {
  const received: Json[] = [];
  const behaviour = new Map<string, 'ok' | 'fail-once' | 'reject'>();
  const failed = new Set<string>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Json;
      const pushkey = body.notification?.devices?.[0]?.pushkey as string;
      const how = behaviour.get(pushkey) ?? 'ok';
      received.push({ path: req.url, body, status: how === 'fail-once' && !failed.has(pushkey) ? 500 : 200 });
      res.setHeader('content-type', 'application/json');
      if (how === 'fail-once' && !failed.has(pushkey)) {
        failed.add(pushkey);
        res.statusCode = 500;
        res.end('{}');
      } else if (how === 'reject') res.end(JSON.stringify({ rejected: [pushkey] }));
      else res.end(JSON.stringify({ rejected: [] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/_matrix/push/v1/notify`,
    received,
    behaviour,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

for (const backend of databaseBackends()) {
  t.test(`push on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    // The test's gateway is on loopback, which pushers may reach only because this says so.
    const s = await startTestServer(t, backend, { pushGatewayAllowAddresses: ['127.0.0.1'] });
    const gateway = await startGateway();
    t.teardown(() => gateway.close());
    const push = s.runtime.services.push;
    const ok = okCaller(s);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    await ok('PUT', `${V3}/profile/${enc(alice.user_id)}/displayname`, alice, { displayname: 'Alice A.' });
    const room = (await ok('POST', `${V3}/createRoom`, alice, { preset: 'public_chat', name: 'Lab' }))
      .room_id as string;
    await ok('POST', `${V3}/join/${enc(room)}`, bob, {});
    let txn = 0;
    const send = async (who: Login, content: Json) =>
      (await ok('PUT', `${V3}/rooms/${enc(room)}/send/m.room.message/t${txn++}`, who, content))
        .event_id as string;
    const pusher = (pushkey: string, extra: Json = {}) => ({
      kind: 'http',
      app_id: 'org.example.app',
      pushkey,
      app_display_name: 'Example',
      device_display_name: "Bob's phone",
      lang: 'en',
      data: { url: gateway.url, extra_key: 'kept' },
      ...extra,
    });
    const pushesFor = (eventId: string) =>
      gateway.received.filter((r) => r.body.notification?.event_id === eventId);
    const setPusher = (who: Login, body: unknown) =>
      s.request('POST', `${V3}/pushers/set`, { token: who.access_token, body });

    t.test('pushers: set, list, and the forbidden and malformed paths', async (t) => {
      t.same(await ok('GET', `${V3}/pushers`, bob), { pushers: [] });
      t.equal((await setPusher(bob, pusher('bob-full'))).statusCode, 200);
      const listed = (await ok('GET', `${V3}/pushers`, bob)).pushers as Json[];
      t.equal(listed.length, 1);
      t.match(listed[0], {
        pushkey: 'bob-full',
        kind: 'http',
        app_id: 'org.example.app',
        app_display_name: 'Example',
        device_display_name: "Bob's phone",
        lang: 'en',
        data: { url: gateway.url, extra_key: 'kept' },
      });
      t.same(
        await ok('GET', `${V3}/pushers`, mallory),
        { pushers: [] },
        "mallory does not see bob's pushers",
      );

      // Deleting with kind null removes only the caller's own pusher.
      t.equal(
        (await setPusher(mallory, { kind: null, app_id: 'org.example.app', pushkey: 'bob-full' })).statusCode,
        200,
      );
      t.equal(
        ((await ok('GET', `${V3}/pushers`, bob)).pushers as Json[]).length,
        1,
        "mallory cannot delete bob's",
      );

      // Same app ID and pushkey for another user: append keeps both, else the other's goes.
      t.equal((await setPusher(mallory, pusher('shared', { append: true }))).statusCode, 200);
      t.equal((await setPusher(bob, pusher('shared', { append: true }))).statusCode, 200);
      t.equal(((await ok('GET', `${V3}/pushers`, mallory)).pushers as Json[]).length, 1, 'append keeps both');
      t.equal((await setPusher(bob, pusher('shared'))).statusCode, 200);
      t.same(
        await ok('GET', `${V3}/pushers`, mallory),
        { pushers: [] },
        'without append the other user’s goes',
      );
      t.equal(
        (await setPusher(bob, { kind: null, app_id: 'org.example.app', pushkey: 'shared' })).statusCode,
        200,
      );
      t.equal(((await ok('GET', `${V3}/pushers`, bob)).pushers as Json[]).length, 1, 'kind null deletes');

      for (const url of [`${V3}/pushers`]) {
        const anonymous = await s.request('GET', url);
        t.equal(anonymous.statusCode, 401);
        t.equal(anonymous.json().errcode, 'M_MISSING_TOKEN');
      }
      const anonymousSet = await s.request('POST', `${V3}/pushers/set`, { body: pusher('x') });
      t.equal(anonymousSet.statusCode, 401);

      const bad: Array<[string, unknown, string]> = [
        ['no app_display_name', { ...pusher('x'), app_display_name: undefined }, 'M_MISSING_PARAM'],
        ['no data', { ...pusher('x'), data: undefined }, 'M_MISSING_PARAM'],
        ['no url', pusher('x', { data: { format: 'event_id_only' } }), 'M_MISSING_PARAM'],
        [
          'an ftp url',
          pusher('x', { data: { url: 'ftp://127.0.0.1/_matrix/push/v1/notify' } }),
          'M_INVALID_PARAM',
        ],
        ['not a url', pusher('x', { data: { url: 'not a url' } }), 'M_INVALID_PARAM'],
        ['another path', pusher('x', { data: { url: 'http://127.0.0.1/notify' } }), 'M_INVALID_PARAM'],
        [
          'a format not in the spec',
          pusher('x', { data: { url: gateway.url, format: 'full' } }),
          'M_INVALID_PARAM',
        ],
        [
          'a private address',
          pusher('x', { data: { url: 'http://10.1.2.3/_matrix/push/v1/notify' } }),
          'M_INVALID_PARAM',
        ],
        [
          'loopback not allowed by push_gateway_allow',
          pusher('x', { data: { url: 'http://[::1]:8080/_matrix/push/v1/notify' } }),
          'M_INVALID_PARAM',
        ],
        ['kind email', pusher('x', { kind: 'email' }), 'M_INVALID_PARAM'],
        ['kind a number', pusher('x', { kind: 3 }), 'M_BAD_JSON'],
        ['no pushkey', { ...pusher('x'), pushkey: undefined }, 'M_BAD_JSON'],
        ['a long app_id', pusher('x', { app_id: 'a'.repeat(65) }), 'M_INVALID_PARAM'],
        ['a long pushkey', pusher('x'.repeat(513)), 'M_INVALID_PARAM'],
      ];
      for (const [what, body, errcode] of bad) {
        const res = await setPusher(bob, body);
        t.equal(res.statusCode, 400, what);
        t.equal(res.json().errcode, errcode, what);
      }
      const notJson = await s.request('POST', `${V3}/pushers/set`, {
        token: bob.access_token,
        rawBody: '{nope',
        headers: { 'content-type': 'application/json' },
      });
      t.equal(notJson.statusCode, 400);
      t.equal(notJson.json().errcode, 'M_NOT_JSON');
      t.equal(
        ((await ok('GET', `${V3}/pushers`, bob)).pushers as Json[]).length,
        1,
        'nothing bad was stored',
      );
    });

    t.test('a message to bob reaches his gateway in the spec format', async (t) => {
      const eventId = await send(alice, { msgtype: 'm.text', body: 'the figures are in' });
      const [push1] = await until(
        'the push',
        async () => pushesFor(eventId).length > 0 && pushesFor(eventId),
      );
      t.equal(push1!.path, '/_matrix/push/v1/notify');
      const n = push1!.body.notification;
      t.match(n, {
        event_id: eventId,
        room_id: room,
        type: 'm.room.message',
        sender: alice.user_id,
        sender_display_name: 'Alice A.',
        room_name: 'Lab',
        prio: 'high',
        content: { msgtype: 'm.text', body: 'the figures are in' },
        counts: { unread: 1 },
      });
      t.equal(n.devices.length, 1);
      const device = n.devices[0];
      t.equal(device.app_id, 'org.example.app');
      t.equal(device.pushkey, 'bob-full');
      t.type(device.pushkey_ts, 'number');
      t.same(device.data, { extra_key: 'kept' }, 'data is passed on without url');
      t.same(device.tweaks, { sound: 'default' }, 'a two-member room: .m.rule.room_one_to_one');
      await push.settle();
      t.equal(pushesFor(eventId).length, 1, 'pushed once');
    });

    t.test("none for bob's own messages", async (t) => {
      const own = await send(bob, { msgtype: 'm.text', body: 'mine' });
      const after = await send(alice, { msgtype: 'm.text', body: 'after' });
      await until('the later push', async () => pushesFor(after).length > 0);
      await push.settle();
      t.equal(pushesFor(own).length, 0, 'the sender is never pushed their own message');
    });

    t.test('event_id_only, a retried 500, and a rejected pushkey', async (t) => {
      t.equal(
        (await setPusher(bob, pusher('bob-ids', { data: { url: gateway.url, format: 'event_id_only' } })))
          .statusCode,
        200,
      );
      gateway.behaviour.set('bob-flaky', 'fail-once');
      t.equal((await setPusher(bob, pusher('bob-flaky'))).statusCode, 200);
      gateway.behaviour.set('bob-gone', 'reject');
      t.equal((await setPusher(bob, pusher('bob-gone'))).statusCode, 200);

      const eventId = await send(alice, { msgtype: 'm.text', body: 'secret results' });
      const byKey = (key: string) =>
        pushesFor(eventId).filter((r) => r.body.notification.devices[0].pushkey === key);
      const [ids] = await until(
        'the event_id_only push',
        async () => byKey('bob-ids').length > 0 && byKey('bob-ids'),
      );
      t.same(Object.keys(ids!.body.notification).sort(), ['counts', 'devices', 'event_id', 'room_id']);
      t.same(ids!.body.notification.devices[0].data, { format: 'event_id_only' });
      t.notOk(JSON.stringify(ids!.body).includes('secret results'), 'no content in event_id_only');

      const flaky = await until(
        'the retry',
        async () => byKey('bob-flaky').length >= 2 && byKey('bob-flaky'),
      );
      t.same(
        flaky.map((r) => r.status),
        [500, 200],
        'the 500 is retried, and the retry is taken',
      );
      await until('the rejected push', async () => byKey('bob-gone').length > 0);
      await until('the rejected pusher to go', async () => {
        const keys = ((await ok('GET', `${V3}/pushers`, bob)).pushers as Json[]).map((p) => p.pushkey);
        return !keys.includes('bob-gone');
      });
      const keys = ((await ok('GET', `${V3}/pushers`, bob)).pushers as Json[]).map((p) => p.pushkey).sort();
      t.same(keys, ['bob-flaky', 'bob-full', 'bob-ids'], 'only the rejected pusher went');
      t.equal(push.counters.rejectedPushers, 1);
      // The rest now stay quiet: a pusher per pushkey.
      t.equal(
        (await setPusher(bob, { kind: null, app_id: 'org.example.app', pushkey: 'bob-flaky' })).statusCode,
        200,
      );
      t.equal(
        (await setPusher(bob, { kind: null, app_id: 'org.example.app', pushkey: 'bob-ids' })).statusCode,
        200,
      );
    });

    t.test('GET /notifications', async (t) => {
      await push.settle();
      const mention = await send(alice, {
        msgtype: 'm.text',
        body: 'bob, look',
        'm.mentions': { user_ids: [bob.user_id] },
      });
      await until('the mention to be stored', async () => {
        const all = await ok('GET', `${V3}/notifications`, bob);
        return (all.notifications as Json[]).some((n) => n.event.event_id === mention);
      });
      const all = await ok('GET', `${V3}/notifications`, bob);
      const list = all.notifications as Json[] & [Json, Json, ...Json[]];
      t.ok(list.length >= 4, 'every message from alice');
      t.equal(list[0].event.event_id, mention, 'newest first');
      t.match(list[0], {
        room_id: room,
        read: false,
        event: { type: 'm.room.message', sender: alice.user_id },
      });
      t.type(list[0].ts, 'number');
      t.same(list[0].actions, [
        'notify',
        { set_tweak: 'sound', value: 'default' },
        { set_tweak: 'highlight' },
      ]);
      t.notOk(
        list.some((n) => n.event.sender === bob.user_id),
        "bob's own messages are not his notifications",
      );
      const highlights = (await ok('GET', `${V3}/notifications?only=highlight`, bob)).notifications as Json[];
      t.same(
        highlights.map((n) => n.event.event_id),
        [mention],
        'only=highlight: only the mention',
      );
      const page1 = await ok('GET', `${V3}/notifications?limit=1`, bob);
      t.equal(page1.notifications.length, 1);
      t.type(page1.next_token, 'string');
      const page2 = await ok('GET', `${V3}/notifications?limit=1&from=${enc(page1.next_token)}`, bob);
      t.equal(page2.notifications[0].event.event_id, list[1].event.event_id, 'from pages on');
      const alices = (await ok('GET', `${V3}/notifications`, alice)).notifications as Json[];
      t.ok(alices.length > 0, "alice's: bob's messages");
      t.ok(
        alices.every((n) => n.event.sender === bob.user_id),
        "each user's own: alice's list holds only bob's messages",
      );

      const receipt = await s.request('POST', `${V3}/rooms/${enc(room)}/receipt/m.read/${enc(mention)}`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(receipt.statusCode, 200);
      const read = (await ok('GET', `${V3}/notifications`, bob)).notifications as Json[];
      t.ok(
        read.every((n) => n.read === true),
        'read after the receipt',
      );

      const anonymous = await s.request('GET', `${V3}/notifications`);
      t.equal(anonymous.statusCode, 401);
      for (const qs of ['from=abc', 'limit=many', 'limit=-1']) {
        const res = await s.request('GET', `${V3}/notifications?${qs}`, { token: bob.access_token });
        t.equal(res.statusCode, 400, qs);
        t.match(res.json().errcode, /^M_(INVALID_PARAM|BAD_JSON)$/, qs);
      }
    });

    t.test('changing the rules changes what is pushed', async (t) => {
      const rule = (kind: string, id: string, rest = '') =>
        `${V3}/pushrules/global/${kind}/${enc(id)}${rest}`;
      // A room rule with dont_notify silences the room.
      t.equal(
        (
          await s.request('PUT', rule('room', room), {
            token: bob.access_token,
            body: { actions: ['dont_notify'] },
          })
        ).statusCode,
        200,
      );
      t.match(await ok('GET', rule('room', room), bob), {
        rule_id: room,
        default: false,
        enabled: true,
        actions: ['dont_notify'],
      });
      const quiet = await send(alice, { msgtype: 'm.text', body: 'quiet' });
      const marker = await send(alice, {
        msgtype: 'm.text',
        body: 'marker',
        'm.mentions': { user_ids: [bob.user_id] },
      });
      await until(
        'the mention (an override rule, before room rules)',
        async () => pushesFor(marker).length > 0,
      );
      await push.settle();
      t.equal(pushesFor(quiet).length, 0, 'the room rule stops the push');
      t.equal((await s.request('DELETE', rule('room', room), { token: bob.access_token })).statusCode, 200);

      // Disabling the default message rules.
      for (const id of ['.m.rule.room_one_to_one', '.m.rule.message']) {
        const res = await s.request('PUT', rule('underride', id, '/enabled'), {
          token: bob.access_token,
          body: { enabled: false },
        });
        t.equal(res.statusCode, 200, id);
      }
      t.same(await ok('GET', rule('underride', '.m.rule.message', '/enabled'), bob), { enabled: false });
      const off = await send(alice, { msgtype: 'm.text', body: 'no rule for me' });
      await push.settle();
      t.equal(pushesFor(off).length, 0, 'with .m.rule.message off nothing is pushed');
      const stored = (await ok('GET', `${V3}/notifications`, bob)).notifications as Json[];
      t.notOk(
        stored.some((n) => n.event.event_id === off),
        'nor stored as a notification',
      );

      // Changing the actions of a default rule: a highlight for every message.
      await ok('PUT', rule('underride', '.m.rule.message', '/enabled'), bob, { enabled: true });
      await ok('PUT', rule('underride', '.m.rule.message', '/actions'), bob, {
        actions: ['notify', { set_tweak: 'highlight', value: true }],
      });
      t.same(await ok('GET', rule('underride', '.m.rule.message', '/actions'), bob), {
        actions: ['notify', { set_tweak: 'highlight', value: true }],
      });
      const loud = await send(alice, { msgtype: 'm.text', body: 'loud' });
      const [loudPush] = await until(
        'the highlighted push',
        async () => pushesFor(loud).length > 0 && pushesFor(loud),
      );
      t.same(loudPush!.body.notification.devices[0].tweaks, { highlight: true });

      // A content rule of bob's own, with before/after among his own rules.
      await ok('PUT', rule('content', 'cake'), bob, {
        pattern: 'cake',
        actions: ['notify', { set_tweak: 'sound', value: 'cake' }],
      });
      await ok('PUT', `${rule('content', 'pie')}?before=cake`, bob, { pattern: 'pie', actions: ['notify'] });
      await ok('PUT', `${rule('content', 'tart')}?after=pie`, bob, { pattern: 'tart', actions: ['notify'] });
      const global = await ok('GET', `${V3}/pushrules/global/`, bob);
      t.same(
        (global.content as Json[]).map((r) => r.rule_id),
        ['pie', 'tart', 'cake'],
        'before and after place rules among the user’s own',
      );
      const cake = await send(alice, { msgtype: 'm.text', body: 'there is cake' });
      const [cakePush] = await until(
        'the cake push',
        async () => pushesFor(cake).length > 0 && pushesFor(cake),
      );
      t.same(cakePush!.body.notification.devices[0].tweaks, { sound: 'cake' });

      // Clients hear of it through m.push_rules account data.
      const synced = await syncOnce(s, bob);
      const pr = (synced.account_data.events as Json[]).find((e) => e.type === 'm.push_rules');
      t.same(
        (pr?.content.global.content as Json[]).map((r) => r.rule_id),
        ['pie', 'tart', 'cake'],
        'm.push_rules in /sync',
      );
      t.equal(
        (await s.request('DELETE', rule('content', 'pie'), { token: bob.access_token })).statusCode,
        200,
      );
      t.equal((await s.request('GET', rule('content', 'pie'), { token: bob.access_token })).statusCode, 404);
    });

    t.test('an invite notifies the invitee; a closed account loses its pushers', async (t) => {
      const carol = await s.register('carol');
      t.equal((await setPusher(carol, pusher('carol-phone'))).statusCode, 200);
      const invite = (await ok('POST', `${V3}/rooms/${enc(room)}/invite`, alice, { user_id: carol.user_id }))
        .event_id as string | undefined;
      const [push1] = await until('the invite push', async () => {
        const found = gateway.received.filter(
          (r) => r.body.notification?.devices?.[0]?.pushkey === 'carol-phone',
        );
        return found.length > 0 && found;
      });
      t.match(push1!.body.notification, {
        type: 'm.room.member',
        room_id: room,
        sender: alice.user_id,
        user_is_target: true,
        content: { membership: 'invite' },
      });
      if (invite) t.equal(push1!.body.notification.event_id, invite);

      const first = await s.request('POST', `${V3}/account/deactivate`, {
        token: carol.access_token,
        body: {},
      });
      const done = await s.request('POST', `${V3}/account/deactivate`, {
        token: carol.access_token,
        body: {
          auth: {
            type: 'm.login.password',
            session: first.json().session,
            identifier: { type: 'm.id.user', user: carol.user_id },
            password: PASSWORD,
          },
        },
      });
      t.equal(done.statusCode, 200);
      const left = await s.runtime.services.db
        .selectFrom('pushers')
        .select('pushkey')
        .where('user_id', '=', carol.user_id)
        .execute();
      t.same(left, [], 'deactivation removes the pushers');
    });

    t.test("a device's pushers go with it: on logout and on a password change", async (t) => {
      const dan = await s.register('dan');
      const laptop = await s.login('dan', { deviceId: 'LAPTOP' });
      const tablet = await s.login('dan', { deviceId: 'TABLET' });
      for (const [who, key] of [
        [dan, 'dan-main'],
        [laptop, 'dan-laptop'],
        [tablet, 'dan-tablet'],
      ] as const)
        t.equal((await setPusher(who, pusher(key))).statusCode, 200);
      const keys = async () =>
        ((await ok('GET', `${V3}/pushers`, dan)).pushers as Json[]).map((p) => p.pushkey).sort();
      t.same(await keys(), ['dan-laptop', 'dan-main', 'dan-tablet']);
      t.equal(
        (await s.request('POST', `${V3}/logout`, { token: tablet.access_token, body: {} })).statusCode,
        200,
      );
      t.same(await keys(), ['dan-laptop', 'dan-main'], "the tablet's pusher went with its logout");
      const first = await s.request('POST', `${V3}/account/password`, {
        token: dan.access_token,
        body: { new_password: 'another long password' },
      });
      const changed = await s.request('POST', `${V3}/account/password`, {
        token: dan.access_token,
        body: {
          new_password: 'another long password',
          auth: {
            type: 'm.login.password',
            session: first.json().session,
            identifier: { type: 'm.id.user', user: dan.user_id },
            password: PASSWORD,
          },
        },
      });
      t.equal(changed.statusCode, 200, changed.body);
      t.same(
        await keys(),
        ['dan-main'],
        'the other devices logged out lost their pushers, this one kept its',
      );
    });

    t.test('push rules: the forbidden and malformed paths', async (t) => {
      const put = (url: string, body: unknown, who: Login = bob) =>
        s.request('PUT', url, { token: who.access_token, body });
      const base = `${V3}/pushrules/global`;
      const cases: Array<[string, Promise<{ statusCode: number; json(): Json }>, number, string]> = [
        [
          'a server-default rule ID',
          put(`${base}/override/.m.rule.mine`, { actions: [] }),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'replacing a default rule',
          put(`${base}/underride/.m.rule.message`, { actions: [] }),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'deleting a default rule',
          s.request('DELETE', `${base}/underride/.m.rule.message`, { token: bob.access_token }),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'deleting an unknown rule',
          s.request('DELETE', `${base}/override/none`, { token: bob.access_token }),
          404,
          'M_NOT_FOUND',
        ],
        [
          'an unknown rule',
          s.request('GET', `${base}/override/none`, { token: bob.access_token }),
          404,
          'M_NOT_FOUND',
        ],
        [
          'enabling an unknown rule',
          put(`${base}/override/none/enabled`, { enabled: true }),
          404,
          'M_NOT_FOUND',
        ],
        [
          'an unknown default rule',
          put(`${base}/override/.m.rule.none/actions`, { actions: [] }),
          404,
          'M_NOT_FOUND',
        ],
        [
          'a scope that is not global',
          put(`${V3}/pushrules/device/override/x`, { actions: [] }),
          400,
          'M_INVALID_PARAM',
        ],
        ['an unknown kind', put(`${base}/bogus/x`, { actions: [] }), 400, 'M_INVALID_PARAM'],
        ['before an unknown rule', put(`${base}/override/x?before=nope`, { actions: [] }), 400, 'M_UNKNOWN'],
        ['no actions', put(`${base}/override/x`, { conditions: [] }), 400, 'M_BAD_JSON'],
        ['actions not an array', put(`${base}/override/x`, { actions: 'notify' }), 400, 'M_BAD_JSON'],
        ['an unknown action', put(`${base}/override/x`, { actions: ['explode'] }), 400, 'M_INVALID_PARAM'],
        [
          'conditions not an array',
          put(`${base}/override/x`, { actions: [], conditions: {} }),
          400,
          'M_BAD_JSON',
        ],
        [
          'a condition without kind',
          put(`${base}/override/x`, { actions: [], conditions: [{ key: 'type' }] }),
          400,
          'M_BAD_JSON',
        ],
        [
          'event_match without pattern',
          put(`${base}/override/x`, { actions: [], conditions: [{ kind: 'event_match', key: 'type' }] }),
          400,
          'M_BAD_JSON',
        ],
        ['a content rule without pattern', put(`${base}/content/x`, { actions: [] }), 400, 'M_MISSING_PARAM'],
        [
          'a backslash in the rule ID',
          put(`${base}/override/a%5Cb`, { actions: [] }),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'enabled not a boolean',
          put(`${base}/underride/.m.rule.message/enabled`, { enabled: 'yes' }),
          400,
          'M_BAD_JSON',
        ],
        [
          'actions of a tweak with an object value',
          put(`${base}/underride/.m.rule.message/actions`, { actions: [{ set_tweak: 'sound', value: {} }] }),
          400,
          'M_INVALID_PARAM',
        ],
        [
          'no token',
          s.request('PUT', `${base}/override/x`, { body: { actions: [] } }),
          401,
          'M_MISSING_TOKEN',
        ],
        [
          'no token to read',
          s.request('GET', `${base}/underride/.m.rule.message/actions`),
          401,
          'M_MISSING_TOKEN',
        ],
      ];
      for (const [what, res, status, errcode] of cases) {
        const r = await res;
        t.equal(r.statusCode, status, what);
        t.equal(r.json().errcode, errcode, what);
      }
      // One user's rules are theirs alone.
      await ok('PUT', `${base}/override/bobs`, bob, { actions: ['dont_notify'], conditions: [] });
      t.equal(
        (await s.request('GET', `${base}/override/bobs`, { token: mallory.access_token })).statusCode,
        404,
      );
      t.equal(
        (await s.request('DELETE', `${base}/override/bobs`, { token: mallory.access_token })).statusCode,
        404,
      );
      t.match(await ok('GET', `${base}/override/bobs`, bob), { rule_id: 'bobs', enabled: true });
      await ok('DELETE', `${base}/override/bobs`, bob);
    });
  });
}
