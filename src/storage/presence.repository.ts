import type { ExpressionBuilder, Selectable } from 'kysely';
import { nextPosition } from '../streams/positions.ts';
import type { Executor } from './accounts.repository.ts';
import type { Database, PresenceTable } from './database.ts';
import { usersOfServerPattern } from './federation.repository.ts';

export type PresenceRow = Selectable<PresenceTable>;

/**
 * Thrown by a conditional write that found nothing to change, so that the caller's transaction
 * rolls back the position it took (every position taken must be announced).
 */
export class NothingToWrite extends Error {}

export async function getPresence(db: Executor, userId: string): Promise<PresenceRow | undefined> {
  return db.selectFrom('presence').selectAll().where('user_id', '=', userId).executeTakeFirst();
}

/** Records activity without a new stream position (no client needs to hear of it). */
export async function touchPresence(db: Executor, userId: string, ts: number): Promise<void> {
  await db.updateTable('presence').set({ last_active_ts: ts }).where('user_id', '=', userId).execute();
}

/**
 * Writes a presence state with a new stream position, inside the caller's transaction; returns
 * the position; throws NothingToWrite when `onlyIf` no longer holds. The
 * position is taken first, as every writer of the stream does, so locks are always taken in the
 * same order.
 */
export async function writePresence(
  trx: Executor,
  w: {
    userId: string;
    presence: string;
    /** undefined: keep the stored status message. */
    statusMsg: string | null | undefined;
    /** undefined: keep the stored last activity. */
    activeTs: number | undefined;
    /** Only when the row holds this state and was last active before `activeBefore`. */
    onlyIf?: string;
    activeBefore?: number;
  },
): Promise<number> {
  const run = async (): Promise<number> => {
    const position = await nextPosition(trx);
    if (w.onlyIf !== undefined) {
      const updated = await trx
        .updateTable('presence')
        .set({ presence: w.presence, stream_ordering: position })
        .where('user_id', '=', w.userId)
        .where('presence', '=', w.onlyIf)
        .where('last_active_ts', '<', w.activeBefore ?? 0)
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) === 0) throw new NothingToWrite();
      return position;
    }
    await trx
      .insertInto('presence')
      .values({
        user_id: w.userId,
        presence: w.presence,
        status_msg: w.statusMsg ?? null,
        last_active_ts: w.activeTs ?? 0,
        stream_ordering: position,
      })
      .onConflict((oc) =>
        oc.column('user_id').doUpdateSet({
          presence: w.presence,
          stream_ordering: position,
          ...(w.statusMsg !== undefined ? { status_msg: w.statusMsg } : {}),
          ...(w.activeTs !== undefined ? { last_active_ts: w.activeTs } : {}),
        }),
      )
      .execute();
    return position;
  };
  return run();
}

/** Users of `serverName` online or unavailable whose last activity is older than the thresholds. */
export async function staleUsers(
  db: Executor,
  idleBefore: number,
  offlineBefore: number,
  limit: number,
  serverName: string,
): Promise<Array<Pick<PresenceRow, 'user_id' | 'presence' | 'last_active_ts'>>> {
  return db
    .selectFrom('presence')
    .select(['user_id', 'presence', 'last_active_ts'])
    .where('user_id', 'like', usersOfServerPattern(serverName))
    .where((eb) =>
      eb.or([
        eb.and([eb('presence', '=', 'online'), eb('last_active_ts', '<', idleBefore)]),
        eb.and([eb('presence', '=', 'unavailable'), eb('last_active_ts', '<', offlineBefore)]),
      ]),
    )
    .orderBy('last_active_ts')
    .limit(limit)
    .execute();
}

export async function joinedRoomIds(db: Executor, userId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships')
    .select('room_id')
    .where('user_id', '=', userId)
    .where('membership', '=', 'join')
    .execute();
  return rows.map((r) => r.room_id);
}

export async function shareARoom(db: Executor, a: string, b: string): Promise<boolean> {
  const row = await db
    .selectFrom('memberships as m1')
    .innerJoin('memberships as m2', 'm2.room_id', 'm1.room_id')
    .select('m1.room_id')
    .where('m1.user_id', '=', a)
    .where('m1.membership', '=', 'join')
    .where('m2.user_id', '=', b)
    .where('m2.membership', '=', 'join')
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Presence rows of the user and of everyone joined to a room the user is joined to: on an
 * initial sync (`from` undefined) every one not offline; on an incremental one those changed in
 * (from, upTo], and those not offline who newly share a room with the user (either joined, or
 * changed their membership, in the range), so a new room member and the members they meet learn
 * each other's presence.
 */
export async function presenceOfPeers(
  db: Executor,
  userId: string,
  from: number | undefined,
  upTo: number,
  limit: number,
): Promise<PresenceRow[]> {
  const peers = (eb: ExpressionBuilder<Database, 'presence'>, newly: boolean) => {
    let q = eb
      .selectFrom('memberships as m1')
      .innerJoin('memberships as m2', 'm2.room_id', 'm1.room_id')
      .select('m2.user_id')
      .where('m1.user_id', '=', userId)
      .where('m1.membership', '=', 'join')
      .where('m2.membership', '=', 'join');
    if (newly && from !== undefined) {
      q = q.where((w) =>
        w.or([
          w.and([w('m1.stream_ordering', '>', from), w('m1.stream_ordering', '<=', upTo)]),
          w.and([w('m2.stream_ordering', '>', from), w('m2.stream_ordering', '<=', upTo)]),
        ]),
      );
    }
    return q;
  };
  let q = db.selectFrom('presence').selectAll();
  if (from === undefined) {
    q = q
      .where((eb) => eb.or([eb('user_id', '=', userId), eb('user_id', 'in', peers(eb, false))]))
      .where('presence', '<>', 'offline')
      .where('stream_ordering', '<=', upTo);
  } else {
    q = q.where((eb) =>
      eb.or([
        eb.and([
          eb('stream_ordering', '>', from),
          eb('stream_ordering', '<=', upTo),
          eb.or([eb('user_id', '=', userId), eb('user_id', 'in', peers(eb, false))]),
        ]),
        eb.and([eb('presence', '<>', 'offline'), eb('user_id', 'in', peers(eb, true))]),
      ]),
    );
  }
  return q.orderBy('stream_ordering').limit(limit).execute();
}
