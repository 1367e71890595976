/**
 * State resolution v2.1 (room version 12; rooms: v12.md "State resolution", MSC4297). It is v2
 * with two changes: the full conflicted set also holds the conflicted state subgraph, and the
 * first iterative auth checks start from the empty state rather than the unconflicted state map.
 *
 * The create event: in v12 it is never an auth event (the room ID names it), so the auth checks
 * and the power level of a sender read it through the room ID (see `createEventFor`), and the
 * creators' infinite power level orders their power events first.
 */
import type { RoomEvent, StateTuple } from '../event.ts';
import type { RoomVersion } from '../room-versions.ts';
import { getEvent, type StateResInput } from './common.ts';
import { resolveV2Family } from './v2.ts';

/**
 * The conflicted state subgraph: every event on an auth-event path from one conflicted event to
 * another, both ends included. An event is on such a path when a conflicted event reaches it and
 * it reaches a conflicted event.
 */
export function conflictedStateSubgraph(
  conflicted: ReadonlySet<string>,
  events: ReadonlyMap<string, RoomEvent>,
): Set<string> {
  // Whether each event reaches a conflicted event (itself included), memoised; iterative DFS.
  const reaches = new Map<string, boolean>();
  const subgraph = new Set<string>();
  for (const root of conflicted) {
    const stack: Array<{ id: string; next: number }> = [{ id: root, next: 0 }];
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      if (frame.next === 0 && reaches.has(frame.id)) {
        stack.pop();
        continue;
      }
      const authEvents = getEvent(events, frame.id).auth_events;
      if (frame.next < authEvents.length) {
        const child = authEvents[frame.next++]!;
        if (!reaches.has(child)) stack.push({ id: child, next: 0 });
        continue;
      }
      const result = conflicted.has(frame.id) || authEvents.some((id) => reaches.get(id) === true);
      reaches.set(frame.id, result);
      if (result) subgraph.add(frame.id);
      stack.pop();
    }
  }
  return subgraph;
}

/** State resolution v2.1 (room version 12). */
export function resolveStateV21(roomVersion: RoomVersion, input: StateResInput): Map<StateTuple, string> {
  return resolveV2Family(roomVersion, input, {
    startFromEmpty: true,
    conflictedSubgraph: conflictedStateSubgraph,
  });
}
