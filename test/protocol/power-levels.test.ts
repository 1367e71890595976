// Power level helpers: defaults from the m.room.power_levels schema and the v12 creators.
import t from 'tap';
import {
  canSendEvent,
  isPowerLevelValue,
  isRoomCreator,
  mayRedact,
  maySendState,
  namedLevel,
  notificationLevel,
  parsePowerLevel,
  redactionTakesEffect,
  requiredLevelForEvent,
  roomCreator,
  roomCreators,
  userPowerLevel,
  usersDefaultLevel,
} from '../../src/protocol/power-levels.ts';
import { ROOM_VERSIONS } from '../../src/protocol/room-versions.ts';
import { ALICE, BOB, CAROL, MALLORY } from './auth-rules-fixtures.ts';

const v10 = ROOM_VERSIONS['10'];
const v11 = ROOM_VERSIONS['11'];
const v12 = ROOM_VERSIONS['12'];

const create10 = { sender: ALICE, content: { creator: ALICE, room_version: '10' } };
const create11 = { sender: ALICE, content: { room_version: '11' } };
const create12 = { sender: ALICE, content: { room_version: '12', additional_creators: [BOB, 7, BOB] } };

t.test('creators', async (t) => {
  t.equal(roomCreator(create10, v10), ALICE, 'v10: content.creator');
  t.equal(roomCreator({ sender: ALICE, content: { creator: BOB } }, v10), BOB, 'v10 ignores the sender');
  t.equal(roomCreator({ sender: ALICE, content: {} }, v10), undefined, 'v10 without creator');
  t.equal(roomCreator({ sender: ALICE, content: { creator: BOB } }, v11), ALICE, 'v11: the sender');
  t.same(roomCreators(create11, v11), [ALICE], 'v11: one creator');
  t.same(
    roomCreators({ ...create11, content: { additional_creators: [BOB] } }, v11),
    [ALICE],
    'v11 ignores additional_creators',
  );
  t.same(roomCreators(create12, v12), [ALICE, BOB], 'v12: sender and additional creators, strings once');
  t.ok(isRoomCreator(BOB, create12, v12));
  t.notOk(isRoomCreator(CAROL, create12, v12));
  t.notOk(isRoomCreator(BOB, create12, v11), 'not in v11');
});

t.test('userPowerLevel without a power levels event', async (t) => {
  t.equal(userPowerLevel(ALICE, undefined, create10, v10), 100, 'v10 creator');
  t.equal(userPowerLevel(BOB, undefined, create10, v10), 0, 'v10 others');
  t.equal(
    userPowerLevel(BOB, undefined, { sender: ALICE, content: { creator: BOB } }, v10),
    100,
    'v10 by creator',
  );
  t.equal(userPowerLevel(ALICE, undefined, create11, v11), 100, 'v11 creator');
  t.equal(userPowerLevel(BOB, undefined, create11, v11), 0, 'v11 others');
  t.equal(userPowerLevel(ALICE, undefined, create12, v12), Infinity, 'v12 creator');
  t.equal(userPowerLevel(BOB, undefined, create12, v12), Infinity, 'v12 additional creator');
  t.equal(userPowerLevel(CAROL, undefined, create12, v12), 0, 'v12 others');
  t.equal(userPowerLevel(ALICE, undefined, undefined, v11), 0, 'no create event known');
});

t.test('userPowerLevel with a power levels event', async (t) => {
  const pl = { content: { users: { [ALICE]: 100, [CAROL]: 50, [MALLORY]: '75' }, users_default: 5 } };
  t.equal(userPowerLevel(ALICE, pl, create11, v11), 100);
  t.equal(userPowerLevel(CAROL, pl, create11, v11), 50);
  t.equal(userPowerLevel(BOB, pl, create11, v11), 5, 'users_default');
  t.equal(userPowerLevel(MALLORY, pl, create11, v11), 5, 'a string level is ignored');
  t.equal(userPowerLevel(BOB, { content: { users: {} } }, create11, v11), 0, 'users_default defaults to 0');
  t.equal(userPowerLevel(ALICE, { content: {} }, create11, v11), 0, 'v11: a creator not listed is at 0');
  t.equal(userPowerLevel(ALICE, { content: {} }, create12, v12), Infinity, 'v12: creators need no entry');
  t.equal(
    userPowerLevel(BOB, { content: { users: { [BOB]: 3 } } }, create12, v12),
    Infinity,
    'v12: nor heed one',
  );
  t.equal(usersDefaultLevel(pl), 5);
  t.equal(usersDefaultLevel(undefined), 0);
});

t.test('requiredLevelForEvent', async (t) => {
  t.equal(requiredLevelForEvent('m.room.topic', true, undefined), 50, 'state without a PL event');
  t.equal(requiredLevelForEvent('m.room.message', false, undefined), 0, 'message without a PL event');
  const pl = {
    content: { state_default: 20, events_default: 10, events: { 'm.room.name': 70, 'm.custom': 0 } },
  };
  t.equal(requiredLevelForEvent('m.room.topic', true, pl), 20, 'state_default');
  t.equal(requiredLevelForEvent('m.room.message', false, pl), 10, 'events_default');
  t.equal(requiredLevelForEvent('m.room.name', true, pl), 70, 'events entry for a state event');
  t.equal(requiredLevelForEvent('m.room.name', false, pl), 70, 'events entry regardless of state-ness');
  t.equal(requiredLevelForEvent('m.custom', true, pl), 0, 'an entry of 0 wins over state_default');
  t.equal(requiredLevelForEvent('m.room.topic', true, { content: {} }), 50, 'state_default defaults to 50');
  t.equal(requiredLevelForEvent('m.room.message', false, { content: {} }), 0, 'events_default defaults to 0');
});

t.test('namedLevel and notificationLevel', async (t) => {
  t.equal(namedLevel('invite', undefined), 0);
  t.equal(namedLevel('kick', undefined), 50);
  t.equal(namedLevel('ban', undefined), 50);
  t.equal(namedLevel('redact', undefined), 50);
  const pl = { content: { invite: 10, kick: 20, ban: 30, redact: 40, notifications: { room: 5 } } };
  t.equal(namedLevel('invite', pl), 10);
  t.equal(namedLevel('kick', pl), 20);
  t.equal(namedLevel('ban', pl), 30);
  t.equal(namedLevel('redact', pl), 40);
  t.equal(namedLevel('ban', { content: { ban: 1.5 } }), 50, 'a float is ignored');
  t.equal(notificationLevel('room', pl), 5);
  t.equal(notificationLevel('room', undefined), 50);
  t.equal(notificationLevel('room', { content: { notifications: 'x' } }), 50, 'malformed notifications');
});

t.test('canSendEvent and isPowerLevelValue', async (t) => {
  const pl = { content: { users: { [CAROL]: 50 } } };
  t.ok(canSendEvent(CAROL, 'm.room.topic', true, pl, create11, v11));
  t.notOk(canSendEvent(BOB, 'm.room.topic', true, pl, create11, v11));
  t.ok(canSendEvent(BOB, 'm.room.message', false, pl, create11, v11));
  t.ok(canSendEvent(ALICE, 'm.room.topic', true, { content: { state_default: 2 ** 53 - 1 } }, create12, v12));

  t.ok(isPowerLevelValue(0));
  t.ok(isPowerLevelValue(-(2 ** 53) + 1));
  t.ok(isPowerLevelValue(2 ** 53 - 1));
  t.notOk(isPowerLevelValue(2 ** 53));
  t.notOk(isPowerLevelValue(1.5));
  t.notOk(isPowerLevelValue('1'));
  t.notOk(isPowerLevelValue(Infinity));
  t.notOk(isPowerLevelValue(null));
});

t.test('parsePowerLevel: integers everywhere, integer strings in v1-v9, floats in v1-v5', async (t) => {
  const v5 = ROOM_VERSIONS['5'];
  const v9 = ROOM_VERSIONS['9'];
  for (const version of [undefined, v5, v9, v10]) {
    t.equal(parsePowerLevel(50, version), 50);
    t.equal(parsePowerLevel(-7, version), -7);
    t.equal(parsePowerLevel(2 ** 53, version), undefined, 'outside the canonical JSON range');
    for (const bad of [null, true, {}, [], '', 'fifty', '5 0', '1e3', '0x10', '12.5', '++1']) {
      t.equal(parsePowerLevel(bad, version), undefined, `v${version?.id ?? '-'}: ${JSON.stringify(bad)}`);
    }
  }
  // rooms/fragments/v1-stringy-power-levels.md: leading zeroes, a sign, surrounding whitespace.
  for (const [text, level] of [
    ['100', 100],
    ['000100', 100],
    ['+100', 100],
    ['-100', -100],
    [' 100 ', 100],
    [' 00100 ', 100],
    [' +100 ', 100],
    [' -100 ', -100],
    ['-0', 0],
  ] as const) {
    t.equal(parsePowerLevel(text, v9), level, `v9: ${JSON.stringify(text)}`);
    t.equal(parsePowerLevel(text, v5), level, `v5: ${JSON.stringify(text)}`);
    t.equal(parsePowerLevel(text, v10), undefined, `v10: ${JSON.stringify(text)}`);
    t.equal(parsePowerLevel(text), undefined, `no version: ${JSON.stringify(text)}`);
  }
  t.ok(Object.is(parsePowerLevel('-0', v9), 0), '-0 reads as 0');
  // rooms/fragments/v1-floaty-power-levels.md: truncated at the decimal point.
  t.equal(parsePowerLevel(5.114698e4, v5), 51146);
  t.equal(parsePowerLevel(50.57, v5), 50);
  t.equal(parsePowerLevel(-0.5, v5), 0);
  t.equal(parsePowerLevel(50.57, ROOM_VERSIONS['6']), undefined, 'v6 enforces canonical JSON');
  // The readers take the version too.
  const stringy = { content: { users: { [BOB]: '75' }, ban: '20', events: { 'm.room.name': '5' } } };
  t.equal(userPowerLevel(BOB, stringy, undefined, v9), 75);
  t.equal(userPowerLevel(BOB, stringy, undefined, v10), 0);
  t.equal(namedLevel('ban', stringy, v9), 20);
  t.equal(namedLevel('ban', stringy), 50);
  t.equal(requiredLevelForEvent('m.room.name', true, stringy, v9), 5);
  t.equal(requiredLevelForEvent('m.room.name', true, stringy), 50);
});

t.test('maySendState: the required level, and user-ID state keys for their owner only', async (t) => {
  const pl = { content: { users: { [ALICE]: 100, [BOB]: 50 }, events: { 'm.room.name': 60 } } };
  for (const rv of [ROOM_VERSIONS['1'], v10, v11]) {
    t.ok(maySendState(BOB, 'm.room.topic', '', pl, undefined, rv), `v${rv.id}: bob at state_default 50`);
    t.notOk(maySendState(BOB, 'm.room.name', '', pl, undefined, rv), `v${rv.id}: below the name's 60`);
    t.notOk(maySendState(CAROL, 'm.room.topic', '', pl, undefined, rv), `v${rv.id}: carol at 0`);
    t.ok(maySendState(BOB, 'x.y', BOB, pl, undefined, rv), `v${rv.id}: his own user-ID state key`);
    t.notOk(maySendState(ALICE, 'x.y', BOB, pl, undefined, rv), `v${rv.id}: not someone else's`);
  }
  const create = { sender: ALICE, content: {} };
  t.ok(
    maySendState(ALICE, 'm.room.name', '', { content: { state_default: 9000 } }, create, v12),
    'v12 creator',
  );
  t.ok(
    maySendState(
      BOB,
      'm.room.topic',
      '',
      { content: { state_default: '40', users: { [BOB]: '50' } } },
      undefined,
      ROOM_VERSIONS['9'],
    ),
    'v9: string levels',
  );
});

t.test('mayRedact: own events always, others with the redact level', async (t) => {
  const pl = { content: { users: { [ALICE]: 100, [CAROL]: 50 }, redact: 60 } };
  t.ok(mayRedact(BOB, BOB, pl, undefined, v10), 'bob redacts his own event at 0');
  t.notOk(mayRedact(CAROL, BOB, pl, undefined, v10), 'carol (50) below redact 60');
  t.ok(mayRedact(ALICE, BOB, pl, undefined, v10), 'alice (100)');
  t.ok(
    mayRedact(CAROL, BOB, { content: { users: { [CAROL]: 50 } } }, undefined, v10),
    'redact defaults to 50',
  );
  t.ok(
    mayRedact(ALICE, BOB, { content: { redact: 9000 } }, { sender: ALICE, content: {} }, v12),
    'v12 creator',
  );
});

t.test("redactionTakesEffect: the redact level or the original sender's server", async (t) => {
  const pl = { content: { users: { [ALICE]: 100 }, redact: 60 } };
  t.ok(redactionTakesEffect(ALICE, BOB, pl, undefined, v10), 'the redact level');
  t.ok(redactionTakesEffect('@other:b.test', BOB, pl, undefined, v10), "a user on bob's server");
  t.notOk(redactionTakesEffect(MALLORY, BOB, pl, undefined, v10), 'another server below the level');
});
