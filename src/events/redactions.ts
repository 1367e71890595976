import { serverNameOf } from '../protocol/auth-rules.ts';
import type { RoomEvent } from '../protocol/event.ts';
import { stateTuple } from '../protocol/event.ts';
import type { JsonObject } from '../protocol/json.ts';
import { namedLevel, userPowerLevel } from '../protocol/power-levels.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import * as store from '../storage/events.repository.ts';
import type { StateIds } from '../storage/rooms.repository.ts';
import type { RoomLock } from './room-lock.ts';

/** The event an m.room.redaction names, where the room version keeps it. */
export function redactsOf(event: Pick<RoomEvent, 'type' | 'content' | 'redacts'>, rv: RoomVersion) {
  if (event.type !== 'm.room.redaction') return undefined;
  const target = rv.redactsInContent ? event.content.redacts : event.redacts;
  return typeof target === 'string' ? target : undefined;
}

/**
 * Whether a redaction takes effect on its target (rooms v3+: "Handling redactions"; client-server
 * API: Redactions): the auth rules let anyone send one, so this is checked when it is applied,
 * on every path, local or federated. It applies when the redacting user sent the target, has the
 * redact power level in the state before the redaction, or is on the same server as the target's
 * sender (that server vouched for its own user). The client API is stricter for local users.
 */
export async function redactionApplies(
  lock: RoomLock,
  loadEvents: (ids: string[]) => Promise<Map<string, RoomEvent>>,
  rv: RoomVersion,
  redaction: RoomEvent,
  redactionState: StateIds,
  target: Pick<RoomEvent, 'sender' | 'room_id'>,
): Promise<boolean> {
  if (target.room_id !== undefined && target.room_id !== lock.roomId) return false;
  if (redaction.sender === target.sender) return true;
  if (serverNameOf(redaction.sender) === serverNameOf(target.sender)) return true;
  const plId = redactionState.get(stateTuple('m.room.power_levels', ''));
  const createId = redactionState.get(stateTuple('m.room.create', ''));
  const ids = [plId, createId].filter((id): id is string => id !== undefined);
  const events = await loadEvents(ids);
  const pl = plId ? events.get(plId) : undefined;
  const create = createId ? events.get(createId) : undefined;
  const plSource = pl ? { content: pl.content as JsonObject } : undefined;
  const createSource = create ? { sender: create.sender, content: create.content as JsonObject } : undefined;
  return userPowerLevel(redaction.sender, plSource, createSource, rv) >= namedLevel('redact', plSource);
}

/**
 * After an event is persisted in the timeline: applies it if it is a redaction whose target is
 * held, and applies any held redaction that named it before it arrived. Returns the IDs of the
 * events newly redacted.
 */
export async function applyRedactions(
  lock: RoomLock,
  loadEvents: (ids: string[]) => Promise<Map<string, RoomEvent>>,
  loadState: (group: number) => Promise<StateIds>,
  rv: RoomVersion,
  event: RoomEvent,
  stateBefore: StateIds,
  opts: { lookBack: boolean },
): Promise<string[]> {
  const redacted: string[] = [];
  const target = redactsOf(event, rv);
  if (target !== undefined) {
    const [row] = await store.getPdus(lock.trx, [target]);
    if (row && row.rejected_reason === null) {
      const targetEvent = { sender: row.sender, room_id: row.room_id };
      if (await redactionApplies(lock, loadEvents, rv, event, stateBefore, targetEvent)) {
        await store.markRedacted(lock.trx, target, event.event_id);
        redacted.push(target);
      }
    }
  }
  if (!opts.lookBack) return redacted;
  for (const earlier of await store.redactionsOf(lock.trx, event.event_id)) {
    if (earlier.state_group_before === null) continue;
    const state = await loadState(earlier.state_group_before);
    const redaction = store.toEvent(earlier);
    if (await redactionApplies(lock, loadEvents, rv, redaction, state, { ...event, room_id: lock.roomId })) {
      await store.markRedacted(lock.trx, event.event_id, redaction.event_id);
      redacted.push(event.event_id);
      break;
    }
  }
  return redacted;
}
