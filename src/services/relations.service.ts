import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow } from '../storage/database.ts';
import * as store from '../storage/relations.repository.ts';
import type { Session } from './accounts.service.ts';
import type { ClientEvent, RoomReader } from './room-reads.ts';
import { parseStreamToken, type RoomsService } from './rooms.service.ts';

/** Largest page of /relations and /threads. */
export const MAX_RELATIONS_PAGE = 100;
/** How deep `recurse` follows relations of relations. */
export const RECURSION_DEPTH = 3;
/** Most events whose relations a recursive /relations looks through. */
const MAX_RECURSION_PARENTS = 1000;
/** Most references bundled per event. */
const MAX_BUNDLED_REFERENCES = 50;

const NO_UPPER = Number.MAX_SAFE_INTEGER;

/**
 * Relations between events (client-server API: Forming relationships between events): the
 * /relations and /threads endpoints over the `event_relations` edge table the event pipeline
 * fills, and the aggregations bundled in `unsigned["m.relations"]` of served events.
 * Pagination tokens are stream positions (`s<n>`), as /messages uses.
 */
export class RelationsService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly reader: RoomReader,
    private readonly now: () => number = Date.now,
  ) {
    reader.setBundler((db, rows, events, viewer, candidates) =>
      this.bundle(db, rows, events, viewer, candidates),
    );
  }

  /** GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] */
  async relations(
    session: Session,
    roomId: string,
    eventId: string,
    opts: {
      relType?: string;
      eventType?: string;
      from?: string;
      to?: string;
      limit?: number;
      dir?: 'b' | 'f';
      recurse?: boolean;
    },
  ) {
    await this.rooms.visibleEvent(session.userId, roomId, eventId);
    const dir = opts.dir ?? 'b';
    const limit = Math.min(Math.max(opts.limit ?? 5, 0), MAX_RELATIONS_PAGE);
    const from = opts.from !== undefined ? parseStreamToken(opts.from) : undefined;
    const to = opts.to !== undefined ? parseStreamToken(opts.to) : undefined;
    const parents = opts.recurse ? await this.descendants(roomId, eventId) : [eventId];

    // Positions in (lower, upper]; a `b` page moves `upper` down, an `f` page `lower` up.
    let lower = dir === 'b' ? (to ?? 0) : (from ?? 0);
    let upper = dir === 'b' ? (from ?? NO_UPPER) : (to ?? NO_UPPER);
    const picked: EventRow[] = [];
    let more = false;
    while (picked.length < limit) {
      const batch = Math.max(limit * 2, 20);
      const rows = await store.relationPage(this.db, {
        roomId,
        parentIds: parents,
        ...(opts.relType !== undefined ? { relType: opts.relType } : {}),
        ...(opts.eventType !== undefined ? { eventType: opts.eventType } : {}),
        lower,
        upper,
        dir,
        limit: batch,
      });
      const visible = new Set(await this.reader.filterVisible(this.db, session.userId, rows));
      for (const row of rows) {
        if (picked.length >= limit) {
          more = true;
          break;
        }
        if (dir === 'b') upper = row.stream_ordering - 1;
        else lower = row.stream_ordering;
        if (visible.has(row)) picked.push(row);
      }
      if (more || rows.length < batch) break;
    }
    const chunk = await this.reader.toClientMany(this.db, picked, {
      now: this.now(),
      viewer: { userId: session.userId, deviceId: session.deviceId },
    });
    return {
      chunk,
      ...(more ? { next_batch: `s${dir === 'b' ? upper : lower}` } : {}),
      ...(opts.from !== undefined ? { prev_batch: opts.from } : {}),
      ...(opts.recurse ? { recursion_depth: RECURSION_DEPTH } : {}),
    };
  }

  /** The event and the events relating to it, to RECURSION_DEPTH levels (bounded). */
  private async descendants(roomId: string, eventId: string): Promise<string[]> {
    const all = [eventId];
    let level = [eventId];
    for (let depth = 1; depth < RECURSION_DEPTH && level.length > 0; depth++) {
      level = await store.childIds(this.db, roomId, level, MAX_RECURSION_PARENTS - all.length);
      all.push(...level);
      if (all.length >= MAX_RECURSION_PARENTS) break;
    }
    return all;
  }

  /** GET /rooms/{roomId}/threads */
  async threads(
    session: Session,
    roomId: string,
    opts: { include?: 'all' | 'participated'; from?: string; limit?: number },
  ) {
    await this.rooms.readableStateGroup(session.userId, roomId);
    const limit = Math.min(Math.max(opts.limit ?? 10, 1), MAX_RELATIONS_PAGE);
    let upper = opts.from !== undefined ? parseStreamToken(opts.from) : NO_UPPER;
    const roots: EventRow[] = [];
    let more = false;
    while (roots.length < limit) {
      const batch = Math.max(limit * 2, 20);
      const page = await store.threadPage(this.db, {
        roomId,
        upper,
        limit: batch,
        ...(opts.include === 'participated' ? { participant: session.userId } : {}),
      });
      const rows = await this.reader.eventRows(
        this.db,
        page.map((p) => p.parent_id),
      );
      const candidates = page
        .map((p) => rows.get(p.parent_id))
        .filter((r): r is EventRow => r !== undefined && r.room_id === roomId);
      const visible = new Set(await this.reader.filterVisible(this.db, session.userId, candidates));
      for (const p of page) {
        if (roots.length >= limit) {
          more = true;
          break;
        }
        upper = p.latest - 1;
        const row = rows.get(p.parent_id);
        if (row && visible.has(row)) roots.push(row);
      }
      if (more || page.length < batch) break;
    }
    const chunk = await this.reader.toClientMany(this.db, roots, {
      now: this.now(),
      viewer: { userId: session.userId, deviceId: session.deviceId },
    });
    return { chunk, ...(more ? { next_batch: `s${upper}` } : {}) };
  }

  /**
   * The aggregations of the spec (v1.7 on) for served events: `m.thread` (the latest reply the
   * viewer may see, the number of replies, and whether the viewer took part), `m.replace` (the
   * latest valid edit, whole; the original's content is left as it is) and `m.reference` (the
   * referencing event IDs). Redacted relations do not count.
   */
  private async bundle(
    db: Executor,
    rows: readonly EventRow[],
    events: readonly ClientEvent[],
    viewer: string,
    candidates?: ReadonlySet<string>,
  ): Promise<void> {
    const byId = new Map(rows.map((r) => [r.event_id, r]));
    const summaries = await store.relationSummaries(
      db,
      rows
        .filter((r) => r.redacted_by === null && (candidates === undefined || candidates.has(r.event_id)))
        .map((r) => r.event_id),
      ['m.thread', 'm.replace', 'm.reference'],
      viewer,
    );
    if (summaries.length === 0) return;
    const bundles = new Map<string, Record<string, unknown>>();
    const bundleOf = (id: string) => {
      let b = bundles.get(id);
      if (!b) {
        b = {};
        bundles.set(id, b);
      }
      return b;
    };

    const threads = summaries.filter((s) => s.rel_type === 'm.thread');
    if (threads.length > 0) {
      const latestIds = await store.eventIdsAt(
        db,
        threads.map((s) => s.latest),
      );
      const latestRows = await this.reader.eventRows(db, [...latestIds.values()]);
      const visible = new Set(
        (await this.reader.filterVisible(db, viewer, [...latestRows.values()])).map((r) => r.event_id),
      );
      for (const s of threads) {
        const id = latestIds.get(s.latest);
        const latest = id !== undefined && visible.has(id) ? latestRows.get(id) : undefined;
        if (!latest) continue;
        bundleOf(s.parent_id)['m.thread'] = {
          latest_event: await this.reader.toClient(db, latest, { now: this.now() }),
          count: s.count,
          current_user_participated: s.mine || byId.get(s.parent_id)?.sender === viewer,
        };
      }
    }

    const edited = summaries.filter((s) => s.rel_type === 'm.replace').map((s) => s.parent_id);
    if (edited.length > 0) {
      const edits = await store.relationsOfType(db, edited, 'm.replace', 100 * edited.length);
      const chosen = new Map<string, string>();
      for (const e of edits) {
        const original = byId.get(e.parent_id);
        // A valid edit: same sender and type as the original, neither a state event, and the
        // original not itself an edit.
        if (!original || chosen.has(e.parent_id)) continue;
        if (e.sender !== original.sender || e.type !== original.type) continue;
        if (e.state_key !== null || original.state_key !== null) continue;
        if (store.relationOf(original.json.content)?.relType === 'm.replace') continue;
        chosen.set(e.parent_id, e.event_id);
      }
      const editRows = await this.reader.eventRows(db, [...chosen.values()]);
      for (const [parent, editId] of chosen) {
        const row = editRows.get(editId);
        if (row) bundleOf(parent)['m.replace'] = await this.reader.toClient(db, row, { now: this.now() });
      }
    }

    const referenced = summaries.filter((s) => s.rel_type === 'm.reference').map((s) => s.parent_id);
    if (referenced.length > 0) {
      const refs = await store.relationsOfType(
        db,
        referenced,
        'm.reference',
        MAX_BUNDLED_REFERENCES * referenced.length,
      );
      for (const r of refs.reverse()) {
        const b = bundleOf(r.parent_id);
        const chunk = (
          (b['m.reference'] as { chunk: Array<{ event_id: string }> } | undefined) ?? {
            chunk: [],
          }
        ).chunk;
        if (chunk.length < MAX_BUNDLED_REFERENCES) chunk.push({ event_id: r.event_id });
        b['m.reference'] = { chunk };
      }
    }

    for (const event of events) {
      const bundle = bundles.get(event.event_id);
      if (!bundle) continue;
      const unsigned = (event.unsigned ?? {}) as Record<string, unknown>;
      unsigned['m.relations'] = bundle;
      event.unsigned = unsigned;
    }
  }
}
