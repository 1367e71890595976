import { randomBytes } from 'node:crypto';
import { errors } from '../errors.ts';
import { checkAuth, selectAuthEvents, serverNameOf } from '../protocol/auth-rules.ts';
import { encodeBase64Url } from '../protocol/base64.ts';
import { canonicalJsonBytes } from '../protocol/canonical-json.ts';
import { type Pdu, type RoomEvent, type StateMap, stateTuple } from '../protocol/event.ts';
import { computeEventId, referenceHashes } from '../protocol/hashes.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import type { RoomReader } from '../services/room-reads.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type * as rooms from '../storage/rooms.repository.ts';
import { MAX_EVENT_BYTES, MAX_PREV_EVENTS } from './checks.ts';
import { roomHead } from './room-head.ts';
import type { RoomLock } from './room-lock.ts';
import { authStateAt, heldEvents, resolveGroups, type StateResolver } from './state.ts';

export interface NewEvent {
  roomId: string;
  type: string;
  sender: string;
  content: JsonObject;
  stateKey?: string;
  /** For m.room.redaction: the event redacted. */
  redacts?: string;
}

export interface BuildDeps {
  reader: RoomReader;
  resolver: StateResolver;
  sign: (pdu: Omit<Pdu, 'hashes' | 'signatures'>, rv: RoomVersion) => Pdu;
  now: () => number;
}

/** Depth is capped as the spec allows (2^63 - 1), which JSON numbers here cannot exceed anyway. */
const MAX_DEPTH = Number.MAX_SAFE_INTEGER;

export interface BuiltEvent {
  event: RoomEvent;
  /** The state the event was built on (its prev events' resolved state), as IDs. */
  stateBefore: rooms.StateIds;
  /** The auth state it was checked against, when a pre-check ran. */
  authState?: StateMap;
}

/**
 * Builds a local event on top of the room's forward extremities: prev events (the newest up to
 * the limit), depth, the auth events the selection algorithm picks from the state before it, the
 * content hash and our signature. The result still goes through the pipeline like any event.
 */
export async function buildEvent(
  lock: RoomLock,
  deps: BuildDeps,
  rv: RoomVersion,
  input: NewEvent,
): Promise<BuiltEvent> {
  const { trx } = lock;
  const head = await roomHead(lock);
  const extremities = head?.extremities ?? [];
  if (extremities.length === 0) throw errors.notFound('Unknown room');
  const prevs = [...extremities].sort((a, b) => b.depth - a.depth).slice(0, MAX_PREV_EVENTS);
  let stateBefore: rooms.StateIds;
  const current = head?.currentGroup;
  if (prevs.length === extremities.length && current !== undefined) {
    stateBefore = await deps.reader.stateIdsAt(trx, current);
  } else {
    const groups = prevs.map((r) => r.state_group_after!);
    stateBefore = (await resolveGroups(lock, deps.reader, deps.resolver, rv, groups)).state;
  }
  const partial = {
    type: input.type,
    sender: input.sender,
    content: input.content,
    ...(input.stateKey !== undefined ? { state_key: input.stateKey } : {}),
  };
  const authEventIds = selectAuthEvents(partial, rv)
    .map((k) => stateBefore.get(stateTuple(k.type, k.state_key)))
    .filter((id): id is string => id !== undefined);
  const content = { ...input.content };
  const unsigned: Omit<Pdu, 'hashes' | 'signatures'> = {
    type: input.type,
    room_id: input.roomId,
    sender: input.sender,
    content,
    origin_server_ts: deps.now(),
    depth: Math.min(MAX_DEPTH, Math.max(...prevs.map((r) => r.depth)) + 1),
    prev_events: prevs.map((r) => r.event_id),
    auth_events: authEventIds,
    ...(input.stateKey !== undefined ? { state_key: input.stateKey } : {}),
  };
  if (input.redacts !== undefined) {
    if (rv.redactsInContent) content.redacts = input.redacts;
    else unsigned.redacts = input.redacts;
  }
  if (rv.eventIdFormat === 'legacy') {
    await addLegacyReferences(trx, deps.reader, rv, unsigned, serverNameOf(input.sender) ?? '');
  }
  const pdu = deps.sign(unsigned, rv);
  if (canonicalJsonBytes(pdu).length > MAX_EVENT_BYTES) {
    throw errors.tooLarge(`Events may not exceed ${MAX_EVENT_BYTES} bytes`);
  }
  return { event: { ...pdu, event_id: computeEventId(pdu, rv) }, stateBefore };
}

/**
 * Room versions 1 and 2: the sending server chooses the event ID (`$opaque:server`), and each
 * prev and auth event is referenced with its reference hash (rooms/v1: Event format). The hashes
 * are computed from the events held, which give the same hash whether held whole or redacted.
 */
export async function addLegacyReferences(
  trx: Executor,
  reader: RoomReader,
  rv: RoomVersion,
  event: Omit<Pdu, 'hashes' | 'signatures'>,
  serverName: string,
): Promise<void> {
  const hashes = await legacyReferenceHashes(trx, reader, rv, [...event.prev_events, ...event.auth_events]);
  Object.assign(event, { event_id: newLegacyEventId(serverName), reference_hashes: hashes });
}

/** The reference hashes of held events, by ID, as v1/v2 events pair them with their IDs. */
export async function legacyReferenceHashes(
  trx: Executor,
  reader: RoomReader,
  rv: RoomVersion,
  ids: readonly string[],
): Promise<Record<string, Record<string, string>>> {
  const unique = [...new Set(ids)];
  const held = await heldEvents(trx, reader, unique);
  const hashes: Record<string, Record<string, string>> = {};
  for (const id of unique) {
    const ref = held.get(id);
    if (!ref) throw new Error(`cannot reference ${id}: it is not held`);
    hashes[id] = referenceHashes(ref, rv);
  }
  return hashes;
}

/** A new v1/v2 event ID: 18 random bytes, URL-safe base64, and our server name. */
export function newLegacyEventId(serverName: string): string {
  return `$${encodeBase64Url(randomBytes(18))}:${serverName}`;
}

/**
 * The auth rules against the state the event was built on, for callers that must know the
 * verdict before they add checks of their own (the pipeline checks again on ingest).
 */
export async function precheck(lock: RoomLock, reader: RoomReader, rv: RoomVersion, built: BuiltEvent) {
  const authState = await authStateAt(lock.trx, reader, built.event, built.stateBefore, rv);
  const verdict = checkAuth(built.event, authState, rv);
  if (!verdict.allowed) throw errors.forbidden(`${verdict.reason} (rule ${verdict.rule})`);
}
