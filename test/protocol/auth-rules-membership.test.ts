// Auth rule 4 (v12 rule 5; v1-v5 rule 5): m.room.member, for every membership, in every room version.
import t from 'tap';
import type { AuthCheckOptions } from '../../src/protocol/auth-rules.ts';
import type { Pdu } from '../../src/protocol/event.ts';
import type { JsonObject } from '../../src/protocol/json.ts';
import { ROOM_VERSIONS } from '../../src/protocol/room-versions.ts';
import {
  ALICE,
  allows,
  BOB,
  CAROL,
  MALLORY,
  refuses,
  standardRoom,
  TestRoom,
  type TestRoom as TestRoomType,
  VERSION_IDS,
  versionsWith,
} from './auth-rules-fixtures.ts';

const DAVE = '@dave:d.test';

/** The membership sub-rule `sub` (e.g. "3.2") as numbered in the room's version: 4.x, or 5.x in v12. */
function m(room: TestRoomType, sub: string): string {
  return room.rule(`4.${sub}`, `5.${sub}`);
}

/** A verifier for join_authorised_via_users_server signatures that accepts everything. */
const trustSignatures: AuthCheckOptions = { verifyEventSignature: () => true };

t.test('4.1 (v12 5.1): state_key and membership are required', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { joinRule: 'public' });
    const noStateKey = room.event({ type: 'm.room.member', sender: BOB, content: { membership: 'join' } });
    refuses(t, room.check(noStateKey), m(room, '1'), `v${id}: no state_key`);
    const noMembership = room.event({ type: 'm.room.member', sender: BOB, state_key: BOB, content: {} });
    refuses(t, room.check(noMembership), m(room, '1'), `v${id}: no membership`);
  }
});

t.test('4.8 (v12 5.8): unknown memberships', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { joinRule: 'public' });
    refuses(t, room.check(room.member(BOB, BOB, 'frobnicate')), m(room, '8'), `v${id}: unknown string`);
    refuses(t, room.check(room.member(BOB, BOB, 42 as never)), m(room, '8'), `v${id}: a number`);
  }
});

t.test('4.3.1 (v12 5.3.1): the creator joins first', async (t) => {
  for (const id of VERSION_IDS) {
    const room = new TestRoom(id);
    const first = room.member(ALICE, ALICE, 'join');
    first.prev_events = [room.create.event_id];
    allows(t, room.check(first), `v${id}: alice joins right after her create event`);

    const notOnlyPrev = room.member(ALICE, ALICE, 'join');
    notOnlyPrev.prev_events = [room.create.event_id, '$other'];
    // Falls through to the join rule, which is invite-only with no join rules event.
    refuses(t, room.check(notOnlyPrev), m(room, '3.7'), `v${id}: not the only previous event`);

    const notCreate = room.member(ALICE, ALICE, 'join');
    notCreate.prev_events = ['$not-the-create'];
    refuses(t, room.check(notCreate), m(room, '3.7'), `v${id}: previous event is not the create event`);

    const bob = room.member(BOB, BOB, 'join');
    bob.prev_events = [room.create.event_id];
    refuses(t, room.check(bob), m(room, '3.7'), `v${id}: bob is not the creator`);
  }
});

t.test('4.3.1: v10 reads content.creator, v11 and v12 the sender', async (t) => {
  // A create event sent by alice that names bob as creator.
  for (const id of VERSION_IDS) {
    const room = new TestRoom(id, { createContent: { creator: BOB } });
    const bobFirst = room.member(BOB, BOB, 'join');
    bobFirst.prev_events = [room.create.event_id];
    const aliceFirst = room.member(ALICE, ALICE, 'join');
    aliceFirst.prev_events = [room.create.event_id];
    if (!room.version.implicitRoomCreator) {
      allows(t, room.check(bobFirst), `v${id}: content.creator joins first`);
      refuses(t, room.check(aliceFirst), m(room, '3.7'), `v${id}: the sender is not the creator`);
    } else {
      allows(t, room.check(aliceFirst), `v${id}: the sender joins first`);
      refuses(t, room.check(bobFirst), m(room, '3.7'), `v${id}: content.creator means nothing`);
    }
  }
});

t.test('v12 5.3.1: additional creators do not get the first join', async (t) => {
  const room = new TestRoom('12', { createContent: { additional_creators: [CAROL] } });
  const carol = room.member(CAROL, CAROL, 'join');
  carol.prev_events = [room.create.event_id];
  refuses(t, room.check(carol), '5.3.7', 'carol is a creator but not the sender');
});

t.test('4.3 (v12 5.3): joins', async (t) => {
  for (const id of VERSION_IDS) {
    const pub = standardRoom(id, { joinRule: 'public' });
    allows(t, pub.check(pub.member(BOB, BOB, 'join')), `v${id}: join a public room`);
    allows(
      t,
      pub.check(pub.member(ALICE, ALICE, 'join', { displayname: 'Alice' })),
      `v${id}: a joined user updates her profile`,
    );
    refuses(t, pub.check(pub.member(ALICE, BOB, 'join')), m(pub, '3.2'), `v${id}: join on behalf of another`);
    pub.setMembership(MALLORY, 'ban');
    refuses(t, pub.check(pub.member(MALLORY, MALLORY, 'join')), m(pub, '3.3'), `v${id}: banned user joins`);

    const inv = standardRoom(id, { joinRule: 'invite' });
    refuses(t, inv.check(inv.member(BOB, BOB, 'join')), m(inv, '3.7'), `v${id}: invite-only without invite`);
    inv.setMembership(BOB, 'invite');
    allows(t, inv.check(inv.member(BOB, BOB, 'join')), `v${id}: invite-only after an invite`);
    inv.setMembership(BOB, 'join');
    allows(t, inv.check(inv.member(BOB, BOB, 'join')), `v${id}: invite-only while joined`);
    inv.setMembership(BOB, 'leave');
    refuses(t, inv.check(inv.member(BOB, BOB, 'join')), m(inv, '3.7'), `v${id}: invite-only after leaving`);
    inv.setMembership(BOB, 'ban');
    refuses(t, inv.check(inv.member(BOB, BOB, 'join')), m(inv, '3.3'), `v${id}: banned, though invite-only`);

    const knock = standardRoom(id, { joinRule: 'knock' });
    refuses(t, knock.check(knock.member(BOB, BOB, 'join')), m(knock, '3.7'), `v${id}: knock room, no invite`);
    knock.setMembership(BOB, 'knock');
    refuses(
      t,
      knock.check(knock.member(BOB, BOB, 'join')),
      m(knock, '3.7'),
      `v${id}: knocked is not invited`,
    );
    knock.setMembership(BOB, 'invite');
    if (knock.version.knocking) {
      allows(t, knock.check(knock.member(BOB, BOB, 'join')), `v${id}: knock room after an invite`);
    } else {
      refuses(
        t,
        knock.check(knock.member(BOB, BOB, 'join')),
        m(knock, '3.7'),
        `v${id}: no knock join rule before v7, even after an invite`,
      );
    }

    const priv = standardRoom(id, { joinRule: 'private' });
    refuses(t, priv.check(priv.member(BOB, BOB, 'join')), m(priv, '3.7'), `v${id}: join rule private`);

    const bogus = standardRoom(id, { joinRule: 42 as never });
    bogus.setMembership(BOB, 'invite');
    refuses(t, bogus.check(bogus.member(BOB, BOB, 'join')), m(bogus, '3.7'), `v${id}: malformed join rule`);

    const none = standardRoom(id);
    none.state.delete('m.room.join_rules\u0000');
    refuses(
      t,
      none.check(none.member(BOB, BOB, 'join')),
      m(none, '3.7'),
      `v${id}: no join rules: invite-only`,
    );
    none.setMembership(BOB, 'invite');
    allows(t, none.check(none.member(BOB, BOB, 'join')), `v${id}: no join rules, invited`);
  }
});

t.test('4.2.1 and 4.3.5 (v12 5.2.1, 5.3.5): restricted joins (v8+; knock_restricted v10+)', async (t) => {
  for (const id of versionsWith('restrictedJoins')) {
    const joinRules = ROOM_VERSIONS[id].knockRestricted ? ['restricted', 'knock_restricted'] : ['restricted'];
    for (const joinRule of joinRules) {
      const label = `v${id} ${joinRule}`;
      const room = standardRoom(id, {
        joinRule,
        powerLevels: { invite: 50 },
        users: { [CAROL]: 10, [DAVE]: 60 },
      });
      room.setMembership(CAROL, 'join').setMembership(DAVE, 'leave');
      const via = (authoriser: unknown) =>
        room.member(BOB, BOB, 'join', { join_authorised_via_users_server: authoriser as string });

      refuses(t, room.check(room.member(BOB, BOB, 'join')), m(room, '3.5.2'), `${label}: no authoriser`);
      allows(t, room.check(via(ALICE), trustSignatures), `${label}: authorised by alice`);
      refuses(t, room.check(via(ALICE)), m(room, '2.1'), `${label}: no verifier given`);
      refuses(
        t,
        room.check(via(ALICE), { verifyEventSignature: () => false }),
        m(room, '2.1'),
        `${label}: not signed by a.test`,
      );
      refuses(
        t,
        room.check(via('alice'), trustSignatures),
        m(room, '2.1'),
        `${label}: authoriser not a user ID`,
      );
      refuses(t, room.check(via(null), trustSignatures), m(room, '2.1'), `${label}: authoriser null`);
      refuses(
        t,
        room.check(via(MALLORY), trustSignatures),
        m(room, '3.5.2'),
        `${label}: authoriser never joined`,
      );
      refuses(
        t,
        room.check(via(DAVE), trustSignatures),
        m(room, '3.5.2'),
        `${label}: authoriser with the level who has left`,
      );
      refuses(
        t,
        room.check(via(CAROL), trustSignatures),
        m(room, '3.5.2'),
        `${label}: authoriser below the invite level`,
      );

      room.setMembership(BOB, 'invite');
      allows(t, room.check(room.member(BOB, BOB, 'join')), `${label}: invited users need no authoriser`);
      room.setMembership(BOB, 'join');
      allows(t, room.check(room.member(BOB, BOB, 'join')), `${label}: joined users need no authoriser`);
      room.setMembership(BOB, 'ban');
      refuses(
        t,
        room.check(via(ALICE), trustSignatures),
        m(room, '3.3'),
        `${label}: banned even if authorised`,
      );
    }
  }
});

t.test('before v8 (and knock_restricted before v10) restricted join rules admit nobody', async (t) => {
  for (const id of VERSION_IDS) {
    const version = ROOM_VERSIONS[id];
    const unknownRules = [
      ...(version.restrictedJoins ? [] : ['restricted']),
      ...(version.knockRestricted ? [] : ['knock_restricted']),
    ];
    for (const joinRule of unknownRules) {
      const room = standardRoom(id, { joinRule });
      const join = room.member(BOB, BOB, 'join', { join_authorised_via_users_server: ALICE });
      refuses(t, room.check(join, trustSignatures), m(room, '3.7'), `v${id} ${joinRule}: authorised join`);
      room.setMembership(BOB, 'invite');
      refuses(t, room.check(room.member(BOB, BOB, 'join')), m(room, '3.7'), `v${id} ${joinRule}: invited`);
    }
    if (!version.restrictedJoins) {
      // No rule 4.2.1 yet: the key means nothing, so no verifier is needed.
      const pub = standardRoom(id, { joinRule: 'public' });
      const join = pub.member(BOB, BOB, 'join', { join_authorised_via_users_server: ALICE });
      allows(t, pub.check(join), `v${id}: join_authorised_via_users_server is ignored`);
    }
  }
});

t.test('4.2.1: the verifier is asked about the authorising user’s server', async (t) => {
  const room = standardRoom('11', { joinRule: 'restricted' });
  const calls: Array<[Pdu, string]> = [];
  const join = room.member(BOB, BOB, 'join', { join_authorised_via_users_server: ALICE });
  allows(
    t,
    room.check(join, {
      verifyEventSignature: (event, server) => {
        calls.push([event, server]);
        return server === 'a.test';
      },
    }),
    'verified',
  );
  t.equal(calls.length, 1);
  t.equal(calls[0]?.[0], join, 'with the event');
  t.equal(calls[0]?.[1], 'a.test', 'and alice’s server name');
});

t.test('4.2.1 applies whatever the join rule and membership', async (t) => {
  const room = standardRoom('12', { joinRule: 'public' });
  const join = room.member(BOB, BOB, 'join', { join_authorised_via_users_server: ALICE });
  refuses(t, room.check(join), '5.2.1', 'public room, key present, no verifier');
  allows(t, room.check(join, trustSignatures), 'public room, signature verified');
  const invite = room.member(ALICE, BOB, 'invite', { join_authorised_via_users_server: ALICE });
  refuses(t, room.check(invite), '5.2.1', 'even on an invite');
});

t.test('v12 5.3.5: a creator can authorise restricted joins without being listed', async (t) => {
  const room = standardRoom('12', { joinRule: 'restricted', powerLevels: { invite: 100 } });
  const join = room.member(BOB, BOB, 'join', { join_authorised_via_users_server: ALICE });
  allows(t, room.check(join, trustSignatures), 'alice has infinite power');
});

t.test('4.4 (v12 5.4): invites', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { users: { [CAROL]: 10 } });
    room.setMembership(CAROL, 'join');
    allows(t, room.check(room.member(ALICE, BOB, 'invite')), `v${id}: alice invites bob`);
    allows(t, room.check(room.member(CAROL, BOB, 'invite')), `v${id}: invite level defaults to 0`);
    refuses(t, room.check(room.member(MALLORY, BOB, 'invite')), m(room, '4.2'), `v${id}: outsider invites`);
    room.setMembership(DAVE, 'invite');
    refuses(t, room.check(room.member(DAVE, BOB, 'invite')), m(room, '4.2'), `v${id}: invited user invites`);
    allows(t, room.check(room.member(ALICE, DAVE, 'invite')), `v${id}: re-inviting an invited user`);

    room.setMembership(BOB, 'join');
    refuses(t, room.check(room.member(ALICE, BOB, 'invite')), m(room, '4.3'), `v${id}: invite a joined user`);
    room.setMembership(BOB, 'ban');
    refuses(t, room.check(room.member(ALICE, BOB, 'invite')), m(room, '4.3'), `v${id}: invite a banned user`);
    room.setMembership(BOB, 'knock');
    allows(t, room.check(room.member(ALICE, BOB, 'invite')), `v${id}: invite a knocking user`);
    room.setMembership(BOB, 'leave');
    allows(t, room.check(room.member(ALICE, BOB, 'invite')), `v${id}: invite a user who left`);

    const strict = standardRoom(id, { powerLevels: { invite: 50 }, users: { [CAROL]: 49 } });
    strict.setMembership(CAROL, 'join');
    refuses(t, strict.check(strict.member(CAROL, BOB, 'invite')), m(strict, '4.5'), `v${id}: level too low`);
    const exact = standardRoom(id, { powerLevels: { invite: 50 }, users: { [CAROL]: 50 } });
    exact.setMembership(CAROL, 'join');
    allows(t, exact.check(exact.member(CAROL, BOB, 'invite')), `v${id}: level equal to the invite level`);
  }
});

t.test('4.4.1 (v12 5.4.1): third-party invites', async (t) => {
  const signed = (extra: JsonObject = {}): JsonObject => ({
    mxid: BOB,
    token: 'tok',
    signatures: { 'id.test': { 'ed25519:0': 'sig' } },
    ...extra,
  });
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { users: { [CAROL]: 50 } });
    room.setMembership(CAROL, 'join');
    room.apply(
      room.event({
        type: 'm.room.third_party_invite',
        sender: ALICE,
        state_key: 'tok',
        content: { display_name: 'b...', public_key: 'KEY1', public_keys: [{ public_key: 'KEY2' }, 'junk'] },
      }),
    );
    const invite = (thirdPartyInvite: unknown, sender = ALICE, target = BOB) =>
      room.member(sender, target, 'invite', { third_party_invite: thirdPartyInvite as JsonObject });
    const seen: string[] = [];
    const verifier: AuthCheckOptions = {
      verifyThirdPartyInviteSignature: (s, key) => {
        seen.push(key);
        return s.token === 'tok' && key === 'KEY2';
      },
    };

    allows(t, room.check(invite({ display_name: 'b...', signed: signed() }), verifier), `v${id}: valid`);
    t.same(seen, ['KEY1', 'KEY2'], `v${id}: tried public_key, then public_keys`);

    const onlyKey1: AuthCheckOptions = { verifyThirdPartyInviteSignature: (_s, key) => key === 'KEY1' };
    allows(t, room.check(invite({ signed: signed() }), onlyKey1), `v${id}: the single public_key matches`);

    refuses(t, room.check(invite({ signed: signed() })), m(room, '4.1.8'), `v${id}: no verifier given`);
    refuses(
      t,
      room.check(invite({ signed: signed() }), { verifyThirdPartyInviteSignature: () => false }),
      m(room, '4.1.8'),
      `v${id}: no signature matches`,
    );
    refuses(t, room.check(invite({}), verifier), m(room, '4.1.2'), `v${id}: no signed`);
    refuses(
      t,
      room.check(invite('yes'), verifier),
      m(room, '4.1.2'),
      `v${id}: third_party_invite not an object`,
    );
    refuses(
      t,
      room.check(invite({ signed: 'x' }), verifier),
      m(room, '4.1.2'),
      `v${id}: signed not an object`,
    );
    refuses(
      t,
      room.check(invite({ signed: { mxid: BOB, signatures: {} } }), verifier),
      m(room, '4.1.3'),
      `v${id}: no token`,
    );
    refuses(
      t,
      room.check(invite({ signed: { token: 'tok', signatures: {} } }), verifier),
      m(room, '4.1.3'),
      `v${id}: no mxid`,
    );
    refuses(
      t,
      room.check(invite({ signed: signed({ mxid: DAVE }) }), verifier),
      m(room, '4.1.4'),
      `v${id}: mxid is not the target`,
    );
    refuses(
      t,
      room.check(invite({ signed: signed({ token: 'other' }) }), verifier),
      m(room, '4.1.5'),
      `v${id}: no m.room.third_party_invite for the token`,
    );
    refuses(
      t,
      room.check(invite({ signed: signed() }, CAROL), verifier),
      m(room, '4.1.6'),
      `v${id}: carol redeems alice’s third-party invite`,
    );

    // The third-party path does not ask for the sender's membership or level (4.4.2 onwards).
    room.setMembership(ALICE, 'leave');
    allows(t, room.check(invite({ signed: signed() }), verifier), `v${id}: sender no longer joined`);

    room.setMembership(BOB, 'ban');
    refuses(t, room.check(invite({ signed: signed() }), verifier), m(room, '4.1.1'), `v${id}: target banned`);
  }
});

t.test('4.5 (v12 5.5): leaving, kicking, unbanning', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { users: { [CAROL]: 50, [DAVE]: 50 } });
    room.setMembership(CAROL, 'join').setMembership(DAVE, 'join');

    for (const [before, allowed] of [
      ['join', true],
      ['invite', true],
      ['knock', room.version.knocking],
      ['leave', false],
      ['ban', false],
    ] as const) {
      room.setMembership(BOB, before);
      const leave = room.member(BOB, BOB, 'leave');
      if (allowed) allows(t, room.check(leave), `v${id}: bob leaves from ${before}`);
      else refuses(t, room.check(leave), m(room, '5.1'), `v${id}: bob cannot leave from ${before}`);
    }
    refuses(t, room.check(room.member(MALLORY, MALLORY, 'leave')), m(room, '5.1'), `v${id}: never a member`);

    room.setMembership(BOB, 'join');
    allows(t, room.check(room.member(ALICE, BOB, 'leave')), `v${id}: alice kicks bob`);
    allows(t, room.check(room.member(CAROL, BOB, 'leave')), `v${id}: carol (50) kicks bob (0)`);
    refuses(t, room.check(room.member(CAROL, DAVE, 'leave')), m(room, '5.5'), `v${id}: kick an equal level`);
    refuses(t, room.check(room.member(CAROL, ALICE, 'leave')), m(room, '5.5'), `v${id}: kick a higher level`);
    refuses(t, room.check(room.member(BOB, CAROL, 'leave')), m(room, '5.5'), `v${id}: below the kick level`);
    refuses(t, room.check(room.member(MALLORY, BOB, 'leave')), m(room, '5.2'), `v${id}: outsider kicks`);
    room.setMembership(MALLORY, 'invite');
    refuses(t, room.check(room.member(MALLORY, BOB, 'leave')), m(room, '5.2'), `v${id}: invited user kicks`);

    room.setMembership(BOB, 'ban');
    allows(t, room.check(room.member(ALICE, BOB, 'leave')), `v${id}: alice unbans bob`);
    allows(t, room.check(room.member(CAROL, BOB, 'leave')), `v${id}: carol (50) unbans at ban level 50`);

    const highBan = standardRoom(id, { users: { [CAROL]: 50 }, powerLevels: { ban: 60 } });
    highBan.setMembership(CAROL, 'join').setMembership(BOB, 'ban');
    refuses(
      t,
      highBan.check(highBan.member(CAROL, BOB, 'leave')),
      m(highBan, '5.3'),
      `v${id}: unban below the ban level`,
    );
    allows(t, highBan.check(highBan.member(CAROL, MALLORY, 'leave')), `v${id}: but kicking needs only kick`);

    const highKick = standardRoom(id, { users: { [CAROL]: 60 }, powerLevels: { ban: 50, kick: 75 } });
    highKick.setMembership(CAROL, 'join').setMembership(BOB, 'ban');
    refuses(
      t,
      highKick.check(highKick.member(CAROL, BOB, 'leave')),
      m(highKick, '5.5'),
      `v${id}: unbanning also needs the kick level`,
    );
  }
});

t.test('4.6 (v12 5.6): bans', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { users: { [CAROL]: 50, [DAVE]: 50 } });
    room.setMembership(CAROL, 'join').setMembership(DAVE, 'join').setMembership(BOB, 'join');
    allows(t, room.check(room.member(ALICE, BOB, 'ban')), `v${id}: alice bans bob`);
    allows(t, room.check(room.member(ALICE, MALLORY, 'ban')), `v${id}: ban someone never in the room`);
    allows(t, room.check(room.member(CAROL, BOB, 'ban')), `v${id}: carol (50) bans bob (0)`);
    refuses(t, room.check(room.member(CAROL, DAVE, 'ban')), m(room, '6.3'), `v${id}: ban an equal level`);
    refuses(t, room.check(room.member(CAROL, ALICE, 'ban')), m(room, '6.3'), `v${id}: ban a higher level`);
    refuses(t, room.check(room.member(BOB, MALLORY, 'ban')), m(room, '6.3'), `v${id}: below the ban level`);
    refuses(t, room.check(room.member(MALLORY, BOB, 'ban')), m(room, '6.1'), `v${id}: outsider bans`);
    refuses(t, room.check(room.member(CAROL, CAROL, 'ban')), m(room, '6.3'), `v${id}: ban oneself`);
  }
});

t.test('4.5 and 4.6: creators in v12 outrank every listed level', async (t) => {
  for (const id of VERSION_IDS) {
    const room = standardRoom(id, { users: { [CAROL]: 100 } });
    room.setMembership(CAROL, 'join');
    if (id === '12') {
      allows(t, room.check(room.member(ALICE, CAROL, 'leave')), 'v12: alice kicks carol at 100');
      allows(t, room.check(room.member(ALICE, CAROL, 'ban')), 'v12: alice bans carol at 100');
      refuses(t, room.check(room.member(CAROL, ALICE, 'leave')), '5.5.5', 'v12: carol cannot kick alice');
    } else {
      refuses(
        t,
        room.check(room.member(ALICE, CAROL, 'leave')),
        m(room, '5.5'),
        `v${id}: alice (100) vs carol (100)`,
      );
      refuses(t, room.check(room.member(ALICE, CAROL, 'ban')), m(room, '6.3'), `v${id}: nor ban her`);
    }
  }
  const twoCreators = standardRoom('12', { createContent: { additional_creators: [BOB] } });
  twoCreators.setMembership(BOB, 'join');
  refuses(
    t,
    twoCreators.check(twoCreators.member(BOB, ALICE, 'ban')),
    '5.6.3',
    'v12: creators cannot ban each other',
  );
  allows(
    t,
    twoCreators.check(twoCreators.member(BOB, MALLORY, 'ban')),
    'v12: an additional creator bans others',
  );
});

t.test('4.7 (v12 5.7): knocks (v7+; knock_restricted v10+)', async (t) => {
  for (const id of versionsWith('knocking')) {
    const joinRules = ROOM_VERSIONS[id].knockRestricted ? ['knock', 'knock_restricted'] : ['knock'];
    for (const joinRule of joinRules) {
      const room = standardRoom(id, { joinRule });
      const label = `v${id} ${joinRule}`;
      allows(t, room.check(room.member(MALLORY, MALLORY, 'knock')), `${label}: mallory knocks`);
      refuses(t, room.check(room.member(ALICE, MALLORY, 'knock')), m(room, '7.2'), `${label}: on behalf`);
      room.setMembership(MALLORY, 'leave');
      allows(t, room.check(room.member(MALLORY, MALLORY, 'knock')), `${label}: after leaving`);
      room.setMembership(MALLORY, 'knock');
      allows(t, room.check(room.member(MALLORY, MALLORY, 'knock')), `${label}: knocking again`);
      for (const current of ['join', 'invite', 'ban']) {
        room.setMembership(MALLORY, current);
        refuses(
          t,
          room.check(room.member(MALLORY, MALLORY, 'knock')),
          m(room, '7.4'),
          `${label}: while ${current}`,
        );
      }
    }
    const refusing = ['public', 'invite', 'restricted', 'private'];
    if (!ROOM_VERSIONS[id].knockRestricted) refusing.push('knock_restricted');
    for (const joinRule of refusing) {
      const room = standardRoom(id, { joinRule });
      refuses(
        t,
        room.check(room.member(MALLORY, MALLORY, 'knock')),
        m(room, '7.1'),
        `v${id}: join rule ${joinRule} refuses knocks`,
      );
    }
    const none = standardRoom(id);
    none.state.delete('m.room.join_rules\u0000');
    refuses(
      t,
      none.check(none.member(MALLORY, MALLORY, 'knock')),
      m(none, '7.1'),
      `v${id}: no join rules event`,
    );
  }
});

t.test('before v7 a knock is an unknown membership', async (t) => {
  for (const id of versionsWith('knocking', false)) {
    const room = standardRoom(id, { joinRule: 'knock' });
    refuses(t, room.check(room.member(MALLORY, MALLORY, 'knock')), m(room, '8'), `v${id}: knock`);
  }
});
