import { checkAuth, checkAuthAgainstAuthEvents } from '../protocol/auth-rules.ts';
import { type RoomEvent, stateTuple } from '../protocol/event.ts';
import {
  checkContentHash,
  computeEventId,
  referenceHashes,
  roomIdFromCreateEvent,
} from '../protocol/hashes.ts';
import { requiredSignatureServers } from '../protocol/pdu-wire.ts';
import { redactEvent } from '../protocol/redaction.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import type { RoomReader } from '../services/room-reads.ts';
import type { PduRow } from '../storage/database.ts';
import * as store from '../storage/events.repository.ts';
import { mediaIdsOf, recordMediaReferences } from '../storage/media-references.repository.ts';
import { recordRelation } from '../storage/relations.repository.ts';
import * as rooms from '../storage/rooms.repository.ts';
import { indexEvent } from '../storage/search.repository.ts';
import type { StreamChange } from '../streams/notifier.ts';
import { nextBackfillPosition, nextPosition } from '../streams/positions.ts';
import { formatProblem } from './checks.ts';
import { applyRedactions, redactsOf } from './redactions.ts';
import { forget, heldRows, roomHead } from './room-head.ts';
import type { RoomLock } from './room-lock.ts';
import {
  authStateAt,
  heldEvents,
  type ResolvedState,
  resolveGroups,
  type StateResolver,
  stateDelta,
} from './state.ts';

/**
 * The one entrance for room events. A local send (built and signed here), an event a remote
 * server pushed, one we fetched as an auth or state event (outlier) and one we backfilled all go
 * through `ingest`, which runs the checks of the server-server API ("Checks performed on receipt
 * of a PDU") in order:
 *   1. format and size;
 *   2. content hash (a mismatch redacts the event) and signatures (a failure drops it);
 *   3. auth against the event's own auth events (a failure rejects it);
 *   4. auth against the state before it, resolved across all its prev events (rejects);
 *   5. for new events, auth against the room's current state (a failure soft-fails it);
 * then persists it with its state, moves the forward extremities and the current state by a
 * computed delta, applies redactions, and returns the stream change to announce.
 */

export type IngestKind = 'new' | 'outlier' | 'backfill';

export interface EventInput {
  kind: IngestKind;
  /** The server that gave us the event (ours for local sends). */
  origin: string;
  event: RoomEvent;
  /**
   * The state before the event when some of its prev events are not held (fetched with
   * /state_ids, as outliers); otherwise it is computed from the prev events.
   */
  stateBefore?: rooms.StateIds;
  /**
   * For an outlier whose auth events this server cannot have: a membership event of a room it
   * is not in (an invite another server sent us, our rejection of it, or our knock). Format,
   * event ID, signatures and hash are checked; auth is not (nothing to check it against), and
   * the event stays an outlier that never enters a timeline or the room's state.
   */
  outOfBand?: boolean;
  /** For a backfilled event: the position reserved for it (see reserveBackfillPositions). */
  position?: number;
}

export type IngestOutcome =
  | {
      status: 'persisted';
      event: RoomEvent;
      position: number;
      /** The room's current state group once it was persisted. */
      roomStateGroup: number;
      change?: StreamChange;
    }
  | { status: 'outlier'; event: RoomEvent }
  | { status: 'soft_failed'; event: RoomEvent; reason: string }
  | { status: 'rejected'; event: RoomEvent; reason: string }
  /** Not stored: malformed, badly signed, or (for a retry) already held. */
  | { status: 'dropped'; reason: string }
  | { status: 'duplicate'; event: RoomEvent; position: number | null }
  /** Not stored: events it needs (auth events, or prev events without `stateBefore`) are not held. */
  | { status: 'missing'; event: RoomEvent; authEvents: string[]; prevEvents: string[] };

/** Checks the signatures an event needs; the key ring implements it (src/federation/keys). */
export interface EventSignatureVerifier {
  verifyEvent(
    pdu: object,
    rv: RoomVersion,
    servers: string[],
    atTs: number,
  ): Promise<{ ok: true } | { ok: false; reason: string }>;
}

export interface PipelineDeps {
  serverName: string;
  reader: RoomReader;
  resolver: StateResolver;
  verifier: EventSignatureVerifier;
  now: () => number;
}

const AUTHORISER_KEY = 'join_authorised_via_users_server';

export class EventPipeline {
  constructor(private readonly deps: PipelineDeps) {}

  async ingest(lock: RoomLock, rv: RoomVersion, input: EventInput): Promise<IngestOutcome> {
    try {
      return await this.ingestOne(lock, rv, input);
    } finally {
      forget(lock);
    }
  }

  private async ingestOne(lock: RoomLock, rv: RoomVersion, input: EventInput): Promise<IngestOutcome> {
    let event = input.event;
    const { trx } = lock;

    // The event ID is ours to compute (from room version 3): a claimed one that differs is a
    // different event. In versions 1 and 2 the sender chose it; the signature of its server,
    // which the signature checks require, vouches for it.
    if (rv.eventIdFormat !== 'legacy') {
      const computedId = computeEventId(withoutId(event), rv);
      if (computedId !== event.event_id)
        return { status: 'dropped', reason: 'event ID does not match its content' };
    }
    // A local event was just built (its ID is new); anything else may be held already.
    if (input.origin !== this.deps.serverName) {
      const [held] = await store.getPdus(trx, [event.event_id]);
      if (held && !(held.outlier && input.kind !== 'outlier')) {
        return { status: 'duplicate', event: store.toEvent(held), position: held.stream_ordering };
      }
      // Room versions 1 and 2: nothing ties an ID to one content, so an outlier held under it is
      // upgraded only by the same event (the same reference hash, which a redacted copy shares);
      // another event under the ID (its server equivocating) would otherwise mix the two.
      if (held && rv.eventIdFormat === 'legacy' && !sameReference(store.toEvent(held), event, rv))
        return { status: 'dropped', reason: 'another event is held under this event ID' };
    }

    // 1. Format and size.
    const roomIdOfEvent =
      event.type === 'm.room.create' && rv.roomIdFromCreateEvent
        ? roomIdFromCreateEvent(withoutId(event), rv)
        : event.room_id;
    if (roomIdOfEvent !== lock.roomId) return { status: 'dropped', reason: 'event is not in this room' };
    const problem = formatProblem(event, lock.roomId, rv);
    if (problem !== undefined) return { status: 'dropped', reason: problem };

    // 2. Signatures (over the redacted form), then the content hash.
    const servers = requiredSigners(event, rv);
    const signed = await this.deps.verifier.verifyEvent(
      signedForm(event, rv),
      rv,
      servers,
      event.origin_server_ts,
    );
    if (!signed.ok) return { status: 'dropped', reason: `signature check failed: ${signed.reason}` };
    if (!checkContentHash(signedForm(event, rv), rv)) {
      // A redacted copy is what a server holds of a redacted event, so fetched and backfilled
      // events are kept redacted, as the spec says. A new event pushed to us with content that
      // does not match its hash is refused outright (stricter than the spec: no client sees it).
      if (input.kind === 'new')
        return { status: 'dropped', reason: 'the content hash does not match the content' };
      event = { ...(redactEvent(withoutId(event), rv) as RoomEvent), event_id: event.event_id };
    }
    const options = { verifyEventSignature: (_ev: unknown, server: string) => servers.includes(server) };

    if (input.outOfBand) {
      if (input.kind !== 'outlier') throw new Error('only an outlier may be out of band');
      await this.writeOutlier(lock, rv, input, event, null);
      return { status: 'outlier', event };
    }

    // 3. Against its own auth events.
    const createId =
      rv.roomIdFromCreateEvent && event.type !== 'm.room.create' ? `$${lock.roomId.slice(1)}` : undefined;
    const fetched = await heldRows(lock, createId ? [...event.auth_events, createId] : event.auth_events);
    const authRows = new Map(
      event.auth_events.flatMap((id) => (fetched.has(id) ? [[id, fetched.get(id)!]] : [])),
    );
    const missingAuth = event.auth_events.filter((id) => !authRows.has(id));
    let createEvent: RoomEvent | undefined;
    if (createId !== undefined) {
      const createRow = fetched.get(createId);
      if (!createRow) missingAuth.push(createId);
      else createEvent = store.toEvent(createRow);
    }
    if (missingAuth.length > 0) {
      return { status: 'missing', event, authEvents: missingAuth, prevEvents: [] };
    }
    const authEvents = event.auth_events.map((id) => store.toEvent(authRows.get(id)!));
    const rejectedIds = new Set(
      [...authRows.values()].filter((r) => r.rejected_reason !== null).map((r) => r.event_id),
    );
    const own = checkAuthAgainstAuthEvents(event, authEvents, rv, {
      ...options,
      isRejected: (e) => rejectedIds.has(e.event_id),
      ...(createEvent ? { createEvent } : {}),
    });
    if (input.kind === 'outlier') {
      await this.writeOutlier(
        lock,
        rv,
        input,
        event,
        own.allowed ? null : `${own.reason} (rule ${own.rule})`,
      );
      if (!own.allowed) return { status: 'rejected', event, reason: own.reason };
      return { status: 'outlier', event };
    }

    // 4. Against the state before it, resolved across all its prev events.
    const prevRows = await heldRows(lock, event.prev_events);
    const missingPrev = event.prev_events.filter((id) => {
      const row = prevRows.get(id);
      return row === undefined || row.state_group_after === null;
    });
    let stateBefore: ResolvedState;
    if (event.type === 'm.room.create') {
      stateBefore = {
        group: (await rooms.createStateGroup(trx, lock.roomId, null, [])).id,
        state: new Map(),
      };
    } else if (missingPrev.length > 0 || event.prev_events.length === 0) {
      if (!input.stateBefore) {
        return { status: 'missing', event, authEvents: [], prevEvents: missingPrev };
      }
      const given = input.stateBefore;
      const entries = [...given].map(([key, event_id]) => {
        const [type, state_key] = key.split('\u0000') as [string, string];
        return { type, state_key, event_id };
      });
      stateBefore = {
        group: (await rooms.createStateGroup(trx, lock.roomId, null, entries)).id,
        state: given,
      };
    } else {
      stateBefore = await this.stateBeforePrevs(lock, rv, event, prevRows);
    }
    const before = await authStateAt(trx, this.deps.reader, event, stateBefore.state, rv);
    const verdict = own.allowed ? checkAuth(event, before, rv, options) : own;
    if (!verdict.allowed) {
      const reason = `${verdict.reason} (rule ${verdict.rule})`;
      await this.write(lock, rv, input, event, {
        streamOrdering: null,
        before: stateBefore.group,
        after: stateBefore.group,
        roomState: null,
        outlier: false,
        rejected: reason,
        softFailed: false,
      });
      return { status: 'rejected', event, reason };
    }
    const isState = typeof event.state_key === 'string';
    const after: ResolvedState = isState ? await this.stateAfter(lock, stateBefore, event) : stateBefore;

    // 5. Soft failure: a new event that the current state no longer allows.
    const head = await roomHead(lock);
    const currentGroup = head?.currentGroup;
    if (input.kind === 'new' && currentGroup !== undefined && currentGroup !== stateBefore.group) {
      const currentState = await this.deps.reader.stateIdsAt(trx, currentGroup);
      const now = checkAuth(
        event,
        await authStateAt(trx, this.deps.reader, event, currentState, rv),
        rv,
        options,
      );
      if (!now.allowed) {
        const reason = `${now.reason} (rule ${now.rule})`;
        await this.write(lock, rv, input, event, {
          streamOrdering: null,
          before: stateBefore.group,
          after: after.group,
          roomState: null,
          outlier: false,
          rejected: null,
          softFailed: true,
        });
        return { status: 'soft_failed', event, reason };
      }
    }

    // Persist in the timeline, with the forward extremities and the current state it leads to.
    const position =
      input.kind === 'backfill'
        ? (input.position ?? (await nextBackfillPosition(trx)))
        : await nextPosition(trx);
    const affectedUsers = new Set<string>();
    if (event.type === 'm.room.member' && isState) affectedUsers.add(event.state_key!);
    let roomState = currentGroup ?? after.group;
    let extremities: string[] | undefined;
    if (input.kind === 'new') {
      const old = (head?.extremities ?? []).map((r) => r.event_id);
      const prevs = new Set(event.prev_events);
      extremities = old.filter((id) => !prevs.has(id));
      // An event that a held event already points back to arrived late: it is no extremity.
      const late = input.origin !== this.deps.serverName && (await store.hasSuccessor(trx, event.event_id));
      if (!late) extremities.push(event.event_id);
      roomState = await this.resolveCurrent(lock, rv, extremities, event, after.group);
    }
    await this.write(lock, rv, input, event, {
      streamOrdering: position,
      before: stateBefore.group,
      after: after.group,
      roomState,
      outlier: false,
      rejected: null,
      softFailed: false,
    });
    await recordRelation(trx, lock.roomId, event, position);
    const encrypted = stateBefore.state.has(stateTuple('m.room.encryption', ''));
    await indexEvent(trx, lock.roomId, event, position, encrypted);
    if (extremities !== undefined) {
      await store.setForwardExtremities(
        trx,
        lock.roomId,
        event.prev_events,
        extremities.includes(event.event_id) ? event.event_id : undefined,
      );
      if (roomState !== currentGroup)
        await this.moveCurrentState(lock, currentGroup, roomState, position, affectedUsers);
    }
    if (missingPrev.length > 0 || input.origin !== this.deps.serverName) {
      // Backfill goes on from the prev events not in the timeline: missing, or held only as
      // outliers (the state a join brought), which it then fetches into the timeline.
      const notInTimeline = event.prev_events.filter((id) => {
        const row = prevRows.get(id);
        return row === undefined || row.outlier || row.state_group_after === null;
      });
      await store.updateBackwardExtremities(trx, lock.roomId, event.event_id, notInTimeline);
    }

    const loadEvents = (ids: string[]) => heldEvents(trx, this.deps.reader, ids);
    const loadState = (group: number) => this.deps.reader.stateIdsAt(trx, group);
    const redacted = await applyRedactions(lock, loadEvents, loadState, rv, event, stateBefore.state, {
      // Nothing can have named a local event we just built, so only remote events look back.
      lookBack: input.origin !== this.deps.serverName,
    });
    if (input.kind === 'backfill') return { status: 'persisted', event, position, roomStateGroup: roomState };
    const change: StreamChange = {
      kind: 'event',
      position,
      roomId: lock.roomId,
      userIds: [...affectedUsers],
      ...(redacted.length > 0 ? { redacts: redacted[0] } : {}),
    };
    return { status: 'persisted', event, position, roomStateGroup: roomState, change };
  }

  /** The state before an event whose prev events are all held: resolved across their states. */
  private async stateBeforePrevs(
    lock: RoomLock,
    rv: RoomVersion,
    event: RoomEvent,
    prevRows: Map<string, PduRow>,
  ): Promise<ResolvedState> {
    const groups = event.prev_events.map((id) => prevRows.get(id)!.state_group_after!);
    // The common case: an event on top of all the room's forward extremities has the room's
    // current state before it, which is their resolution already.
    if (new Set(groups).size > 1) {
      const head = await roomHead(lock);
      const extremities = (head?.extremities ?? []).map((r) => r.event_id);
      const current = head?.currentGroup;
      if (current !== undefined && sameSet(extremities, event.prev_events)) {
        return { group: current, state: await this.deps.reader.stateIdsAt(lock.trx, current) };
      }
    }
    return resolveGroups(lock, this.deps.reader, this.deps.resolver, rv, groups);
  }

  private async stateAfter(lock: RoomLock, before: ResolvedState, event: RoomEvent): Promise<ResolvedState> {
    const chainLength = await this.deps.reader.chainLengthOf(lock.trx, before.group);
    const group = await rooms.createStateGroup(
      lock.trx,
      lock.roomId,
      { id: before.group, chainLength, state: before.state },
      [{ type: event.type, state_key: event.state_key!, event_id: event.event_id }],
    );
    const state = new Map(before.state);
    state.set(stateTuple(event.type, event.state_key!), event.event_id);
    return { group: group.id, state };
  }

  /** The state resolved across the given forward extremities (the new event among them). */
  private async resolveCurrent(
    lock: RoomLock,
    rv: RoomVersion,
    extremities: readonly string[],
    event: RoomEvent,
    eventGroup: number,
  ): Promise<number> {
    const others = extremities.filter((id) => id !== event.event_id);
    const rows = await heldRows(lock, others);
    const groups = others.map((id) => rows.get(id)!.state_group_after!);
    if (extremities.includes(event.event_id)) groups.push(eventGroup);
    return (await resolveGroups(lock, this.deps.reader, this.deps.resolver, rv, groups, [event])).group;
  }

  /** Writes the change of current state to `current_state` and `memberships`, as a delta. */
  private async moveCurrentState(
    lock: RoomLock,
    previous: number | undefined,
    next: number,
    position: number,
    affectedUsers: Set<string>,
  ): Promise<void> {
    const { trx } = lock;
    const old = previous === undefined ? new Map() : await this.deps.reader.stateIdsAt(trx, previous);
    const { changed, removed } = stateDelta(old, await this.deps.reader.stateIdsAt(trx, next));
    await store.applyCurrentStateDelta(trx, lock.roomId, changed, removed);
    const members = changed.filter((c) => c.type === 'm.room.member');
    const rows = await heldRows(
      lock,
      members.map((m) => m.event_id),
    );
    for (const m of members) {
      const row = rows.get(m.event_id);
      if (!row?.membership) continue;
      affectedUsers.add(m.state_key);
      await rooms.setMembership(trx, {
        room_id: lock.roomId,
        user_id: m.state_key,
        membership: row.membership,
        event_id: m.event_id,
        stream_ordering: position,
      });
    }
    for (const r of removed) {
      if (r.type !== 'm.room.member') continue;
      affectedUsers.add(r.state_key);
      await trx
        .deleteFrom('memberships')
        .where('room_id', '=', lock.roomId)
        .where('user_id', '=', r.state_key)
        .execute();
    }
    await store.setRoomCurrentStateGroup(trx, lock.roomId, next);
  }

  private writeOutlier(
    lock: RoomLock,
    rv: RoomVersion,
    input: EventInput,
    event: RoomEvent,
    rejected: string | null,
  ): Promise<void> {
    return this.write(lock, rv, input, event, {
      streamOrdering: null,
      before: null,
      after: null,
      roomState: null,
      outlier: true,
      rejected,
      softFailed: false,
    });
  }

  private async write(
    lock: RoomLock,
    rv: RoomVersion,
    input: EventInput,
    event: RoomEvent,
    w: {
      streamOrdering: number | null;
      before: number | null;
      after: number | null;
      roomState: number | null;
      outlier: boolean;
      rejected: string | null;
      softFailed: boolean;
    },
  ): Promise<void> {
    // What the lock holder memoised of the room is about to change.
    forget(lock);
    // Stored as received (the full event when its hash matched), so it can be served onwards.
    await store.insertPdu(lock.trx, {
      event,
      roomId: lock.roomId,
      origin: input.origin,
      receivedTs: this.deps.now(),
      streamOrdering: w.streamOrdering,
      stateGroupBefore: w.before,
      stateGroupAfter: w.after,
      roomStateGroup: w.roomState,
      outlier: w.outlier,
      rejectedReason: w.rejected,
      softFailed: w.softFailed,
      // Our own timeline events go out to the room's other servers.
      outbound: input.origin === this.deps.serverName && w.streamOrdering !== null,
      redacts: redactsOf(event, rv) ?? null,
    });
    // The media of this server it names (what retention's purges release); not for rejected events.
    if (w.rejected === null) {
      const media = mediaIdsOf(event.type, event.content, this.deps.serverName);
      await recordMediaReferences(lock.trx, lock.roomId, event.event_id, media);
    }
  }
}

/**
 * The servers whose signatures an event needs (server-server API: Validating hashes and
 * signatures on received events): the sender's; in room versions 1 and 2 also the server named
 * by the event ID, which chose the ID and is the event's origin (rooms/v1: Event IDs), so that
 * no other server can put an event under its name; and for a restricted join the authorising
 * user's server.
 */
export function requiredSigners(event: RoomEvent, rv: RoomVersion): string[] {
  const servers = new Set(requiredSignatureServers(event, rv));
  const authoriser = event.content[AUTHORISER_KEY];
  if (
    event.type === 'm.room.member' &&
    event.content.membership === 'join' &&
    typeof authoriser === 'string' &&
    authoriser.includes(':')
  ) {
    servers.add(authoriser.slice(authoriser.indexOf(':') + 1));
  }
  return [...servers];
}

/** Whether two events have the same reference hash (false when either cannot be hashed). */
function sameReference(a: RoomEvent, b: RoomEvent, rv: RoomVersion): boolean {
  try {
    return referenceHashes(a, rv).sha256 === referenceHashes(b, rv).sha256;
  } catch {
    return false;
  }
}

/**
 * The event as its hashes and signatures cover it: without its ID from room version 3 (the ID is
 * the reference hash), with it in versions 1 and 2 (where the sender chose it).
 */
export function signedForm(event: RoomEvent, rv: RoomVersion): object {
  return rv.eventIdFormat === 'legacy' ? event : withoutId(event);
}

/** The event without its `event_id` field (what hashes and signatures cover from version 3). */
export function withoutId(event: RoomEvent): Omit<RoomEvent, 'event_id'> {
  const { event_id: _omit, ...pdu } = event;
  return pdu;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}
