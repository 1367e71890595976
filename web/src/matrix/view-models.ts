import {
  EventType,
  type MatrixEvent,
  NotificationCountType,
  type Room,
  type RoomMember,
} from 'matrix-js-sdk';
import type { MessageKey } from '../i18n/en.ts';
import { type AttachmentView, attachmentOf } from './attachments.ts';
import { sanitizeHtml } from './markdown.ts';

/**
 * What the components show, computed from the SDK's objects by pure functions (tested on their
 * own): the room list and the timeline.
 */

/** In-room verification requests are handled by the verification dialog, not shown as messages. */
function isShownMessage(e: MatrixEvent): boolean {
  const type = e.getType();
  if (type !== EventType.RoomMessage && type !== EventType.RoomMessageEncrypted) return false;
  return e.getContent().msgtype !== 'm.key.verification.request';
}

export interface RoomSummary {
  roomId: string;
  name: string;
  membership: string;
  unread: number;
  mentions: number;
  lastMessage: string | null;
  lastTs: number;
  encrypted: boolean;
  inviter: string | null;
}

export function roomSummary(room: Room, myUserId: string): RoomSummary {
  const membership = room.getMyMembership();
  const events = room.getLiveTimeline().getEvents();
  let lastMessage: string | null = null;
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i]!;
    if (isShownMessage(e)) {
      const body = e.getContent().body;
      lastMessage = typeof body === 'string' ? `${displayName(room, e.getSender() ?? '')}: ${body}` : null;
      break;
    }
  }
  const me = room.getMember(myUserId);
  const inviteEvent = membership === 'invite' ? me?.events.member : undefined;
  return {
    roomId: room.roomId,
    name: room.name || room.roomId,
    membership,
    unread: room.getUnreadNotificationCount(NotificationCountType.Total),
    mentions: room.getUnreadNotificationCount(NotificationCountType.Highlight),
    lastMessage,
    lastTs: room.getLastActiveTimestamp(),
    encrypted: room.hasEncryptionStateEvent(),
    inviter: inviteEvent ? displayName(room, inviteEvent.getSender() ?? '') : null,
  };
}

/** Invitations first, then joined rooms, most recently active first; left rooms are not listed. */
export function roomList(rooms: Room[], myUserId: string): RoomSummary[] {
  return rooms
    .filter((r) => ['join', 'invite', 'knock'].includes(r.getMyMembership()))
    .map((r) => roomSummary(r, myUserId))
    .sort((a, b) => {
      const rank = (m: string) => (m === 'invite' ? 0 : m === 'knock' ? 1 : 2);
      if (a.membership !== b.membership) return rank(a.membership) - rank(b.membership);
      return b.lastTs - a.lastTs || a.name.localeCompare(b.name);
    });
}

export function displayName(room: Room | null, userId: string): string {
  const member: RoomMember | null = room?.getMember(userId) ?? null;
  return member?.name || userId;
}

export type TimelineItem =
  | { kind: 'day'; key: string; ts: number }
  | { kind: 'unread-marker'; key: string }
  | {
      kind: 'message';
      key: string;
      eventId: string;
      sender: string;
      senderName: string;
      ts: number;
      body: string;
      html: string | null;
      /** Set for m.image, m.file, m.video and m.audio messages with a usable source. */
      attachment: AttachmentView | null;
      encrypted: boolean;
      /** Set when the event could not be decrypted: the SDK's reason. */
      undecryptable: string | null;
      pending: boolean;
      /** True when this message continues the previous one's sender within a few minutes. */
      continuation: boolean;
    }
  | {
      kind: 'notice';
      key: string;
      eventId: string;
      ts: number;
      message: MessageKey;
      params: Record<string, string>;
    };

const GROUP_MS = 5 * 60_000;

function dayKey(ts: number): string {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

function stateNotice(
  room: Room | null,
  e: MatrixEvent,
): { message: MessageKey; params: Record<string, string> } | null {
  const sender = displayName(room, e.getSender() ?? '');
  const content = e.getContent();
  switch (e.getType()) {
    case EventType.RoomCreate:
      return { message: 'createdRoom', params: { name: sender } };
    case EventType.RoomName:
      return { message: 'changedName', params: { name: sender, value: String(content.name ?? '') } };
    case EventType.RoomTopic:
      return { message: 'changedTopic', params: { name: sender, value: String(content.topic ?? '') } };
    case EventType.RoomEncryption:
      return { message: 'enabledEncryption', params: { name: sender } };
    case EventType.RoomMember: {
      const target = e.getStateKey() ?? '';
      const targetName = String(content.displayname ?? '') || target;
      const prev = e.getPrevContent().membership;
      const m = content.membership;
      if (m === 'join' && prev !== 'join') return { message: 'joined', params: { name: targetName } };
      if (m === 'knock') return { message: 'knocked', params: { name: targetName } };
      if (m === 'invite') return { message: 'invited', params: { name: sender, target: targetName } };
      if (m === 'ban') return { message: 'banned', params: { name: sender, target: targetName } };
      if (m === 'leave' && e.getSender() !== target)
        return { message: 'kicked', params: { name: sender, target: displayName(room, target) } };
      if (m === 'leave') return { message: 'left', params: { name: displayName(room, target) } };
      return null;
    }
    default:
      return null;
  }
}

/**
 * The timeline as rows: day separators, a "new messages" marker after `readUpTo` (the last
 * event the user had read when the room was opened), messages and state changes in words.
 */
export function timelineItems(
  room: Room | null,
  events: readonly MatrixEvent[],
  opts: { readUpTo?: string | null } = {},
): TimelineItem[] {
  const items: TimelineItem[] = [];
  let lastDay = '';
  let lastSender = '';
  let lastTs = 0;
  let markerPlaced = !opts.readUpTo;
  let passedRead = false;
  for (const e of events) {
    const ts = e.getTs();
    const id = e.getId() ?? e.getTxnId() ?? `${ts}`;
    const day = dayKey(ts);
    if (day !== lastDay) {
      items.push({ kind: 'day', key: `day-${day}-${id}`, ts });
      lastDay = day;
      lastSender = '';
    }
    if (!markerPlaced && passedRead) {
      items.push({ kind: 'unread-marker', key: 'unread-marker' });
      markerPlaced = true;
    }
    if (id === opts.readUpTo) passedRead = true;
    if (e.isRedacted()) continue;
    if (isShownMessage(e)) {
      const content = e.getContent();
      const sender = e.getSender() ?? '';
      const failure = e.isDecryptionFailure();
      const html =
        content.format === 'org.matrix.custom.html' && typeof content.formatted_body === 'string'
          ? sanitizeHtml(content.formatted_body)
          : null;
      items.push({
        kind: 'message',
        key: id,
        eventId: id,
        sender,
        senderName: displayName(room, sender),
        ts,
        body: typeof content.body === 'string' ? content.body : '',
        html: failure ? null : html,
        attachment: failure ? null : attachmentOf(content),
        encrypted: e.isEncrypted(),
        undecryptable: failure ? String(e.decryptionFailureReason ?? 'unknown') : null,
        pending: e.status !== null,
        continuation: sender === lastSender && ts - lastTs < GROUP_MS,
      });
      lastSender = sender;
      lastTs = ts;
      continue;
    }
    const notice = stateNotice(room, e);
    if (notice) {
      items.push({ kind: 'notice', key: id, eventId: id, ts, ...notice });
      lastSender = '';
    }
  }
  return items;
}

/** Power levels as roles. */
export type Role = 'admin' | 'moderator' | 'member' | 'custom';
export function roleOf(level: number): Role {
  if (level >= 100) return 'admin';
  if (level >= 50) return 'moderator';
  if (level === 0) return 'member';
  return 'custom';
}
export const ROLE_LEVELS: Record<Exclude<Role, 'custom'>, number> = { admin: 100, moderator: 50, member: 0 };

/** The names of those typing in the room, other than me. */
export function typingNames(room: Room, myUserId: string): string[] {
  return room
    .getMembers()
    .filter((m) => m.typing && m.userId !== myUserId)
    .map((m) => m.name || m.userId);
}

/** Who (other than the sender and me) has read up to this event. */
export function readersOf(room: Room, event: MatrixEvent, myUserId: string): string[] {
  return room
    .getUsersReadUpTo(event)
    .filter((u) => u !== myUserId && u !== event.getSender())
    .map((u) => displayName(room, u));
}
