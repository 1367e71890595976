import type { EventsService } from '../../events/events.service.ts';
import { type IngestOutcome, requiredSigners, signedForm } from '../../events/pipeline.ts';
import type { PreverifiedSignatures } from '../../events/preverified.ts';
import type { RoomEvent, StateTuple } from '../../protocol/event.ts';
import { stateTuple } from '../../protocol/event.ts';
import { getRoomVersion, type RoomVersion } from '../../protocol/room-versions.ts';
import type { RoomReader } from '../../services/room-reads.ts';
import type { Db } from '../../storage/connect.ts';
import * as store from '../../storage/events.repository.ts';
import { joinedServers } from '../../storage/federation.repository.ts';
import { reserveBackfillPositions } from '../../streams/positions.ts';
import { fetchAsOutliers, type Requester, stringList } from '../inbound/fetch-missing.ts';
import { fromWire, isWireError } from '../pdu.ts';

const enc = encodeURIComponent;
/** Most events asked for in one /backfill request. */
export const MAX_BACKFILL_REQUEST = 100;
/** Servers tried, one after another, before a backfill gives up. */
const MAX_SERVERS_TRIED = 3;
/** Events (state and auth events of the oldest backfilled ones) one backfill may fetch besides. */
const FETCH_BUDGET = 500;

/**
 * Backfill (server-server API: Backfilling and retrieving missing events): when a client pages
 * back past the oldest event this server holds of a room that started elsewhere, ask a server
 * in the room for the events before our backward extremities (/backfill), and ingest them,
 * oldest first, as `backfill` through the one pipeline: signatures, hashes and auth as for any
 * other event. They get positions below every earlier one, newest highest, so /messages pages on
 * into them; they never reach an incremental /sync and never change the room's current state.
 * The oldest of a batch, whose prev events are still missing, is authorised against the state
 * before it that the same server gives (/state_ids), its events fetched as outliers.
 */
export class Backfiller {
  /** One backfill per room at a time: concurrent requests share it. */
  private readonly running = new Map<string, Promise<number>>();

  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly events: EventsService,
    private readonly signatures: PreverifiedSignatures,
    private readonly requester: Requester,
    private readonly reader: RoomReader,
  ) {}

  /**
   * Fetches up to `limit` events before what the room's history holds; resolves with how many
   * were added to its timeline (0 when there is nothing to fetch or no server answered).
   */
  backfill(roomId: string, limit: number): Promise<number> {
    const running = this.running.get(roomId);
    if (running) return running;
    const work = this.run(roomId, Math.min(Math.max(limit, 1), MAX_BACKFILL_REQUEST)).finally(() =>
      this.running.delete(roomId),
    );
    this.running.set(roomId, work);
    return work;
  }

  private async run(roomId: string, limit: number): Promise<number> {
    const extremities = await store.backwardExtremityIds(this.db, roomId);
    if (extremities.length === 0) return 0;
    const version = await this.reader.roomVersionOf(this.db, roomId);
    const rv = version ? getRoomVersion(version) : undefined;
    if (!rv) return 0;
    const servers = await this.candidateServers(roomId, extremities);
    for (const server of servers.slice(0, MAX_SERVERS_TRIED)) {
      let pdus: unknown[];
      try {
        const res = await this.requester.request<{ pdus?: unknown }>({
          destination: server,
          method: 'GET',
          path: `/_matrix/federation/v1/backfill/${enc(roomId)}`,
          query: { v: extremities.slice(0, 20), limit },
        });
        pdus = Array.isArray(res.pdus) ? res.pdus.slice(0, limit) : [];
      } catch {
        continue; // unreachable or refusing: try the next server
      }
      const added = await this.ingestBatch(rv, roomId, server, pdus);
      if (added > 0) return added;
    }
    return 0;
  }

  /**
   * Servers to ask, best first: those of the senders of the events that point at the missing
   * ones (they had them), then every other server in the room now.
   */
  private async candidateServers(roomId: string, extremities: string[]): Promise<string[]> {
    const successors = await store.sendersPointingAt(this.db, roomId, extremities, 50);
    const ordered = new Set<string>();
    for (const sender of successors) ordered.add(sender.slice(sender.indexOf(':') + 1));
    for (const server of await joinedServers(this.db, roomId, this.serverName)) ordered.add(server);
    ordered.delete(this.serverName);
    return [...ordered];
  }

  private async ingestBatch(
    rv: RoomVersion,
    roomId: string,
    origin: string,
    pdus: unknown[],
  ): Promise<number> {
    const byId = new Map<string, RoomEvent>();
    for (const json of pdus) {
      const event = fromWire(json, rv);
      if (isWireError(event)) continue;
      // A create event of a room version that derives the room ID from it has none; the
      // pipeline checks that it is this room's.
      const ownsRoomId = event.type === 'm.room.create' && rv.roomIdFromCreateEvent;
      if (!ownsRoomId && event.room_id !== roomId) continue;
      byId.set(event.event_id, event);
    }
    // Outliers held (the state and auth events a join brought) enter the timeline now.
    const held = new Set(
      (await store.getPdus(this.db, [...byId.keys()])).filter((r) => !r.outlier).map((r) => r.event_id),
    );
    const batch = [...byId.values()]
      .filter((e) => !held.has(e.event_id))
      .sort((a, b) => a.depth - b.depth || (a.event_id < b.event_id ? -1 : 1));
    if (batch.length === 0) return 0;
    await this.signatures.preverify(
      batch.map((e) => signedForm(e, rv)),
      rv,
      (p) => requiredSigners(p as RoomEvent, rv),
    );
    // Positions for the whole batch at once, newest highest: the batch is ingested oldest first
    // (so each event's prev events are held when it comes), the oldest taking the lowest.
    const positions = await reserveBackfillPositions(this.db, batch.length);
    const budget = { events: FETCH_BUDGET };
    const deps = { events: this.events, signatures: this.signatures, requester: this.requester };
    let added = 0;
    for (const [i, event] of batch.entries()) {
      const position = positions[batch.length - 1 - i]!;
      const ingest = (stateBefore?: Map<StateTuple, string>) =>
        this.events.locks.withRoomLock(roomId, (lock) =>
          this.events.ingest(lock, {
            kind: 'backfill',
            origin,
            event,
            position,
            ...(stateBefore ? { stateBefore } : {}),
          }),
        );
      let outcome: IngestOutcome = await ingest();
      if (outcome.status === 'missing' && outcome.authEvents.length > 0) {
        await fetchAsOutliers(deps, rv, roomId, origin, outcome.authEvents, budget);
        outcome = await ingest();
      }
      if (outcome.status === 'missing' && outcome.prevEvents.length > 0) {
        const stateBefore = await this.stateBefore(rv, roomId, origin, event, budget);
        if (stateBefore) outcome = await ingest(stateBefore);
      }
      if (outcome.status === 'persisted') added++;
    }
    return added;
  }

  /** The state before `event` as `origin` gives it (/state_ids), its events fetched as outliers. */
  private async stateBefore(
    rv: RoomVersion,
    roomId: string,
    origin: string,
    event: RoomEvent,
    budget: { events: number },
  ): Promise<Map<StateTuple, string> | undefined> {
    let ids: { pdu_ids?: unknown; auth_chain_ids?: unknown };
    try {
      ids = await this.requester.request({
        destination: origin,
        method: 'GET',
        path: `/_matrix/federation/v1/state_ids/${enc(roomId)}`,
        query: { event_id: event.event_id },
      });
    } catch {
      return undefined;
    }
    const pduIds = stringList(ids.pdu_ids);
    const authIds = stringList(ids.auth_chain_ids);
    const deps = { events: this.events, signatures: this.signatures, requester: this.requester };
    await fetchAsOutliers(deps, rv, roomId, origin, [...authIds, ...pduIds], budget);
    const rows = await store.getPdus(this.db, pduIds);
    // Authorising against part of the state would be wrong: without all of it, give up.
    if (rows.length < pduIds.length) return undefined;
    const state = new Map<StateTuple, string>();
    for (const r of rows) {
      if (r.room_id === roomId && r.state_key !== null && r.rejected_reason === null)
        state.set(stateTuple(r.type, r.state_key), r.event_id);
    }
    return state;
  }
}
