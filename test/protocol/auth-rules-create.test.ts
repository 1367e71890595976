// Auth rule 1 (m.room.create), v12 rule 2 (room ID names the create event), v10/v11 rule 2.4 as
// applied to a state map, and rule 3 / v12 rule 4 (m.federate).
import t from 'tap';
import { checkAuth, ruleNumber } from '../../src/protocol/auth-rules.ts';
import { ROOM_VERSIONS } from '../../src/protocol/room-versions.ts';
import {
  ALICE,
  allows,
  BOB,
  createContentFor,
  makeEvent,
  refuses,
  standardRoom,
  TestRoom,
  VERSION_IDS,
} from './auth-rules-fixtures.ts';

const v10 = ROOM_VERSIONS['10'];
const v11 = ROOM_VERSIONS['11'];
const v12 = ROOM_VERSIONS['12'];

t.test('ruleNumber keeps v10/v11 numbers and shifts them for v12', async (t) => {
  t.equal(ruleNumber(v10, '4.3.2'), '4.3.2');
  t.equal(ruleNumber(v11, '9.8.1'), '9.8.1');
  t.equal(ruleNumber(v12, '1.1'), '1.1', 'rule 1 keeps its number');
  t.equal(ruleNumber(v12, '2.1'), '3.1', 'auth events rules move to 3');
  t.equal(ruleNumber(v12, '2.5'), '3.4', 'v12 drops 2.4, so the room_id rule is the fourth');
  t.equal(ruleNumber(v12, '3'), '4');
  t.equal(ruleNumber(v12, '4.3.5.2'), '5.3.5.2');
  t.equal(ruleNumber(v12, '8'), '9');
  t.equal(ruleNumber(v12, '9.3'), '10.3', 'power levels rules before the new 10.4 keep their place');
  t.equal(ruleNumber(v12, '9.4'), '10.5', 'and those after it move up');
  t.equal(ruleNumber(v12, '9.9.1'), '10.10.1');
});

t.test('rule 1: m.room.create in v10', async (t) => {
  const good = () =>
    makeEvent({
      type: 'm.room.create',
      sender: ALICE,
      state_key: '',
      room_id: '!r:a.test',
      prev_events: [],
      content: { creator: ALICE, room_version: '10' },
    });
  allows(t, checkAuth(good(), new Map(), v10), 'a well-formed create event');

  const withPrev = good();
  withPrev.prev_events = ['$earlier'];
  refuses(t, checkAuth(withPrev, new Map(), v10), '1.1', 'prev_events');

  const foreignRoom = good();
  foreignRoom.room_id = '!r:b.test';
  refuses(t, checkAuth(foreignRoom, new Map(), v10), '1.2', 'room_id on another server than the sender');

  const noRoom = good();
  delete noRoom.room_id;
  refuses(t, checkAuth(noRoom, new Map(), v10), '1.2', 'no room_id');

  const badVersion = good();
  badVersion.content.room_version = '999';
  refuses(t, checkAuth(badVersion, new Map(), v10), '1.3', 'unknown room_version');

  const numericVersion = good();
  numericVersion.content.room_version = 10;
  refuses(t, checkAuth(numericVersion, new Map(), v10), '1.3', 'non-string room_version');

  const noVersion = good();
  delete noVersion.content.room_version;
  allows(t, checkAuth(noVersion, new Map(), v10), 'room_version is optional');

  const noCreator = good();
  delete noCreator.content.creator;
  refuses(t, checkAuth(noCreator, new Map(), v10), '1.4', 'v10 needs content.creator');
});

t.test('rule 1: m.room.create in v11', async (t) => {
  const event = makeEvent({
    type: 'm.room.create',
    sender: ALICE,
    state_key: '',
    room_id: '!r:a.test',
    prev_events: [],
    content: { room_version: '11' },
  });
  allows(t, checkAuth(event, new Map(), v11), 'no creator property needed');
  event.room_id = '!r:b.test';
  refuses(t, checkAuth(event, new Map(), v11), '1.2', 'room_id domain still checked');
  event.room_id = '!r:a.test';
  event.prev_events = ['$x'];
  refuses(t, checkAuth(event, new Map(), v11), '1.1', 'prev_events');
  event.prev_events = [];
  event.content.room_version = 'v11';
  refuses(t, checkAuth(event, new Map(), v11), '1.3', 'unknown room_version');
  event.content.room_version = '11';
  event.content.additional_creators = 'not an array';
  allows(t, checkAuth(event, new Map(), v11), 'additional_creators is not validated before v12');
});

t.test('rule 1: m.room.create in v12', async (t) => {
  const good = () =>
    makeEvent({
      type: 'm.room.create',
      sender: ALICE,
      state_key: '',
      room_id: null,
      prev_events: [],
      content: { room_version: '12' },
    });
  allows(t, checkAuth(good(), new Map(), v12), 'no room_id, no creator');

  const withPrev = good();
  withPrev.prev_events = ['$x'];
  refuses(t, checkAuth(withPrev, new Map(), v12), '1.1', 'prev_events');

  const withRoomId = good();
  withRoomId.room_id = '!r:a.test';
  refuses(t, checkAuth(withRoomId, new Map(), v12), '1.2', 'a room_id, even on the sender’s server');

  const badVersion = good();
  badVersion.content.room_version = '13';
  refuses(t, checkAuth(badVersion, new Map(), v12), '1.3', 'unknown room_version');

  const additional = good();
  additional.content.additional_creators = [BOB, '@carol:c.test:8448'];
  allows(t, checkAuth(additional, new Map(), v12), 'additional_creators of valid user IDs');

  additional.content.additional_creators = [];
  allows(t, checkAuth(additional, new Map(), v12), 'an empty additional_creators');

  for (const [bad, label] of [
    [BOB, 'a string instead of an array'],
    [[BOB, 42], 'a number in the array'],
    [['bob:b.test'], 'no @ sigil'],
    [['@bob'], 'no server name'],
    [['@bob:b_test!'], 'bad server name'],
    [[`@${'x'.repeat(250)}:b.test`], 'longer than 255 bytes'],
  ] as const) {
    const event = good();
    event.content.additional_creators = bad as never;
    refuses(t, checkAuth(event, new Map(), v12), '1.4', `additional_creators: ${label}`);
  }

  const withCreator = good();
  withCreator.content.creator = BOB;
  allows(t, checkAuth(withCreator, new Map(), v12), 'a leftover creator property is ignored');
});

t.test('v12 rule 2: the room ID names an accepted create event', async (t) => {
  const room = standardRoom('12', { joinRule: 'public' });
  const message = room.message(ALICE);
  allows(t, room.check(message), 'room_id is ! + create event ID');

  const elsewhere = room.message(ALICE);
  elsewhere.room_id = '!someotherroom';
  refuses(t, room.check(elsewhere), '2', 'room_id of another create event');

  const withSigilMismatch = room.message(ALICE);
  withSigilMismatch.room_id = room.create.event_id;
  refuses(t, room.check(withSigilMismatch), '2', 'the $ form of the ID is not a room ID');

  const noRoomId = room.message(ALICE);
  delete noRoomId.room_id;
  refuses(t, room.check(noRoomId), '2', 'no room_id');

  const withoutCreate = new Map(room.state);
  withoutCreate.delete(`m.room.create\u0000`);
  refuses(t, checkAuth(message, withoutCreate, room.version), '2', 'create event not supplied');

  refuses(
    t,
    room.check(message, { isRejected: (e) => e.event_id === room.create.event_id }),
    '2',
    'create event was rejected',
  );
  allows(t, room.check(message, { isRejected: () => false }), 'accepted create event');
});

t.test('v10/v11 rule 2.4: no create event in the auth state', async (t) => {
  for (const id of ['10', '11'] as const) {
    const room = standardRoom(id, { joinRule: 'public' });
    const message = room.message(ALICE);
    allows(t, room.check(message), `v${id}: with the create event`);
    const withoutCreate = new Map(room.state);
    withoutCreate.delete(`m.room.create\u0000`);
    refuses(t, checkAuth(message, withoutCreate, room.version), '2.4', `v${id}: without it`);
  }
});

t.test('rule 3 (v12 4): m.federate false keeps other servers out', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { joinRule: 'public', createContent: { 'm.federate': false } });
    const rule = room.rule('3', '4');
    refuses(t, room.check(room.member(BOB, BOB, 'join')), rule, `v${id}: bob (b.test) cannot join`);
    allows(t, room.check(room.member('@dave:a.test', '@dave:a.test', 'join')), `v${id}: dave on a.test can`);

    const federating = standardRoom(id, { joinRule: 'public', createContent: { 'm.federate': true } });
    allows(t, federating.check(federating.member(BOB, BOB, 'join')), `v${id}: m.federate true`);

    // Only `false` counts, not falsy values.
    const stringy = standardRoom(id, { joinRule: 'public', createContent: { 'm.federate': 'false' } });
    allows(t, stringy.check(stringy.member(BOB, BOB, 'join')), `v${id}: m.federate "false" is not false`);

    // Even an already-joined remote user is refused, for any event.
    room.setMembership(BOB, 'join');
    refuses(t, room.check(room.message(BOB)), rule, `v${id}: remote message refused`);
  }
});

t.test('create content helper matches what the rules expect', async (t) => {
  // Guards the fixtures themselves: the rooms they create pass rule 1.
  for (const id of VERSION_IDS) {
    const room = new TestRoom(id);
    allows(t, checkAuth(room.create, new Map(), room.version), `v${id}: fixture create event`);
    t.equal(
      Object.hasOwn(createContentFor(room.version, ALICE), 'creator'),
      Number(id) <= 10,
      `v${id}: creator`,
    );
  }
});
