/**
 * State resolution bench: a room with N members, each joined through its own branch, then two
 * forks that race power level changes, bans and topics. Prints the time to resolve the two forks.
 *
 *   npx tsx bench/state-res.ts [members] [room version] [conflicting changes per fork]
 */
import { selectAuthEvents } from '../src/protocol/auth-rules.ts';
import { type RoomEvent, type StateTuple, stateTuple } from '../src/protocol/event.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import { getRoomVersion } from '../src/protocol/room-versions.ts';
import { authChainIds, resolveState } from '../src/protocol/state-res/index.ts';

const members = Number(process.argv[2] ?? 2000);
const rv = getRoomVersion(process.argv[3] ?? '12');
if (rv === undefined) throw new Error('unknown room version');
const changes = Number(process.argv[4] ?? members / 4);

const events = new Map<string, RoomEvent>();
const roomId = rv.roomIdFromCreateEvent ? '!create' : '!bench:a.test';
let ts = 0;

function add(
  id: string,
  state: Map<StateTuple, string>,
  type: string,
  sender: string,
  stateKey: string,
  content: JsonObject,
  prev: string[],
): RoomEvent {
  const event: RoomEvent = {
    event_id: id,
    type,
    sender,
    state_key: stateKey,
    content,
    origin_server_ts: ++ts,
    depth: ts,
    prev_events: prev,
    auth_events: [],
    hashes: { sha256: '' },
    signatures: {},
  };
  if (!(rv!.roomIdFromCreateEvent && type === 'm.room.create')) event.room_id = roomId;
  event.auth_events = selectAuthEvents(event, rv!)
    .map((pair) => state.get(stateTuple(pair.type, pair.state_key)))
    .filter((authId): authId is string => authId !== undefined);
  events.set(id, event);
  state.set(stateTuple(type, stateKey), id);
  return event;
}

const alice = '@alice:a.test';
const state = new Map<StateTuple, string>();
const createContent: JsonObject = { room_version: rv.id };
if (!rv.implicitRoomCreator) createContent.creator = alice;
add('$create', state, 'm.room.create', alice, '', createContent, []);
add('$join-alice', state, 'm.room.member', alice, alice, { membership: 'join' }, ['$create']);
const users = (extra: JsonObject): JsonObject => ({
  users: { ...(rv.creatorsHaveInfinitePower ? {} : { [alice]: 100 }), ...extra },
});
add('$pl0', state, 'm.room.power_levels', alice, '', users({ '@m0:b.test': 50, '@m1:b.test': 50 }), [
  '$join-alice',
]);
add('$jr', state, 'm.room.join_rules', alice, '', { join_rule: 'public' }, ['$pl0']);
let head = '$jr';
for (let i = 0; i < members; i++) {
  const user = `@m${i}:b.test`;
  head = add(`$join-${i}`, state, 'm.room.member', user, user, { membership: 'join' }, [head]).event_id;
}

// Two forks from here.
const forkA = new Map(state);
const forkB = new Map(state);
let headA = head;
let headB = head;
for (let i = 0; i < changes; i++) {
  headA = add(`$a-topic-${i}`, forkA, 'm.room.topic', alice, '', { topic: `a${i}` }, [headA]).event_id;
  headA = add(`$a-ban-${i}`, forkA, 'm.room.member', alice, `@m${i + 2}:b.test`, { membership: 'ban' }, [
    headA,
  ]).event_id;
  headB = add(
    `$b-leave-${i}`,
    forkB,
    'm.room.member',
    `@m${i + 2}:b.test`,
    `@m${i + 2}:b.test`,
    {
      membership: 'leave',
    },
    [headB],
  ).event_id;
  headB = add(`$b-name-${i}`, forkB, 'm.room.name', '@m0:b.test', '', { name: `b${i}` }, [headB]).event_id;
}
add('$a-pl', forkA, 'm.room.power_levels', alice, '', users({ '@m0:b.test': 0 }), [headA]);
add(
  '$b-pl',
  forkB,
  'm.room.power_levels',
  '@m1:b.test',
  '',
  users({ '@m0:b.test': 50, '@m1:b.test': 50, '@m9:b.test': 10 }),
  [headB],
);

const input = { stateSets: [forkA, forkB], events };
const chain = authChainIds([...forkA.values(), ...forkB.values()], events);
for (let i = 0; i < 3; i++) resolveState(rv, input); // warm up
const runs = 10;
const start = performance.now();
let resolved = new Map<StateTuple, string>();
for (let i = 0; i < runs; i++) resolved = resolveState(rv, input);
const ms = (performance.now() - start) / runs;
console.log(
  `state res ${rv.stateResolution} (room version ${rv.id}): ${events.size} events, ${chain.size} in the auth chains, ` +
    `${resolved.size} resolved entries: ${ms.toFixed(1)} ms per resolution (mean of ${runs})`,
);
