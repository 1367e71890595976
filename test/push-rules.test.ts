import t from 'tap';
import { evaluatePushRules } from '../src/services/push-evaluator.ts';
import { defaultPushRules, PUSH_RULE_KINDS, type PushRule } from '../src/services/push-rules.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

function byId(rules: PushRule[], ruleId: string): PushRule | undefined {
  return rules.find((r) => r.rule_id === ruleId);
}

t.test('the server-default rules', async (t) => {
  const userId = '@alice:conclave.test';
  const rules = defaultPushRules(userId);
  t.same(Object.keys(rules).sort(), [...PUSH_RULE_KINDS].sort(), 'every kind, and nothing else');

  for (const kind of PUSH_RULE_KINDS) {
    for (const rule of rules[kind]) {
      t.match(rule.rule_id, /^\./, `${kind} ${rule.rule_id}: a server-default ID starts with a dot`);
      t.equal(rule.default, true, `${rule.rule_id}: default`);
      t.type(rule.enabled, 'boolean', `${rule.rule_id}: enabled`);
      t.ok(Array.isArray(rule.actions), `${rule.rule_id}: actions`);
      if (kind === 'override' || kind === 'postcontent' || kind === 'underride')
        t.ok(Array.isArray(rule.conditions), 'conditions');
    }
    const ids = rules[kind].map((r) => r.rule_id);
    t.equal(new Set(ids).size, ids.length, `${kind}: rule IDs are unique`);
  }

  t.same(
    rules.override.map((r) => r.rule_id),
    [
      '.m.rule.master',
      '.m.rule.suppress_notices',
      '.m.rule.invite_for_me',
      '.m.rule.member_event',
      '.m.rule.is_user_mention',
      '.m.rule.is_room_mention',
      '.m.rule.tombstone',
      '.m.rule.reaction',
      '.m.rule.room.server_acl',
      '.m.rule.suppress_edits',
    ],
    'override rules in the order of the spec',
  );
  t.same(
    rules.underride.map((r) => r.rule_id),
    [
      '.m.rule.call',
      '.m.rule.encrypted_room_one_to_one',
      '.m.rule.room_one_to_one',
      '.m.rule.message',
      '.m.rule.encrypted',
    ],
    'underride rules in the order of the spec',
  );
  t.same(rules.content, [], 'no content rules: the body-matching defaults left the spec in v1.17');
  t.same(rules.room, []);
  t.same(rules.sender, []);
  t.same(rules.postcontent, [], "MSC4306's kind: no defaults without thread subscriptions");
  for (const legacy of ['.m.rule.contains_display_name', '.m.rule.contains_user_name', '.m.rule.roomnotif']) {
    t.notOk(
      PUSH_RULE_KINDS.some((kind) => byId(rules[kind], legacy)),
      `${legacy} is not a default any more`,
    );
  }

  const master = byId(rules.override, '.m.rule.master')!;
  t.same(master, { rule_id: '.m.rule.master', default: true, enabled: false, conditions: [], actions: [] });

  const invite = byId(rules.override, '.m.rule.invite_for_me')!;
  t.same(invite.conditions, [
    { kind: 'event_match', key: 'type', pattern: 'm.room.member' },
    { kind: 'event_match', key: 'content.membership', pattern: 'invite' },
    { kind: 'event_match', key: 'state_key', pattern: userId },
  ]);
  t.same(invite.actions, ['notify', { set_tweak: 'sound', value: 'default' }]);

  const mention = byId(rules.override, '.m.rule.is_user_mention')!;
  t.same(mention.conditions, [
    { kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: userId },
  ]);
  t.same(mention.actions, ['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }]);

  const roomMention = byId(rules.override, '.m.rule.is_room_mention')!;
  t.same(roomMention.conditions, [
    { kind: 'event_property_is', key: 'content.m\\.mentions.room', value: true },
    { kind: 'sender_notification_permission', key: 'room' },
  ]);

  t.same(byId(rules.underride, '.m.rule.message'), {
    rule_id: '.m.rule.message',
    default: true,
    enabled: true,
    conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }],
    actions: ['notify'],
  });
  t.same(byId(rules.underride, '.m.rule.encrypted')!.conditions, [
    { kind: 'event_match', key: 'type', pattern: 'm.room.encrypted' },
  ]);
  t.same(byId(rules.underride, '.m.rule.call')!.actions, ['notify', { set_tweak: 'sound', value: 'ring' }]);
  t.same(byId(rules.underride, '.m.rule.room_one_to_one')!.conditions, [
    { kind: 'room_member_count', is: '2' },
    { kind: 'event_match', key: 'type', pattern: 'm.room.message' },
  ]);

  const bobs = defaultPushRules('@bob:conclave.test');
  t.equal(
    byId(bobs.override, '.m.rule.invite_for_me')!.conditions![2]!.pattern,
    '@bob:conclave.test',
    'each user gets rules naming them',
  );
  bobs.override[0]!.enabled = true;
  t.equal(defaultPushRules(userId).override[0]!.enabled, false, 'each call returns fresh objects');
});

for (const backend of databaseBackends()) {
  t.test(`GET /pushrules on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');

    const all = await s.request('GET', `${V3}/pushrules/`, { token: alice.access_token });
    t.equal(all.statusCode, 200);
    const body = all.json() as { global: Record<string, PushRule[]> };
    t.same(Object.keys(body), ['global'], 'only the global rule set');
    t.same(body.global, defaultPushRules(alice.user_id));

    const global = await s.request('GET', `${V3}/pushrules/global/`, { token: alice.access_token });
    t.equal(global.statusCode, 200);
    t.same(global.json(), body.global, 'the same global rule set');

    const bobs = (
      await s.request('GET', `${V3}/pushrules/global/`, { token: bob.access_token })
    ).json() as Record<string, PushRule[]>;
    t.equal(
      byId(bobs.override!, '.m.rule.is_user_mention')!.conditions![0]!.value,
      bob.user_id,
      "bob's rules name bob, whoever asked before",
    );

    for (const url of [`${V3}/pushrules/`, `${V3}/pushrules/global/`]) {
      const anonymous = await s.request('GET', url);
      t.equal(anonymous.statusCode, 401, `${url} needs a token`);
      t.equal(anonymous.json().errcode, 'M_MISSING_TOKEN');
      const badToken = await s.request('GET', url, { token: 'nope' });
      t.equal(badToken.statusCode, 401);
      t.equal(badToken.json().errcode, 'M_UNKNOWN_TOKEN');
    }
    const put = await s.request('PUT', `${V3}/pushrules/global/`, { token: alice.access_token, body: {} });
    t.equal(put.statusCode, 405, 'changing rules is not served');
    t.equal(put.json().errcode, 'M_UNRECOGNIZED');
  });
}

t.test('postcontent rules (MSC4306) are evaluated after content rules and before room rules', async (t) => {
  const ctx = { memberCount: 3, senderPowerLevel: 0, notificationLevel: () => 50 };
  const event = { type: 'm.room.message', room_id: '!lab:x', sender: '@bob:x', content: { body: 'assay' } };
  const own = (ruleId: string, extra: Partial<PushRule>, actions: PushRule['actions']): PushRule => ({
    rule_id: ruleId,
    default: false,
    enabled: true,
    actions,
    ...extra,
  });
  const rules = defaultPushRules('@alice:x');
  rules.room = [own('!lab:x', {}, [])];
  rules.postcontent = [
    own('thready', { conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }] }, [
      'notify',
    ]),
  ];
  t.equal(evaluatePushRules(rules, event, ctx)?.ruleId, 'thready', 'postcontent before room');
  rules.content = [own('word', { pattern: 'assay' }, [])];
  t.equal(evaluatePushRules(rules, event, ctx)?.ruleId, 'word', 'content before postcontent');
});

for (const backend of databaseBackends()) {
  t.test(`the postcontent kind over HTTP on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const as = { token: alice.access_token };
    // What Complement's thread tests ask first: MSC4306's default rule is absent here.
    const msc = `${V3}/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread`;
    const absent = await s.request('GET', msc, as);
    t.equal(absent.statusCode, 404, absent.body);
    t.equal(absent.json().errcode, 'M_NOT_FOUND');
    const put = await s.request('PUT', `${V3}/pushrules/global/postcontent/mine`, {
      ...as,
      body: {
        actions: ['notify'],
        conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }],
      },
    });
    t.equal(put.statusCode, 200, put.body);
    const off = await s.request('PUT', `${V3}/pushrules/global/postcontent/mine/enabled`, {
      ...as,
      body: { enabled: false },
    });
    t.equal(off.statusCode, 200, off.body);
    const all = (await s.request('GET', `${V3}/pushrules/global/`, as)).json() as Record<string, PushRule[]>;
    t.same(
      all.postcontent,
      [
        {
          rule_id: 'mine',
          default: false,
          enabled: false,
          actions: ['notify'],
          conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }],
        },
      ],
      'the rule, disabled, in the rule set',
    );
    const unknown = await s.request('GET', `${V3}/pushrules/global/nonsense/x`, as);
    t.equal(unknown.statusCode, 400, 'other kinds stay unknown');
    t.equal(unknown.json().errcode, 'M_INVALID_PARAM');
  });
}
