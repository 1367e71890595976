import { sql } from 'kysely';
import type { Bus } from '../../bus/bus.ts';
import type { Config } from '../../config.ts';
import { errors } from '../../errors.ts';
import type { EventsService } from '../../events/events.service.ts';
import { canonicalJson } from '../../protocol/canonical-json.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { redactEvent } from '../../protocol/redaction.ts';
import { getRoomVersion, type RoomVersion } from '../../protocol/room-versions.ts';
import type { Db } from '../../storage/connect.ts';
import * as refs from '../../storage/media-references.repository.ts';
import * as repo from '../../storage/retention.repository.ts';
import * as roomsRepo from '../../storage/rooms.repository.ts';
import type { Session } from '../accounts.service.ts';
import { removeLocalMembers } from '../admin/evict.ts';
import type { AuditLog } from '../audit-log.ts';
import type { RoomReader } from '../room-reads.ts';
import type { RoomsService } from '../rooms.service.ts';
import {
  type EffectivePolicy,
  effectivePolicy,
  parseRoomRetention,
  RETENTION_EVENT_TYPE,
  type RetentionSettings,
  retentionSettings,
} from './policy.ts';

/**
 * Retention (spec/retention.md): the effective policy of a room, the purge job that applies it,
 * and the admin purges. Every function here that deletes is meant to be called by the CLI, the
 * job and, later, the HTTP admin API alike:
 *   - `purgeRoomHistory(roomId, { before, actor })`: deletes a room's history before a time;
 *   - `deleteRoom(roomId, { actor })`: removes everyone, then the room's every row;
 *   - `runJob()`: the policy purge of every room, one process at a time.
 */

/** Current state whose content a purge keeps: the room's settings, which clients need whole. */
const KEEP_CONTENT_TYPES = new Set([
  'm.room.encryption',
  RETENTION_EVENT_TYPE,
  'm.room.name',
  'm.room.avatar',
  'm.room.canonical_alias',
  'm.room.server_acl',
  'm.room.guest_access',
]);

/** Session advisory lock key (two-int form, a keyspace apart from the rooms' locks). */
const JOB_LOCK = [0x52455445, 1] as const;
const CACHE_CHANNEL = 'retention.purged';
const PRUNE_PAGE = 200;

/**
 * The pruned form of an event a purge keeps, as a redaction would leave it, and the bytes that
 * saves; undefined when there is nothing to prune (already pruned, or current state whose content
 * the room needs).
 */
function pruneOf(row: repo.KeptRow, rv: RoomVersion): { json: JsonObject; bytesFreed: number } | undefined {
  if (row.in_current_state && KEEP_CONTENT_TYPES.has(row.type)) return undefined;
  const json = redactEvent(row.json, rv);
  const was = canonicalJson(row.json);
  const now = canonicalJson(json);
  if (was === now) return undefined;
  return { json, bytesFreed: Buffer.byteLength(was) - Buffer.byteLength(now) };
}

/**
 * Set by the media repository: deletes the media whose last referencing event a purge or a room
 * deletion removed, once their grace period has passed (MediaService.deleteUnreferenced).
 */
export type MediaReleaseHook = () => Promise<{ media_deleted: number; files_deleted: number }>;

export interface PurgeResult {
  roomId: string;
  /** Events deleted. */
  eventsDeleted: number;
  /** Old events kept (needed for auth or state) with their content pruned. */
  eventsPruned: number;
  /** Bytes of event JSON deleted (deleted events, and what pruning removed). */
  bytesDeleted: number;
  fromTs: number | null;
  toTs: number | null;
  /** Media of this server that no remaining event names any more. */
  mediaReleased: number;
  /** Media deleted after the purge (those released now or earlier, past their grace period). */
  mediaDeleted: number;
  /** Rows deleted per table. */
  rows: Record<string, number>;
}

export interface DeleteRoomResult {
  roomId: string;
  membersRemoved: number;
  /** The local members who left, and those for whom it failed. */
  kicked: string[];
  failed: string[];
  /** The room's local aliases, removed. */
  aliases: string[];
  eventsDeleted: number;
  bytesDeleted: number;
  mediaReleased: number;
  mediaDeleted: number;
  rows: Record<string, number>;
}

export interface JobResult {
  /** False when another process held the job's lock. */
  ran: boolean;
  purges: PurgeResult[];
}

export interface RetentionDeps {
  config: Config;
  db: Db;
  bus: Bus;
  events: EventsService;
  rooms: RoomsService;
  reader: RoomReader;
  audit: AuditLog;
  now?: () => number;
  /** Drops every cached event row, state and derived count of this process. */
  forgetCaches: () => void;
}

export class RetentionService {
  readonly settings: RetentionSettings;
  private readonly now: () => number;
  private mediaHook: MediaReleaseHook | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<JobResult> | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private log: ((msg: string) => void) | undefined;

  constructor(private readonly deps: RetentionDeps) {
    this.settings = retentionSettings(deps.config);
    this.now = deps.now ?? Date.now;
  }

  /** Subscribes to other processes' purges (to drop cached rows) and starts the job's timer. */
  async start(): Promise<void> {
    this.unsubscribe = await this.deps.bus.subscribe(CACHE_CHANNEL, () => this.deps.forgetCaches());
    const every = this.deps.config.retentionPurgeIntervalMs;
    if (every > 0) {
      this.timer = setInterval(() => {
        this.runJob().catch((err: unknown) => this.log?.(`retention: job failed: ${(err as Error).message}`));
      }, every);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
    await this.unsubscribe?.();
  }

  /** Where the job's log lines go (the server's logger). */
  setLog(log: (msg: string) => void): void {
    this.log = log;
  }

  /**
   * The hook the media repository sets: called after each purge, room deletion and job run, it
   * deletes the media whose last referencing event went (their references are removed in the
   * purge's transaction, `src/storage/media-references.repository.ts`).
   */
  setMediaHook(hook: MediaReleaseHook | undefined): void {
    this.mediaHook = hook;
  }

  /** The policy stated by the room's current m.room.retention event and its effective form. */
  async policyOf(roomId: string): Promise<{ room: JsonObject | null; effective: EffectivePolicy }> {
    const row = await this.deps.rooms.currentStateRow(roomId, RETENTION_EVENT_TYPE, '');
    const content = (row?.json.content as JsonObject | undefined) ?? null;
    return { room: content, effective: effectivePolicy(parseRoomRetention(content), this.settings) };
  }

  /** GET /_conclave/client/v1/rooms/{roomId}/retention: for those who may read the room's state. */
  async clientPolicy(session: Session, roomId: string): Promise<JsonObject> {
    await this.deps.rooms.readableStateGroup(session.userId, roomId);
    const { room, effective } = await this.policyOf(roomId);
    return {
      max_lifetime: effective.maxLifetime,
      min_lifetime: effective.minLifetime,
      source: effective.source,
      clamped: effective.clamped,
      room: room ?? null,
      server: {
        default_max_lifetime: this.settings.defaultMaxLifetime > 0 ? this.settings.defaultMaxLifetime : null,
        allowed_min: this.settings.allowedMin,
        allowed_max: this.settings.allowedMax > 0 ? this.settings.allowedMax : null,
      },
    };
  }

  /**
   * The policy purge of every room: one process at a time when several share a PostgreSQL
   * database (a session advisory lock; PGlite has one process). A process that finds the lock
   * held skips this run.
   */
  runJob(opts: { now?: number } = {}): Promise<JobResult> {
    if (this.running) return this.running.then(() => ({ ran: false, purges: [] }));
    const run = this.withJobLock(() => this.purgeAllRooms(opts.now ?? this.now())).finally(() => {
      this.running = undefined;
    });
    this.running = run;
    return run;
  }

  private async withJobLock(fn: () => Promise<PurgeResult[]>): Promise<JobResult> {
    if (this.deps.config.databaseUrl === '') {
      const purges = await fn();
      if (purges.length > 0) this.log?.(`retention: job ran, ${purges.length} rooms purged`);
      return { ran: true, purges };
    }
    return this.deps.db.connection().execute(async (conn) => {
      const got = await sql<{
        ok: boolean;
      }>`select pg_try_advisory_lock(${JOB_LOCK[0]}, ${JOB_LOCK[1]}) as ok`.execute(conn);
      if (!got.rows[0]?.ok) {
        this.log?.('retention: job skipped, another process runs it');
        return { ran: false, purges: [] };
      }
      try {
        const purges = await fn();
        if (purges.length > 0) this.log?.(`retention: job ran, ${purges.length} rooms purged`);
        return { ran: true, purges };
      } finally {
        await sql`select pg_advisory_unlock(${JOB_LOCK[0]}, ${JOB_LOCK[1]})`.execute(conn);
      }
    });
  }

  private async purgeAllRooms(now: number): Promise<PurgeResult[]> {
    const purges: PurgeResult[] = [];
    let after = '';
    for (;;) {
      const page = await this.deps.db
        .selectFrom('rooms')
        .select('room_id')
        .where('room_id', '>', after)
        .orderBy('room_id')
        .limit(100)
        .execute();
      for (const { room_id: roomId } of page) {
        const { effective } = await this.policyOf(roomId);
        if (effective.maxLifetime === null) continue;
        const before = now - effective.maxLifetime;
        if (!(await this.hasWork(roomId, before))) continue;
        const result = await this.purgeInRoom(roomId, before, {
          actor: `policy:${effective.source === 'room' ? 'room' : 'server_default'}`,
          details: { max_lifetime: effective.maxLifetime, source: effective.source },
          vacuum: false,
          sweepMedia: false,
        });
        if (result) purges.push(result);
      }
      if (page.length < 100) break;
      after = page[page.length - 1]!.room_id;
    }
    if (purges.length > 0) await this.vacuum(repo.PURGED_TABLES);
    // Media released by this run, or earlier ones whose grace period has passed since.
    await this.releaseMedia();
    return purges;
  }

  /** Whether a policy run has anything to delete or prune in the room. */
  private async hasWork(roomId: string, before: number): Promise<boolean> {
    if (await repo.hasOldEvents(this.deps.db, roomId, before)) return true;
    const extremities = await repo.oldForwardExtremities(this.deps.db, roomId, before);
    if (extremities.length === 0) return false;
    const rv = getRoomVersion((await this.deps.reader.roomVersionOf(this.deps.db, roomId)) ?? '');
    return rv !== undefined && extremities.some((row) => pruneOf(row, rv) !== undefined);
  }

  /**
   * Deletes a room's history before `before` (a time in ms, or an event ID: the events sent
   * before that event's time). Events still needed (the room's state, its auth chains, forward
   * extremities) stay with their content pruned. Returns undefined when nothing was old enough.
   */
  async purgeRoomHistory(
    roomId: string,
    opts: { before: number | string; actor: string },
  ): Promise<PurgeResult | undefined> {
    if ((await this.deps.reader.roomVersionOf(this.deps.db, roomId)) === undefined)
      throw errors.notFound('Unknown room');
    let beforeTs: number;
    if (typeof opts.before === 'string') {
      const [row] = await roomsRepo.getEventRows(this.deps.db, [opts.before]);
      if (!row || row.room_id !== roomId) throw errors.notFound('No such event in this room');
      beforeTs = row.origin_server_ts;
    } else {
      beforeTs = opts.before;
    }
    return this.purgeInRoom(roomId, beforeTs, {
      actor: opts.actor,
      details: { admin: true },
      vacuum: true,
      sweepMedia: true,
    });
  }

  private async purgeInRoom(
    roomId: string,
    beforeTs: number,
    opts: { actor: string; details: JsonObject; vacuum: boolean; sweepMedia: boolean },
  ): Promise<PurgeResult | undefined> {
    const result = await this.deps.events.locks.withRoomLock(roomId, async (lock) => {
      const { trx } = lock;
      const version = await this.deps.reader.roomVersionOf(trx, roomId);
      const rv = getRoomVersion(version ?? '')!;
      const plan = await repo.planPurge(trx, roomId, beforeTs);
      const figures = await repo.purgeFigures(trx);
      // Prune what stays of the old history, as a redaction would.
      const released = new Set<string>();
      let pruned = 0;
      let prunedBytes = 0;
      let afterId = '';
      for (;;) {
        const page = await repo.keptRows(trx, roomId, afterId, PRUNE_PAGE);
        const changes: Array<{ id: string; json: JsonObject }> = [];
        for (const row of page) {
          const change = pruneOf(row, rv);
          if (!change) continue;
          prunedBytes += change.bytesFreed;
          changes.push({ id: row.event_id, json: change.json });
        }
        await repo.replaceJson(trx, changes);
        // A pruned event names only the media its pruned content still names.
        for (const id of await refs.deleteEventReferences(
          trx,
          changes.map((c) => c.id),
        ))
          released.add(id);
        for (const c of changes) {
          const media = refs.mediaIdsOf(String(c.json.type), c.json.content, this.deps.config.serverName);
          await refs.recordMediaReferences(trx, roomId, c.id, media);
        }
        pruned += changes.length;
        if (page.length < PRUNE_PAGE) break;
        afterId = page[page.length - 1]!.event_id;
      }
      await repo.demoteKept(trx, roomId);
      if (plan.purge === 0 && pruned === 0) return undefined;
      for (const id of await repo.releasePurgedMedia(trx)) released.add(id);
      const rows = await repo.deletePurged(trx, roomId);
      const mediaReleased = await refs.markUnreferenced(trx, [...released], this.now());
      const result: PurgeResult = {
        roomId,
        eventsDeleted: figures.events,
        eventsPruned: pruned,
        bytesDeleted: figures.bytes + prunedBytes,
        fromTs: figures.fromTs,
        toTs: figures.toTs,
        mediaReleased,
        mediaDeleted: 0,
        rows,
      };
      await this.deps.audit.record(
        {
          action: 'retention.purge',
          actor: opts.actor,
          target: roomId,
          details: {
            ...opts.details,
            before_ts: beforeTs,
            from_ts: result.fromTs,
            to_ts: result.toTs,
            events_deleted: result.eventsDeleted,
            events_pruned: result.eventsPruned,
            bytes_deleted: result.bytesDeleted,
            media_released: result.mediaReleased,
          },
        },
        trx,
      );
      return result;
    });
    if (!result) return undefined;
    await this.forgetEverywhere(roomId);
    if (opts.sweepMedia) result.mediaDeleted = await this.releaseMedia();
    if (opts.vacuum) await this.vacuum(repo.PURGED_TABLES);
    return result;
  }

  /**
   * Deletes a room (the admin API's room delete with `purge`, and the admin command's
   * `purge-room`, through AdminRoomsService.deleteRoom): every local member leaves (a leave event
   * each, which other servers are sent when delivery gets to it before the deletion), then its
   * aliases, directory entry, events, state, the references to media and every other row of it
   * go, in one transaction under the room's lock; audited as `retention.delete_room` (with
   * `details` added); then the media no event names any more and VACUUM.
   */
  async deleteRoom(
    roomId: string,
    opts: { actor: string; address?: string | null; message?: string; details?: JsonObject },
  ): Promise<DeleteRoomResult> {
    if ((await this.deps.reader.roomVersionOf(this.deps.db, roomId)) === undefined)
      throw errors.notFound('Unknown room');
    const { kicked, failed } = await removeLocalMembers(
      this.deps.db,
      this.deps.rooms,
      roomId,
      opts.message ?? 'The room was deleted by the server administrator',
    );
    const result = await this.deps.events.locks.withRoomLock(roomId, async (lock) => {
      const { trx } = lock;
      const size = await sql<{ events: number; bytes: number | null }>`
        select count(*)::int as events, sum(octet_length(json::text))::bigint as bytes
        from pdus where room_id = ${roomId}`.execute(trx);
      const aliases = await trx
        .selectFrom('room_aliases')
        .select('alias')
        .where('room_id', '=', roomId)
        .orderBy('alias')
        .execute();
      const released = await refs.deleteRoomReferences(trx, roomId);
      const rows = await repo.deleteRoomData(trx, roomId);
      const mediaReleased = await refs.markUnreferenced(trx, released, this.now());
      const result: DeleteRoomResult = {
        roomId,
        membersRemoved: kicked.length,
        kicked,
        failed,
        aliases: aliases.map((a) => a.alias),
        eventsDeleted: size.rows[0]?.events ?? 0,
        bytesDeleted: Number(size.rows[0]?.bytes ?? 0),
        mediaReleased,
        mediaDeleted: 0,
        rows,
      };
      await this.deps.audit.record(
        {
          action: 'retention.delete_room',
          actor: opts.actor,
          target: roomId,
          address: opts.address ?? null,
          details: {
            ...(opts.details ?? {}),
            members_removed: kicked.length,
            members_failed: failed.length,
            events_deleted: result.eventsDeleted,
            bytes_deleted: result.bytesDeleted,
            aliases_removed: rows.room_aliases ?? 0,
            media_released: mediaReleased,
          },
        },
        trx,
      );
      return result;
    });
    await this.forgetEverywhere(roomId);
    result.mediaDeleted = await this.releaseMedia();
    await this.vacuum(repo.ROOM_TABLES);
    return result;
  }

  /** Every process drops what it cached of the room's events. */
  private async forgetEverywhere(roomId: string): Promise<void> {
    this.deps.forgetCaches();
    await this.deps.bus.publish(CACHE_CHANNEL, roomId);
  }

  /** Deletes the media no event names any more (the media hook); how many. */
  private async releaseMedia(): Promise<number> {
    if (!this.mediaHook) return 0;
    try {
      return (await this.mediaHook()).media_deleted;
    } catch (err) {
      // The purge itself is done; the media stay marked and the next run deletes them.
      this.log?.(`retention: deleting unreferenced media failed: ${(err as Error).message}`);
      return 0;
    }
  }

  /**
   * VACUUM of the tables purges write, outside any transaction: plain (free space reused) or
   * FULL (the files rewritten without the deleted rows' bytes; the tables are locked meanwhile).
   */
  async reclaim(opts: { full: boolean }): Promise<void> {
    await repo.vacuum(this.deps.db, repo.PURGED_TABLES, opts.full);
  }

  /** VACUUM outside any transaction, as configured (`retention_vacuum`). */
  private async vacuum(tables: readonly string[]): Promise<void> {
    const mode = this.deps.config.retentionVacuum;
    if (mode === 'off') return;
    await repo.vacuum(this.deps.db, tables, mode === 'full');
  }
}
