// State resolution: cases of our own on top of the vectors (state-res-vectors.test.ts): tie-breaks,
// power events, a ban racing a join, v2.1's create event and empty start, v1, the auth chain, errors.
import t from 'tap';
import { stateTuple } from '../../src/protocol/event.ts';
import type { JsonObject } from '../../src/protocol/json.ts';
import { ROOM_VERSION_IDS } from '../../src/protocol/room-versions.ts';
import { isPowerEvent } from '../../src/protocol/state-res/common.ts';
import {
  authChainIds,
  conflictedStateSubgraph,
  resolveState,
  StateResError,
} from '../../src/protocol/state-res/index.ts';
import { ALICE, BOB, CAROL, type Dag, publicRoom } from './state-res-fixtures.ts';

/** The versions resolved by v2 and v2.1. */
const V2_VERSIONS = ROOM_VERSION_IDS.filter((id) => id !== '1');

function topic(dag: Dag, id: string, sender: string, parents: string[], ts?: number) {
  return dag.add(
    id,
    { type: 'm.room.topic', sender, state_key: '', content: { topic: id }, ...(ts ? { ts } : {}) },
    parents,
  );
}

t.test('a single state set, or identical ones, resolve to themselves', async (t) => {
  for (const id of V2_VERSIONS) {
    const { dag, head } = publicRoom(id);
    const state = dag.stateAfter(head);
    t.same(resolveState(dag.rv, { stateSets: [state], events: dag.events }), state, `v${id}: one set`);
    t.same(resolveState(dag.rv, { stateSets: [state, state], events: dag.events }), state, `v${id}: twice`);
  }
});

t.test('concurrent topics: the later origin_server_ts wins, then the greater event ID', async (t) => {
  for (const id of V2_VERSIONS) {
    const { dag, head } = publicRoom(id);
    topic(dag, '$t-late', ALICE, [head], 2000);
    topic(dag, '$t-early', ALICE, [head], 1000);
    t.equal(dag.resolvedAt(['$t-late', '$t-early'], 'm.room.topic'), '$t-late', `v${id}: by timestamp`);
    t.equal(dag.resolvedAt(['$t-early', '$t-late'], 'm.room.topic'), '$t-late', `v${id}: order of sets`);

    topic(dag, '$t-b', ALICE, [head], 3000);
    topic(dag, '$t-a', ALICE, [head], 3000);
    t.equal(
      dag.resolvedAt(['$t-a', '$t-b'], 'm.room.topic'),
      '$t-b',
      `v${id}: same ts, greater ID applied last`,
    );
    t.equal(dag.resolvedAt(['$t-b', '$t-a'], 'm.room.topic'), '$t-b', `v${id}: same ts, either order`);
  }
});

t.test('a ban racing a join: the ban (a power event) wins whatever the timestamps', async (t) => {
  for (const id of V2_VERSIONS) {
    for (const banFirst of [true, false]) {
      const { dag, head } = publicRoom(id);
      dag.member('$ban-carol', ALICE, CAROL, 'ban', [head], banFirst ? 100 : 900);
      dag.member('$join-carol', CAROL, CAROL, 'join', [head], banFirst ? 900 : 100);
      const sets = ['$join-carol', '$ban-carol'];
      t.equal(
        dag.resolvedAt(sets, 'm.room.member', CAROL),
        '$ban-carol',
        `v${id}, ban ${banFirst ? 'before' : 'after'} the join by origin_server_ts`,
      );
      t.equal(dag.resolvedAt([...sets].reverse(), 'm.room.member', CAROL), '$ban-carol', 'order of sets');
    }
  }
});

t.test('power events are sorted by the sender power level: a demotion beats the demoted', async (t) => {
  for (const id of V2_VERSIONS) {
    const { dag, head } = publicRoom(id);
    // Alice (100 or creator) takes bob's moderator level away; concurrently bob (50) bans carol,
    // who joined before. The demotion is ordered first, so bob's ban fails its auth check.
    dag.member('$join-carol', CAROL, CAROL, 'join', [head]);
    const levels: JsonObject = dag.rv.creatorsHaveInfinitePower ? {} : { [ALICE]: 100 };
    dag.add(
      '$demote-bob',
      {
        type: 'm.room.power_levels',
        sender: ALICE,
        state_key: '',
        content: { users: { ...levels } },
        ts: 5000,
      },
      ['$join-carol'],
    );
    dag.member('$bob-bans-carol', BOB, CAROL, 'ban', ['$join-carol'], 10);
    const sets = ['$demote-bob', '$bob-bans-carol'];
    t.equal(dag.resolvedAt(sets, 'm.room.power_levels'), '$demote-bob', `v${id}: demotion kept`);
    t.equal(dag.resolvedAt(sets, 'm.room.member', CAROL), '$join-carol', `v${id}: the ban is undone`);
  }
});

t.test('isPowerEvent follows the definition', async (t) => {
  const { dag } = publicRoom('10');
  dag.member('$kick', ALICE, BOB, 'leave', ['$join-bob']);
  dag.member('$self-leave', BOB, BOB, 'leave', ['$join-bob']);
  dag.member('$ban', ALICE, BOB, 'ban', ['$join-bob']);
  t.ok(isPowerEvent(dag.events.get('$pl')!), 'power levels');
  t.ok(isPowerEvent(dag.events.get('$jr')!), 'join rules');
  t.ok(isPowerEvent(dag.events.get('$kick')!), 'a kick');
  t.ok(isPowerEvent(dag.events.get('$ban')!), 'a ban');
  t.notOk(isPowerEvent(dag.events.get('$self-leave')!), 'leaving oneself');
  t.notOk(isPowerEvent(dag.events.get('$join-bob')!), 'a join');
});

t.test('v2.1: the create event comes from the room ID, and the creator outranks everyone', async (t) => {
  const { dag, head } = publicRoom('12', {}, { additional_creators: [CAROL] });
  t.notOk(dag.events.get('$pl')!.auth_events.includes('$create'), 'no create event among auth events');
  // Carol, an additional creator, and bob (50) race: carol bans bob, bob changes the topic.
  dag.member('$join-carol', CAROL, CAROL, 'join', [head]);
  dag.member('$ban-bob', CAROL, BOB, 'ban', ['$join-carol'], 9000);
  topic(dag, '$topic-bob', BOB, ['$join-carol'], 1);
  const state = dag.stateBefore(['$ban-bob', '$topic-bob']);
  t.equal(state.get(stateTuple('m.room.member', BOB)), '$ban-bob');
  t.equal(state.get(stateTuple('m.room.topic', '')), undefined, "the banned bob's topic is not applied");
  t.equal(state.get(stateTuple('m.room.create', '')), '$create');

  const events = new Map(dag.events);
  events.delete('$create');
  t.throws(
    () =>
      resolveState(dag.rv, { stateSets: [dag.stateAfter('$ban-bob'), dag.stateAfter('$topic-bob')], events }),
    StateResError,
    'a missing create event is an error, not a silent refusal',
  );
});

t.test('v2.1: the conflicted state subgraph of a join and a later leave', async (t) => {
  // (The empty start of the first auth checks is what the MSC4297 vectors exercise.)
  const { dag, head } = publicRoom('12');
  dag.member('$join-carol', CAROL, CAROL, 'join', [head]);
  dag.add('$name', { type: 'm.room.name', sender: ALICE, state_key: '', content: { name: 'n' } }, [
    '$join-carol',
  ]);
  dag.member('$leave-carol', CAROL, CAROL, 'leave', ['$name']);
  const conflicted = new Set(['$join-carol', '$leave-carol']);
  const subgraph = conflictedStateSubgraph(conflicted, dag.events);
  t.ok(subgraph.has('$join-carol') && subgraph.has('$leave-carol'), 'ends included');
  t.notOk(subgraph.has('$pl'), 'events below both ends are not on a path between them');
  t.equal(dag.resolvedAt(['$join-carol', '$leave-carol'], 'm.room.member', CAROL), '$leave-carol');
});

t.test('conflictedStateSubgraph: the events on paths between conflicted events', async (t) => {
  const { dag } = publicRoom('10');
  // In v10 every event cites the create event, so $create to $join-bob: everything on the way.
  const subgraph = conflictedStateSubgraph(new Set(['$create', '$join-bob']), dag.events);
  t.same([...subgraph].sort(), ['$create', '$join-alice', '$join-bob', '$jr', '$pl']);
  const lone = conflictedStateSubgraph(new Set(['$jr']), dag.events);
  t.same([...lone], ['$jr'], 'a single conflicted event is its own subgraph');
});

t.test('authChainIds: the transitive auth events, without the starting events', async (t) => {
  const { dag } = publicRoom('10');
  t.same([...authChainIds(['$join-bob'], dag.events)].sort(), ['$create', '$join-alice', '$jr', '$pl']);
  t.same([...authChainIds(['$create'], dag.events)], []);
  t.same([...authChainIds(['$pl', '$join-alice'], dag.events)].sort(), ['$create', '$join-alice']);
  t.throws(() => authChainIds(['$nope'], dag.events), StateResError);
});

t.test('a missing event is a StateResError', async (t) => {
  const { dag, head } = publicRoom('10');
  topic(dag, '$t1', ALICE, [head]);
  topic(dag, '$t2', ALICE, [head]);
  const events = new Map(dag.events);
  events.delete('$t2');
  t.throws(
    () => resolveState(dag.rv, { stateSets: [dag.stateAfter('$t1'), dag.stateAfter('$t2')], events }),
    StateResError,
  );
});

t.test('v1: state resolution of room version 1', async (t) => {
  const { dag, head } = publicRoom('1');
  t.equal(dag.rv.stateResolution, 'v1');
  // Other conflicts: the deepest allowed event wins, whatever its timestamp.
  topic(dag, '$shallow', ALICE, [head], 9000);
  topic(dag, '$mid', ALICE, [head], 1);
  topic(dag, '$deep', ALICE, ['$mid'], 2);
  t.equal(dag.resolvedAt(['$shallow', '$deep'], 'm.room.topic'), '$deep');
  t.equal(dag.resolvedAt(['$deep', '$shallow'], 'm.room.topic'), '$deep');
  // A key present in one set only is not a conflict in v1 (it is in v2).
  const joined = dag.member('$join-carol', CAROL, CAROL, 'join', [head]);
  t.equal(dag.resolvedAt(['$shallow', joined.event_id], 'm.room.member', CAROL), '$join-carol');

  // Power levels: start at the shallowest and climb while each next one is allowed.
  dag.add(
    '$pl-2',
    { type: 'm.room.power_levels', sender: ALICE, state_key: '', content: { users: { [ALICE]: 100 } } },
    [head],
  );
  dag.add(
    '$pl-bob',
    {
      type: 'm.room.power_levels',
      sender: BOB,
      state_key: '',
      content: { users: { [ALICE]: 100, [BOB]: 50 }, ban: 40 },
    },
    ['$pl-2'],
  );
  // $pl-bob is deeper but bob is at 0 in $pl-2, so the climb stops at $pl-2.
  t.equal(dag.resolvedAt(['$pl-2', '$pl-bob'], 'm.room.power_levels'), '$pl-2');

  // A ban racing a join at the same depth: whichever comes first, the ban ends up in force.
  dag.member('$ban-dave', ALICE, '@dave:d.test', 'ban', [head]);
  dag.member('$join-dave', '@dave:d.test', '@dave:d.test', 'join', [head]);
  for (const sets of [
    ['$ban-dave', '$join-dave'],
    ['$join-dave', '$ban-dave'],
  ]) {
    t.equal(dag.resolvedAt(sets, 'm.room.member', '@dave:d.test'), '$ban-dave', sets.join(' vs '));
  }
});
