import { errors } from '../errors.ts';
import type { JsonObject } from '../protocol/json.ts';
import * as repo from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { Notifier } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import type { RoomsService } from './rooms.service.ts';

export const RECEIPT_TYPES = ['m.read', 'm.read.private'] as const;
export type ReceiptType = (typeof RECEIPT_TYPES)[number];

/** Read receipts and the fully-read marker (client-server API: Receipts, Read markers). */
export class ReceiptsService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {}

  /** POST /rooms/{roomId}/receipt/{receiptType}/{eventId} */
  async setReceipt(
    session: Session,
    roomId: string,
    type: string,
    eventId: string,
    threadId = 'main',
  ): Promise<void> {
    if (type === 'm.fully_read') return this.setReadMarkers(session, roomId, { 'm.fully_read': eventId });
    if (!(RECEIPT_TYPES as readonly string[]).includes(type))
      throw errors.invalidParam(`Unknown receipt type ${type}`);
    await this.requireJoined(session, roomId);
    const event = await this.rooms.visibleEvent(session.userId, roomId, eventId);
    const position = await this.db.transaction().execute(async (trx) => {
      const p = await nextPosition(trx);
      await trx
        .insertInto('receipts')
        .values({
          room_id: roomId,
          user_id: session.userId,
          receipt_type: type,
          thread_id: threadId,
          event_id: event.event_id,
          ts: this.now(),
          stream_ordering: p,
        })
        .onConflict((c) =>
          c.columns(['room_id', 'user_id', 'receipt_type', 'thread_id']).doUpdateSet({
            event_id: event.event_id,
            ts: this.now(),
            stream_ordering: p,
          }),
        )
        .execute();
      return p;
    });
    await this.notifier.notify({ kind: 'receipt', position, roomId, userIds: [session.userId] });
  }

  /** POST /rooms/{roomId}/read_markers */
  async setReadMarkers(
    session: Session,
    roomId: string,
    markers: Record<string, string | undefined>,
  ): Promise<void> {
    await this.requireJoined(session, roomId);
    for (const type of RECEIPT_TYPES) {
      const id = markers[type];
      if (id !== undefined) await this.setReceipt(session, roomId, type, id);
    }
    const fully = markers['m.fully_read'];
    if (fully !== undefined) {
      await this.rooms.visibleEvent(session.userId, roomId, fully);
      const position = await this.db.transaction().execute(async (trx) => {
        const p = await nextPosition(trx);
        await repo.putAccountData(
          trx,
          session.userId,
          roomId,
          'm.fully_read',
          { event_id: fully } as JsonObject,
          p,
        );
        return p;
      });
      await this.notifier.notify({ kind: 'account_data', position, roomId, userIds: [session.userId] });
    }
  }

  private async requireJoined(session: Session, roomId: string): Promise<void> {
    if ((await this.rooms.membership(roomId, session.userId)) !== 'join') {
      throw errors.forbidden('You are not joined to this room');
    }
  }
}
