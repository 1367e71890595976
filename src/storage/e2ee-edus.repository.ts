import type { Executor } from './accounts.repository.ts';

/**
 * The storage of the end-to-end encryption EDUs (migration 0019): the stream of each local
 * user's outbound device list updates, and the m.direct_to_device messages already received.
 */

/**
 * In the caller's transaction: takes `count` consecutive stream IDs for a local user's device list
 * updates, the first at least `atLeast` and above every ID taken before. Returns the first and the
 * latest ID taken before (the first update's prev_id), undefined when there was none. The row is
 * locked until the transaction ends, so two processes never hand out the same IDs.
 */
export async function takeDeviceListStreamIds(
  trx: Executor,
  userId: string,
  count: number,
  atLeast: number,
  now: number,
): Promise<{ first: number; previous: number | undefined }> {
  const row = await trx
    .selectFrom('device_list_outbound')
    .select('stream_id')
    .where('user_id', '=', userId)
    .forUpdate()
    .executeTakeFirst();
  const previous = row ? Number(row.stream_id) : undefined;
  const first = Math.max(atLeast, (previous ?? 0) + 1);
  const last = first + count - 1;
  await trx
    .insertInto('device_list_outbound')
    .values({ user_id: userId, stream_id: last, updated_ts: now })
    .onConflict((oc) => oc.column('user_id').doUpdateSet({ stream_id: last, updated_ts: now }))
    .execute();
  return { first, previous };
}

/** The latest outbound device list stream ID of a local user, 0 when none was taken. */
export async function latestDeviceListStreamId(db: Executor, userId: string): Promise<number> {
  const row = await db
    .selectFrom('device_list_outbound')
    .select('stream_id')
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return Number(row?.stream_id ?? 0);
}

/**
 * In the caller's transaction: records that the m.direct_to_device message `messageId` of
 * `origin` was received. False when it was already (a repeat, to be ignored).
 */
export async function recordInboundToDevice(
  trx: Executor,
  origin: string,
  messageId: string,
  now: number,
): Promise<boolean> {
  const rows = await trx
    .insertInto('federation_inbound_to_device')
    .values({ origin, message_id: messageId, received_ts: now })
    .onConflict((oc) => oc.columns(['origin', 'message_id']).doNothing())
    .returning('origin')
    .execute();
  return rows.length > 0;
}

/** Forgets the received message IDs older than `before`. */
export async function forgetInboundToDeviceBefore(db: Executor, before: number): Promise<void> {
  await db.deleteFrom('federation_inbound_to_device').where('received_ts', '<', before).execute();
}
