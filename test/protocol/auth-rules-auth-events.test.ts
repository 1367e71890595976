// The auth events selection algorithm (server-server API) and the rules about the auth_events list:
// v10/v11 rule 2, v12 rule 3 (and v12 rule 2 as checked by checkAuthAgainstAuthEvents).
import t from 'tap';
import {
  authStateFromEvents,
  checkAuthAgainstAuthEvents,
  checkAuthEvents,
  checkAuthEventsMatchSelection,
  createEventIdForRoomId,
  roomIdForCreateEventId,
  type StateKeyPair,
  selectAuthEvents,
} from '../../src/protocol/auth-rules.ts';
import type { RoomEvent } from '../../src/protocol/event.ts';
import { ROOM_VERSIONS } from '../../src/protocol/room-versions.ts';
import {
  ALICE,
  allows,
  BOB,
  CAROL,
  refuses,
  standardRoom,
  TestRoom,
  VERSION_IDS,
} from './auth-rules-fixtures.ts';

function keys(pairs: StateKeyPair[]): string[] {
  return pairs.map((p) => `${p.type}|${p.state_key}`).sort();
}

const CREATE = 'm.room.create|';
const PL = 'm.room.power_levels|';
const JR = 'm.room.join_rules|';
const member = (user: string) => `m.room.member|${user}`;

t.test('selectAuthEvents', async (t) => {
  for (const id of VERSION_IDS) {
    const version = ROOM_VERSIONS[id];
    // The create event is selected before v12 only.
    const base = id === '12' ? [] : [CREATE];
    const select = (type: string, sender: string, content: object, stateKey?: string) =>
      keys(
        selectAuthEvents(
          {
            type,
            sender,
            content: content as never,
            ...(stateKey === undefined ? {} : { state_key: stateKey }),
          },
          version,
        ),
      );
    t.same(select('m.room.create', ALICE, {}, ''), [], `v${id}: create has no auth events`);
    t.same(select('m.room.message', BOB, {}), [...base, PL, member(BOB)].sort(), `v${id}: message`);
    t.same(select('m.room.topic', BOB, {}, ''), [...base, PL, member(BOB)].sort(), `v${id}: state event`);
    t.same(
      select('m.room.member', BOB, { membership: 'join' }, BOB),
      [...base, PL, member(BOB), JR].sort(),
      `v${id}: own join (sender and target once)`,
    );
    t.same(
      select('m.room.member', ALICE, { membership: 'invite' }, BOB),
      [...base, PL, member(ALICE), member(BOB), JR].sort(),
      `v${id}: invite`,
    );
    t.same(
      select('m.room.member', BOB, { membership: 'knock' }, BOB),
      [...base, PL, member(BOB), JR].sort(),
      `v${id}: knock`,
    );
    for (const membership of ['leave', 'ban']) {
      t.same(
        select('m.room.member', ALICE, { membership }, BOB),
        [...base, PL, member(ALICE), member(BOB)].sort(),
        `v${id}: ${membership} needs no join rules`,
      );
    }
    t.same(
      select(
        'm.room.member',
        ALICE,
        { membership: 'invite', third_party_invite: { signed: { token: 'tok' } } },
        BOB,
      ),
      [...base, PL, member(ALICE), member(BOB), JR, 'm.room.third_party_invite|tok'].sort(),
      `v${id}: third-party invite`,
    );
    t.same(
      select('m.room.member', ALICE, { membership: 'invite', third_party_invite: { signed: {} } }, BOB),
      [...base, PL, member(ALICE), member(BOB), JR].sort(),
      `v${id}: third-party invite without a token`,
    );
    t.same(
      select('m.room.member', BOB, { membership: 'join', join_authorised_via_users_server: CAROL }, BOB),
      [...base, PL, member(BOB), JR, ...(version.restrictedJoins ? [member(CAROL)] : [])].sort(),
      version.restrictedJoins
        ? `v${id}: restricted join adds the authoriser`
        : `v${id}: no restricted joins before v8, no authoriser`,
    );
    t.same(
      select('m.room.member', ALICE, { membership: 'invite', join_authorised_via_users_server: CAROL }, BOB),
      [...base, PL, member(ALICE), member(BOB), JR].sort(),
      `v${id}: the authoriser only counts for joins`,
    );
    t.same(
      select('m.room.member', BOB, { membership: 'join' }),
      [...base, PL, member(BOB)].sort(),
      `v${id}: member event without state_key`,
    );
  }
});

/** A room with its events kept by name, for building auth_events lists. */
function roomWithEvents(id: (typeof VERSION_IDS)[number]) {
  const room = standardRoom(id, { joinRule: 'public' });
  const get = (type: string, stateKey: string) => room.state.get(`${type}\u0000${stateKey}`) as RoomEvent;
  const create = get('m.room.create', '');
  const pl = get('m.room.power_levels', '');
  const jr = get('m.room.join_rules', '');
  const aliceJoin = get('m.room.member', ALICE);
  const bobJoin = room.member(BOB, BOB, 'join');
  room.apply(bobJoin);
  return { room, create, pl, jr, aliceJoin, bobJoin };
}

t.test('checkAuthEventsMatchSelection (2.2, v12 3.2)', async (t) => {
  for (const id of VERSION_IDS) {
    const { room, create, pl, jr, aliceJoin, bobJoin } = roomWithEvents(id);
    const message = room.message(BOB);
    const version = room.version;
    const rule = room.rule('2.2', '3.2');
    const own = room.v12 ? [pl, bobJoin] : [create, pl, bobJoin];
    allows(t, checkAuthEventsMatchSelection(message, own, version), `v${id}: the selected events`);
    allows(t, checkAuthEventsMatchSelection(message, [pl], version), `v${id}: a subset`);
    refuses(
      t,
      checkAuthEventsMatchSelection(message, [...own, jr], version),
      rule,
      `v${id}: join rules on a message`,
    );
    refuses(
      t,
      checkAuthEventsMatchSelection(message, [...own, aliceJoin], version),
      rule,
      `v${id}: someone else`,
    );
    const nonState = room.message(ALICE);
    refuses(t, checkAuthEventsMatchSelection(message, [nonState], version), rule, `v${id}: a message event`);
    if (room.v12) {
      refuses(t, checkAuthEventsMatchSelection(message, [create, pl], version), '3.2', 'v12: create listed');
    } else {
      allows(t, checkAuthEventsMatchSelection(message, [create], version), `v${id}: create listed`);
    }
    const tpi = room.event({
      type: 'm.room.third_party_invite',
      sender: ALICE,
      state_key: 'other',
      content: {},
    });
    const invite = room.member(ALICE, BOB, 'invite', { third_party_invite: { signed: { token: 'tok' } } });
    refuses(
      t,
      checkAuthEventsMatchSelection(invite, [tpi], version),
      rule,
      `v${id}: a third-party invite's token`,
    );
  }
});

t.test('checkAuthEvents (v10/v11 rule 2, v12 rule 3)', async (t) => {
  for (const id of VERSION_IDS) {
    const { room, create, pl, jr, aliceJoin, bobJoin } = roomWithEvents(id);
    const message = room.message(BOB);
    const v = room.version;
    const base = room.v12 ? [pl] : [create, pl];
    allows(t, checkAuthEvents(message, [...base, bobJoin], v), `v${id}: a message's auth events`);

    const otherPl = room.powerLevels(ALICE, { users: {} });
    refuses(
      t,
      checkAuthEvents(message, [...base, otherPl, bobJoin], v),
      room.rule('2.1', '3.1'),
      `v${id}: two PLs`,
    );
    refuses(
      t,
      checkAuthEvents(message, [...base, otherPl, bobJoin, jr], v),
      room.rule('2.1', '3.1'),
      `v${id}: duplicates are found before unselected entries`,
    );
    const kick = room.member(ALICE, BOB, 'leave');
    allows(t, checkAuthEvents(kick, [...base, aliceJoin, bobJoin], v), `v${id}: two member events, two keys`);
    refuses(
      t,
      checkAuthEvents(message, [...base, bobJoin, jr], v),
      room.rule('2.2', '3.2'),
      `v${id}: unselected`,
    );

    const rejected = (e: RoomEvent) => e === pl;
    refuses(
      t,
      checkAuthEvents(message, [...base, bobJoin], v, { isRejected: rejected }),
      room.rule('2.3', '3.3'),
      `v${id}: a rejected auth event`,
    );
    allows(
      t,
      checkAuthEvents(message, [...base, bobJoin], v, { isRejected: () => false }),
      `v${id}: none rejected`,
    );

    if (room.v12) {
      allows(t, checkAuthEvents(message, [pl, bobJoin], v), 'v12: no create event needed');
    } else {
      refuses(t, checkAuthEvents(message, [pl, bobJoin], v), '2.4', `v${id}: no create event`);
    }

    const foreign = { ...bobJoin, room_id: '!elsewhere:b.test' };
    refuses(
      t,
      checkAuthEvents(message, [...base, foreign], v),
      room.rule('2.5', '3.4'),
      `v${id}: an auth event from another room`,
    );

    allows(t, checkAuthEvents(create, [pl, pl], v), `v${id}: create events are left to rule 1`);
  }
});

t.test('checkAuthAgainstAuthEvents', async (t) => {
  for (const id of VERSION_IDS) {
    const { room, create, pl, bobJoin } = roomWithEvents(id);
    const message = room.message(BOB);
    const v = room.version;
    const listed = room.v12 ? [pl, bobJoin] : [create, pl, bobJoin];
    allows(t, checkAuthAgainstAuthEvents(message, listed, v, { createEvent: create }), `v${id}: allowed`);
    refuses(
      t,
      checkAuthAgainstAuthEvents(
        message,
        listed.filter((e) => e !== bobJoin),
        v,
        { createEvent: create },
      ),
      room.rule('5', '6'),
      `v${id}: the auth events do not show bob joined`,
    );
    refuses(
      t,
      checkAuthAgainstAuthEvents(message, [...listed, pl], v, { createEvent: create }),
      room.rule('2.1', '3.1'),
      `v${id}: duplicate auth events`,
    );

    const badCreate = room.event({ type: 'm.room.create', sender: ALICE, state_key: '', content: {} });
    badCreate.prev_events = ['$x'];
    refuses(t, checkAuthAgainstAuthEvents(badCreate, [], v), '1.1', `v${id}: rule 1 for create events`);

    if (room.v12) {
      allows(t, checkAuthAgainstAuthEvents(message, listed, v, { createEvent: create }), 'v12: create given');
      refuses(t, checkAuthAgainstAuthEvents(message, listed, v), '2', 'v12: create not given');
      const other = new TestRoom('12', { createEventId: '$other' });
      refuses(
        t,
        checkAuthAgainstAuthEvents(message, listed, v, { createEvent: other.create }),
        '2',
        'v12: the create event of another room',
      );
      refuses(
        t,
        checkAuthAgainstAuthEvents(message, [...listed, pl], v),
        '2',
        'v12: rule 2 is checked before the auth events rules',
      );
      refuses(
        t,
        checkAuthAgainstAuthEvents(message, [create, ...listed], v, { createEvent: create }),
        '3.2',
        'v12: the create event must not be listed',
      );
      refuses(
        t,
        checkAuthAgainstAuthEvents(message, listed, v, {
          createEvent: create,
          isRejected: (e) => e === create,
        }),
        '2',
        'v12: a rejected create event',
      );
    } else {
      allows(t, checkAuthAgainstAuthEvents(message, listed, v), `v${id}: createEvent option not needed`);
      refuses(
        t,
        checkAuthAgainstAuthEvents(message, [pl, bobJoin], v, { createEvent: create }),
        '2.4',
        `v${id}: the option does not stand in for a listed create event`,
      );
    }
  }
});

t.test('authStateFromEvents and room ID helpers', async (t) => {
  const room = standardRoom('12');
  const pl = room.state.get('m.room.power_levels\u0000') as RoomEvent;
  const message = room.message(ALICE);
  const state = authStateFromEvents([pl, message]);
  t.equal(state.size, 1, 'message events are skipped');
  t.equal(state.get('m.room.power_levels\u0000'), pl);

  t.equal(roomIdForCreateEventId('$abc_-XYZ'), '!abc_-XYZ');
  t.equal(createEventIdForRoomId('!abc_-XYZ'), '$abc_-XYZ');
  t.equal(roomIdForCreateEventId(room.create.event_id), room.roomId, 'fixture rooms follow the rule');
});
