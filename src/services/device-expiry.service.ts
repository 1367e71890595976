import type { Config } from '../config.ts';
import { tryJobLock } from '../storage/admin.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { AccountsService } from './accounts.service.ts';
import type { AuditLog } from './audit-log.ts';

/** The advisory lock key of the job: one process expires devices at a time. */
const JOB_LOCK = 0x64657631; // "dev1"
/** Devices removed per transaction; a run goes on until none is left. */
const BATCH = 200;

export interface ExpiredDevice {
  userId: string;
  deviceId: string;
  lastSeenTs: number | null;
}

export interface DeviceExpiryResult {
  /** False when another process held the job's lock. */
  ran: boolean;
  expired: ExpiredDevice[];
}

/**
 * Device inactivity expiry (spec/account.md): devices not seen for `deviceInactivityExpiryMs`
 * (or, never seen, created that long ago) are signed out, their device keys, one-time and
 * fallback keys and waiting to-device messages removed, by a periodic job. Each batch runs in a
 * transaction holding a transaction-scoped advisory lock, so when several processes share a
 * database one of them does it and the others skip that run. Every device removed is audited as
 * `device.expire` in the same transaction.
 */
export class DeviceExpiryService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<DeviceExpiryResult> | undefined;

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly accounts: AccountsService,
    private readonly audit: AuditLog,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts the job's timer when the expiry is on. */
  start(): void {
    if (this.config.deviceInactivityExpiryMs <= 0) return;
    this.timer = setInterval(() => {
      void this.runJob().catch(() => {});
    }, this.config.deviceExpiryIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /** One run of the job (also called by tests, with the time to judge by). Off: does nothing. */
  runJob(opts: { now?: number } = {}): Promise<DeviceExpiryResult> {
    if (this.running) return this.running.then(() => ({ ran: false, expired: [] }));
    const run = this.expireAll(opts.now ?? this.now()).finally(() => {
      this.running = undefined;
    });
    this.running = run;
    return run;
  }

  private async expireAll(now: number): Promise<DeviceExpiryResult> {
    const maxIdle = this.config.deviceInactivityExpiryMs;
    if (maxIdle <= 0) return { ran: false, expired: [] };
    const cutoff = now - maxIdle;
    const expired: ExpiredDevice[] = [];
    for (;;) {
      const batch = await this.expireBatch(cutoff, maxIdle);
      if (batch === undefined) return { ran: expired.length > 0, expired };
      expired.push(...batch);
      if (batch.length < BATCH) return { ran: true, expired };
    }
  }

  /** One transaction's worth; undefined when another process holds the lock. */
  private async expireBatch(cutoff: number, maxIdle: number): Promise<ExpiredDevice[] | undefined> {
    const afterCommit: Array<() => Promise<void>> = [];
    const batch = await this.db.transaction().execute(async (trx) => {
      if (!(await tryJobLock(trx, JOB_LOCK))) return undefined;
      const rows = await trx
        .selectFrom('devices')
        .select(['user_id', 'device_id', 'last_seen_ts'])
        .where((eb) => eb(eb.fn.coalesce('last_seen_ts', 'created_ts'), '<', cutoff))
        .orderBy('user_id')
        .orderBy('device_id')
        .limit(BATCH)
        .execute();
      const byUser = new Map<string, string[]>();
      for (const r of rows) byUser.set(r.user_id, [...(byUser.get(r.user_id) ?? []), r.device_id]);
      for (const [userId, deviceIds] of byUser) {
        afterCommit.push(await this.accounts.removeDevicesWithin(trx, userId, deviceIds));
      }
      for (const r of rows) {
        await this.audit.record(
          {
            action: 'device.expire',
            actor: 'policy:device_inactivity',
            target: r.user_id,
            details: { device_id: r.device_id, last_seen_ts: r.last_seen_ts, max_idle_ms: maxIdle },
          },
          trx,
        );
      }
      return rows.map((r) => ({ userId: r.user_id, deviceId: r.device_id, lastSeenTs: r.last_seen_ts }));
    });
    for (const run of afterCommit) await run();
    return batch;
  }
}
