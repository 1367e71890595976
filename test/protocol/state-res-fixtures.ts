/**
 * A small room DAG for the state resolution tests: each event gets its auth events from the state
 * before it (the resolution of the states after its prev_events), as a homeserver would pick them.
 */
import { selectAuthEvents } from '../../src/protocol/auth-rules.ts';
import { type RoomEvent, type StateTuple, stateTuple } from '../../src/protocol/event.ts';
import type { JsonObject } from '../../src/protocol/json.ts';
import { ROOM_VERSIONS, type RoomVersion, type RoomVersionId } from '../../src/protocol/room-versions.ts';
import { resolveState } from '../../src/protocol/state-res/index.ts';

export const ALICE = '@alice:a.test';
export const BOB = '@bob:b.test';
export const CAROL = '@carol:c.test';

export interface DagEventSpec {
  type: string;
  sender: string;
  state_key?: string;
  content?: JsonObject;
  /** origin_server_ts; defaults to a counter. */
  ts?: number;
}

export class Dag {
  readonly rv: RoomVersion;
  readonly roomId: string;
  readonly events = new Map<string, RoomEvent>();
  private readonly after = new Map<string, Map<StateTuple, string>>();
  private clock = 0;

  constructor(rv: RoomVersion | RoomVersionId, createContent: JsonObject = {}) {
    this.rv = typeof rv === 'string' ? ROOM_VERSIONS[rv] : rv;
    this.roomId = this.rv.roomIdFromCreateEvent ? '!create' : '!room:a.test';
    const content: JsonObject = { room_version: this.rv.id, ...createContent };
    if (!this.rv.implicitRoomCreator) content.creator = ALICE;
    this.add('$create', { type: 'm.room.create', sender: ALICE, state_key: '', content }, []);
  }

  /** Adds an event after `parents` (default: none, only for the create event). */
  add(id: string, spec: DagEventSpec, parents: string[]): RoomEvent {
    this.clock += 1;
    const before = this.stateBefore(parents);
    const event: RoomEvent = {
      event_id: id,
      type: spec.type,
      sender: spec.sender,
      content: spec.content ?? {},
      origin_server_ts: spec.ts ?? this.clock,
      depth: Math.max(0, ...parents.map((p) => this.events.get(p)!.depth)) + 1,
      prev_events: parents,
      auth_events: [],
      hashes: { sha256: '' },
      signatures: {},
    };
    if (spec.state_key !== undefined) event.state_key = spec.state_key;
    if (!(this.rv.roomIdFromCreateEvent && spec.type === 'm.room.create')) event.room_id = this.roomId;
    event.auth_events = selectAuthEvents(event, this.rv)
      .map((pair) => before.get(stateTuple(pair.type, pair.state_key)))
      .filter((authId): authId is string => authId !== undefined);
    this.events.set(id, event);
    const after = new Map(before);
    if (spec.state_key !== undefined) after.set(stateTuple(spec.type, spec.state_key), id);
    this.after.set(id, after);
    return event;
  }

  stateBefore(parents: string[]): Map<StateTuple, string> {
    if (parents.length === 0) return new Map();
    return resolveState(this.rv, { stateSets: parents.map((p) => this.stateAfter(p)), events: this.events });
  }

  stateAfter(id: string): Map<StateTuple, string> {
    const state = this.after.get(id);
    if (state === undefined) throw new Error(`no event ${id}`);
    return state;
  }

  member(id: string, sender: string, target: string, membership: string, parents: string[], ts?: number) {
    return this.add(
      id,
      { type: 'm.room.member', sender, state_key: target, content: { membership }, ...(ts ? { ts } : {}) },
      parents,
    );
  }

  /** The state entry for (type, state_key) after resolving the states after `ids`. */
  resolvedAt(ids: string[], type: string, stateKey = ''): string | undefined {
    return this.stateBefore(ids).get(stateTuple(type, stateKey));
  }
}

/**
 * create, alice's join, power levels (alice 100 unless v12, bob 50, plus `users`), a public join
 * rule, and bob's join. Returns the DAG and the ID of its last event.
 */
export function publicRoom(
  rv: RoomVersion | RoomVersionId,
  users: JsonObject = {},
  createContent: JsonObject = {},
): { dag: Dag; head: string } {
  const dag = new Dag(rv, createContent);
  dag.member('$join-alice', ALICE, ALICE, 'join', ['$create']);
  const levels: JsonObject = dag.rv.creatorsHaveInfinitePower ? {} : { [ALICE]: 100 };
  dag.add(
    '$pl',
    {
      type: 'm.room.power_levels',
      sender: ALICE,
      state_key: '',
      content: { users: { ...levels, [BOB]: 50, ...users } },
    },
    ['$join-alice'],
  );
  dag.add(
    '$jr',
    { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'public' } },
    ['$pl'],
  );
  dag.member('$join-bob', BOB, BOB, 'join', ['$jr']);
  return { dag, head: '$join-bob' };
}
