import type { Bus } from '../../bus/bus.ts';
import { MatrixError } from '../../errors.ts';
import type { Db } from '../../storage/connect.ts';

const CHANNEL = 'conclave.restrictions';

/**
 * Locking and suspending accounts, as the detectors need it. A small interface so that the admin
 * API (branch `admin`) can supply its own implementation or share this one.
 */
export interface AccountRestrictions {
  /** MSC3939: every request with the account's tokens answers 401 M_USER_LOCKED (soft logout). */
  lock(userId: string, reason: string): Promise<void>;
  /** MSC3823: the account may read but not write (403 M_USER_SUSPENDED). */
  suspend(userId: string, reason: string): Promise<void>;
}

export interface Restriction {
  locked: boolean;
  suspended: boolean;
}

/** Writes a suspended account may not make (method and route pattern). */
const WRITES = [
  /^PUT \/_matrix\/client\/v3\/rooms\/:roomId\/(send|state|redact)\//,
  /^POST \/_matrix\/client\/v3\/(join\/:roomIdOrAlias|knock\/:roomIdOrAlias|rooms\/:roomId\/join|rooms\/:roomId\/invite|createRoom)$/,
  /^PUT \/_matrix\/client\/v3\/profile\/:userId\//,
];
/** What a locked account may still do: end its sessions. */
const LOCKED_MAY = /^POST \/_matrix\/client\/v3\/logout(\/all)?$/;

export function isSuspendedWrite(method: string, route: string): boolean {
  const key = `${method} ${route}`;
  return WRITES.some((re) => re.test(key));
}

/**
 * The restrictions in the database table `detection_account_restrictions` (migration 0011),
 * with every process holding the (small) set of restricted accounts in memory: a change is
 * written, then announced on the bus so every process reloads that account before the next
 * request it serves; a full reload every `refreshMs` bounds a lost message, and while the bus is
 * down every check reads the database.
 */
export class DbAccountRestrictions implements AccountRestrictions {
  private cache = new Map<string, Restriction>();
  private unsubscribe: (() => Promise<void>) | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Db,
    private readonly bus: Bus,
    private readonly refreshMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.bus.subscribe(CHANNEL, (userId) => {
      void this.reload(userId).catch(() => {});
    });
    await this.reloadAll();
    this.timer = setInterval(() => void this.reloadAll().catch(() => {}), this.refreshMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.unsubscribe?.();
  }

  lock(userId: string, reason: string): Promise<void> {
    return this.write(userId, { locked: true }, reason);
  }

  suspend(userId: string, reason: string): Promise<void> {
    return this.write(userId, { suspended: true }, reason);
  }

  /** Lifts both (for the admin command and tests). */
  clear(userId: string): Promise<void> {
    return this.write(userId, { locked: false, suspended: false }, 'cleared');
  }

  async get(userId: string): Promise<Restriction> {
    if (!this.bus.healthy()) return this.read(userId);
    return this.cache.get(userId) ?? { locked: false, suspended: false };
  }

  /**
   * Refuses a request of a restricted account: locked, anything but a logout (401
   * M_USER_LOCKED, soft_logout); suspended, the writes of WRITES (403 M_USER_SUSPENDED).
   */
  async check(userId: string, method: string, route: string | undefined): Promise<void> {
    if (this.cache.size === 0 && this.bus.healthy()) return;
    const r = await this.get(userId);
    const key = `${method} ${route ?? ''}`;
    if (r.locked && !LOCKED_MAY.test(key)) {
      throw new MatrixError(401, 'M_USER_LOCKED', 'This account has been locked', { soft_logout: true });
    }
    if (r.suspended && route !== undefined && isSuspendedWrite(method, route)) {
      throw new MatrixError(403, 'M_USER_SUSPENDED', 'This account is suspended: it may read but not write');
    }
  }

  private async write(userId: string, change: Partial<Restriction>, reason: string): Promise<void> {
    const now = this.now();
    await this.db
      .insertInto('detection_account_restrictions')
      .values({ user_id: userId, locked: false, suspended: false, ...change, reason, updated_ts: now })
      .onConflict((c) => c.column('user_id').doUpdateSet({ ...change, reason, updated_ts: now }))
      .execute();
    await this.reload(userId);
    await this.bus.publish(CHANNEL, userId);
  }

  private async read(userId: string): Promise<Restriction> {
    const row = await this.db
      .selectFrom('detection_account_restrictions')
      .select(['locked', 'suspended'])
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return { locked: row?.locked ?? false, suspended: row?.suspended ?? false };
  }

  private async reload(userId: string): Promise<void> {
    const r = await this.read(userId);
    if (r.locked || r.suspended) this.cache.set(userId, r);
    else this.cache.delete(userId);
  }

  private async reloadAll(): Promise<void> {
    const rows = await this.db
      .selectFrom('detection_account_restrictions')
      .select(['user_id', 'locked', 'suspended'])
      .where((eb) => eb.or([eb('locked', '=', true), eb('suspended', '=', true)]))
      .execute();
    this.cache = new Map(rows.map((r) => [r.user_id, { locked: r.locked, suspended: r.suspended }]));
  }
}
