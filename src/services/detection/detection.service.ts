import type { DetectionStore } from '../../bus/detection-store.ts';
import type { Config, DetectorName, DetectorResponse } from '../../config.ts';
import type { JsonObject } from '../../protocol/json.ts';
import type { Db } from '../../storage/connect.ts';
import type { Session } from '../accounts.service.ts';
import type { AuditLog } from '../audit-log.ts';
import type { Metrics } from '../metrics.ts';
import type { RateLimits } from '../rate-limits.ts';
import type { AccountRestrictions } from './restrictions.ts';

/** What a detector watches for: the user acting, or (before any login) an account or address. */
export type Subject = { kind: 'user'; id: string } | { kind: 'address'; id: string };

/** Actions of a logged-in user that the floods and baselines count. */
export type Action = 'message' | 'invite' | 'join' | 'create_room' | 'keys' | 'to_device';

const FLOOD_OF: Record<Action, DetectorName> = {
  message: 'message_flood',
  invite: 'invite_flood',
  join: 'join_flood',
  create_room: 'room_creation_flood',
  keys: 'key_flood',
  to_device: 'to_device_flood',
};
const BASELINE_OF: Partial<Record<Action, DetectorName>> = {
  message: 'message_baseline',
  invite: 'invite_baseline',
};

/** One alert, as the audit log, the notices room and the webhook get it (no message content). */
export interface Alert {
  detector: DetectorName;
  subject: Subject;
  /** The address of the request that tripped it, when there was one. */
  address: string | null;
  /** Counts: what was seen, the threshold, the window (or for baselines, the usual count). */
  counts: Record<string, number>;
  responses: DetectorResponse[];
}

/** Where alerts go beside the audit log (the notices room, the webhook). */
export interface AlertSink {
  notify(alert: Alert): Promise<void>;
}

/** Text of an alert for people: detector, subject and counts, nothing a user wrote. */
export function alertText(alert: Alert): string {
  const counts = Object.entries(alert.counts)
    .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(1)}`)
    .join(', ');
  const who = alert.subject.kind === 'user' ? alert.subject.id : `address ${alert.subject.id}`;
  const done = alert.responses.filter((r) => r !== 'notify');
  return `Detector ${alert.detector} fired for ${who}: ${counts}. Response: ${done.length > 0 ? done.join(', ') : 'none'} (recorded in the audit log).`;
}

/**
 * The detectors of suspicious activity (spec/detection.md) and their responses. Handlers and
 * services tell it what happened (a failed login, a message sent, an invite); it counts in the
 * detection store (Redis when configured, so every process counts together) and, when a
 * detector's threshold is reached, responds as configured: throttle the subject, lock or suspend
 * the account, notify the admins; an audit record always. One alert per detector and subject per
 * cool-down; later hits are counted but not re-announced.
 */
export class Detection {
  private readonly exempt: Set<string>;
  private readonly sinks: AlertSink[] = [];

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly store: DetectionStore,
    private readonly limits: RateLimits,
    private readonly audit: AuditLog,
    private readonly restrictions: AccountRestrictions,
    private readonly metrics: Metrics,
    /** Keeps the keys of homeservers sharing one Redis apart. */
    private readonly prefix: string,
  ) {
    this.exempt = new Set(config.rateLimitExemptUsers);
  }

  get storeKind(): 'memory' | 'redis' {
    return this.store.kind;
  }

  /** Failures of the notices room or the webhook go here (the app logs them). */
  private onError: (err: unknown) => void = () => {};

  addSink(sink: AlertSink): void {
    this.sinks.push(sink);
  }

  setErrorHandler(handler: (err: unknown) => void): void {
    this.onError = handler;
  }

  private inFlight = 0;

  /** Resolves once nothing is being counted (for tests that move the store's clock). */
  async idle(): Promise<void> {
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  }

  private async tracked(run: () => Promise<void>): Promise<void> {
    this.inFlight++;
    try {
      await run();
    } finally {
      this.inFlight--;
    }
  }

  /** A failed password login, for the account named (when it names one) and the address. */
  async loginFailed(userId: string | undefined, address: string): Promise<void> {
    if (!this.config.detection) return;
    if (userId) await this.flood('failed_logins_account', { kind: 'user', id: userId }, address);
    await this.flood('failed_logins_address', { kind: 'address', id: address }, address);
  }

  /** A successful login: counts the account's distinct addresses. */
  async loggedIn(userId: string, address: string): Promise<void> {
    if (!this.config.detection || this.exempt.has(userId)) return;
    await this.flood('login_addresses', { kind: 'user', id: userId }, address, address);
  }

  async registered(address: string): Promise<void> {
    if (!this.config.detection) return;
    await this.flood('registrations_address', { kind: 'address', id: address }, address);
  }

  /**
   * A user's successful action. For an invite, `invitee` is checked against the users the
   * inviter shares a room with (joined, both of them); invites of strangers are counted apart.
   */
  async acted(action: Action, session: Session, address: string, invitee?: string): Promise<void> {
    if (!this.config.detection || session.isAdmin || this.exempt.has(session.userId)) return;
    const subject: Subject = { kind: 'user', id: session.userId };
    await this.tracked(async () => {
      await this.flood(FLOOD_OF[action], subject, address);
      const baseline = BASELINE_OF[action];
      if (baseline) await this.baseline(baseline, subject, address);
      if (invitee !== undefined && !(await this.shareRoom(session.userId, invitee))) {
        await this.flood('stranger_invites', subject, address, invitee);
      }
    });
  }

  /**
   * Before a request: a throttled user or address gets the stricter limit
   * (detection_throttle_rate), 429 M_LIMIT_EXCEEDED with retry_after_ms past it. Admins and the
   * rate-limit-exempt users are never throttled.
   */
  async enforceThrottle(session: Session | undefined, address: string): Promise<void> {
    if (session && (session.isAdmin || this.exempt.has(session.userId))) return;
    const scopes = [`a:${address}`, ...(session ? [`u:${session.userId}`] : [])];
    const hit = await this.store.anySet(scopes.map((s) => this.key('throttle', s)));
    if (!hit) return;
    const scope = session ? `u:${session.userId}` : `a:${address}`;
    await this.limits.limitThrottled(scope, this.config.detectionThrottleRule);
  }

  /** Whether a user or address is throttled now. */
  isThrottled(subject: Subject): Promise<boolean> {
    return this.store.anySet([this.key('throttle', scopeOf(subject))]);
  }

  private key(...parts: string[]): string {
    return `${this.prefix}.det.${parts.join('.')}`;
  }

  private async flood(name: DetectorName, subject: Subject, address: string, member?: string): Promise<void> {
    const rule = this.config.detectorRules[name];
    const key = this.key(name, scopeOf(subject));
    const seen = await this.store.count(key, rule.windowMs, rule.count, member);
    if (seen < rule.count) return;
    await this.fire(name, subject, address, { seen, threshold: rule.count, window_ms: rule.windowMs });
  }

  private async baseline(name: DetectorName, subject: Subject, address: string): Promise<void> {
    const rule = this.config.detectorRules[name];
    const p = await this.store.period(this.key(name, scopeOf(subject)), rule.windowMs);
    if (p.periods < this.config.detectionBaselineMinPeriods) return;
    if (p.current < this.config.detectionBaselineMinCount) return;
    if (p.current <= rule.count * Math.max(p.usual, 1)) return;
    await this.fire(name, subject, address, {
      seen: p.current,
      usual: Math.round(p.usual * 10) / 10,
      factor: rule.count,
      period_ms: rule.windowMs,
    });
  }

  private async fire(
    detector: DetectorName,
    subject: Subject,
    address: string,
    counts: Record<string, number>,
  ): Promise<void> {
    const fresh = await this.store.mark(
      this.key('alerted', detector, scopeOf(subject)),
      this.config.detectionAlertCooldownMs,
    );
    if (!fresh) return;
    this.metrics.alerts.inc({ detector });
    const responses = this.config.detectorResponses[detector];
    for (const r of responses) {
      if (r === 'throttle') {
        await this.store.set(this.key('throttle', scopeOf(subject)), this.config.detectionThrottleMs);
      } else if (r === 'lock' && subject.kind === 'user' && (await this.isLocal(subject.id))) {
        await this.restrictions.lock(subject.id, detector);
      } else if (r === 'suspend' && subject.kind === 'user' && (await this.isLocal(subject.id))) {
        await this.restrictions.suspend(subject.id, detector);
      }
    }
    const alert: Alert = { detector, subject, address, counts, responses };
    await this.audit.record({
      action: 'detector.alert',
      actor: `detector:${detector}`,
      target: subject.id,
      address,
      details: { subject_kind: subject.kind, ...counts, responses } as JsonObject,
    });
    if (responses.includes('notify')) {
      for (const sink of this.sinks) sink.notify(alert).catch(this.onError);
    }
  }

  /** Whether the account exists here (a failed login may name anyone). */
  private async isLocal(userId: string): Promise<boolean> {
    return (
      (await this.db
        .selectFrom('users')
        .select('user_id')
        .where('user_id', '=', userId)
        .executeTakeFirst()) !== undefined
    );
  }

  private async shareRoom(a: string, b: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('memberships as m1')
      .innerJoin('memberships as m2', 'm2.room_id', 'm1.room_id')
      .select('m1.room_id')
      .where('m1.user_id', '=', a)
      .where('m2.user_id', '=', b)
      .where('m1.membership', '=', 'join')
      .where('m2.membership', '=', 'join')
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }
}

function scopeOf(subject: Subject): string {
  return `${subject.kind === 'user' ? 'u' : 'a'}:${subject.id}`;
}

/** POSTs each alert as JSON to the configured URL (5 s timeout; failures are logged, not retried). */
export class WebhookSink implements AlertSink {
  constructor(
    private readonly url: string,
    private readonly serverName: string,
  ) {}

  async notify(alert: Alert): Promise<void> {
    const res = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        server: this.serverName,
        detector: alert.detector,
        subject: alert.subject,
        address: alert.address,
        counts: alert.counts,
        responses: alert.responses,
        text: alertText(alert),
      }),
      signal: AbortSignal.timeout(5000),
    });
    await res.body?.cancel();
    if (!res.ok) throw new Error(`detection webhook answered ${res.status}`);
  }
}
