import type { EventsService } from '../../events/events.service.ts';
import { type IngestOutcome, requiredSigners, signedForm } from '../../events/pipeline.ts';
import type { PreverifiedSignatures } from '../../events/preverified.ts';
import { resolveStateSets } from '../../events/state.ts';
import type { RoomEvent, StateTuple } from '../../protocol/event.ts';
import { stateTuple } from '../../protocol/event.ts';
import type { JsonObject } from '../../protocol/json.ts';
import type { RoomVersion } from '../../protocol/room-versions.ts';
import { resolveState } from '../../protocol/state-res/index.ts';
import * as store from '../../storage/events.repository.ts';
import { loadStateGroup } from '../../storage/rooms.repository.ts';
import { fromWire, isWireError } from '../pdu.ts';

/** What inbound handling needs of the outbound client: one signed request to one server. */
export interface Requester {
  request<T = Record<string, unknown>>(req: {
    destination: string;
    method: 'GET' | 'POST' | 'PUT';
    path: string;
    query?: Record<string, string | number | boolean | ReadonlyArray<string>>;
    body?: JsonObject;
  }): Promise<T>;
}

/** Bounds on what one incoming event may make us fetch (a flood of missing events stops here). */
export const MAX_MISSING_EVENTS = 50;
export const MAX_FETCHED_AUTH_EVENTS = 200;

const enc = encodeURIComponent;

export interface InboundDeps {
  events: EventsService;
  signatures: PreverifiedSignatures;
  requester: Requester | undefined;
}

/**
 * Ingests an event from `origin`, fetching from it what the pipeline says is missing: auth events
 * (as outliers), a gap of prev events (get_missing_events), and, when the gap cannot be filled,
 * the state before the event (state_ids at each missing prev event). Every fetched event goes
 * through the same pipeline. Signatures are checked and requests made outside the room's lock;
 * only the ingestion holds it.
 */
export async function ingestWithFetching(
  deps: InboundDeps,
  rv: RoomVersion,
  roomId: string,
  origin: string,
  event: RoomEvent,
  budget = { events: MAX_MISSING_EVENTS + MAX_FETCHED_AUTH_EVENTS },
): Promise<IngestOutcome[]> {
  const { events, requester } = deps;
  const done: IngestOutcome[] = [];
  const ingest = async (e: RoomEvent, stateBefore?: Map<StateTuple, string>) => {
    await deps.signatures.preverify([signedForm(e, rv)], rv, (p) => requiredSigners(p as RoomEvent, rv));
    const o = await events.locks.withRoomLock(roomId, (lock) =>
      events.ingest(lock, { kind: 'new', origin, event: e, ...(stateBefore ? { stateBefore } : {}) }),
    );
    done.push(o);
    return o;
  };
  let outcome = await ingest(event);
  if (outcome.status !== 'missing' || !requester) return done;

  if (outcome.authEvents.length > 0) {
    await fetchAsOutliers(deps, rv, roomId, origin, outcome.authEvents, budget);
    outcome = await ingest(event);
    if (outcome.status !== 'missing') return done;
  }
  if (outcome.prevEvents.length === 0) return done;

  // Fill the gap between our forward extremities and the event, oldest first.
  const earliest = await store.forwardExtremityIds(events.db, roomId);
  try {
    const res = await requester.request<{ events?: unknown[] }>({
      destination: origin,
      method: 'POST',
      path: `/_matrix/federation/v1/get_missing_events/${enc(roomId)}`,
      body: { earliest_events: earliest, latest_events: [event.event_id], limit: 20, min_depth: 0 },
    });
    const fetched = (Array.isArray(res.events) ? res.events : [])
      .slice(0, MAX_MISSING_EVENTS)
      .map((j) => fromWire(j, rv))
      .filter((e): e is RoomEvent => !isWireError(e))
      .sort((a, b) => a.depth - b.depth);
    budget.events -= fetched.length;
    for (const missing of fetched) {
      const o = await ingest(missing);
      if (o.status === 'missing' && o.authEvents.length > 0) {
        await fetchAsOutliers(deps, rv, roomId, origin, o.authEvents, budget);
        await ingest(missing);
      }
    }
  } catch {
    // The origin could not fill the gap: fall back to asking for the state.
  }
  outcome = await ingest(event);
  if (outcome.status !== 'missing' || outcome.prevEvents.length === 0) return done;

  // The state after each missing prev event: state_ids before it, plus the event itself.
  const sets: Array<Map<StateTuple, string>> = [];
  for (const row of await store.getPdus(events.db, event.prev_events)) {
    if (row.state_group_after !== null)
      sets.push(new Map(await loadStateGroup(events.db, row.state_group_after)));
  }
  for (const prevId of outcome.prevEvents) {
    if (budget.events <= 0) return done;
    let ids: { pdu_ids?: unknown; auth_chain_ids?: unknown };
    try {
      ids = await requester.request({
        destination: origin,
        method: 'GET',
        path: `/_matrix/federation/v1/state_ids/${enc(roomId)}`,
        query: { event_id: prevId },
      });
    } catch {
      return done; // The origin cannot say what the state was: the event stays unaccepted.
    }
    const pduIds = stringList(ids.pdu_ids);
    const authIds = stringList(ids.auth_chain_ids);
    await fetchAsOutliers(deps, rv, roomId, origin, [...authIds, ...pduIds, prevId], budget);
    const rows = await store.getPdus(events.db, [...pduIds, prevId]);
    // A state we could not fetch whole would authorise the event against part of it: give up.
    if (rows.length < pduIds.length + 1) return done;
    const byId = new Map(rows.map((r) => [r.event_id, r]));
    const state = new Map<StateTuple, string>();
    for (const id of pduIds) {
      const r = byId.get(id);
      if (r && r.state_key !== null && r.rejected_reason === null)
        state.set(stateTuple(r.type, r.state_key), id);
    }
    const prev = byId.get(prevId);
    if (prev && prev.state_key !== null && prev.rejected_reason === null)
      state.set(stateTuple(prev.type, prev.state_key), prevId);
    sets.push(state);
  }
  const stateBefore =
    sets.length === 1
      ? sets[0]!
      : await events.locks.withRoomLock(roomId, (lock) => resolveStateSets(lock, resolveState, rv, sets));
  await ingest(event, stateBefore);
  return done;
}

/**
 * Fetches events by ID from `origin` (each fetched event's own missing auth events too, within
 * the budget), checks their signatures, then stores them as outliers, auth events first.
 */
export async function fetchAsOutliers(
  deps: InboundDeps,
  rv: RoomVersion,
  roomId: string,
  origin: string,
  ids: readonly string[],
  budget: { events: number },
): Promise<void> {
  if (!deps.requester) return;
  const pending = [...new Set(ids)];
  const have = new Set((await store.getPdus(deps.events.db, pending)).map((r) => r.event_id));
  const queue = pending.filter((id) => !have.has(id));
  const fetched = new Map<string, RoomEvent>();
  while (queue.length > 0 && budget.events > 0) {
    const id = queue.shift()!;
    if (fetched.has(id) || have.has(id)) continue;
    budget.events -= 1;
    let res: { pdus?: unknown[] };
    try {
      res = await deps.requester.request({
        destination: origin,
        method: 'GET',
        path: `/_matrix/federation/v1/event/${enc(id)}`,
      });
    } catch {
      continue;
    }
    const pdu = Array.isArray(res.pdus) ? res.pdus[0] : undefined;
    const ev = pdu === undefined ? undefined : fromWire(pdu, rv);
    if (!ev || isWireError(ev) || ev.event_id !== id) continue;
    fetched.set(id, ev);
    for (const a of ev.auth_events) if (!fetched.has(a) && !have.has(a)) queue.push(a);
  }
  await ingestOutliers(deps, rv, roomId, origin, [...fetched.values()]);
}

/** Checks signatures (outside the lock), then stores events as outliers in depth order. */
export async function ingestOutliers(
  deps: InboundDeps,
  rv: RoomVersion,
  roomId: string,
  origin: string,
  list: readonly RoomEvent[],
): Promise<void> {
  const sorted = [...list].sort((a, b) => a.depth - b.depth);
  await deps.signatures.preverify(
    sorted.map((e) => signedForm(e, rv)),
    rv,
    (p) => requiredSigners(p as RoomEvent, rv),
  );
  await deps.events.locks.withRoomLock(roomId, async (lock) => {
    for (const ev of sorted) await deps.events.ingest(lock, { kind: 'outlier', origin, event: ev });
  });
}

/** The strings of a list a remote server sent (at most 10,000). */
export function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string').slice(0, 10_000) : [];
}
