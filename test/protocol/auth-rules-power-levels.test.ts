// Auth rule 9 (v12 rule 10): m.room.power_levels.
import t from 'tap';
import { stateTuple } from '../../src/protocol/event.ts';
import type { JsonObject } from '../../src/protocol/json.ts';
import {
  ALICE,
  allows,
  BOB,
  CAROL,
  MALLORY,
  refuses,
  standardRoom,
  TestRoom,
  VERSION_IDS,
  versionsWith,
} from './auth-rules-fixtures.ts';

const DAVE = '@dave:d.test';

/**
 * The power-levels sub-rule as numbered in the room's version. `sub` is the v10/v11 number; v12
 * inserts 10.4, so v11 9.4 and later are one higher there.
 */
function pl(room: TestRoom, sub: string): string {
  if (!room.v12) return room.rule(`9.${sub}`, '');
  const [first, ...rest] = sub.split('.');
  const n = Number(first);
  return [`10`, String(n >= 4 ? n + 1 : n), ...rest].join('.');
}

/** alice's room with carol (50), dave (50) and bob (10) joined, plus extra power levels content. */
function moderatedRoom(id: (typeof VERSION_IDS)[number], extra: JsonObject = {}): TestRoom {
  const room = standardRoom(id, { users: { [CAROL]: 50, [DAVE]: 50, [BOB]: 10 }, powerLevels: extra });
  room.setMembership(CAROL, 'join').setMembership(DAVE, 'join').setMembership(BOB, 'join');
  return room;
}

/** A power levels event by `sender` whose content is the current one changed by `edit`. */
function change(room: TestRoom, sender: string, edit: (content: JsonObject) => void) {
  const current = room.state.get(stateTuple('m.room.power_levels', ''));
  const content = structuredClone(current?.content ?? {}) as JsonObject;
  edit(content);
  return room.powerLevels(sender, content);
}

function users(content: JsonObject): JsonObject {
  return content.users as JsonObject;
}

t.test('9.1 (v12 10.1): single levels are integers (v10+)', async (t) => {
  for (const id of versionsWith('integerPowerLevels')) {
    const room = standardRoom(id);
    for (const key of [
      'users_default',
      'events_default',
      'state_default',
      'ban',
      'redact',
      'kick',
      'invite',
    ]) {
      for (const bad of ['50', 1.5, true, null, {}, 2 ** 53]) {
        refuses(
          t,
          room.check(change(room, ALICE, (c) => (c[key] = bad as never))),
          pl(room, '1'),
          `v${id}: ${key} = ${JSON.stringify(bad)}`,
        );
      }
      allows(t, room.check(change(room, ALICE, (c) => (c[key] = -5))), `v${id}: ${key} = -5`);
    }
  }
});

t.test('9.2 (v12 10.2): events and notifications map to integers (v10+)', async (t) => {
  for (const id of versionsWith('integerPowerLevels')) {
    const room = standardRoom(id);
    for (const key of ['events', 'notifications']) {
      for (const bad of [[], 'x', 5, null, { 'm.room.name': '50' }, { room: 50.5 }, { a: 1, b: null }]) {
        refuses(
          t,
          room.check(change(room, ALICE, (c) => (c[key] = bad as never))),
          pl(room, '2'),
          `v${id}: ${key} = ${JSON.stringify(bad)}`,
        );
      }
      allows(
        t,
        room.check(change(room, ALICE, (c) => (c[key] = { 'm.room.name': 50, x: 0 }))),
        `v${id}: ${key}`,
      );
      allows(t, room.check(change(room, ALICE, (c) => (c[key] = {}))), `v${id}: empty ${key}`);
    }
  }
});

t.test('9.3 (v12 10.3, v6-v9 9.1, v1-v5 10.1): users maps user IDs to integers', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id);
    const version = room.version;
    const bads: Array<[unknown, string]> = [
      [[], 'an array'],
      ['@bob:b.test', 'a string'],
      [{ [BOB]: '5 0' }, 'a string that is no integer'],
      [{ [BOB]: null }, 'null'],
      ...(version.integerPowerLevels
        ? ([[{ [BOB]: '50' }, 'a string level']] as Array<[unknown, string]>)
        : []),
      ...(version.strictCanonicalJson
        ? ([[{ [BOB]: 12.5 }, 'a float level']] as Array<[unknown, string]>)
        : []),
      [{ bob: 50 }, 'a key without sigil'],
      [{ '@bob': 50 }, 'a key without server'],
      [{ '@bob:bad server': 50 }, 'a key with a bad server name'],
    ];
    for (const [bad, label] of bads) {
      refuses(
        t,
        room.check(change(room, ALICE, (c) => (c.users = bad as never))),
        pl(room, '3'),
        `v${id}: users is ${label}`,
      );
    }
    allows(
      t,
      room.check(change(room, ALICE, (c) => Object.assign(users(c), { '@Old.Style:b.test:8448': 5 }))),
      `v${id}: historical localparts and ports are user IDs`,
    );
    if (room.v12) {
      allows(t, room.check(change(room, ALICE, (c) => delete c.users)), 'v12: users may be absent');
    }
  }
});

t.test('v12 10.4: creators cannot be listed in users', async (t) => {
  const room = standardRoom('12', { createContent: { additional_creators: [BOB] } });
  room.setMembership(BOB, 'join');
  refuses(t, room.check(change(room, ALICE, (c) => (users(c)[ALICE] = 100))), '10.4', 'alice lists herself');
  refuses(t, room.check(change(room, ALICE, (c) => (users(c)[BOB] = 0))), '10.4', 'alice lists bob');
  refuses(t, room.check(change(room, BOB, (c) => (users(c)[BOB] = 1))), '10.4', 'bob lists himself');
  allows(t, room.check(change(room, ALICE, (c) => (users(c)[CAROL] = 100))), 'non-creators can be listed');

  // Applies to the first power levels event too (10.4 comes before 10.5).
  const fresh = new TestRoom('12');
  fresh.setMembership(ALICE, 'join');
  refuses(t, fresh.check(fresh.powerLevels(ALICE, { users: { [ALICE]: 100 } })), '10.4', 'first event');

  // Nothing like this before v12.
  const v11 = standardRoom('11');
  allows(t, v11.check(change(v11, ALICE, (c) => (users(c)[ALICE] = 100))), 'v11: the creator is listed');
});

t.test('9.4 (v12 10.5): the first power levels event', async (t) => {
  for (const id of VERSION_IDS) {
    const room = new TestRoom(id);
    room.setMembership(ALICE, 'join').setMembership(BOB, 'join');
    const generous = { users: { [BOB]: 1000 }, ban: 9000, events: { 'm.room.name': 500 } };
    allows(t, room.check(room.powerLevels(ALICE, generous)), `v${id}: the creator sets any levels`);
    refuses(t, room.check(room.powerLevels(BOB, { users: {} })), room.rule('7', '8'), `v${id}: bob needs 50`);
  }
});

t.test('9.5 (v12 10.6): changing single levels', async (t) => {
  for (const id of VERSION_IDS) {
    const room = moderatedRoom(id, { kick: 75, redact: 60, ban: 50 });
    allows(t, room.check(change(room, CAROL, (c) => (c.ban = 40))), `v${id}: lower ban from 50 to 40`);
    allows(t, room.check(change(room, CAROL, (c) => (c.invite = 50))), `v${id}: add invite at her level`);
    allows(t, room.check(change(room, CAROL, (c) => (c.state_default = 50))), `v${id}: add state_default 50`);
    refuses(t, room.check(change(room, CAROL, (c) => (c.kick = 50))), pl(room, '5.1'), `v${id}: kick was 75`);
    refuses(
      t,
      room.check(change(room, CAROL, (c) => delete c.redact)),
      pl(room, '5.1'),
      `v${id}: remove redact 60`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (c.invite = 51))),
      pl(room, '5.2'),
      `v${id}: add invite 51`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (c.ban = 60))),
      pl(room, '5.2'),
      `v${id}: raise ban to 60`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (c.users_default = 51))),
      pl(room, '5.2'),
      `v${id}: users_default above her`,
    );
    allows(t, room.check(change(room, CAROL, () => {})), `v${id}: unchanged values above her are fine`);
    allows(t, room.check(change(room, ALICE, (c) => (c.kick = 100))), `v${id}: alice raises kick to 100`);
  }
});

t.test('9.6 and 9.7 (v12 10.7, 10.8): events and notifications entries (notifications: v6+)', async (t) => {
  for (const id of versionsWith('notificationsInPowerLevelRules')) {
    const room = moderatedRoom(id, {
      events: { 'm.room.name': 40, 'm.room.tombstone': 60 },
      notifications: { room: 60 },
    });
    const events = (c: JsonObject) => c.events as JsonObject;
    const notifications = (c: JsonObject) => c.notifications as JsonObject;
    allows(t, room.check(change(room, CAROL, (c) => (events(c)['m.room.name'] = 50))), `v${id}: 40 to 50`);
    allows(t, room.check(change(room, CAROL, (c) => delete events(c)['m.room.name'])), `v${id}: remove 40`);
    allows(t, room.check(change(room, CAROL, (c) => (events(c)['m.room.topic'] = 50))), `v${id}: add at 50`);
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (events(c)['m.room.tombstone'] = 50))),
      pl(room, '6.1'),
      `v${id}: change an entry above her`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => delete events(c)['m.room.tombstone'])),
      pl(room, '6.1'),
      `v${id}: remove an entry above her`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => delete c.events)),
      pl(room, '6.1'),
      `v${id}: remove the whole events map`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (notifications(c).room = 0))),
      pl(room, '6.1'),
      `v${id}: lower notifications.room from 60`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (events(c)['m.room.topic'] = 51))),
      pl(room, '7.1'),
      `v${id}: add an entry above her`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (events(c)['m.room.name'] = 51))),
      pl(room, '7.1'),
      `v${id}: raise an entry above her`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (notifications(c).other = 51))),
      pl(room, '7.1'),
      `v${id}: add a notifications entry above her`,
    );
  }
});

t.test('9.8 and 9.9 (v12 10.9, 10.10): users entries', async (t) => {
  for (const id of VERSION_IDS) {
    const room = moderatedRoom(id);
    allows(
      t,
      room.check(change(room, CAROL, (c) => (users(c)[BOB] = 20))),
      `v${id}: raise bob from 10 to 20`,
    );
    allows(
      t,
      room.check(change(room, CAROL, (c) => (users(c)[BOB] = 50))),
      `v${id}: raise bob to her own level`,
    );
    allows(t, room.check(change(room, CAROL, (c) => delete users(c)[BOB])), `v${id}: remove bob`);
    allows(t, room.check(change(room, CAROL, (c) => (users(c)[MALLORY] = 50))), `v${id}: add mallory at 50`);
    allows(t, room.check(change(room, CAROL, (c) => (users(c)[CAROL] = 10))), `v${id}: lower herself`);
    allows(t, room.check(change(room, CAROL, (c) => delete users(c)[CAROL])), `v${id}: remove herself`);
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (users(c)[DAVE] = 10))),
      pl(room, '8.1'),
      `v${id}: lower dave, at her level`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => delete users(c)[DAVE])),
      pl(room, '8.1'),
      `v${id}: remove dave, at her level`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (users(c)[BOB] = 51))),
      pl(room, '9.1'),
      `v${id}: raise bob above her`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (users(c)[CAROL] = 51))),
      pl(room, '9.1'),
      `v${id}: raise herself above her level`,
    );
    refuses(
      t,
      room.check(change(room, CAROL, (c) => (users(c)[MALLORY] = 60))),
      pl(room, '9.1'),
      `v${id}: add mallory above her`,
    );
    if (!room.v12) {
      refuses(
        t,
        room.check(change(room, CAROL, (c) => (users(c)[ALICE] = 0))),
        pl(room, '8.1'),
        `v${id}: demote alice at 100`,
      );
    }
  }
});

t.test('rule 7 applies to power levels events first', async (t) => {
  for (const id of VERSION_IDS) {
    const room = moderatedRoom(id);
    refuses(
      t,
      room.check(change(room, BOB, (c) => (users(c)[BOB] = 10))),
      room.rule('7', '8'),
      `v${id}: bob (10) below state_default 50`,
    );
  }
});

t.test('equal levels: v10/v11 creators are bound by them, v12 creators are not', async (t) => {
  for (const id of VERSION_IDS) {
    const room = moderatedRoom(id, { ban: 100 });
    room.apply(change(room, ALICE, (c) => (users(c)[DAVE] = 100)));
    const demoteDave = change(room, ALICE, (c) => (users(c)[DAVE] = 0));
    const maxEverything = change(room, ALICE, (c) => {
      c.ban = 9007199254740991;
      c.events = { 'm.room.name': 9007199254740991 };
      users(c)[CAROL] = 9007199254740991;
    });
    if (room.v12) {
      allows(t, room.check(demoteDave), 'v12: alice demotes dave at 100');
      allows(t, room.check(maxEverything), 'v12: alice sets anything to the maximum');
    } else {
      refuses(t, room.check(demoteDave), pl(room, '8.1'), `v${id}: alice (100) cannot demote dave (100)`);
      refuses(t, room.check(maxEverything), pl(room, '5.2'), `v${id}: nor raise levels above 100`);
    }
  }
});
