import { errors, MatrixError } from '../../errors.ts';
import type { EventsService } from '../../events/events.service.ts';
import type { IngestOutcome } from '../../events/pipeline.ts';
import { signedForm } from '../../events/pipeline.ts';
import type { PreverifiedSignatures } from '../../events/preverified.ts';
import type { RoomLock } from '../../events/room-lock.ts';
import { serverNameOf } from '../../protocol/auth-rules.ts';
import type { RoomEvent } from '../../protocol/event.ts';
import { addEventSignature } from '../../protocol/event-signing.ts';
import { roomIdFromCreateEvent } from '../../protocol/hashes.ts';
import { isJsonObject, type JsonObject } from '../../protocol/json.ts';
import { getRoomVersion, type RoomVersion } from '../../protocol/room-versions.ts';
import type { ServerKeysService } from '../../services/server-keys.service.ts';
import { findUser } from '../../storage/accounts.repository.ts';
import type { Db } from '../../storage/connect.ts';
import { getPdus, toEvent } from '../../storage/events.repository.ts';
import { serverHasJoinedMember } from '../../storage/federation.repository.ts';
import * as rooms from '../../storage/rooms.repository.ts';
import { nextPosition } from '../../streams/positions.ts';
import { fromWire, isWireError, toWire } from '../pdu.ts';

/** At most this many stripped state events are kept of an invite or knock answer. */
export const MAX_STRIPPED_STATE_EVENTS = 50;
/** And each at most this large (canonical JSON bytes, roughly). */
const MAX_STRIPPED_EVENT_BYTES = 8_192;

/**
 * Membership events of rooms this server is not in (server-server API: Inviting to a room,
 * Rejecting invites, Knocking): the invite another server asks us to co-sign for one of our
 * users, and the leave or knock we send through another server. They are stored out of band
 * (outliers that never enter a timeline), with the stripped state that came with them, and our
 * user's membership follows them at a new stream position so /sync shows the change.
 */
export class OutOfBandMemberships {
  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly serverKeys: ServerKeysService,
    private readonly events: EventsService,
    private readonly signatures: PreverifiedSignatures,
    private readonly now: () => number = Date.now,
  ) {}

  /** PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: checks, co-signs and records an invite. */
  async receiveInvite(
    origin: string,
    roomId: string,
    eventId: string,
    body: JsonObject,
  ): Promise<JsonObject> {
    const version = body.room_version;
    const rv = typeof version === 'string' ? getRoomVersion(version) : undefined;
    if (!rv) {
      throw new MatrixError(
        400,
        'M_INCOMPATIBLE_ROOM_VERSION',
        `Room version ${String(version)} is not supported`,
        {
          room_version: typeof version === 'string' ? version : '',
        },
      );
    }
    const parsed = fromWire(body.event, rv);
    if (isWireError(parsed)) throw errors.badJson(`Bad invite event: ${parsed.error}`);
    const event = parsed;
    if (event.event_id !== eventId) throw errors.badJson('The event ID does not match the event');
    if (event.room_id !== roomId) throw errors.badJson('The event is not of this room');
    if (event.type !== 'm.room.member' || event.content.membership !== 'invite')
      throw errors.badJson('Not an invite');
    const target = event.state_key;
    if (typeof target !== 'string' || serverNameOf(target) !== this.serverName)
      throw errors.badJson('The invited user is not on this server');
    if (serverNameOf(event.sender) !== origin)
      throw errors.forbidden('The inviting user is not on the requesting server');
    const user = await findUser(this.db, target);
    if (!user || user.deactivated) throw errors.notFound('No such user');
    await this.checkSignature(event, rv, origin);
    const stripped = strippedStateOf(body.invite_room_state ?? body.invite_state, { roomId, rv });

    const signed = this.coSign(event, rv);
    await this.record(rv, origin, signed, target, 'invite', stripped);
    return { event: toWire(signed, rv) };
  }

  /**
   * A PDU, sent in a transaction, of a room this server is not in. When it is the withdrawal of an
   * invite one of our users holds (a leave of the invitee sent by the user who invited them, from
   * that user's server), it is recorded out of band like the invite was, and the invitee's sync
   * shows the room left, as Synapse does (Complement's TestFederationRoomsInvite: "Inviter user
   * can rescind invite over federation"). A leave sent by anyone else is not taken: this server
   * cannot check that they had the power to kick, having no state of the room. Returns whether it
   * took the event; throws when its signature is bad.
   */
  async receiveRescission(origin: string, rv: RoomVersion, event: RoomEvent): Promise<boolean> {
    const target = event.state_key;
    const roomId = event.room_id;
    if (event.type !== 'm.room.member' || event.content.membership !== 'leave') return false;
    if (typeof target !== 'string' || target === event.sender || roomId === undefined) return false;
    if (serverNameOf(target) !== this.serverName || serverNameOf(event.sender) !== origin) return false;
    if (await serverHasJoinedMember(this.db, roomId, this.serverName)) return false;
    const current = await rooms.membershipOf(this.db, roomId, target);
    if (current?.membership !== 'invite') return false;
    const [invite] = await getPdus(this.db, [current.event_id]);
    if (!invite || toEvent(invite).sender !== event.sender) return false;
    await this.checkSignature(event, rv, origin);
    await this.record(rv, origin, event, target, 'leave', undefined);
    return true;
  }

  /**
   * Records a membership event of our user in a room we are not in (our rejection of an invite,
   * our knock) once the resident server took it, or our local rejection when none answers.
   */
  async recordOwn(rv: RoomVersion, event: RoomEvent, stripped?: JsonObject[]): Promise<void> {
    const membership = event.content.membership;
    if (typeof membership !== 'string' || typeof event.state_key !== 'string')
      throw new Error('not a membership event');
    await this.record(rv, this.serverName, event, event.state_key, membership, stripped);
  }

  private async record(
    rv: RoomVersion,
    origin: string,
    event: RoomEvent,
    userId: string,
    membership: string,
    stripped: JsonObject[] | undefined,
  ): Promise<void> {
    const roomId = event.room_id;
    if (roomId === undefined) throw errors.badJson('The event names no room');
    let live: IngestOutcome | undefined;
    const position = await this.events.locks.withRoomLock<number | undefined>(roomId, async (lock) => {
      await this.ensureRoom(lock, rv, event.sender);
      const current = await rooms.membershipOf(lock.trx, roomId, userId);
      if (current?.membership === 'join') return undefined;
      // Our copy of the room is live when one of our users is joined: the invite then goes into
      // it at once, through the pipeline, so the invitee can join before the inviting server's
      // transaction with the same event arrives (Complement's TestFederationRoomsInvite). If we
      // lack events it builds on, it is held out of band until that transaction fills the gap.
      if (await serverHasJoinedMember(lock.trx, roomId, this.serverName)) {
        const outcome = await this.events.ingest(lock, { kind: 'new', origin, event });
        if (outcome.status === 'persisted' || outcome.status === 'duplicate') {
          live = outcome;
          return undefined;
        }
        if (outcome.status !== 'missing')
          throw errors.forbidden(
            `The event was refused: ${'reason' in outcome ? outcome.reason : outcome.status}`,
          );
      }
      const outcome = await this.events.ingest(lock, { kind: 'outlier', origin, event, outOfBand: true });
      if (outcome.status !== 'outlier' && outcome.status !== 'duplicate') {
        throw errors.forbidden(
          `The event was refused: ${'reason' in outcome ? outcome.reason : outcome.status}`,
        );
      }
      await lock.trx
        .insertInto('room_stripped_state')
        .values({
          event_id: event.event_id,
          room_id: roomId,
          user_id: userId,
          state: JSON.stringify(stripped ?? []),
          received_ts: this.now(),
        })
        .onConflict((c) => c.column('event_id').doNothing())
        .execute();
      const at = await nextPosition(lock.trx);
      await rooms.setMembership(lock.trx, {
        room_id: roomId,
        user_id: userId,
        membership,
        event_id: event.event_id,
        stream_ordering: at,
      });
      return at;
    });
    if (live) await this.events.announceOutcomes([live]);
    if (position !== undefined)
      await this.events.announce({ kind: 'event', position, roomId, userIds: [userId] });
  }

  private async ensureRoom(lock: RoomLock, rv: RoomVersion, creator: string): Promise<void> {
    if (await rooms.findRoom(lock.trx, lock.roomId)) return;
    await rooms.insertRoom(lock.trx, {
      room_id: lock.roomId,
      room_version: rv.id,
      creator,
      created_ts: this.now(),
    });
  }

  private async checkSignature(event: RoomEvent, rv: RoomVersion, server: string): Promise<void> {
    // What the signatures cover: in room versions 1 and 2 the event ID is part of it.
    const pdu = signedForm(event, rv);
    await this.signatures.preverify([pdu], rv, () => [server]);
    const verdict = await this.signatures.verifyEvent(pdu, rv, [server]);
    if (!verdict.ok) throw errors.forbidden(`The event's signature does not verify: ${verdict.reason}`);
  }

  private coSign(event: RoomEvent, rv: RoomVersion): RoomEvent {
    const key = this.serverKeys.key;
    return addEventSignature(event, rv, this.serverName, key.keyId, key.seed);
  }
}

/**
 * The stripped state events of an invite or knock answer, as clients are shown them: type,
 * state_key, sender and content of each well-formed entry, bounded in number and size. A full
 * create event (MSC4311) is kept whole when it is the room's: in v12 its hash is the room ID;
 * otherwise it is stripped like the others.
 */
export function strippedStateOf(
  value: unknown,
  room?: { roomId: string; rv: RoomVersion },
): JsonObject[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const out: JsonObject[] = [];
  for (const entry of value) {
    if (out.length >= MAX_STRIPPED_STATE_EVENTS) break;
    if (!isJsonObject(entry)) continue;
    const { type, state_key, sender, content } = entry;
    if (typeof type !== 'string' || typeof state_key !== 'string' || typeof sender !== 'string') continue;
    if (!isJsonObject(content)) continue;
    const kept: JsonObject =
      type === 'm.room.create' && room && isRoomsCreateEvent(entry, room.roomId, room.rv)
        ? entry
        : { type, state_key, sender, content };
    if (JSON.stringify(kept).length > MAX_STRIPPED_EVENT_BYTES) continue;
    out.push(kept);
  }
  return out;
}

/** Whether a full create event in stripped state is the one the room ID derives from (v12). */
function isRoomsCreateEvent(entry: JsonObject, roomId: string, rv: RoomVersion): boolean {
  if (!rv.roomIdFromCreateEvent || entry.room_id !== undefined) return false;
  const { event_id: _id, unsigned: _unsigned, ...pdu } = entry;
  try {
    return roomIdFromCreateEvent(pdu, rv) === roomId;
  } catch {
    return false;
  }
}
