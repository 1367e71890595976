import t from 'tap';
import type { Pdu } from '../../src/protocol/event.ts';
import type { JsonObject } from '../../src/protocol/json.ts';
import { redactEvent } from '../../src/protocol/redaction.ts';
import { ROOM_VERSIONS, type RoomVersion } from '../../src/protocol/room-versions.ts';

// Rules from rooms/fragments/v9-redactions.md (room version 10) and v11-redactions.md (11, 12).
const v10 = ROOM_VERSIONS['10'];
const v11 = ROOM_VERSIONS['11'];
const v12 = ROOM_VERSIONS['12'];
const UPDATED_RULES = [v11, v12];

const ESSENTIAL_TOP_LEVEL = {
  event_id: '$legacy:example.org',
  type: 'm.room.message',
  room_id: '!room:example.org',
  sender: '@alice:example.org',
  state_key: '',
  hashes: { sha256: 'aGFzaA' },
  signatures: { 'example.org': { 'ed25519:1': 'c2ln' } },
  depth: 4,
  prev_events: ['$p'],
  auth_events: ['$a'],
  origin_server_ts: 1700000000000,
};

/** The content that survives redacting an event of `type` with `content`. */
function contentAfter(type: string, content: JsonObject, version: RoomVersion): JsonObject {
  return redactEvent({ ...ESSENTIAL_TOP_LEVEL, type, content }, version).content as JsonObject;
}

t.test('top level: the keys every version keeps', async (t) => {
  for (const version of [v10, ...UPDATED_RULES]) {
    const redacted = redactEvent({ ...ESSENTIAL_TOP_LEVEL, content: { body: 'x' } }, version);
    t.same(redacted, { ...ESSENTIAL_TOP_LEVEL, content: {} }, `v${version.id}`);
  }
});

t.test('top level: v10 keeps origin, membership and prev_state', async (t) => {
  const event = {
    ...ESSENTIAL_TOP_LEVEL,
    content: {},
    origin: 'example.org',
    membership: 'join',
    prev_state: [],
  };
  const redacted = redactEvent(event, v10);
  t.equal(redacted.origin, 'example.org');
  t.equal(redacted.membership, 'join');
  t.same(redacted.prev_state, []);
});

t.test('top level: v11 and v12 drop origin, membership and prev_state', async (t) => {
  const event = {
    ...ESSENTIAL_TOP_LEVEL,
    content: {},
    origin: 'example.org',
    membership: 'join',
    prev_state: [],
  };
  for (const version of UPDATED_RULES) {
    const redacted = redactEvent(event, version);
    t.notOk('origin' in redacted, `v${version.id}: origin`);
    t.notOk('membership' in redacted, `v${version.id}: membership`);
    t.notOk('prev_state' in redacted, `v${version.id}: prev_state`);
  }
});

t.test('top level: unsigned, top-level redacts and unknown keys are dropped in every version', async (t) => {
  const event = { ...ESSENTIAL_TOP_LEVEL, content: {}, unsigned: { age: 1 }, redacts: '$x', custom: 1 };
  const expected = [...Object.keys(ESSENTIAL_TOP_LEVEL), 'content'].sort();
  for (const version of [v10, ...UPDATED_RULES]) {
    t.same(Object.keys(redactEvent(event, version)).sort(), expected, `v${version.id}`);
  }
});

t.test('content is always present, even when the event had none or a non-object', async (t) => {
  t.same(redactEvent(ESSENTIAL_TOP_LEVEL, v11).content, {}, 'no content');
  t.same(redactEvent({ ...ESSENTIAL_TOP_LEVEL, content: 'text' }, v10).content, {}, 'string content');
});

t.test('m.room.member, v10: membership and join_authorised_via_users_server', async (t) => {
  const content = {
    membership: 'join',
    join_authorised_via_users_server: '@admin:example.org',
    displayname: 'Alice',
    avatar_url: 'mxc://example.org/a',
    reason: 'hi',
    third_party_invite: { display_name: 'a...', signed: { mxid: '@alice:example.org' } },
  };
  t.same(contentAfter('m.room.member', content, v10), {
    membership: 'join',
    join_authorised_via_users_server: '@admin:example.org',
  });
});

t.test('m.room.member, v11/v12: also third_party_invite, reduced to its `signed`', async (t) => {
  const signed = { mxid: '@alice:example.org', token: 'abc', signatures: {} };
  const content = {
    membership: 'invite',
    join_authorised_via_users_server: '@admin:example.org',
    displayname: 'Alice',
    third_party_invite: { display_name: 'a...', signed },
  };
  for (const version of UPDATED_RULES) {
    t.same(
      contentAfter('m.room.member', content, version),
      {
        membership: 'invite',
        join_authorised_via_users_server: '@admin:example.org',
        third_party_invite: { signed },
      },
      `v${version.id}`,
    );
    t.same(
      contentAfter(
        'm.room.member',
        { membership: 'invite', third_party_invite: { display_name: 'x' } },
        version,
      ),
      { membership: 'invite', third_party_invite: {} },
      `v${version.id}: an invite object without signed is kept empty (as Synapse and Ruma do)`,
    );
    t.same(
      contentAfter('m.room.member', { membership: 'invite', third_party_invite: 'junk' }, version),
      { membership: 'invite' },
      `v${version.id}: a non-object third_party_invite is dropped`,
    );
  }
});

t.test('m.room.create, v10: only creator', async (t) => {
  const content = { creator: '@alice:example.org', room_version: '10', 'm.federate': false, predecessor: {} };
  t.same(contentAfter('m.room.create', content, v10), { creator: '@alice:example.org' });
});

t.test('m.room.create, v11/v12: the whole content', async (t) => {
  const content = {
    room_version: '12',
    'm.federate': false,
    additional_creators: ['@bob:example.org'],
    predecessor: { room_id: '!old:example.org' },
    type: 'm.space',
  };
  for (const version of UPDATED_RULES) t.same(contentAfter('m.room.create', content, version), content);
});

t.test('m.room.join_rules: join_rule and allow, in every version', async (t) => {
  const allow = [{ type: 'm.room_membership', room_id: '!space:example.org' }];
  const content = { join_rule: 'restricted', allow, other: true };
  for (const version of [v10, ...UPDATED_RULES]) {
    t.same(
      contentAfter('m.room.join_rules', content, version),
      { join_rule: 'restricted', allow },
      `v${version.id}`,
    );
  }
});

const POWER_LEVELS = {
  ban: 50,
  events: { 'm.room.name': 50 },
  events_default: 0,
  invite: 0,
  kick: 50,
  redact: 50,
  state_default: 50,
  users: { '@alice:example.org': 100 },
  users_default: 0,
  notifications: { room: 50 },
};

t.test('m.room.power_levels, v10: eight keys, not invite or notifications', async (t) => {
  const { invite: _invite, notifications: _notifications, ...kept } = POWER_LEVELS;
  t.same(contentAfter('m.room.power_levels', POWER_LEVELS, v10), kept);
});

t.test('m.room.power_levels, v11/v12: invite as well, still not notifications', async (t) => {
  const { notifications: _notifications, ...kept } = POWER_LEVELS;
  for (const version of UPDATED_RULES) {
    t.same(contentAfter('m.room.power_levels', POWER_LEVELS, version), kept, `v${version.id}`);
  }
});

t.test('m.room.history_visibility: history_visibility, in every version', async (t) => {
  for (const version of [v10, ...UPDATED_RULES]) {
    t.same(
      contentAfter('m.room.history_visibility', { history_visibility: 'shared', x: 1 }, version),
      { history_visibility: 'shared' },
      `v${version.id}`,
    );
  }
});

t.test('m.room.redaction, v10: nothing survives, neither content nor top-level redacts', async (t) => {
  const event = {
    ...ESSENTIAL_TOP_LEVEL,
    type: 'm.room.redaction',
    redacts: '$target',
    content: { reason: 'spam' },
  };
  const redacted = redactEvent(event, v10);
  t.same(redacted.content, {});
  t.notOk('redacts' in redacted);
  t.same(
    contentAfter('m.room.redaction', { redacts: '$target' }, v10),
    {},
    'content.redacts is not kept in v10',
  );
});

t.test('m.room.redaction, v11/v12: content.redacts survives', async (t) => {
  for (const version of UPDATED_RULES) {
    t.same(
      contentAfter('m.room.redaction', { redacts: '$target', reason: 'spam' }, version),
      { redacts: '$target' },
      `v${version.id}`,
    );
  }
});

t.test('other types lose all content, including keys another type would keep', async (t) => {
  for (const version of [v10, ...UPDATED_RULES]) {
    t.same(
      contentAfter('m.room.aliases', { aliases: ['#a:example.org'] }, version),
      {},
      'aliases (kept only before v6)',
    );
    t.same(contentAfter('m.room.message', { body: 'x', membership: 'join', creator: '@a:b' }, version), {});
    t.same(contentAfter('m.room.name', { name: 'Room' }, version), {});
  }
});

t.test('the input event is not modified', async (t) => {
  const event: Pdu = {
    ...ESSENTIAL_TOP_LEVEL,
    type: 'm.room.member',
    state_key: '@alice:example.org',
    content: { membership: 'join', displayname: 'Alice' },
    unsigned: { age: 1 },
  };
  const before = JSON.stringify(event);
  const redacted: Pdu = redactEvent(event, v11);
  t.equal(JSON.stringify(event), before);
  t.same(redacted.content, { membership: 'join' });
});

t.test('event types named like Object.prototype members are ordinary types', async (t) => {
  for (const version of [v10, ...UPDATED_RULES]) {
    for (const type of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      t.same(contentAfter(type, { a: 1 }, version), {}, `v${version.id}: ${type}`);
    }
  }
});

t.test('content keys of room versions 1 to 9', async (t) => {
  // rooms/fragments/v1-redactions.md (v1-v5), v6-redactions.md (v6, v7), v8.md, v9-redactions.md.
  const member = { membership: 'join', join_authorised_via_users_server: '@a:x', displayname: 'A' };
  const joinRules = { join_rule: 'restricted', allow: [], other: 1 };
  const aliases = { aliases: ['#a:x'], other: 1 };
  for (let n = 1; n <= 9; n++) {
    const version = ROOM_VERSIONS[String(n) as '1'];
    t.same(
      contentAfter('m.room.member', member, version),
      n >= 9 ? { membership: 'join', join_authorised_via_users_server: '@a:x' } : { membership: 'join' },
      `v${n}: member`,
    );
    t.same(
      contentAfter('m.room.join_rules', joinRules, version),
      n >= 8 ? { join_rule: 'restricted', allow: [] } : { join_rule: 'restricted' },
      `v${n}: join rules`,
    );
    t.same(
      contentAfter('m.room.aliases', aliases, version),
      n <= 5 ? { aliases: ['#a:x'] } : {},
      `v${n}: aliases`,
    );
    t.same(contentAfter('m.room.create', { creator: '@a:x', other: 1 }, version), { creator: '@a:x' });
  }
  t.same(contentAfter('m.room.aliases', aliases, v10), {}, 'v10: aliases lose their content');
});
