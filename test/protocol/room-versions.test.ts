// The room versions table against the spec (rooms/v1.md ... v12.md), and the rule numbers of each.
import t from 'tap';
import { ruleNumber } from '../../src/protocol/auth-rules.ts';
import {
  DEFAULT_ROOM_VERSION,
  getRoomVersion,
  ROOM_VERSION_IDS,
  ROOM_VERSIONS,
  type RoomVersion,
} from '../../src/protocol/room-versions.ts';

t.test('versions 1 to 12, oldest first; 12 stays the default', async (t) => {
  t.same(ROOM_VERSION_IDS, ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12']);
  t.equal(DEFAULT_ROOM_VERSION, '12');
  t.equal(getRoomVersion('0'), undefined);
  t.equal(getRoomVersion('13'), undefined);
  t.equal(getRoomVersion('toString'), undefined);
  for (const id of ROOM_VERSION_IDS) t.equal(getRoomVersion(id)?.id, id);
});

/** From which version on each flag is true (and stays true), as the spec's changelogs say. */
const FROM: Partial<Record<keyof RoomVersion, number>> = {
  notificationsInPowerLevelRules: 6, // v6: notifications in the power levels rules
  strictCanonicalJson: 6, // v6-canonical-json
  integerPowerLevels: 10, // v10: no string levels
  knocking: 7,
  restrictedJoins: 8,
  knockRestricted: 10,
  enforceKeyValidity: 5, // v5-signing-requirements
  redactionKeepsJoinRuleAllow: 8,
  redactionKeepsJoinAuthoriser: 9,
  updatedRedactionRules: 11,
  redactsInContent: 11,
  implicitRoomCreator: 11,
  roomIdFromCreateEvent: 12,
  creatorsHaveInfinitePower: 12,
};
/** Up to which version each flag is true. */
const UNTIL: Partial<Record<keyof RoomVersion, number>> = {
  legacyEventFormat: 2, // v3 dropped event_id and the [id, hash] pairs
  redactionAuthRule: 2, // v3-handling-redactions
  specialCaseAliases: 5, // v6 removed rule 4
  redactionKeepsAliases: 5, // v6-redactions
  createEventInAuthEvents: 11,
};

t.test('each flag changes in the version the spec says', async (t) => {
  for (const id of ROOM_VERSION_IDS) {
    const v = ROOM_VERSIONS[id];
    const n = Number(id);
    for (const [flag, from] of Object.entries(FROM)) {
      t.equal(v[flag as keyof RoomVersion], n >= from, `v${id} ${flag}`);
    }
    for (const [flag, until] of Object.entries(UNTIL)) {
      t.equal(v[flag as keyof RoomVersion], n <= until, `v${id} ${flag}`);
    }
    t.equal(v.eventIdFormat, n <= 2 ? 'legacy' : n === 3 ? 'base64' : 'base64url', `v${id} event IDs`);
    t.equal(v.stateResolution, n === 1 ? 'v1' : n === 12 ? 'v2.1' : 'v2', `v${id} state resolution`);
  }
});

t.test('ruleNumber: the v10/v11 rules as each older version numbers them', async (t) => {
  // [v10/v11 rule, v1-v2, v3-v5, v6, v7, v8-v9], read off rooms/fragments/v1-auth-rules.md,
  // v3-auth-rules.md, v6.md, v7.md and v8-auth-rules.md.
  const table: Array<[string, string, string, string, string, string]> = [
    ['2.2', '2.2', '2.2', '2.2', '2.2', '2.2'],
    ['3', '3', '3', '3', '3', '3'],
    ['4.1', '5.1', '5.1', '4.1', '4.1', '4.1'],
    ['4.3.2', '5.2.2', '5.2.2', '4.2.2', '4.2.2', '4.3.2'],
    ['4.3.6', '5.2.5', '5.2.5', '4.2.5', '4.2.5', '4.3.6'],
    ['4.3.7', '5.2.6', '5.2.6', '4.2.6', '4.2.6', '4.3.7'],
    ['4.4.1.8', '5.3.1.8', '5.3.1.8', '4.3.1.8', '4.3.1.8', '4.4.1.8'],
    ['4.4.5', '5.3.5', '5.3.5', '4.3.5', '4.3.5', '4.4.5'],
    ['4.5.3', '5.4.3', '5.4.3', '4.4.3', '4.4.3', '4.5.3'],
    ['4.6.3', '5.5.3', '5.5.3', '4.5.3', '4.5.3', '4.6.3'],
    ['4.7.4', '-', '-', '-', '4.6.4', '4.7.4'],
    ['4.8', '5.6', '5.6', '4.6', '4.7', '4.8'],
    ['5', '6', '6', '5', '5', '5'],
    ['6.1', '7.1', '7.1', '6.1', '6.1', '6.1'],
    ['7', '8', '8', '7', '7', '7'],
    ['8', '9', '9', '8', '8', '8'],
    ['9.3', '10.1', '10.1', '9.1', '9.1', '9.1'],
    ['9.5.1', '10.3.1', '10.3.1', '9.3.1', '9.3.1', '9.3.1'],
    ['9.6.1', '10.4.1', '10.4.1', '9.4.1', '9.4.1', '9.4.1'],
    ['9.7.1', '10.5.1', '10.5.1', '9.5.1', '9.5.1', '9.5.1'],
    ['9.8.1', '10.6.1', '10.6.1', '9.6.1', '9.6.1', '9.6.1'],
    ['9.9.1', '10.7.1', '10.7.1', '9.7.1', '9.7.1', '9.7.1'],
  ];
  const columns = [['1', '2'], ['3', '4', '5'], ['6'], ['7'], ['8', '9']] as const;
  for (const [rule, ...expected] of table) {
    columns.forEach((ids, i) => {
      if (expected[i] === '-') return;
      for (const id of ids) t.equal(ruleNumber(ROOM_VERSIONS[id], rule), expected[i], `v${id}: v10 ${rule}`);
    });
    t.equal(ruleNumber(ROOM_VERSIONS['10'], rule), rule, `v10: ${rule}`);
  }
});
