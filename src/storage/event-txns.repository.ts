import type { Executor } from './accounts.repository.ts';

/** Client transaction IDs of sent events (idempotency of PUT /send and /redact, per device). */
export interface TxnKey {
  user_id: string;
  device_id: string;
  room_id: string;
  txn_id: string;
}

export function findEvent(db: Executor, key: TxnKey) {
  return db
    .selectFrom('event_txns')
    .innerJoin('events', 'events.event_id', 'event_txns.event_id')
    .select(['events.event_id', 'events.json', 'events.stream_ordering'])
    .where('event_txns.user_id', '=', key.user_id)
    .where('event_txns.device_id', '=', key.device_id)
    .where('event_txns.room_id', '=', key.room_id)
    .where('event_txns.txn_id', '=', key.txn_id)
    .executeTakeFirst();
}

export async function record(
  db: Executor,
  row: TxnKey & { event_id: string; created_ts: number },
): Promise<void> {
  await db.insertInto('event_txns').values(row).execute();
}
