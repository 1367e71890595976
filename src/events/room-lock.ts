import { sql } from 'kysely';
import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';

declare const lockBrand: unique symbol;

/**
 * Proof that the holder has the room's lock: one writer per room, in this process (a queue) and
 * across processes (a transaction-scoped advisory lock). Every function that changes a room's
 * graph or state takes one, so none can be called without it.
 */
export interface RoomLock {
  readonly roomId: string;
  /** The transaction the lock lives in: the room's changes are written through it. */
  readonly trx: Executor;
  readonly [lockBrand]: true;
}

export class RoomLocks {
  private readonly queues = new Map<string, Promise<unknown>>();

  /**
   * `crossProcess` false for the embedded database: one process owns it (a lock file says so)
   * and it has one connection, so the queue below already is the whole lock.
   */
  constructor(
    private readonly db: Db,
    private readonly crossProcess = true,
  ) {}

  /** Runs `fn` in a transaction holding the room's lock; the lock ends with the transaction. */
  async withRoomLock<T>(roomId: string, fn: (lock: RoomLock) => Promise<T>): Promise<T> {
    const previous = this.queues.get(roomId) ?? Promise.resolve();
    const run = previous
      .catch(() => {})
      .then(() =>
        this.db.transaction().execute(async (trx) => {
          if (this.crossProcess) await sql`select pg_advisory_xact_lock(hashtext(${roomId}))`.execute(trx);
          return fn({ roomId, trx } as RoomLock);
        }),
      );
    this.queues.set(roomId, run);
    try {
      return await run;
    } finally {
      if (this.queues.get(roomId) === run) this.queues.delete(roomId);
    }
  }
}
