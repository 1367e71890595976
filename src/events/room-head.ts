import type { PduRow } from '../storage/database.ts';
import * as store from '../storage/events.repository.ts';
import type { RoomLock } from './room-lock.ts';

/**
 * What one holder of a room's lock reads again and again while it builds and ingests an event:
 * the room's head (its current state group and forward extremities) and the rows of the events
 * it looks at. Only the lock holder can change them, so they are memoised for as long as it holds
 * the lock and has not written: the pipeline forgets them before every write and at the end of
 * each event (`forget`). The memo lives and dies with one lock; nothing is shared across locks,
 * so another process's writes are always seen.
 */
export interface RoomHead {
  currentGroup: number | undefined;
  /** The forward extremities' rows. */
  extremities: PduRow[];
}

const heads = new WeakMap<RoomLock, RoomHead>();
const rows = new WeakMap<RoomLock, Map<string, PduRow>>();

/** The room's head, read once per lock until the next write; undefined for an unknown room. */
export async function roomHead(lock: RoomLock): Promise<RoomHead | undefined> {
  const memo = heads.get(lock);
  if (memo) return memo;
  const head = await store.roomHead(lock.trx, lock.roomId);
  if (!head) return undefined;
  heads.set(lock, head);
  const known = rowsOf(lock);
  for (const row of head.extremities) known.set(row.event_id, row);
  return head;
}

/** Held event rows by ID (any kind: timeline, outlier, rejected, soft-failed). */
export async function heldRows(lock: RoomLock, ids: readonly string[]): Promise<Map<string, PduRow>> {
  const out = new Map<string, PduRow>();
  if (ids.length === 0) return out;
  const known = rowsOf(lock);
  const wanted = [...new Set(ids)].filter((id) => {
    const row = known.get(id);
    if (row) out.set(id, row);
    return !row;
  });
  for (const row of await store.getPdus(lock.trx, wanted)) {
    known.set(row.event_id, row);
    out.set(row.event_id, row);
  }
  return out;
}

/** Drops the memo: the holder is about to write, or is done with an event. */
export function forget(lock: RoomLock): void {
  heads.delete(lock);
  rows.delete(lock);
}

function rowsOf(lock: RoomLock): Map<string, PduRow> {
  let known = rows.get(lock);
  if (!known) {
    known = new Map();
    rows.set(lock, known);
  }
  return known;
}
