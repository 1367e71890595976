import { errors, MatrixError } from '../../errors.ts';
import { newLegacyEventId } from '../../events/build.ts';
import type { EventsService } from '../../events/events.service.ts';
import { type IngestOutcome, requiredSigners, signedForm } from '../../events/pipeline.ts';
import type { PreverifiedSignatures } from '../../events/preverified.ts';
import type { Pdu, RoomEvent } from '../../protocol/event.ts';
import { stateTuple } from '../../protocol/event.ts';
import { hashAndSignEvent } from '../../protocol/event-signing.ts';
import { computeEventId } from '../../protocol/hashes.ts';
import { isValidServerName } from '../../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../../protocol/json.ts';
import { getRoomVersion, ROOM_VERSIONS, type RoomVersion } from '../../protocol/room-versions.ts';
import type { RoomReader } from '../../services/room-reads.ts';
import type { ServerKeysService } from '../../services/server-keys.service.ts';
import * as store from '../../storage/events.repository.ts';
import * as rooms from '../../storage/rooms.repository.ts';
import { FederationError } from '../client/transport.ts';
import type { Requester } from '../inbound/fetch-missing.ts';
import { type OutOfBandMemberships, strippedStateOf } from '../inbound/invites.ts';
import { fromWire, isWireError, toWire } from '../pdu.ts';

const enc = encodeURIComponent;
const AUTHORISER_KEY = 'join_authorised_via_users_server';
/** A resident's answers that say another resident may be able to vouch for a restricted join. */
const UNABLE_TO_VOUCH = new Set(['M_UNABLE_TO_AUTHORISE_JOIN', 'M_UNABLE_TO_GRANT_JOIN']);
/** A send_join answer larger than this many events is refused (a hostile server's flood). */
export const MAX_JOIN_STATE_EVENTS = 50_000;

/**
 * Joining a room held by other servers (server-server API: Joining Rooms): make_join on a
 * resident server, our signed join event, send_join; then every returned state and auth chain
 * event goes through the pipeline as an outlier (format, hashes, signatures, auth against its own
 * auth events), the create event must match the room ID, and the join itself is ingested with the
 * returned state as the state before it, so it is checked like any other event.
 */
export class RemoteJoins {
  constructor(
    private readonly serverName: string,
    private readonly serverKeys: ServerKeysService,
    private readonly events: EventsService,
    private readonly signatures: PreverifiedSignatures,
    private readonly requester: Requester,
    private readonly outOfBand: OutOfBandMemberships,
    private readonly reader: RoomReader,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Invites a user of another server (server-server API: Inviting to a room): our invite event,
   * built and authorised against the room, goes to the invitee's server, which must co-sign it;
   * then it is persisted (checked again against the room as it is then) and sent to the room.
   */
  async invite(sender: string, roomId: string, target: string, content: JsonObject): Promise<void> {
    const destination = target.slice(target.indexOf(':') + 1);
    const event = await this.events.prepare({
      roomId,
      type: 'm.room.member',
      sender,
      stateKey: target,
      content: { ...content, membership: 'invite' },
    });
    const rv = getRoomVersion((await this.reader.roomVersionOf(this.db(), roomId))!)!;
    const group = await store.roomCurrentStateGroup(this.db(), roomId);
    const strippedState =
      group !== undefined ? await this.reader.strippedStateAt(this.db(), group, [sender]) : [];
    let answer: { event?: unknown };
    try {
      answer = await this.requester.request<{ event?: unknown }>({
        destination,
        method: 'PUT',
        path: `/_matrix/federation/v2/invite/${enc(roomId)}/${enc(event.event_id)}`,
        body: { event: toWire(event, rv), room_version: rv.id, invite_room_state: strippedState },
      });
    } catch (err) {
      const refusal = remoteRefusal(err, 'invite');
      if (refusal) throw refusal;
      throw new MatrixError(502, 'M_UNKNOWN', `${destination} could not be reached to invite ${target}`);
    }
    const returned = fromWire(answer.event, rv);
    if (isWireError(returned) || returned.event_id !== event.event_id)
      throw new MatrixError(502, 'M_UNKNOWN', `${destination} answered the invite with another event`);
    const pdu = signedForm(returned, rv);
    await this.signatures.preverify([pdu], rv, () => [destination]);
    const cosigned = await this.signatures.verifyEvent(pdu, rv, [destination]);
    if (!cosigned.ok) throw new MatrixError(502, 'M_UNKNOWN', `${destination} did not sign the invite`);
    const signatures = { ...event.signatures, [destination]: returned.signatures[destination]! };
    await this.events.sendPrepared(roomId, { ...event, signatures });
  }

  /**
   * Rejects an invite to (or withdraws a knock on) a room this server is not in: make_leave and
   * send_leave through the servers that can know the room (the inviter's first). When none
   * answers, the rejection stays local, as an out-of-band leave, so the invite is gone for our
   * user either way.
   */
  async leaveRemote(
    userId: string,
    roomId: string,
    membershipEvent: RoomEvent,
    reason?: string,
  ): Promise<void> {
    const rv = getRoomVersion((await this.reader.roomVersionOf(this.db(), roomId))!)!;
    const base = {
      type: 'm.room.member',
      room_id: roomId,
      sender: userId,
      state_key: userId,
      content: { membership: 'leave', ...(reason !== undefined ? { reason } : {}) },
    };
    const candidates = [
      ...new Set([membershipEvent.sender, roomId].map((id) => id.slice(id.indexOf(':') + 1))),
    ].filter((s) => s !== this.serverName && isValidServerName(s));
    for (const server of candidates) {
      try {
        const made = await this.requester.request<{ event?: unknown; room_version?: unknown }>({
          destination: server,
          method: 'GET',
          path: `/_matrix/federation/v1/make_leave/${enc(roomId)}/${enc(userId)}`,
        });
        const template = made.event;
        if (!isJsonObject(template) || template.room_id !== roomId || template.state_key !== userId) continue;
        const leave = this.signNew(rv, {
          ...base,
          origin_server_ts: this.now(),
          depth: typeof template.depth === 'number' ? template.depth : 1,
          ...templateReferences(template, rv),
        });
        await this.requester.request({
          destination: server,
          method: 'PUT',
          path: `/_matrix/federation/v2/send_leave/${enc(roomId)}/${enc(leave.event_id)}`,
          body: toWire(leave, rv),
        });
        await this.outOfBand.recordOwn(rv, leave);
        return;
      } catch {
        // The next server, or the local rejection below.
      }
    }
    const local = this.signNew(rv, {
      ...base,
      origin_server_ts: this.now(),
      depth: membershipEvent.depth + 1,
      prev_events: [membershipEvent.event_id],
      auth_events: [membershipEvent.event_id],
    });
    await this.outOfBand.recordOwn(rv, local);
  }

  /**
   * Knocks on a room this server is not in (server-server API: Knocking upon a room): make_knock
   * on a resident server, our signed knock, send_knock; the knock is then stored out of band
   * with the room's stripped state the resident gave (`knock_room_state`), so /sync shows the
   * room under `knock` until the answer (an invite, or a leave) comes through the room.
   */
  async knock(
    userId: string,
    roomId: string,
    servers: readonly string[],
    content: JsonObject,
  ): Promise<void> {
    const candidates = [...new Set(servers)].filter((s) => s !== this.serverName && isValidServerName(s));
    let lastError: unknown;
    for (const server of candidates.slice(0, 5)) {
      try {
        const made = await this.requester.request<{ event?: unknown; room_version?: unknown }>({
          destination: server,
          method: 'GET',
          path: `/_matrix/federation/v1/make_knock/${enc(roomId)}/${enc(userId)}`,
          query: { ver: Object.keys(ROOM_VERSIONS) },
        });
        const rv = typeof made.room_version === 'string' ? getRoomVersion(made.room_version) : undefined;
        if (!rv?.knocking)
          throw new MatrixError(
            400,
            'M_UNSUPPORTED_ROOM_VERSION',
            'The room is of a version without knocking',
          );
        const template = made.event;
        if (!isJsonObject(template) || template.room_id !== roomId || template.state_key !== userId)
          throw new MatrixError(502, 'M_UNKNOWN', `${server} gave a bad knock template`);
        const knock = this.signNew(rv, {
          type: 'm.room.member',
          room_id: roomId,
          sender: userId,
          state_key: userId,
          content: { ...content, membership: 'knock' },
          origin_server_ts: this.now(),
          depth: typeof template.depth === 'number' ? template.depth : 1,
          ...templateReferences(template, rv),
        });
        const answer = await this.requester.request<{
          knock_room_state?: unknown;
          knock_state_events?: unknown;
        }>({
          destination: server,
          method: 'PUT',
          path: `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(knock.event_id)}`,
          body: toWire(knock, rv),
        });
        const stripped =
          strippedStateOf(answer.knock_room_state ?? answer.knock_state_events, { roomId, rv }) ?? [];
        await this.outOfBand.recordOwn(rv, knock, stripped);
        return;
      } catch (err) {
        lastError = err;
        if (err instanceof MatrixError && err.status !== 502) throw err;
        // A resident server's refusal (banned, not a knock room) is final.
        const refusal = remoteRefusal(err, 'knock');
        if (refusal) throw refusal;
      }
    }
    if (lastError instanceof MatrixError) throw lastError;
    throw new MatrixError(502, 'M_UNKNOWN', 'No resident server took the knock');
  }

  private signNew(rv: RoomVersion, unsigned: Omit<Pdu, 'hashes' | 'signatures'>): RoomEvent {
    const key = this.serverKeys.key;
    // Room versions 1 and 2: the event ID is ours to choose.
    const withId =
      rv.eventIdFormat === 'legacy' ? { ...unsigned, event_id: newLegacyEventId(this.serverName) } : unsigned;
    const pdu = hashAndSignEvent(withId, rv, this.serverName, key.keyId, key.seed) as Pdu;
    return { ...pdu, event_id: computeEventId(pdu, rv) };
  }

  private db() {
    return this.events.db;
  }

  /** GET /query/directory on the alias's server: the room ID and servers to join through. */
  async resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }> {
    const server = alias.slice(alias.indexOf(':') + 1);
    let res: { room_id?: unknown; servers?: unknown };
    try {
      res = await this.requester.request({
        destination: server,
        method: 'GET',
        path: '/_matrix/federation/v1/query/directory',
        query: { room_alias: alias },
      });
    } catch {
      throw errors.notFound(`Could not resolve ${alias} on ${server}`);
    }
    if (typeof res.room_id !== 'string') throw errors.notFound(`${server} does not know ${alias}`);
    const servers = Array.isArray(res.servers)
      ? res.servers.filter((s): s is string => typeof s === 'string')
      : [];
    return { roomId: res.room_id, servers: servers.length > 0 ? servers : [server] };
  }

  async join(userId: string, roomId: string, servers: readonly string[], content: JsonObject): Promise<void> {
    const candidates = [...new Set(servers)].filter((s) => s !== this.serverName && isValidServerName(s));
    if (candidates.length === 0) throw errors.notFound('No server to join the room through');
    let lastError: unknown;
    for (const server of candidates.slice(0, 5)) {
      try {
        await this.joinVia(server, userId, roomId, content);
        return;
      } catch (err) {
        lastError = err;
        if (err instanceof MatrixError && err.status === 403) throw err;
        const refusal = remoteRefusal(err);
        // A server that cannot vouch for a restricted join: another resident may.
        if (refusal && UNABLE_TO_VOUCH.has(refusal.errcode)) {
          lastError = refusal;
          continue;
        }
        // A resident server's refusal (banned, invite only, unsupported version) is final.
        if (refusal) throw refusal;
      }
    }
    if (lastError instanceof MatrixError) throw lastError;
    throw new MatrixError(502, 'M_UNKNOWN', 'No resident server let us join the room');
  }

  private async joinVia(server: string, userId: string, roomId: string, content: JsonObject): Promise<void> {
    const made = await this.requester.request<{ event?: unknown; room_version?: unknown }>({
      destination: server,
      method: 'GET',
      path: `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(userId)}`,
      query: { ver: Object.keys(ROOM_VERSIONS) },
    });
    const rv = typeof made.room_version === 'string' ? getRoomVersion(made.room_version) : undefined;
    if (!rv)
      throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', 'The room is of a version we do not support');
    const template = made.event;
    if (!isJsonObject(template) || template.room_id !== roomId || template.state_key !== userId) {
      throw new MatrixError(502, 'M_UNKNOWN', `${server} gave a bad join template`);
    }
    // A restricted room: the resident names who vouches for us, and signs the join too.
    const templateContent = isJsonObject(template.content) ? template.content : {};
    const authoriser = rv.restrictedJoins ? templateContent[AUTHORISER_KEY] : undefined;
    const unsigned: Omit<Pdu, 'hashes' | 'signatures'> = {
      type: 'm.room.member',
      room_id: roomId,
      sender: userId,
      state_key: userId,
      content: {
        ...content,
        membership: 'join',
        ...(typeof authoriser === 'string' ? { [AUTHORISER_KEY]: authoriser } : {}),
      },
      origin_server_ts: this.now(),
      depth: typeof template.depth === 'number' ? template.depth : 1,
      ...templateReferences(template, rv),
    };
    let join = this.signNew(rv, unsigned);
    const answer = await this.requester.request<{ state?: unknown; auth_chain?: unknown; event?: unknown }>({
      destination: server,
      method: 'PUT',
      path: `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(join.event_id)}`,
      body: toWire(join, rv),
    });
    if (typeof authoriser === 'string') {
      // The join as the resident signed it (the pipeline checks the authoriser's signature).
      const signed = fromWire(answer.event, rv);
      if (isWireError(signed) || signed.event_id !== join.event_id)
        throw new MatrixError(502, 'M_UNKNOWN', `${server} did not return our restricted join signed`);
      join = { ...join, signatures: { ...signed.signatures, ...join.signatures } };
    }
    const stateJson = Array.isArray(answer.state) ? answer.state : [];
    const chainJson = Array.isArray(answer.auth_chain) ? answer.auth_chain : [];
    if (stateJson.length + chainJson.length > MAX_JOIN_STATE_EVENTS) {
      throw new MatrixError(502, 'M_UNKNOWN', `${server} answered with too many events`);
    }
    const parse = (list: unknown[]) =>
      list.map((j) => fromWire(j, rv)).filter((e): e is RoomEvent => !isWireError(e));
    const state = parse(stateJson);
    const chain = parse(chainJson);
    const create = [...state, ...chain].find((e) => e.type === 'm.room.create' && e.state_key === '');
    if (!create) throw new MatrixError(502, 'M_UNKNOWN', `${server} sent no create event`);
    const createRoomId = rv.roomIdFromCreateEvent ? `!${create.event_id.slice(1)}` : create.room_id;
    if (createRoomId !== roomId)
      throw new MatrixError(502, 'M_UNKNOWN', 'The create event is not of this room');

    // Signatures are checked before the room's lock is taken (keys may need fetching).
    const all = new Map<string, RoomEvent>();
    for (const e of [...chain, ...state]) all.set(e.event_id, e);
    const ordered = [...all.values()].sort((a, b) => a.depth - b.depth);
    await this.signatures.preverify(
      [...ordered, join].map((e) => signedForm(e, rv)),
      rv,
      (p) => requiredSigners(p as RoomEvent, rv),
    );
    const outcomes: IngestOutcome[] = [];
    await this.events.locks.withRoomLock(roomId, async (lock) => {
      if (!(await rooms.findRoom(lock.trx, roomId))) {
        await rooms.insertRoom(lock.trx, {
          room_id: roomId,
          room_version: rv.id,
          creator: create.sender,
          created_ts: this.now(),
        });
      }
      // Auth events before the events that cite them: ascending depth.
      for (const e of ordered) {
        await this.events.ingest(lock, { kind: 'outlier', origin: server, event: e });
      }
      const accepted = new Map(
        (
          await store.getPdus(
            lock.trx,
            state.map((e) => e.event_id),
          )
        )
          .filter((r) => r.rejected_reason === null && r.state_key !== null)
          .map((r) => [r.event_id, r]),
      );
      const stateBefore: rooms.StateIds = new Map();
      for (const e of state) {
        if (accepted.has(e.event_id) && e.state_key !== undefined)
          stateBefore.set(stateTuple(e.type, e.state_key), e.event_id);
      }
      const outcome = await this.events.ingest(lock, {
        kind: 'new',
        origin: this.serverName,
        event: join,
        stateBefore,
      });
      if (outcome.status !== 'persisted' && outcome.status !== 'duplicate') {
        throw errors.forbidden(
          `The join was refused: ${'reason' in outcome ? outcome.reason : outcome.status}`,
        );
      }
      outcomes.push(outcome);
    });
    await this.events.announceOutcomes(outcomes);
  }
}

/** A FederationError that carries a remote server's refusal (400, 403; 404 for invites), as our MatrixError. */
function remoteRefusal(err: unknown, what = 'join'): MatrixError | undefined {
  if (!(err instanceof FederationError)) return undefined;
  const passed = what === 'invite' ? [400, 403, 404] : [400, 403];
  const status = err.status;
  if (status === undefined || !passed.includes(status)) return undefined;
  const whose = what === 'invite' ? "The invited user's server" : "The room's server";
  return new MatrixError(
    status,
    err.errcode ?? 'M_FORBIDDEN',
    `${whose} refused the ${what}: ${err.message}`,
  );
}

/**
 * The prev and auth events of a make_join/make_leave/make_knock template: ID lists, or in room
 * versions 1 and 2 `[id, hashes]` pairs, whose hashes the event keeps as given (as fromWirePdu
 * does). The hashes may be `{}`: Synapse no longer keeps the reference hashes of the events it
 * references, and its templates pair those with an empty object.
 */
function templateReferences(
  template: JsonObject,
  rv: RoomVersion,
): Pick<RoomEvent, 'prev_events' | 'auth_events' | 'reference_hashes'> {
  if (!rv.legacyEventFormat)
    return { prev_events: stringList(template.prev_events), auth_events: stringList(template.auth_events) };
  const hashes: Record<string, Record<string, string>> = {};
  const pairs = (value: unknown): string[] => {
    const ids: string[] = [];
    for (const ref of Array.isArray(value) ? value.slice(0, 20) : []) {
      if (!Array.isArray(ref) || ref.length !== 2) continue;
      const [id, hash] = ref as unknown[];
      if (typeof id !== 'string' || !isJsonObject(hash)) continue;
      if (!Object.values(hash).every((v) => typeof v === 'string')) continue;
      hashes[id] = hash as Record<string, string>;
      ids.push(id);
    }
    return ids;
  };
  const prev = pairs(template.prev_events);
  const auth = pairs(template.auth_events);
  return { prev_events: prev, auth_events: auth, reference_hashes: hashes };
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string').slice(0, 20) : [];
}
