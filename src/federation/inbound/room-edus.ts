import { isValidEventId, isValidRoomId, isValidUserId, serverNameOf } from '../../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../../protocol/json.ts';
import {
  PRESENCE_STATES,
  type PresenceService,
  type PresenceState,
} from '../../services/presence.service.ts';
import type { ReceiptsService } from '../../services/receipts.service.ts';
import type { TypingService } from '../../services/typing.service.ts';
import type { Db } from '../../storage/connect.ts';
import * as store from '../../storage/events.repository.ts';
import * as outbox from '../../storage/federation.repository.ts';
import type { EduDispatcher } from './edus.ts';

/** Longest thread ID and status message taken from another server. */
const MAX_ID_LENGTH = 255;
const MAX_STATUS_MSG_LENGTH = 1024;
/** Most presence updates taken from one EDU. */
const MAX_PRESENCE_PUSH = 1000;

export interface RoomEduDeps {
  db: Db;
  serverName: string;
  typing: TypingService;
  receipts: ReceiptsService;
  presence: PresenceService;
  /** Whether the room's server ACL lets `server` take part. */
  serverAllowed(roomId: string, server: string): Promise<boolean>;
}

/**
 * The inbound handlers of m.typing, m.receipt and m.presence (server-server API: Typing
 * Notifications, Receipts, Presence, Server ACLs). What each checks, and drops silently when it
 * does not hold:
 * - every user named is of the sending server (a server speaks for its own users only);
 * - typing and receipts: the room's server ACL allows the sending server, and the user is joined
 *   to the room here;
 * - receipts: only m.read (a private receipt never crosses servers), one event ID of the room
 *   (when we have the event; one we do not have yet is taken on its format, as Synapse does),
 *   an integer `ts` and a string `thread_id` if any;
 * - presence: a known state, a non-negative `last_active_ago`, and a user who shares a room with
 *   one of our users (nobody here would see it otherwise).
 */
export function registerRoomEdus(dispatcher: EduDispatcher, deps: RoomEduDeps): void {
  dispatcher.register('m.typing', (origin, content) => onTyping(deps, origin, content));
  dispatcher.register('m.receipt', (origin, content) => onReceipts(deps, origin, content));
  dispatcher.register('m.presence', (origin, content) => onPresence(deps, origin, content));
}

async function onTyping(deps: RoomEduDeps, origin: string, content: JsonObject): Promise<void> {
  const { room_id: roomId, user_id: userId, typing } = content;
  if (typeof roomId !== 'string' || !isValidRoomId(roomId)) return;
  if (typeof userId !== 'string' || !isValidUserId(userId) || typeof typing !== 'boolean') return;
  if (serverNameOf(userId) !== origin) return;
  if (!(await deps.serverAllowed(roomId, origin))) return;
  if (!(await outbox.isJoined(deps.db, roomId, userId))) return;
  await deps.typing.setRemoteTyping(roomId, userId, typing);
}

async function onReceipts(deps: RoomEduDeps, origin: string, content: JsonObject): Promise<void> {
  for (const [roomId, byType] of Object.entries(content)) {
    if (!isValidRoomId(roomId) || !isJsonObject(byType)) continue;
    // Every receipt of a room whose ACL denies the sender is ignored.
    if (!(await deps.serverAllowed(roomId, origin))) continue;
    const byUser = byType['m.read'];
    if (!isJsonObject(byUser)) continue;
    for (const [userId, receipt] of Object.entries(byUser)) {
      if (!isValidUserId(userId) || serverNameOf(userId) !== origin || !isJsonObject(receipt)) continue;
      const ids = receipt.event_ids;
      const data = receipt.data;
      if (!Array.isArray(ids) || ids.length === 0 || !isJsonObject(data)) continue;
      const eventId = ids[0];
      if (typeof eventId !== 'string' || !isValidEventId(eventId)) continue;
      const ts = data.ts;
      if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0) continue;
      const threadId = data.thread_id;
      if (
        threadId !== undefined &&
        (typeof threadId !== 'string' || threadId.length === 0 || threadId.length > MAX_ID_LENGTH)
      )
        continue;
      if (!(await outbox.isJoined(deps.db, roomId, userId))) continue;
      const [known] = await store.getPdus(deps.db, [eventId]);
      if (known && known.room_id !== roomId) continue;
      await deps.receipts.applyRemoteReceipt({
        roomId,
        userId,
        type: 'm.read',
        threadId: threadId ?? 'main',
        eventId,
        ts,
      });
    }
  }
}

async function onPresence(deps: RoomEduDeps, origin: string, content: JsonObject): Promise<void> {
  if (!deps.presence.enabled || !Array.isArray(content.push)) return;
  for (const u of content.push.slice(0, MAX_PRESENCE_PUSH)) {
    if (!isJsonObject(u)) continue;
    const { user_id: userId, presence, last_active_ago: ago, status_msg: msg } = u;
    if (typeof userId !== 'string' || !isValidUserId(userId) || serverNameOf(userId) !== origin) continue;
    if (typeof presence !== 'string' || !(PRESENCE_STATES as readonly string[]).includes(presence)) continue;
    if (ago !== undefined && (typeof ago !== 'number' || !Number.isSafeInteger(ago) || ago < 0)) continue;
    if (msg !== undefined && msg !== null && (typeof msg !== 'string' || msg.length > MAX_STATUS_MSG_LENGTH))
      continue;
    // Only users some of ours can see (they share a room).
    const servers = await outbox.serversSharingARoomWith(deps.db, userId, origin);
    if (!servers.includes(deps.serverName)) continue;
    await deps.presence.applyRemote({
      userId,
      presence: presence as PresenceState,
      lastActiveAgo: typeof ago === 'number' ? ago : 0,
      currentlyActive: u.currently_active === true,
      statusMsg: typeof msg === 'string' && msg !== '' ? msg : null,
    });
  }
}
