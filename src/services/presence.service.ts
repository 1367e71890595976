import type { Config } from '../config.ts';
import { errors } from '../errors.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Db } from '../storage/connect.ts';
import type { PresenceRow } from '../storage/presence.repository.ts';
import * as store from '../storage/presence.repository.ts';
import type { Notifier } from '../streams/notifier.ts';

export type PresenceState = 'online' | 'unavailable' | 'offline';
export const PRESENCE_STATES: readonly PresenceState[] = ['online', 'unavailable', 'offline'];

/** A user's presence as servers exchange it (server-server API: m.presence). */
export interface PresenceUpdate {
  userId: string;
  presence: PresenceState;
  lastActiveAgo: number;
  currentlyActive: boolean;
  /** null: none. */
  statusMsg: string | null;
}

/** Told of a local user's presence change (the federation sender hands it to their peers' servers). */
export type PresenceListener = (update: PresenceUpdate) => void;

/** Most presence events one sync carries. */
const MAX_PRESENCE_EVENTS = 1000;

/**
 * Presence of this server's users (client-server API: Presence). A change of state or status
 * message is stored with a main stream position and announced through the notifier (so every
 * process's syncs hear it over the bus); activity only refreshes `last_active_ts`, at most every
 * `refreshMs` per user and process. A sweep, on every process, makes idle online users
 * unavailable and long-idle ones offline; its updates are conditional, so two processes sweeping
 * at once change a user once.
 */
export class PresenceService {
  /** What this process last knew of each user's row: its state and when activity was written. */
  private readonly known = new Map<string, { presence: string; activeWritten: number }>();
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private listener: PresenceListener | undefined;

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {
    // Another process changed a user's presence: what this one remembers of them may be wrong.
    notifier.onChange((change) => {
      if (change.everyone) this.known.clear();
      else if (change.kind === 'presence') for (const u of change.userIds ?? []) this.known.delete(u);
    });
  }

  get enabled(): boolean {
    return this.config.presence;
  }

  /** How often activity is written, and how often the sweep runs. */
  private get refreshMs(): number {
    return Math.max(250, Math.min(60_000, Math.floor(this.config.presenceIdleMs / 4)));
  }

  /** Local presence changes go to `listener` too, from now on (set once federation is built). */
  setListener(listener: PresenceListener): void {
    this.listener = listener;
  }

  /**
   * A remote user's presence, checked by the inbound EDU handler (their server sent it): stored
   * with a stream position and announced, so syncs of local users who share a room with them
   * and GET /presence/{userId}/status show it. Ignored when presence is off here.
   */
  async applyRemote(update: PresenceUpdate): Promise<void> {
    if (!this.enabled) return;
    const now = this.now();
    const position = await this.db.transaction().execute(async (trx) => {
      const p = await store.writePresence(trx, {
        userId: update.userId,
        presence: update.presence,
        statusMsg: update.statusMsg,
        activeTs: now - update.lastActiveAgo,
      });
      return { position: p, roomIds: await store.joinedRoomIds(trx, update.userId) };
    });
    await this.notifier.notify({
      kind: 'presence',
      position: position.position,
      userIds: [update.userId],
      roomIds: position.roomIds,
    });
  }

  start(): void {
    if (!this.enabled) return;
    this.sweeper = setInterval(() => {
      this.sweeping ??= this.sweep()
        .catch(() => {
          // The database is away: the next tick tries again.
        })
        .finally(() => {
          this.sweeping = undefined;
        });
    }, this.refreshMs);
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    await this.sweeping;
  }

  /** PUT /presence/{userId}/status: only the user's own. */
  async setStatus(
    userId: string,
    target: string,
    presence: PresenceState,
    statusMsg: string | undefined,
  ): Promise<void> {
    if (target !== userId) throw errors.forbidden('You can only set your own presence');
    if (!this.enabled) return;
    await this.write(userId, presence, statusMsg === undefined ? undefined : statusMsg || null);
  }

  /**
   * A client used the API (a /sync, with its `set_presence`): online unless it says otherwise
   * (`offline` leaves the state alone, as the spec says).
   */
  async activity(userId: string, setPresence: PresenceState | undefined): Promise<void> {
    if (!this.enabled || setPresence === 'offline') return;
    const wanted = setPresence ?? 'online';
    const now = this.now();
    let known = this.known.get(userId);
    if (!known) {
      const row = await store.getPresence(this.db, userId);
      known = { presence: row?.presence ?? 'offline', activeWritten: row?.last_active_ts ?? 0 };
      this.remember(userId, known);
    }
    if (known.presence !== wanted) {
      await this.write(userId, wanted, undefined);
    } else if (wanted === 'online' && now - known.activeWritten >= this.refreshMs) {
      known.activeWritten = now;
      await store.touchPresence(this.db, userId, now);
    }
  }

  /** GET /presence/{userId}/status: one's own, or that of a user one shares a room with. */
  async getStatus(viewer: string, target: string): Promise<JsonObject> {
    if (!isValidUserId(target)) throw errors.invalidParam('Not a valid user ID');
    if (viewer !== target && !(await store.shareARoom(this.db, viewer, target))) {
      throw errors.forbidden('You do not share a room with this user');
    }
    const row = this.enabled ? await store.getPresence(this.db, target) : undefined;
    if (!row) return { presence: 'offline' };
    return this.content(row);
  }

  /**
   * m.presence events for the user: of everyone sharing a room with them (themselves included)
   * whose presence changed in (from, upTo] or who newly share a room with them, or on an initial
   * sync (`from` undefined) of those not offline.
   */
  async eventsFor(userId: string, from: number | undefined, upTo: number): Promise<JsonObject[]> {
    if (!this.enabled) return [];
    const rows = await store.presenceOfPeers(this.db, userId, from, upTo, MAX_PRESENCE_EVENTS);
    return rows.map((r) => ({ type: 'm.presence', sender: r.user_id, content: this.content(r) }));
  }

  private content(row: PresenceRow): JsonObject {
    return {
      presence: row.presence,
      last_active_ago: Math.max(0, this.now() - row.last_active_ts),
      currently_active: row.presence === 'online',
      ...(row.status_msg !== null ? { status_msg: row.status_msg } : {}),
    };
  }

  /** Makes idle online users unavailable and long-idle ones offline. */
  async sweep(): Promise<void> {
    const now = this.now();
    // Local users only: a remote user's server tells us when they go idle.
    const stale = await store.staleUsers(
      this.db,
      now - this.config.presenceIdleMs,
      now - this.config.presenceOfflineMs,
      100,
      this.config.serverName,
    );
    for (const s of stale) {
      const to: PresenceState =
        s.last_active_ts < now - this.config.presenceOfflineMs ? 'offline' : 'unavailable';
      await this.write(s.user_id, to, undefined, { onlyIf: s.presence, activeBefore: s.last_active_ts + 1 });
    }
  }

  /**
   * Stores a new state (and status message, unless undefined), with a new stream position, and
   * announces it. `onlyIf`: only when the row still holds that state and has not been active since.
   */
  private async write(
    userId: string,
    presence: PresenceState,
    statusMsg: string | null | undefined,
    onlyIf?: { onlyIf: string; activeBefore: number },
  ): Promise<void> {
    const now = this.now();
    const written = await this.db
      .transaction()
      .execute(async (trx) => {
        const position = await store.writePresence(trx, {
          userId,
          presence,
          statusMsg,
          // Going online is activity; other states keep the last activity.
          activeTs: presence === 'online' ? now : undefined,
          ...(onlyIf ? { onlyIf: onlyIf.onlyIf, activeBefore: onlyIf.activeBefore } : {}),
        });
        return { position, roomIds: await store.joinedRoomIds(trx, userId) };
      })
      .catch((err: unknown) => {
        if (err instanceof store.NothingToWrite) return undefined;
        throw err;
      });
    if (!written) return;
    await this.notifier.notify({
      kind: 'presence',
      position: written.position,
      userIds: [userId],
      roomIds: written.roomIds,
    });
    // After the announcement, whose echo here drops what was known.
    this.remember(userId, { presence, activeWritten: presence === 'online' ? now : 0 });
    if (this.listener) {
      const row = await store.getPresence(this.db, userId);
      if (row) {
        this.listener({
          userId,
          presence: row.presence as PresenceState,
          lastActiveAgo: Math.max(0, this.now() - row.last_active_ts),
          currentlyActive: row.presence === 'online',
          statusMsg: row.status_msg,
        });
      }
    }
  }

  private remember(userId: string, value: { presence: string; activeWritten: number }): void {
    if (this.known.size >= 100_000) this.known.clear();
    this.known.set(userId, value);
  }
}
