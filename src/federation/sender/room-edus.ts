import type { JsonObject } from '../../protocol/json.ts';
import type { PresenceUpdate } from '../../services/presence.service.ts';
import type { Receipt } from '../../services/receipts.service.ts';
import { REMOTE_TYPING_MS, type TypingService } from '../../services/typing.service.ts';
import type { Db } from '../../storage/connect.ts';
import * as outbox from '../../storage/federation.repository.ts';
import type { FederationSender } from './federation-sender.ts';

/** How long a receipt waits for a destination that is down: it survives a short outage. */
export const RECEIPT_TTL_MS = 60 * 60 * 1000;
/** A user's latest presence waits as long (a later change replaces it). */
export const PRESENCE_TTL_MS = 60 * 60 * 1000;
/** After a local notice runs out, the servers are told the user stopped (a moment later). */
const TYPING_STOP_GRACE_MS = 50;
/**
 * A "stopped typing" is worth sending while the other server may still show the user typing
 * (a remote notice lasts a minute there); a "typing" only until it runs out.
 */
const STOP_TTL_MS = REMOTE_TYPING_MS;

/**
 * The ephemeral EDUs of this server's users (server-server API: Typing Notifications, Receipts,
 * Presence), handed to the sender for the servers that should hear them: typing and receipts for
 * the servers with users joined to the room, presence for those sharing a room with the user.
 * Each is keyed in the sender's queue so that only the latest per user (and room, receipt type
 * and thread) waits for a destination that is down. Called by the process whose client made the
 * change, once.
 */
export class OutboundEdus {
  /** Local typing notices that will run out, to tell the servers when they do. */
  private readonly typingTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly sender: FederationSender,
    private readonly typing: TypingService,
    private readonly now: () => number = Date.now,
  ) {}

  /** A local user started (until `until`) or stopped typing in a room. */
  async typingChanged(roomId: string, userId: string, typing: boolean, until: number): Promise<void> {
    const key = `${roomId}\u0000${userId}`;
    clearTimeout(this.typingTimers.get(key));
    this.typingTimers.delete(key);
    if (typing) {
      // When the notice runs out (and the user did not type again, here or on another process),
      // the servers hear that the user stopped, as local clients do.
      const timer = setTimeout(
        () => {
          this.typingTimers.delete(key);
          const current = this.typing.typingUntil(roomId, userId);
          if (current !== undefined && current > this.now()) return;
          this.sendTyping(roomId, userId, false, STOP_TTL_MS).catch(() => {});
        },
        Math.max(0, until - this.now()) + TYPING_STOP_GRACE_MS,
      );
      timer.unref();
      this.typingTimers.set(key, timer);
    }
    await this.sendTyping(roomId, userId, typing, typing ? until - this.now() : STOP_TTL_MS);
  }

  private async sendTyping(roomId: string, userId: string, typing: boolean, ttlMs: number): Promise<void> {
    const servers = await outbox.joinedServers(this.db, roomId, this.serverName);
    await this.sender.queueEduFor(
      servers,
      { edu_type: 'm.typing', content: { room_id: roomId, user_id: userId, typing } },
      { key: `m.typing\u0000${roomId}\u0000${userId}`, ttlMs: Math.max(1, ttlMs) },
    );
  }

  /** A local user's public read receipt (never m.read.private). */
  async receiptSent(r: Receipt): Promise<void> {
    if (r.type !== 'm.read') return;
    const servers = await outbox.joinedServers(this.db, r.roomId, this.serverName);
    // Locally an unthreaded receipt is stored as of 'main'; it goes out unthreaded.
    const data: JsonObject = { ts: r.ts, ...(r.threadId !== 'main' ? { thread_id: r.threadId } : {}) };
    await this.sender.queueEduFor(
      servers,
      {
        edu_type: 'm.receipt',
        content: { [r.roomId]: { [r.type]: { [r.userId]: { event_ids: [r.eventId], data } } } },
      },
      {
        key: `m.receipt\u0000${r.roomId}\u0000${r.userId}\u0000${r.type}\u0000${r.threadId}`,
        ttlMs: RECEIPT_TTL_MS,
      },
    );
  }

  /** A local user's presence changed. */
  async presenceChanged(u: PresenceUpdate): Promise<void> {
    const servers = await outbox.serversSharingARoomWith(this.db, u.userId, this.serverName);
    const push: JsonObject = {
      user_id: u.userId,
      presence: u.presence,
      last_active_ago: u.lastActiveAgo,
      currently_active: u.currentlyActive,
      ...(u.statusMsg !== null ? { status_msg: u.statusMsg } : {}),
    };
    await this.sender.queueEduFor(
      servers,
      { edu_type: 'm.presence', content: { push: [push] } },
      { key: `m.presence\u0000${u.userId}`, ttlMs: PRESENCE_TTL_MS },
    );
  }

  stop(): void {
    for (const t of this.typingTimers.values()) clearTimeout(t);
    this.typingTimers.clear();
  }
}
