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

/** One receipt as stored: `threadId` is 'main' for an unthreaded receipt too. */
export interface Receipt {
  roomId: string;
  userId: string;
  type: ReceiptType;
  threadId: string;
  eventId: string;
  ts: number;
}

/** Told of a local user's public receipt (the federation sender hands it to the room's servers). */
export type ReceiptListener = (receipt: Receipt) => void;

/** Read receipts and the fully-read marker (client-server API: Receipts, Read markers). */
export class ReceiptsService {
  private listener: ReceiptListener | undefined;

  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {}

  /** Local m.read receipts go to `listener` too, from now on (m.read.private never does). */
  setListener(listener: ReceiptListener): void {
    this.listener = listener;
  }

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
    const receipt: Receipt = {
      roomId,
      userId: session.userId,
      type: type as ReceiptType,
      threadId,
      eventId: event.event_id,
      ts: this.now(),
    };
    await this.store(receipt);
    if (receipt.type === 'm.read') this.listener?.(receipt);
  }

  /**
   * A remote user's receipt, checked by the inbound EDU handler (the user's server sent it, the
   * user is joined, the event is of the room if we have it): stored and announced like a local
   * one, replacing the user's earlier receipt of that type and thread.
   */
  async applyRemoteReceipt(receipt: Receipt): Promise<void> {
    await this.store(receipt);
  }

  private async store(r: Receipt): Promise<void> {
    const position = await this.db.transaction().execute(async (trx) => {
      const p = await nextPosition(trx);
      await trx
        .insertInto('receipts')
        .values({
          room_id: r.roomId,
          user_id: r.userId,
          receipt_type: r.type,
          thread_id: r.threadId,
          event_id: r.eventId,
          ts: r.ts,
          stream_ordering: p,
        })
        .onConflict((c) =>
          c.columns(['room_id', 'user_id', 'receipt_type', 'thread_id']).doUpdateSet({
            event_id: r.eventId,
            ts: r.ts,
            stream_ordering: p,
          }),
        )
        .execute();
      return p;
    });
    await this.notifier.notify({ kind: 'receipt', position, roomId: r.roomId, userIds: [r.userId] });
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
