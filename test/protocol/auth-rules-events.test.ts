// Auth rules 5 to 8 and 10 (v12: 6 to 9 and 11): events other than create and member.
import t from 'tap';
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

/** Top-level rule `n` of v10/v11 as numbered in the room's version (v12 adds one). */
function r(room: TestRoom, n: number, sub = ''): string {
  return room.rule(`${n}${sub}`, `${n + 1}${sub}`);
}

t.test('rule 5 (v12 6): the sender must be joined', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { joinRule: 'public' });
    room.setMembership(BOB, 'join');
    allows(t, room.check(room.message(BOB)), `v${id}: joined bob sends a message`);
    refuses(t, room.check(room.message(MALLORY)), r(room, 5), `v${id}: mallory was never in the room`);
    for (const membership of ['invite', 'leave', 'ban', 'knock']) {
      room.setMembership(BOB, membership);
      refuses(t, room.check(room.message(BOB)), r(room, 5), `v${id}: bob's membership is ${membership}`);
    }
    const state = room.event({
      type: 'm.room.topic',
      sender: MALLORY,
      state_key: '',
      content: { topic: 'x' },
    });
    refuses(t, room.check(state), r(room, 5), `v${id}: state events too`);
  }
});

t.test('rule 6 (v12 7): m.room.third_party_invite needs the invite level only', async (t) => {
  for (const id of VERSION_IDS) {
    const tpi = (room: TestRoom, sender: string) =>
      room.event({
        type: 'm.room.third_party_invite',
        sender,
        state_key: 'tok',
        content: { display_name: 'x', public_key: 'K' },
      });
    const open = standardRoom(id, { powerLevels: { state_default: 100 } });
    open.setMembership(BOB, 'join');
    allows(t, open.check(tpi(open, BOB)), `v${id}: invite level 0 suffices despite state_default 100`);
    refuses(t, open.check(tpi(open, MALLORY)), r(open, 5), `v${id}: the sender must still be joined`);

    const strict = standardRoom(id, { powerLevels: { invite: 50 }, users: { [CAROL]: 50 } });
    strict.setMembership(BOB, 'join').setMembership(CAROL, 'join');
    refuses(t, strict.check(tpi(strict, BOB)), r(strict, 6, '.1'), `v${id}: bob below the invite level`);
    allows(t, strict.check(tpi(strict, CAROL)), `v${id}: carol at the invite level`);

    const byEvents = standardRoom(id, {
      powerLevels: { events: { 'm.room.third_party_invite': 0 }, invite: 50 },
    });
    byEvents.setMembership(BOB, 'join');
    refuses(
      t,
      byEvents.check(tpi(byEvents, BOB)),
      r(byEvents, 6, '.1'),
      `v${id}: the events map does not lower it`,
    );
  }
});

t.test('rule 7 (v12 8): the event type’s required power level', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { users: { [CAROL]: 50, [BOB]: 10 } });
    room.setMembership(BOB, 'join').setMembership(CAROL, 'join');
    const topic = (sender: string) =>
      room.event({ type: 'm.room.topic', sender, state_key: '', content: { topic: 'hello' } });
    refuses(t, room.check(topic(BOB)), r(room, 7), `v${id}: state_default defaults to 50`);
    allows(t, room.check(topic(CAROL)), `v${id}: carol at 50 sets the topic`);
    refuses(
      t,
      room.check(
        room.event({
          type: 'm.room.join_rules',
          sender: BOB,
          state_key: '',
          content: { join_rule: 'public' },
        }),
      ),
      r(room, 7),
      `v${id}: bob changes the join rules`,
    );
    allows(t, room.check(room.message(BOB)), `v${id}: events_default defaults to 0`);

    const strict = standardRoom(id, {
      users: { [BOB]: 10, [CAROL]: 9 },
      powerLevels: {
        events_default: 50,
        state_default: 0,
        events: { 'm.room.message': 10, 'm.room.name': 20 },
      },
    });
    strict.setMembership(BOB, 'join').setMembership(CAROL, 'join');
    refuses(
      t,
      strict.check(strict.message(BOB, 'm.reaction', {})),
      r(strict, 7),
      `v${id}: events_default 50`,
    );
    allows(t, strict.check(strict.message(BOB)), `v${id}: events map lowers m.room.message to 10`);
    refuses(t, strict.check(strict.message(CAROL)), r(strict, 7), `v${id}: carol at 9 is below 10`);
    allows(
      t,
      strict.check(strict.event({ type: 'm.room.topic', sender: CAROL, state_key: '', content: {} })),
      `v${id}: state_default 0`,
    );
    refuses(
      t,
      strict.check(strict.event({ type: 'm.room.name', sender: BOB, state_key: '', content: { name: 'n' } })),
      r(strict, 7),
      `v${id}: events map raises m.room.name to 20`,
    );

    const usersDefault = standardRoom(id, { powerLevels: { users_default: 50 } });
    usersDefault.setMembership(BOB, 'join');
    allows(
      t,
      usersDefault.check(
        usersDefault.event({ type: 'm.room.topic', sender: BOB, state_key: '', content: {} }),
      ),
      `v${id}: users_default 50 lets unlisted bob set state`,
    );
  }
});

t.test('rule 7 without a power levels event', async (t) => {
  for (const id of VERSION_IDS) {
    const room = new TestRoom(id);
    room.setMembership(ALICE, 'join').setMembership(BOB, 'join');
    const topic = (sender: string) =>
      room.event({ type: 'm.room.topic', sender, state_key: '', content: {} });
    allows(t, room.check(topic(ALICE)), `v${id}: the creator sets state`);
    refuses(t, room.check(topic(BOB)), r(room, 7), `v${id}: others are at 0, state needs 50`);
    allows(t, room.check(room.message(BOB)), `v${id}: messages need 0`);
  }
  // v12: additional creators are as powerful as the sender of the create event.
  const room = new TestRoom('12', { createContent: { additional_creators: [BOB] } });
  room.setMembership(ALICE, 'join').setMembership(BOB, 'join');
  allows(
    t,
    room.check(room.event({ type: 'm.room.topic', sender: BOB, state_key: '', content: {} })),
    'v12: an additional creator sets state',
  );
});

t.test('rule 7: v12 creators pass any required level', async (t) => {
  const room = standardRoom('12', {
    powerLevels: { events_default: 9007199254740991, state_default: 9007199254740991 },
  });
  allows(t, room.check(room.message(ALICE)), 'v12: alice sends a message at the maximum level');
  allows(
    t,
    room.check(room.event({ type: 'm.room.topic', sender: ALICE, state_key: '', content: {} })),
    'v12: and state',
  );
  for (const id of ['10', '11'] as const) {
    const old = standardRoom(id, { powerLevels: { events_default: 101 } });
    refuses(t, old.check(old.message(ALICE)), '7', `v${id}: the creator is only 100`);
  }
});

t.test('rule 8 (v12 9): state keys that are user IDs belong to their user', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { powerLevels: { state_default: 0 } });
    room.setMembership(BOB, 'join');
    const state = (sender: string, stateKey: string) =>
      room.event({ type: 'org.example.status', sender, state_key: stateKey, content: {} });
    allows(t, room.check(state(BOB, BOB)), `v${id}: bob's own key`);
    refuses(t, room.check(state(BOB, CAROL)), r(room, 8), `v${id}: bob writes carol's key`);
    refuses(t, room.check(state(ALICE, BOB)), r(room, 8), `v${id}: even the creator cannot`);
    refuses(t, room.check(state(BOB, '@bob:b.test_device')), r(room, 8), `v${id}: a prefix is not a match`);
    refuses(t, room.check(state(BOB, '@')), r(room, 8), `v${id}: a lone @`);
    allows(t, room.check(state(BOB, 'bob')), `v${id}: no @, no check`);
    allows(t, room.check(state(BOB, '_@carol:a.test')), `v${id}: @ not at the start`);

    // Rule 7 comes first: with state_default 50 the level check refuses.
    const strict = standardRoom(id);
    strict.setMembership(BOB, 'join');
    refuses(
      t,
      strict.check(strict.event({ type: 'org.example.status', sender: BOB, state_key: CAROL, content: {} })),
      r(strict, 7),
      `v${id}: rule 7 before rule 8`,
    );
  }
});

t.test('m.room.redaction: the redact level is not an auth rule (v3+)', async (t) => {
  for (const id of versionsWith('redactionAuthRule', false)) {
    const room = standardRoom(id, { powerLevels: { redact: 100 } });
    room.setMembership(BOB, 'join');
    const redaction = (room: TestRoom) => {
      const event = room.event({ type: 'm.room.redaction', sender: BOB, content: { redacts: '$alices' } });
      if (!room.version.redactsInContent) event.redacts = '$alices';
      return event;
    };
    allows(t, room.check(redaction(room)), `v${id}: bob at 0 may send a redaction of alice's event`);

    const byEvents = standardRoom(id, { powerLevels: { events: { 'm.room.redaction': 50 } } });
    byEvents.setMembership(BOB, 'join');
    refuses(t, byEvents.check(redaction(byEvents)), r(byEvents, 7), `v${id}: events map governs redactions`);

    const byDefault = standardRoom(id, { powerLevels: { events_default: 50 } });
    byDefault.setMembership(BOB, 'join');
    refuses(t, byDefault.check(redaction(byDefault)), r(byDefault, 7), `v${id}: and events_default`);

    room.setMembership(BOB, 'leave');
    refuses(t, room.check(redaction(room)), r(room, 5), `v${id}: and membership`);
  }
});
