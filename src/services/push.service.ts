import http from 'node:http';
import https from 'node:https';
import { type BlockList, isIP } from 'node:net';
import { sql } from 'kysely';
import { errors, MatrixError } from '../errors.ts';
import { isPublicAddress, vetHost } from '../media/url-preview.ts';
import { serverNameOf } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import { notificationLevel, userPowerLevel } from '../protocol/power-levels.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import { tryJobLock } from '../storage/admin.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow, PusherRow, PushQueueRow } from '../storage/database.ts';
import * as repo from '../storage/push.repository.ts';
import type { Notifier } from '../streams/notifier.ts';
import { currentPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import { evaluatePushRules, type PushContext } from './push-evaluator.ts';
import type { PushRulesService } from './push-rules.service.ts';
import type { RoomReader } from './room-reads.ts';

/** Transaction-scoped advisory lock of the evaluation step: one process evaluates at a time. */
const EVALUATION_LOCK = 0x70757368; // "push"
const EVALUATION_BATCH = 200;
const DELIVERY_BATCH = 20;
/** A claimed delivery belongs to its process this long; then another may take it. */
const DELIVERY_LEASE_MS = 60_000;
const GATEWAY_TIMEOUT_MS = 10_000;
/** Retries wait 1 s, 2 s, 4 s, ... up to 10 min; after MAX_ATTEMPTS the notification is dropped. */
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 600_000;
const MAX_ATTEMPTS = 12;
const POLL_MS = 2000;

export interface PusherInput {
  pushkey: string;
  kind: string | null;
  app_id: string;
  app_display_name?: string | undefined;
  device_display_name?: string | undefined;
  profile_tag?: string | undefined;
  lang?: string | undefined;
  data?: JsonObject | undefined;
  append?: boolean | undefined;
}

/** What the push side tells about itself, for tests and metrics. */
export interface PushCounters {
  evaluated: number;
  delivered: number;
  failedAttempts: number;
  dropped: number;
  rejectedPushers: number;
}

/**
 * Pushers, stored notifications and their delivery to push gateways (spec/push.md).
 *
 * Sending never waits for push: after events are persisted, one process at a time (an advisory
 * lock held by the transaction) reads the events past its stored position in batches, evaluates
 * each local member's push rules, stores the notifications (GET /notifications) and queues one
 * delivery per pusher of the users notified, and moves its position, all in one transaction.
 * Deliveries are claimed from the queue with a lease (FOR UPDATE SKIP LOCKED), so several
 * processes never send the same one, and retried with backoff.
 */
export class PushService {
  private timer: NodeJS.Timeout | undefined;
  private dueTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  readonly counters: PushCounters = {
    evaluated: 0,
    delivered: 0,
    failedAttempts: 0,
    dropped: 0,
    rejectedPushers: 0,
  };

  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly rules: PushRulesService,
    private readonly reader: RoomReader,
    private readonly notifier: Notifier,
    /** Addresses a gateway may be at though not public (push_gateway_allow). */
    private readonly allowed: BlockList,
    private readonly now: () => number = Date.now,
  ) {}

  private log: (msg: string, fields: Record<string, unknown>) => void = () => {};

  /** Where failures are logged (never a pushkey, token or message body). */
  setLogger(log: (msg: string, fields: Record<string, unknown>) => void): void {
    this.log = log;
  }

  start(): void {
    this.notifier.onChange((change) => {
      if (change.kind === 'event' || change.everyone) this.kick();
    });
    this.timer = setInterval(() => this.kick(), POLL_MS);
    this.timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.dueTimer);
    await this.running?.catch(() => {});
  }

  /** Evaluates new events and delivers what is due, soon; never waits for it. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.work()
      .catch((err) => this.log('push work failed', { err: (err as Error).message }))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Runs until everything new is evaluated and nothing due is left (for tests: await it). */
  async settle(): Promise<void> {
    while (this.running) await this.running;
    await this.work();
  }

  private async work(): Promise<void> {
    while (!this.stopped && (await this.evaluateBatch()) === EVALUATION_BATCH) {
      // A full batch: there may be more.
    }
    while (!this.stopped && (await this.deliverDue()) > 0) {
      // Keep going while deliveries are due.
    }
    await this.scheduleNextDue();
  }

  // --- pushers --------------------------------------------------------------------------------

  /** GET /pushers */
  async pushers(session: Session) {
    const rows = await repo.pushersOf(this.db, session.userId);
    return {
      pushers: rows.map((p) => ({
        pushkey: p.pushkey,
        kind: p.kind,
        app_id: p.app_id,
        app_display_name: p.app_display_name,
        device_display_name: p.device_display_name,
        ...(p.profile_tag !== null ? { profile_tag: p.profile_tag } : {}),
        lang: p.lang,
        data: p.data,
      })),
    };
  }

  /** POST /pushers/set */
  async setPusher(session: Session, input: PusherInput): Promise<void> {
    const { userId } = session;
    if (input.app_id.length > 64) throw errors.invalidParam('app_id is at most 64 characters');
    if (Buffer.byteLength(input.pushkey) > 512) throw errors.invalidParam('pushkey is at most 512 bytes');
    if (input.kind === null) {
      await repo.deletePushers(this.db, input.app_id, input.pushkey, { userId });
      return;
    }
    if (input.kind !== 'http') {
      throw errors.invalidParam(`Pushers of kind ${input.kind} are not supported (only http)`);
    }
    for (const field of ['app_display_name', 'device_display_name', 'lang', 'data'] as const) {
      if (input[field] === undefined) throw errors.missingParam(`${field} is required`);
    }
    const data = input.data!;
    checkGatewayUrl(data.url, this.allowed);
    if (data.format !== undefined && data.format !== 'event_id_only') {
      throw errors.invalidParam('data.format may only be event_id_only');
    }
    await this.db.transaction().execute(async (trx) => {
      if (!input.append) {
        await repo.deletePushers(trx, input.app_id, input.pushkey, { exceptUserId: userId });
      }
      await repo.upsertPusher(trx, {
        user_id: userId,
        app_id: input.app_id,
        pushkey: input.pushkey,
        kind: 'http',
        app_display_name: input.app_display_name!,
        device_display_name: input.device_display_name!,
        profile_tag: input.profile_tag ?? null,
        lang: input.lang!,
        data,
        pushkey_ts: this.now(),
        device_id: session.deviceId,
      });
    });
  }

  // --- notifications --------------------------------------------------------------------------

  /** GET /notifications: newest first; `from` is the `next_token` of the page before. */
  async notifications(
    session: Session,
    opts: { from?: string | undefined; limit?: number | undefined; only?: string | undefined },
  ) {
    let before: number | undefined;
    if (opts.from !== undefined) {
      if (!/^[0-9]{1,15}$/.test(opts.from)) throw errors.invalidParam('from is not a token of this endpoint');
      before = Number(opts.from);
    }
    const limit = Math.min(Math.max(opts.limit ?? 20, 1), 100);
    const rows = await repo.notificationsOf(this.db, session.userId, {
      before,
      limit,
      onlyHighlight: opts.only === 'highlight',
    });
    const events = await this.reader.toClientMany(this.db, rows as unknown as EventRow[], {
      now: this.now(),
      viewer: { userId: session.userId, deviceId: session.deviceId },
    });
    const notifications = rows.map((r, i) => ({
      actions: r.actions,
      event: events[i],
      read: r.read === true,
      room_id: r.room_id,
      ts: Number(r.notified_ts),
    }));
    const last = rows.at(-1);
    return {
      notifications,
      ...(rows.length === limit && last ? { next_token: String(Number(last.n_ordering)) } : {}),
    };
  }

  // --- evaluation -----------------------------------------------------------------------------

  /** Evaluates the next batch of events; returns how many it read. */
  private async evaluateBatch(): Promise<number> {
    const upTo = await currentPosition(this.db);
    return this.db.transaction().execute(async (trx) => {
      if (!(await tryJobLock(trx, EVALUATION_LOCK))) return 0;
      const from = (await repo.progress(trx)) ?? upTo;
      if (from >= upTo) {
        await repo.setProgress(trx, from);
        return 0;
      }
      const events = await trx
        .selectFrom('events')
        .selectAll()
        .where('stream_ordering', '>', from)
        .where('stream_ordering', '<=', upTo)
        .orderBy('stream_ordering')
        .limit(EVALUATION_BATCH)
        .execute();
      const last = events.at(-1);
      const reached = events.length === EVALUATION_BATCH && last ? Number(last.stream_ordering) : upTo;
      const candidates = events.filter((e) => e.redacted_by === null);
      if (candidates.length > 0) await this.evaluate(trx, candidates);
      await repo.setProgress(trx, reached);
      this.counters.evaluated += events.length;
      return events.length;
    });
  }

  /** Stores the notifications of these events and queues their deliveries; whether any was queued. */
  private async evaluate(trx: Executor, events: EventRow[]): Promise<boolean> {
    const roomIds = [...new Set(events.map((e) => e.room_id))];
    const members = await trx
      .selectFrom('memberships')
      .select(['room_id', 'user_id', 'membership'])
      .where('room_id', 'in', roomIds)
      .where('membership', 'in', ['join', 'invite'])
      .execute();
    const joined = new Map<string, string[]>();
    const localJoined = new Map<string, string[]>();
    for (const m of members) {
      if (m.membership !== 'join') continue;
      (joined.get(m.room_id) ?? joined.set(m.room_id, []).get(m.room_id)!).push(m.user_id);
      if (serverNameOf(m.user_id) === this.serverName) {
        (localJoined.get(m.room_id) ?? localJoined.set(m.room_id, []).get(m.room_id)!).push(m.user_id);
      }
    }
    const targets = (e: EventRow): string[] => {
      const out = new Set(localJoined.get(e.room_id) ?? []);
      // An invite notifies its (local) invitee, who is not joined yet.
      if (e.type === 'm.room.member' && e.membership === 'invite' && e.state_key) {
        if (serverNameOf(e.state_key) === this.serverName) out.add(e.state_key);
      }
      out.delete(e.sender);
      return [...out];
    };
    const userIds = [...new Set(events.flatMap(targets))];
    if (userIds.length === 0) return false;
    const rulesets = await this.rules.rulesetsOf(trx, userIds);
    const pushers = await repo.pushersOfUsers(trx, userIds);
    const power = await this.powerOf(trx, roomIds);
    const pushersByUser = new Map<string, PusherRow[]>();
    for (const p of pushers)
      (pushersByUser.get(p.user_id) ?? pushersByUser.set(p.user_id, []).get(p.user_id)!).push(p);

    const notifications: Parameters<typeof repo.insertNotifications>[1] = [];
    const deliveries: Parameters<typeof repo.enqueue>[1] = [];
    const now = this.now();
    for (const e of events) {
      const event = { ...e.json, event_id: e.event_id, room_id: e.room_id } as Record<string, unknown>;
      const p = power.get(e.room_id);
      const ctx: PushContext = {
        memberCount: joined.get(e.room_id)?.length ?? 0,
        senderPowerLevel: p ? p.levelOf(e.sender) : 0,
        notificationLevel: (key) => (p ? p.notificationLevel(key) : 50),
      };
      for (const userId of targets(e)) {
        const decision = evaluatePushRules(rulesets.get(userId)!, event, ctx);
        if (!decision?.notify) continue;
        notifications.push({
          user_id: userId,
          event_id: e.event_id,
          room_id: e.room_id,
          stream_ordering: Number(e.stream_ordering),
          actions: decision.actions,
          highlight: decision.highlight,
          ts: now,
        });
        for (const pusher of pushersByUser.get(userId) ?? []) {
          deliveries.push({
            user_id: userId,
            app_id: pusher.app_id,
            pushkey: pusher.pushkey,
            event_id: e.event_id,
            room_id: e.room_id,
            tweaks: decision.tweaks as JsonObject,
          });
        }
      }
    }
    await repo.insertNotifications(trx, notifications);
    await repo.enqueue(trx, deliveries, now);
    return deliveries.length > 0;
  }

  /** What sender_notification_permission needs of each room: power levels and the create event. */
  private async powerOf(trx: Executor, roomIds: string[]) {
    const rows = await trx
      .selectFrom('current_state as cs')
      .innerJoin('events as e', 'e.event_id', 'cs.event_id')
      .innerJoin('rooms as r', 'r.room_id', 'cs.room_id')
      .select(['cs.room_id', 'cs.type', 'e.json', 'r.room_version'])
      .where('cs.room_id', 'in', roomIds)
      .where('cs.state_key', '=', '')
      .where('cs.type', 'in', ['m.room.power_levels', 'm.room.create'])
      .execute();
    const byRoom = new Map<string, { version: string; pl?: JsonObject; create?: JsonObject }>();
    for (const r of rows) {
      const entry = byRoom.get(r.room_id) ?? { version: r.room_version };
      if (r.type === 'm.room.power_levels') entry.pl = r.json;
      else entry.create = r.json;
      byRoom.set(r.room_id, entry);
    }
    const out = new Map<string, { levelOf(u: string): number; notificationLevel(k: string): number }>();
    for (const [roomId, entry] of byRoom) {
      const rv = getRoomVersion(entry.version);
      if (!rv) continue;
      const pl = entry.pl as { content: JsonObject } | undefined;
      const create = entry.create as { sender: string; content: JsonObject } | undefined;
      out.set(roomId, {
        levelOf: (u) => userPowerLevel(u, pl, create, rv),
        notificationLevel: (k) => notificationLevel(k, pl, rv),
      });
    }
    return out;
  }

  // --- delivery -------------------------------------------------------------------------------

  /** Sends the due deliveries this process could claim; returns how many it claimed. */
  private async deliverDue(): Promise<number> {
    const claimed = await this.db
      .transaction()
      .execute((trx) => repo.claimDue(trx, this.now(), DELIVERY_LEASE_MS, DELIVERY_BATCH));
    await Promise.all(claimed.map((row) => this.deliver(row)));
    return claimed.length;
  }

  private async deliver(row: PushQueueRow): Promise<void> {
    const pusher = await repo.findPusher(this.db, row.user_id, row.app_id, row.pushkey);
    const event = await this.db
      .selectFrom('events')
      .selectAll()
      .where('event_id', '=', row.event_id)
      .executeTakeFirst();
    if (!pusher || !event) {
      await repo.deleteQueued(this.db, row.id);
      return;
    }
    const url = new URL(String(pusher.data.url));
    let outcome: 'ok' | 'retry' | 'drop';
    try {
      // The gateway must be at a public address (or one push_gateway_allow names); the request
      // goes to the address that was checked.
      const target = await vetHost(url.hostname, this.allowed);
      const body = await this.payload(pusher, event, row.tweaks);
      const res = await postJson(url, target, body, GATEWAY_TIMEOUT_MS);
      if (res.status >= 200 && res.status < 300) {
        outcome = 'ok';
        await this.removeRejected(pusher, res.text);
      } else outcome = res.status >= 500 || res.status === 429 ? 'retry' : 'drop';
      if (outcome !== 'ok') {
        this.log('push gateway refused a notification', { status: res.status, app_id: pusher.app_id });
      }
    } catch (err) {
      // A gateway at an address it may not be at is never tried again; an unreachable one is.
      outcome = err instanceof MatrixError && err.status === 403 ? 'drop' : 'retry';
      this.log('push gateway unreachable', { app_id: pusher.app_id, reason: (err as Error).message });
    }
    if (outcome === 'ok') {
      this.counters.delivered++;
      await repo.deleteQueued(this.db, row.id);
      return;
    }
    this.counters.failedAttempts++;
    const attempts = row.attempts + 1;
    if (outcome === 'drop' || attempts >= MAX_ATTEMPTS) {
      this.counters.dropped++;
      await repo.deleteQueued(this.db, row.id);
      return;
    }
    const wait = Math.min(RETRY_BASE_MS * 2 ** (attempts - 1), RETRY_MAX_MS);
    await repo.retryQueued(this.db, row.id, attempts, this.now() + wait);
  }

  /** The gateway's `rejected` pushkeys: their pushers go (the spec says the gateway will not take them). */
  private async removeRejected(pusher: PusherRow, text: string): Promise<void> {
    let rejected: unknown;
    try {
      rejected = (JSON.parse(text) as { rejected?: unknown }).rejected;
    } catch {
      return;
    }
    if (!Array.isArray(rejected)) return;
    for (const key of rejected) {
      if (key !== pusher.pushkey) continue;
      await repo.deletePushers(this.db, pusher.app_id, pusher.pushkey, { userId: pusher.user_id });
      this.counters.rejectedPushers++;
      this.log('removed a pusher its gateway rejected', { app_id: pusher.app_id });
    }
  }

  /** The body of POST /_matrix/push/v1/notify (push gateway API). */
  private async payload(pusher: PusherRow, event: EventRow, tweaks: JsonObject) {
    const { url: _url, ...data } = pusher.data;
    const device = {
      app_id: pusher.app_id,
      pushkey: pusher.pushkey,
      pushkey_ts: Math.floor(Number(pusher.pushkey_ts) / 1000),
      data,
      tweaks,
    };
    const counts = { unread: await repo.unreadNotificationCount(this.db, pusher.user_id) };
    const idsOnly = { event_id: event.event_id, room_id: event.room_id, counts, devices: [device] };
    if (pusher.data.format === 'event_id_only') return { notification: idsOnly };
    const names = await this.namesFor(event);
    const json = event.json as { content?: JsonObject };
    const high = tweaks.highlight === true || tweaks.sound !== undefined || event.type === 'm.room.encrypted';
    return {
      notification: {
        ...idsOnly,
        type: event.type,
        sender: event.sender,
        ...(names.sender !== undefined ? { sender_display_name: names.sender } : {}),
        ...(names.room !== undefined ? { room_name: names.room } : {}),
        ...(names.alias !== undefined ? { room_alias: names.alias } : {}),
        prio: high ? 'high' : 'low',
        content: json.content ?? {},
        ...(event.type === 'm.room.member' && event.state_key === pusher.user_id
          ? { user_is_target: true }
          : {}),
      },
    };
  }

  private async namesFor(event: EventRow) {
    const rows = await sql<{ type: string; state_key: string; json: JsonObject }>`
      select cs.type, cs.state_key, e.json from current_state cs join events e on e.event_id = cs.event_id
      where cs.room_id = ${event.room_id}
        and ((cs.type in ('m.room.name', 'm.room.canonical_alias') and cs.state_key = '')
          or (cs.type = 'm.room.member' and cs.state_key = ${event.sender}))`.execute(this.db);
    const content = (type: string) =>
      (rows.rows.find((r) => r.type === type)?.json as { content?: Record<string, unknown> } | undefined)
        ?.content;
    const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
    return {
      sender: str(content('m.room.member')?.displayname),
      room: str(content('m.room.name')?.name),
      alias: str(content('m.room.canonical_alias')?.alias),
    };
  }

  private async scheduleNextDue(): Promise<void> {
    clearTimeout(this.dueTimer);
    if (this.stopped) return;
    const due = await repo.nextDue(this.db);
    if (due === undefined) return;
    this.dueTimer = setTimeout(() => this.kick(), Math.max(0, due - this.now()) + 5);
    this.dueTimer.unref();
  }
}

/** POSTs JSON to `url`, connecting to `target` (the address that was checked) whatever the name resolves to now. */
function postJson(
  url: URL,
  target: { address: string; family: number },
  body: unknown,
  timeoutMs: number,
): Promise<{ status: number; text: string }> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const lib = url.protocol === 'https:' ? https : http;
    const req = lib.request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': payload.length },
        lookup: ((_host: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
          if (options.all) cb(null, [target]);
          else cb(null, target.address, target.family);
        }) as never,
        signal: AbortSignal.timeout(timeoutMs),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          // A gateway's answer is small; more is cut off, not kept.
          if (size <= 65_536) chunks.push(c);
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A pusher's `data.url`: an http(s) URL whose path is the push gateway API's. */
function checkGatewayUrl(raw: unknown, allowed: BlockList): void {
  if (typeof raw !== 'string') throw errors.missingParam('data.url is required for http pushers');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw errors.invalidParam('data.url is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw errors.invalidParam('data.url must be an http or https URL');
  }
  if (url.pathname !== '/_matrix/push/v1/notify') {
    throw errors.invalidParam('data.url must have the path /_matrix/push/v1/notify');
  }
  if (url.username !== '' || url.password !== '') {
    throw errors.invalidParam('data.url may not hold credentials');
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) && !isPublicAddress(host, allowed)) {
    throw errors.invalidParam('data.url is at an address that is not public');
  }
}
