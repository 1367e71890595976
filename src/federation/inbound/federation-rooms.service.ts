import { errors, MatrixError } from '../../errors.ts';
import { legacyReferenceHashes } from '../../events/build.ts';
import type { EventsService } from '../../events/events.service.ts';
import type { IngestOutcome } from '../../events/pipeline.ts';
import type { PreverifiedSignatures } from '../../events/preverified.ts';
import { authoriserFor } from '../../events/restricted-joins.ts';
import { authStateAt } from '../../events/state.ts';
import { checkAuth, selectAuthEvents, serverNameOf } from '../../protocol/auth-rules.ts';
import { stateTuple } from '../../protocol/event.ts';
import { addEventSignature } from '../../protocol/event-signing.ts';
import { isJsonObject, type JsonObject, type JsonValue } from '../../protocol/json.ts';
import { redactEvent } from '../../protocol/redaction.ts';
import { getRoomVersion, type RoomVersion } from '../../protocol/room-versions.ts';
import { serverAllowedByAcl } from '../../protocol/server-acl.ts';
import type { RoomReader } from '../../services/room-reads.ts';
import type { ServerKeysService } from '../../services/server-keys.service.ts';
import type { Db } from '../../storage/connect.ts';
import type { PduRow } from '../../storage/database.ts';
import * as store from '../../storage/events.repository.ts';
import * as outbox from '../../storage/federation.repository.ts';
import * as rooms from '../../storage/rooms.repository.ts';
import { fromWire, isWireError, toWire } from '../pdu.ts';
import { EduDispatcher } from './edus.ts';
import { type InboundDeps, ingestWithFetching, type Requester } from './fetch-missing.ts';
import type { OutOfBandMemberships } from './invites.ts';

/** Limits of PUT /send (server-server API: Transactions). */
export const MAX_TXN_PDUS = 50;
export const MAX_TXN_EDUS = 100;
export const MAX_BACKFILL = 100;
export const MAX_MISSING_EVENTS_LIMIT = 100;

/**
 * The room side of the server-server API as this server answers it: transactions of PDUs, the
 * join and leave handshakes, and the reads other servers make (events, state, auth chains,
 * backfill, missing events). Every event that comes in goes through the event pipeline; every
 * read is limited to what the asking server may see.
 */
export class FederationRoomsService {
  /** The handlers of inbound EDUs, by type (register more on it: see edus.ts). */
  readonly edus = new EduDispatcher();

  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly events: EventsService,
    private readonly reader: RoomReader,
    private readonly signatures: PreverifiedSignatures,
    private readonly requester: Requester | undefined,
    private readonly serverKeys: ServerKeysService,
    private readonly now: () => number = Date.now,
  ) {}

  private outOfBand: OutOfBandMemberships | undefined;

  /** Where invites withdrawn by their inviter go, for rooms this server is not in (set once, at start). */
  setOutOfBand(outOfBand: OutOfBandMemberships): void {
    this.outOfBand = outOfBand;
  }

  private get deps(): InboundDeps {
    return { events: this.events, signatures: this.signatures, requester: this.requester };
  }

  // PUT /_matrix/federation/v1/send/{txnId}
  async receiveTransaction(origin: string, txnId: string, body: JsonObject): Promise<JsonObject> {
    const pdus = Array.isArray(body.pdus) ? body.pdus : [];
    const edus = Array.isArray(body.edus) ? body.edus : [];
    if (pdus.length > MAX_TXN_PDUS || edus.length > MAX_TXN_EDUS) {
      throw errors.badJson(`A transaction holds at most ${MAX_TXN_PDUS} PDUs and ${MAX_TXN_EDUS} EDUs`);
    }
    if (typeof body.origin === 'string' && body.origin !== origin) {
      throw errors.badJson('The transaction origin is not the server that signed the request');
    }
    const earlier = await outbox.receivedTransaction(this.db, origin, txnId);
    if (earlier) return earlier as JsonObject;

    const results: Record<string, JsonObject> = {};
    const outcomes: IngestOutcome[] = [];
    for (const json of pdus) {
      const roomId = isJsonObject(json) && typeof json.room_id === 'string' ? json.room_id : undefined;
      const version = roomId ? await this.reader.roomVersionOf(this.db, roomId) : undefined;
      const rv = version ? getRoomVersion(version) : undefined;
      if (!roomId || !rv) continue; // A room we are not in: nothing to answer for it.
      const event = fromWire(json, rv);
      if (isWireError(event)) continue;
      if (!(await this.serverAllowed(roomId, origin))) {
        results[event.event_id] = { error: "the room's server ACL does not allow the sending server" };
        continue;
      }
      try {
        if (await this.outOfBand?.receiveRescission(origin, rv, event)) {
          results[event.event_id] = {};
          continue;
        }
        const all = await ingestWithFetching(this.deps, rv, roomId, origin, event);
        outcomes.push(...all);
        results[event.event_id] = resultOf(all.at(-1)!);
      } catch (err) {
        results[event.event_id] = {
          error: err instanceof MatrixError ? err.message : 'could not process the event',
        };
      }
    }
    await this.events.announceOutcomes(outcomes);
    // After the PDUs (a join in the transaction comes before its user's receipts); an EDU that
    // is malformed or refused is dropped, and never changes the answer.
    await this.edus.dispatch(origin, edus);
    const response: JsonObject = { pdus: results };
    await outbox.recordReceivedTransaction(this.db, {
      origin,
      txn_id: txnId,
      response,
      received_ts: this.now(),
    });
    return response;
  }

  /**
   * Whether the room's current server ACL (m.room.server_acl) lets `server` take part; a room we
   * hold no state of lets every server in.
   */
  async serverAllowed(roomId: string, server: string): Promise<boolean> {
    const group = await store.roomCurrentStateGroup(this.db, roomId);
    if (group === undefined) return true;
    const acl = await this.reader.stateEventAt(this.db, group, 'm.room.server_acl', '');
    return serverAllowedByAcl(server, acl?.json.content as JsonObject | undefined);
  }

  /** 403 M_FORBIDDEN for a server the room's ACL shuts out (server-server API: Server ACLs). */
  async requireAllowed(roomId: string, server: string): Promise<void> {
    if (!(await this.serverAllowed(roomId, server)))
      throw errors.forbidden("The room's server ACL does not allow this server");
  }

  // GET /_matrix/federation/v1/make_join/{roomId}/{userId} (and make_leave, make_knock)
  async makeMembership(
    origin: string,
    roomId: string,
    userId: string,
    membership: 'join' | 'leave' | 'knock',
    supportedVersions: readonly string[],
  ): Promise<JsonObject> {
    if (serverNameOf(userId) !== origin) throw errors.forbidden('The user is not on the requesting server');
    const rv = await this.roomVersion(roomId);
    if (membership !== 'leave' && !supportedVersions.includes(rv.id)) {
      throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', `The room is of version ${rv.id}`, {
        room_version: rv.id,
      });
    }
    return this.events.locks.withRoomLock(roomId, async (lock) => {
      const extremities = await rooms.forwardExtremityRows(lock.trx, roomId);
      const group = await store.roomCurrentStateGroup(lock.trx, roomId);
      if (extremities.length === 0 || group === undefined) throw errors.notFound('Unknown room');
      const state = await this.reader.stateIdsAt(lock.trx, group);
      // A restricted room: one of our members with the invite level vouches for the join (we
      // sign it in send_join), or the request is refused with the reason.
      const vouched =
        membership === 'join'
          ? await authoriserFor(lock.trx, this.reader, rv, state, userId, this.serverName)
          : ({ needed: false } as const);
      const template = {
        type: 'm.room.member',
        room_id: roomId,
        sender: userId,
        state_key: userId,
        content: {
          membership,
          ...(vouched.needed ? { join_authorised_via_users_server: vouched.authoriser } : {}),
        } as JsonObject,
        origin_server_ts: this.now(),
        depth: Math.max(...extremities.map((r) => r.depth)) + 1,
        prev_events: extremities
          .sort((a, b) => b.depth - a.depth)
          .slice(0, 20)
          .map((r) => r.event_id),
        auth_events: [] as string[],
      };
      template.auth_events = selectAuthEvents(template, rv)
        .map((k) => state.get(stateTuple(k.type, k.state_key)))
        .filter((id): id is string => id !== undefined);
      // Refuse up front what the rules would refuse (a banned user, an invite-only room).
      const authState = await authStateAt(lock.trx, this.reader, template, state, rv);
      const verdict = checkAuth({ ...template, hashes: { sha256: '' }, signatures: {} }, authState, rv, {
        verifyEventSignature: () => true,
      });
      if (!verdict.allowed) throw errors.forbidden(`You may not ${membership} this room: ${verdict.reason}`);
      if (rv.legacyEventFormat) {
        // Room versions 1 and 2 reference events as [id, hashes] pairs.
        const ids = [...template.prev_events, ...template.auth_events];
        const hashes = await legacyReferenceHashes(lock.trx, this.reader, rv, ids);
        const pairs = (list: string[]) => list.map((id) => [id, hashes[id]!] as JsonValue);
        return {
          event: {
            ...template,
            prev_events: pairs(template.prev_events),
            auth_events: pairs(template.auth_events),
          },
          room_version: rv.id,
        };
      }
      return { event: template, room_version: rv.id };
    });
  }

  // PUT /_matrix/federation/v2/send_join/{roomId}/{eventId} (and send_leave, send_knock)
  async sendMembership(
    origin: string,
    roomId: string,
    eventId: string,
    membership: 'join' | 'leave' | 'knock',
    body: JsonObject,
  ): Promise<JsonObject> {
    const rv = await this.roomVersion(roomId);
    const parsed = fromWire(body, rv);
    if (isWireError(parsed)) throw errors.badJson(parsed.error);
    let event = parsed;
    if (event.event_id !== eventId) throw errors.badJson('The event ID in the path is not the event sent');
    if (
      event.type !== 'm.room.member' ||
      event.state_key !== event.sender ||
      event.content.membership !== membership ||
      event.room_id !== roomId
    ) {
      throw errors.badJson(`Not a ${membership} event for this room`);
    }
    if (serverNameOf(event.sender) !== origin)
      throw errors.forbidden('The member is not on the requesting server');
    // A restricted join that names one of our users as its authoriser needs our signature: it
    // is given when the join is allowed (the pipeline's auth checks that the user may vouch).
    const authoriser = event.content.join_authorised_via_users_server;
    if (
      membership === 'join' &&
      rv.restrictedJoins &&
      typeof authoriser === 'string' &&
      serverNameOf(authoriser) === this.serverName
    ) {
      // The auth rules check only that the authoriser may invite; that the user is in an
      // allowed room is ours to check, as make_join did, before we sign.
      const group = await store.roomCurrentStateGroup(this.db, roomId);
      if (group === undefined) throw errors.notFound('Unknown room');
      const state = await this.reader.stateIdsAt(this.db, group);
      await authoriserFor(this.db, this.reader, rv, state, event.sender, this.serverName);
      const key = this.serverKeys.key;
      event = addEventSignature(event, rv, this.serverName, key.keyId, key.seed);
    }
    const all = await ingestWithFetching(this.deps, rv, roomId, origin, event);
    await this.events.announceOutcomes(all);
    const outcome = all.at(-1)!;
    const [row] = await store.getPdus(this.db, [event.event_id]);
    const stateBeforeGroup = row?.state_group_before ?? undefined;
    if (outcome.status !== 'persisted' && outcome.status !== 'duplicate') {
      throw errors.forbidden(
        `The ${membership} event was refused: ${'reason' in outcome ? outcome.reason : outcome.status}`,
      );
    }
    // As the resident server we pass the membership on to the room's other servers.
    if (outcome.status === 'persisted') await this.events.forward(roomId, event, outcome.position, origin);
    if (membership === 'knock') {
      // What the knocking user is shown of the room until they are let in (or not).
      const group = await store.roomCurrentStateGroup(this.db, roomId);
      const knockRoomState =
        group !== undefined ? await this.reader.strippedStateAt(this.db, group, [event.sender]) : [];
      return { knock_room_state: knockRoomState };
    }
    if (membership !== 'join') return {};
    const state = await this.reader.stateIdsAt(this.db, stateBeforeGroup!);
    const stateRows = await store.getPdus(this.db, [...state.values()]);
    const chain = await this.authChain(roomId, rv, [...state.values(), event.event_id]);
    const chainRows = await store.getPdus(this.db, chain);
    const servers = new Set<string>();
    for (const r of stateRows)
      if (r.membership === 'join' && r.state_key) servers.add(serverNameOf(r.state_key)!);
    return {
      state: stateRows.map((r) => toWire(store.toEvent(r), rv)),
      auth_chain: chainRows.map((r) => toWire(store.toEvent(r), rv)),
      event: toWire(event, rv),
      members_omitted: false,
      servers_in_room: [...servers].sort(),
    };
  }

  // GET /_matrix/federation/v1/event/{eventId}
  async getEvent(origin: string, eventId: string): Promise<JsonObject> {
    const [row] = await store.getPdus(this.db, [eventId]);
    if (!row || !(await this.serverMaySee(origin, row))) throw errors.notFound('Event not found');
    const rv = await this.roomVersion(row.room_id);
    return { origin: this.serverName, origin_server_ts: this.now(), pdus: [toWire(store.toEvent(row), rv)] };
  }

  // GET /_matrix/federation/v1/state_ids/{roomId}?event_id= and /state/{roomId}
  async stateAt(origin: string, roomId: string, eventId: string, full: boolean): Promise<JsonObject> {
    const [row] = await store.getPdus(this.db, [eventId]);
    if (!row || row.room_id !== roomId || row.state_group_before === null)
      throw errors.notFound('Event not found');
    if (!(await this.serverMaySee(origin, row))) throw errors.forbidden('Your server may not see this room');
    const state = [...(await this.reader.stateIdsAt(this.db, row.state_group_before)).values()];
    const rv = await this.roomVersion(roomId);
    const chain = await this.authChain(roomId, rv, state);
    if (!full) return { pdu_ids: state, auth_chain_ids: chain };
    const [stateRows, chainRows] = await Promise.all([
      store.getPdus(this.db, state),
      store.getPdus(this.db, chain),
    ]);
    return {
      pdus: stateRows.map((r) => toWire(store.toEvent(r), rv)),
      auth_chain: chainRows.map((r) => toWire(store.toEvent(r), rv)),
    };
  }

  // GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
  async eventAuth(origin: string, roomId: string, eventId: string): Promise<JsonObject> {
    const [row] = await store.getPdus(this.db, [eventId]);
    if (!row || row.room_id !== roomId) throw errors.notFound('Event not found');
    if (!(await this.serverMaySee(origin, row))) throw errors.forbidden('Your server may not see this room');
    const rv = await this.roomVersion(roomId);
    const chain = await store.getPdus(this.db, await this.authChain(roomId, rv, [eventId]));
    return { auth_chain: chain.map((r) => toWire(store.toEvent(r), rv)) };
  }

  // GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=
  async backfill(
    origin: string,
    roomId: string,
    from: readonly string[],
    limit: number,
  ): Promise<JsonObject> {
    const n = Math.min(Math.max(limit, 0), MAX_BACKFILL);
    const out = await this.walkBack(roomId, from, n, new Set(), 0);
    return {
      origin: this.serverName,
      origin_server_ts: this.now(),
      pdus: await this.asSeenBy(origin, roomId, out),
    };
  }

  // POST /_matrix/federation/v1/get_missing_events/{roomId}
  async missingEvents(
    origin: string,
    roomId: string,
    earliest: readonly string[],
    latest: readonly string[],
    limit: number,
    minDepth: number,
  ): Promise<JsonObject> {
    const n = Math.min(Math.max(limit, 0), MAX_MISSING_EVENTS_LIMIT);
    // Walk back from the latest events (not included), stopping at the earliest ones.
    const latestRows = await store.getPdus(this.db, latest);
    const starts = latestRows
      .filter((r) => r.room_id === roomId)
      .flatMap((r) => store.toEvent(r).prev_events);
    const out = await this.walkBack(roomId, starts, n, new Set(earliest), minDepth);
    return {
      events: await this.asSeenBy(
        origin,
        roomId,
        out.sort((a, b) => a.depth - b.depth),
      ),
    };
  }

  /**
   * Events for `origin` as it may see them: whole when the history visibility lets its users
   * see them, otherwise redacted copies (as Synapse gives): the graph stays whole for the
   * asking server, without the content its users may not read.
   */
  private async asSeenBy(origin: string, roomId: string, rows: readonly PduRow[]): Promise<JsonObject[]> {
    const rv = await this.roomVersion(roomId);
    // Redacted copies still show the graph and the state's shape: only for a server in the room.
    if (rows.length > 0 && !(await outbox.serverHasJoinedMember(this.db, roomId, origin)))
      throw errors.forbidden('Your server has no user in this room');
    const out: JsonObject[] = [];
    for (const r of rows) {
      const wire = toWire(store.toEvent(r), rv);
      out.push((await this.serverMaySee(origin, r)) ? wire : (redactEvent(wire, rv) as JsonObject));
    }
    return out;
  }

  /** Breadth-first along prev edges from `from` (included), newest depth first, up to `limit`. */
  private async walkBack(
    roomId: string,
    from: readonly string[],
    limit: number,
    stop: ReadonlySet<string>,
    minDepth: number,
  ): Promise<PduRow[]> {
    const seen = new Set<string>();
    const out: PduRow[] = [];
    let frontier = from.filter((id) => !stop.has(id));
    while (frontier.length > 0 && out.length < limit) {
      const rows = (await store.getPdus(this.db, frontier)).filter(
        (r) => r.room_id === roomId && r.rejected_reason === null && r.depth >= minDepth,
      );
      rows.sort((a, b) => b.depth - a.depth);
      const next: string[] = [];
      for (const r of rows) {
        if (seen.has(r.event_id) || out.length >= limit) continue;
        seen.add(r.event_id);
        out.push(r);
        for (const p of store.toEvent(r).prev_events) if (!seen.has(p) && !stop.has(p)) next.push(p);
      }
      frontier = next;
    }
    return out;
  }

  /**
   * Whether `origin` may read an event (server-server API: history visibility applies to servers
   * too): when the room is world readable at it, or when a user of `origin` was joined at it, or
   * (history shared) is joined now.
   */
  private async serverMaySee(origin: string, row: PduRow): Promise<boolean> {
    const group = row.state_group_after ?? row.state_group_before;
    if (group === null) return false;
    const state = await this.reader.stateIdsAt(this.db, group);
    const hvId = state.get(stateTuple('m.room.history_visibility', ''));
    const hv = hvId ? (await store.getPdus(this.db, [hvId]))[0] : undefined;
    const visibility = (hv?.json as { content?: { history_visibility?: unknown } } | undefined)?.content
      ?.history_visibility;
    if (visibility === 'world_readable') return true;
    const suffix = `:${origin}`;
    const memberIds = [...state].filter(([k]) => k.startsWith('m.room.member\u0000') && k.endsWith(suffix));
    const members = await store.getPdus(
      this.db,
      memberIds.map(([, id]) => id),
    );
    if (
      members.some((m) => m.membership === 'join' || (visibility === 'invited' && m.membership === 'invite'))
    )
      return true;
    if (visibility === 'joined' || visibility === 'invited') return false;
    return outbox.serverHasJoinedMember(this.db, row.room_id, origin);
  }

  /**
   * The auth chain of `ids`: the stored auth edges, and in room versions whose ID derives from
   * the create event (v12), that event too, which every event's auth rests on without listing it.
   */
  private async authChain(roomId: string, rv: RoomVersion, ids: readonly string[]): Promise<string[]> {
    const chain = await store.authChainIds(this.db, ids);
    if (rv.roomIdFromCreateEvent) {
      const createId = `$${roomId.slice(1)}`;
      if (!ids.includes(createId) && !chain.includes(createId)) chain.push(createId);
    }
    return chain;
  }

  private async roomVersion(roomId: string): Promise<RoomVersion> {
    const version = await this.reader.roomVersionOf(this.db, roomId);
    if (version === undefined) throw errors.notFound('This server does not know that room');
    return getRoomVersion(version)!;
  }
}

/** The per-PDU result of a transaction: empty on success, else why (server-server API). */
function resultOf(outcome: IngestOutcome): JsonObject {
  switch (outcome.status) {
    case 'persisted':
    case 'duplicate':
    case 'outlier':
      return {};
    case 'soft_failed':
      return {};
    case 'rejected':
    case 'dropped':
      return { error: outcome.reason };
    case 'missing':
      return { error: 'could not fetch the events it needs' };
  }
}
