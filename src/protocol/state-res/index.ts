/**
 * State resolution (rooms: v1.md, v2-state-res fragment, v12.md): pure and synchronous over
 * preloaded events. `resolveState` picks the algorithm of the room version.
 */
import type { StateTuple } from '../event.ts';
import type { RoomVersion } from '../room-versions.ts';
import type { StateResInput } from './common.ts';
import { resolveStateV1 } from './v1.ts';
import { resolveStateV2 } from './v2.ts';
import { resolveStateV21 } from './v2-1.ts';

export { authChainIds, StateResError, type StateResInput } from './common.ts';
export { resolveStateV1 } from './v1.ts';
export { resolveStateV2 } from './v2.ts';
export { conflictedStateSubgraph, resolveStateV21 } from './v2-1.ts';

/** Resolves the state sets with the algorithm of `rv` (v1, v2 or v2.1). */
export function resolveState(rv: RoomVersion, input: StateResInput): Map<StateTuple, string> {
  switch (rv.stateResolution) {
    case 'v1':
      return resolveStateV1(rv, input);
    case 'v2':
      return resolveStateV2(rv, input);
    case 'v2.1':
      return resolveStateV21(rv, input);
  }
}
