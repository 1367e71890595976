// Auth rules that only room versions before 10 have: m.room.aliases (v1-v5 rule 4), the redaction
// rule (v1, v2 rule 11), string and float power levels (v1-v9, v1-v5), and power levels changes
// that leave `notifications` unguarded (v1-v5).
import t from 'tap';
import {
  ALICE,
  allows,
  BOB,
  CAROL,
  MALLORY,
  refuses,
  standardRoom,
  type TestRoom,
  VERSION_IDS,
  versionsWith,
} from './auth-rules-fixtures.ts';

t.test('v1-v5 rule 4: m.room.aliases, by the server named in the state key', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id);
    const aliases = (sender: string, stateKey?: string) =>
      room.event({
        type: 'm.room.aliases',
        sender,
        content: { aliases: ['#a:m.test'] },
        ...(stateKey === undefined ? {} : { state_key: stateKey }),
      });
    if (room.version.specialCaseAliases) {
      allows(t, room.check(aliases(MALLORY, 'm.test')), `v${id}: an outsider's server sets its own aliases`);
      refuses(t, room.check(aliases(MALLORY, 'a.test')), '4.2', `v${id}: but not another server's`);
      refuses(t, room.check(aliases(MALLORY)), '4.1', `v${id}: a state key is needed`);
    } else {
      refuses(
        t,
        room.check(aliases(MALLORY, 'm.test')),
        room.rule('5', '6'),
        `v${id}: an ordinary state event`,
      );
      allows(t, room.check(aliases(ALICE, 'a.test')), `v${id}: sent by a member with the level`);
    }
  }
});

t.test('v1 and v2 rule 11: redactions need the redact level or a same-server event ID', async (t) => {
  for (const id of versionsWith('redactionAuthRule')) {
    const room = standardRoom(id, { powerLevels: { redact: 50 }, users: { [CAROL]: 50 } });
    room.setMembership(BOB, 'join').setMembership(CAROL, 'join');
    const redaction = (sender: string, eventId: string, redacts: string) => {
      const event = room.event({ type: 'm.room.redaction', sender, content: {}, event_id: eventId });
      event.redacts = redacts;
      return event;
    };
    allows(t, room.check(redaction(CAROL, '$r1:c.test', '$x:a.test')), `v${id}: the redact level`);
    allows(t, room.check(redaction(BOB, '$r2:b.test', '$x:b.test')), `v${id}: same server as the event ID`);
    refuses(t, room.check(redaction(BOB, '$r3:b.test', '$x:a.test')), '11.3', `v${id}: neither`);
    refuses(t, room.check(redaction(BOB, '$r4:b.test', 'not-an-id')), '11.3', `v${id}: no server in redacts`);
  }
  for (const id of versionsWith('redactionAuthRule', false)) {
    const room = standardRoom(id, { powerLevels: { redact: 50 } });
    room.setMembership(BOB, 'join');
    const event = room.event({ type: 'm.room.redaction', sender: BOB, content: { redacts: '$x' } });
    event.redacts = '$x';
    allows(t, room.check(event), `v${id}: the redact level is no auth rule`);
  }
});

/** A room whose power levels content (users and all) is `content`, with bob and carol joined. */
function roomWithLevels(id: (typeof VERSION_IDS)[number], content: Record<string, unknown>): TestRoom {
  const room = standardRoom(id);
  room.apply(room.powerLevels(ALICE, content as never));
  room.setMembership(BOB, 'join').setMembership(CAROL, 'join');
  return room;
}

t.test('v1-v9 read integer strings as levels; v10 refuses them', async (t) => {
  const content = {
    users: { [ALICE]: ' +100 ', [BOB]: '050' },
    state_default: '40',
    events: { 'm.room.name': '60' },
  };
  for (const id of VERSION_IDS.filter((id) => !['11', '12'].includes(id))) {
    const room = standardRoom(id);
    const first = room.powerLevels(ALICE, content);
    if (room.version.integerPowerLevels) {
      refuses(t, room.check(first), '9.1', `v${id}: string state_default`);
      continue;
    }
    allows(t, room.check(first), `v${id}: string levels accepted`);
    const levels = roomWithLevels(id, content);
    const topic = (sender: string) =>
      levels.event({ type: 'm.room.topic', sender, state_key: '', content: {} });
    allows(t, levels.check(topic(BOB)), `v${id}: bob ("050") meets state_default "40"`);
    refuses(t, levels.check(topic(CAROL)), levels.rule('7', ''), `v${id}: carol (0) does not`);
    const name = levels.event({ type: 'm.room.name', sender: BOB, state_key: '', content: {} });
    refuses(t, levels.check(name), levels.rule('7', ''), `v${id}: bob (50) below the name's "60"`);
    // Changing "050" to 50 is no change of level.
    const same = levels.powerLevels(BOB, { ...content, users: { [ALICE]: ' +100 ', [BOB]: 50 } });
    allows(t, levels.check(same), `v${id}: "050" to 50 is no change`);
    refuses(
      t,
      levels.check(levels.powerLevels(ALICE, { ...content, users: { [BOB]: 'fifty' } })),
      levels.rule('9.3', ''),
      `v${id}: a string that is no integer`,
    );
  }
});

t.test('v1-v5 truncate float levels; v6 on refuse them', async (t) => {
  for (const id of VERSION_IDS.filter((id) => Number(id) <= 9)) {
    const room = standardRoom(id);
    const content = { users: { [ALICE]: 100, [BOB]: 50.9 } };
    if (room.version.strictCanonicalJson) {
      refuses(t, room.check(room.powerLevels(ALICE, content)), room.rule('9.3', ''), `v${id}: a float`);
      continue;
    }
    allows(t, room.check(room.powerLevels(ALICE, content)), `v${id}: a float level`);
    const levels = roomWithLevels(id, { ...content, state_default: 50 });
    const topic = levels.event({ type: 'm.room.topic', sender: BOB, state_key: '', content: {} });
    allows(t, levels.check(topic), `v${id}: bob's 50.9 counts as 50`);
    const raise = levels.powerLevels(BOB, { users: { [ALICE]: 100, [BOB]: 50.9, [CAROL]: 50.5 } });
    allows(t, levels.check(raise), `v${id}: bob gives carol 50.5, which is 50`);
  }
});

t.test('v1-v5 power levels rules leave notifications alone', async (t) => {
  for (const id of VERSION_IDS.filter((id) => Number(id) <= 9)) {
    const room = roomWithLevels(id, { users: { [ALICE]: 100, [CAROL]: 50 }, notifications: { room: 60 } });
    const lower = room.powerLevels(CAROL, {
      users: { [ALICE]: 100, [CAROL]: 50 },
      notifications: { room: 0 },
    });
    if (room.version.notificationsInPowerLevelRules) {
      refuses(t, room.check(lower), room.rule('9.6.1', ''), `v${id}: notifications.room above carol`);
    } else {
      allows(t, room.check(lower), `v${id}: carol changes notifications.room from 60`);
    }
  }
});
