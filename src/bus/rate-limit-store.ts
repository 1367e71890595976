import { Redis } from 'ioredis';
import type { RateRule } from '../config.ts';

/**
 * Token buckets for rate limits. A bucket holds at most `burst` tokens and refills at
 * `perSecond`; a request takes one token from each of its buckets (its device, its user, its
 * address), all or none. In process memory for one process; in Redis, shared by every process of
 * the homeserver, when Redis is configured.
 */
export type { RateRule } from '../config.ts';

export interface RateLimitStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Takes `cost` tokens (0: only looks) from every bucket when each holds at least one; returns 0
   * then, else the milliseconds until all of them will, and takes nothing.
   */
  take(keys: readonly string[], rules: readonly RateRule[], cost: 0 | 1): Promise<number>;
  /** Forgets the buckets (a full bucket again). */
  reset(keys: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Refills a bucket up to `now`: the tokens it holds then. */
function refill(bucket: Bucket | undefined, rule: RateRule, now: number): number {
  if (!bucket) return rule.burst;
  return Math.min(rule.burst, bucket.tokens + ((now - bucket.at) * rule.perSecond) / 1000);
}

/** Milliseconds until a bucket holding `tokens` holds one. */
function waitFor(tokens: number, rule: RateRule): number {
  return tokens >= 1 ? 0 : Math.max(1, Math.ceil(((1 - tokens) * 1000) / rule.perSecond));
}

export class MemoryRateLimitStore implements RateLimitStore {
  readonly kind = 'memory' as const;
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly limit = 100_000,
  ) {}

  async take(keys: readonly string[], rules: readonly RateRule[], cost: 0 | 1): Promise<number> {
    return this.takeNow(keys, rules, cost);
  }

  /** Synchronous, for the fallback when Redis cannot be reached. */
  takeNow(keys: readonly string[], rules: readonly RateRule[], cost: 0 | 1): number {
    const now = this.now();
    const tokens = keys.map((k, i) => refill(this.buckets.get(k), rules[i]!, now));
    const wait = Math.max(0, ...tokens.map((n, i) => waitFor(n, rules[i]!)));
    if (wait > 0) return wait;
    keys.forEach((k, i) => {
      // Re-insert, so the map's order is least recently used first.
      this.buckets.delete(k);
      this.buckets.set(k, { tokens: tokens[i]! - cost, at: now });
    });
    while (this.buckets.size > this.limit) this.buckets.delete(this.buckets.keys().next().value as string);
    return 0;
  }

  async reset(keys: readonly string[]): Promise<void> {
    for (const k of keys) this.buckets.delete(k);
  }

  async close(): Promise<void> {
    this.buckets.clear();
  }
}

/**
 * The same buckets in Redis, checked and updated by one Lua script so that concurrent requests on
 * several processes never both take the last token. Redis's own clock is used, so processes with
 * skewed clocks agree. When Redis cannot be reached within a short timeout the process falls back
 * to its own memory buckets: it keeps limiting (each process on its own) and keeps serving.
 */
const TAKE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local cost = tonumber(ARGV[2 * n + 1])
local tokens = {}
local wait = 0
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000
  local burst = tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local have = burst
  if b[1] then have = math.min(burst, tonumber(b[1]) + (now - tonumber(b[2])) * rate) end
  tokens[i] = have
  if have < 1 then
    local w = math.max(1, math.ceil((1 - have) / rate))
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000
  local burst = tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - cost), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate) + 1000)
end
return 0
`;

/**
 * A Redis connection whose commands fail fast (no offline queue, 500 ms timeout) while Redis is
 * away, so callers can fall back to process memory at once. Also used by the detection store.
 */
export async function connectFailFast(url: string): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 500,
  });
  redis.on('error', () => {});
  await redis.connect();
  return redis;
}

export class RedisRateLimitStore implements RateLimitStore {
  readonly kind = 'redis' as const;
  private readonly fallback: MemoryRateLimitStore;

  private constructor(
    private readonly redis: Redis,
    now: () => number,
  ) {
    this.fallback = new MemoryRateLimitStore(now);
    redis.defineCommand('conclaveTake', { lua: TAKE_SCRIPT });
  }

  /** Opens a connection of its own; commands fail fast (no offline queue) while Redis is away. */
  static async connect(url: string, now: () => number = Date.now): Promise<RedisRateLimitStore> {
    return new RedisRateLimitStore(await connectFailFast(url), now);
  }

  async take(keys: readonly string[], rules: readonly RateRule[], cost: 0 | 1): Promise<number> {
    const args = rules.flatMap((r) => [String(r.perSecond), String(r.burst)]);
    try {
      const take = (this.redis as unknown as Record<string, (...a: unknown[]) => Promise<number>>)
        .conclaveTake!;
      return Number(await take.call(this.redis, keys.length, ...keys, ...args, String(cost)));
    } catch {
      return this.fallback.takeNow(keys, rules, cost);
    }
  }

  async reset(keys: readonly string[]): Promise<void> {
    await this.fallback.reset(keys);
    try {
      if (keys.length > 0) await this.redis.del(...keys);
    } catch {
      // Redis is away: the bucket refills on its own.
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/** Redis when a URL is given, else memory. */
export async function openRateLimitStore(redisUrl: string): Promise<RateLimitStore> {
  return redisUrl ? RedisRateLimitStore.connect(redisUrl) : new MemoryRateLimitStore();
}
