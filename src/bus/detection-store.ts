import type { Redis } from 'ioredis';
import { connectFailFast } from './rate-limit-store.ts';

/**
 * The counters of the detectors (src/services/detection): sliding windows of events or of
 * distinct values, per-period baselines, and flags with a time to live (throttles, alert
 * cool-downs). In process memory for one process; in Redis, shared by every process of the
 * homeserver, when Redis is configured: each operation is one Lua script, so concurrent processes
 * never lose a count. Shaped like the rate-limit store (src/bus/rate-limit-store.ts).
 */
export interface DetectionStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Records one event under `key` and returns how many the last `windowMs` hold. With `member`,
   * counts distinct members instead (an address, an invitee): the same member again only moves
   * its time. At most `cap` entries are kept (the count never reads above it).
   */
  count(key: string, windowMs: number, cap: number, member?: string): Promise<number>;
  /**
   * Records one event in the period of length `periodMs` that holds now and returns that
   * period's count so far, with the usual count of the key's earlier active periods (an
   * exponentially weighted mean) and how many there were.
   */
  period(key: string, periodMs: number): Promise<PeriodCount>;
  /** Sets a flag for `ttlMs` unless it is set; true when this call set it. */
  mark(key: string, ttlMs: number): Promise<boolean>;
  /** Sets a flag for `ttlMs`, replacing any. */
  set(key: string, ttlMs: number): Promise<void>;
  /** Whether any of the flags is set. */
  anySet(keys: readonly string[]): Promise<boolean>;
  close(): Promise<void>;
}

export interface PeriodCount {
  current: number;
  usual: number;
  periods: number;
}

/** Weight of the newest finished period in the usual count. */
export const BASELINE_WEIGHT = 0.2;

interface Period {
  start: number;
  count: number;
  usual: number;
  periods: number;
}

/** Folds a finished period into the usual count when `now` lies in a later one. */
function advance(p: Period | undefined, periodMs: number, now: number): Period {
  const start = Math.floor(now / periodMs) * periodMs;
  if (!p) return { start, count: 0, usual: 0, periods: 0 };
  if (p.start === start) return p;
  const usual = p.periods === 0 ? p.count : p.usual * (1 - BASELINE_WEIGHT) + p.count * BASELINE_WEIGHT;
  return { start, count: 0, usual, periods: p.periods + 1 };
}

export class MemoryDetectionStore implements DetectionStore {
  readonly kind = 'memory' as const;
  private readonly windows = new Map<string, Map<string, number>>();
  private readonly periods = new Map<string, Period>();
  private readonly flags = new Map<string, number>();
  private seq = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly limit = 100_000,
  ) {}

  async count(key: string, windowMs: number, cap: number, member?: string): Promise<number> {
    const now = this.now();
    let w = this.windows.get(key);
    if (w) this.windows.delete(key);
    else w = new Map();
    // Re-inserted, so the key map is least recently used first and each window oldest first.
    this.windows.set(key, w);
    const m = member ?? `#${this.seq++}`;
    w.delete(m);
    w.set(m, now);
    for (const [k, at] of w) {
      if (at > now - windowMs && w.size <= cap) break;
      w.delete(k);
    }
    this.bound(this.windows);
    return w.size;
  }

  async period(key: string, periodMs: number): Promise<PeriodCount> {
    const p = advance(this.periods.get(key), periodMs, this.now());
    p.count += 1;
    this.periods.delete(key);
    this.periods.set(key, p);
    this.bound(this.periods);
    return { current: p.count, usual: p.usual, periods: p.periods };
  }

  async mark(key: string, ttlMs: number): Promise<boolean> {
    if (await this.anySet([key])) return false;
    await this.set(key, ttlMs);
    return true;
  }

  async set(key: string, ttlMs: number): Promise<void> {
    this.flags.delete(key);
    this.flags.set(key, this.now() + ttlMs);
    this.bound(this.flags);
  }

  async anySet(keys: readonly string[]): Promise<boolean> {
    if (this.flags.size === 0) return false;
    const now = this.now();
    return keys.some((k) => {
      const until = this.flags.get(k);
      if (until !== undefined && until <= now) this.flags.delete(k);
      return until !== undefined && until > now;
    });
  }

  async close(): Promise<void> {
    this.windows.clear();
    this.periods.clear();
    this.flags.clear();
  }

  private bound(map: Map<string, unknown>): void {
    while (map.size > this.limit) map.delete(map.keys().next().value as string);
  }
}

const COUNT_SCRIPT = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -cap - 1)
redis.call('PEXPIRE', KEYS[1], window + 1000)
return redis.call('ZCARD', KEYS[1])
`;

const PERIOD_SCRIPT = `
local period = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local start = math.floor(now / period) * period
local h = redis.call('HMGET', KEYS[1], 'start', 'count', 'usual', 'periods')
local count = tonumber(h[2]) or 0
local usual = tonumber(h[3]) or 0
local periods = tonumber(h[4]) or 0
if h[1] and tonumber(h[1]) ~= start then
  if periods == 0 then usual = count else usual = usual * (1 - weight) + count * weight end
  periods = periods + 1
  count = 0
elseif not h[1] then
  count = 0
end
count = count + 1
redis.call('HSET', KEYS[1], 'start', tostring(start), 'count', tostring(count), 'usual', tostring(usual), 'periods', tostring(periods))
redis.call('PEXPIRE', KEYS[1], math.max(period * 100, 86400000))
return {count, tostring(usual), periods}
`;

type Scripted = Record<string, (...a: unknown[]) => Promise<unknown>>;

/**
 * The same in Redis. The caller's clock orders events (processes of one homeserver are assumed
 * to agree within a second, far below any window). While Redis cannot be reached the process
 * counts in its own memory: each process then judges what it sees alone, and keeps serving.
 */
export class RedisDetectionStore implements DetectionStore {
  readonly kind = 'redis' as const;
  private readonly fallback: MemoryDetectionStore;
  private seq = 0;

  private constructor(
    private readonly redis: Redis,
    private readonly now: () => number,
  ) {
    this.fallback = new MemoryDetectionStore(now);
    redis.defineCommand('conclaveCount', { numberOfKeys: 1, lua: COUNT_SCRIPT });
    redis.defineCommand('conclavePeriod', { numberOfKeys: 1, lua: PERIOD_SCRIPT });
  }

  static async connect(url: string, now: () => number = Date.now): Promise<RedisDetectionStore> {
    return new RedisDetectionStore(await connectFailFast(url), now);
  }

  private get scripts(): Scripted {
    return this.redis as unknown as Scripted;
  }

  async count(key: string, windowMs: number, cap: number, member?: string): Promise<number> {
    const now = this.now();
    const m = member ?? `#${now}.${process.pid}.${this.seq++}.${Math.random().toString(36).slice(2, 8)}`;
    try {
      return Number(await this.scripts.conclaveCount!.call(this.redis, key, now, windowMs, cap, m));
    } catch {
      return this.fallback.count(key, windowMs, cap, member);
    }
  }

  async period(key: string, periodMs: number): Promise<PeriodCount> {
    try {
      const [current, usual, periods] = (await this.scripts.conclavePeriod!.call(
        this.redis,
        key,
        periodMs,
        this.now(),
        BASELINE_WEIGHT,
      )) as [number, string, number];
      return { current: Number(current), usual: Number(usual), periods: Number(periods) };
    } catch {
      return this.fallback.period(key, periodMs);
    }
  }

  async mark(key: string, ttlMs: number): Promise<boolean> {
    try {
      return (await this.redis.set(key, '1', 'PX', ttlMs, 'NX')) === 'OK';
    } catch {
      return this.fallback.mark(key, ttlMs);
    }
  }

  async set(key: string, ttlMs: number): Promise<void> {
    await this.fallback.set(key, ttlMs);
    try {
      await this.redis.set(key, '1', 'PX', ttlMs);
    } catch {
      // Redis is away: this process still holds the flag.
    }
  }

  async anySet(keys: readonly string[]): Promise<boolean> {
    if (keys.length === 0) return false;
    try {
      return (await this.redis.exists(...keys)) > 0;
    } catch {
      return this.fallback.anySet(keys);
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/** Redis when a URL is given, else memory. */
export async function openDetectionStore(redisUrl: string): Promise<DetectionStore> {
  return redisUrl ? RedisDetectionStore.connect(redisUrl) : new MemoryDetectionStore();
}
