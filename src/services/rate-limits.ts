import type { RateLimitStore } from '../bus/rate-limit-store.ts';
import type { Config, RateLimitFamily, RateRule } from '../config.ts';
import { errors } from '../errors.ts';
import { LOOKUPS_PER_MINUTE, type Session } from './accounts.service.ts';

/** Unauthenticated look-ups (username availability, registration token validity) per address. */
const LOOKUPS: RateRule = { perSecond: LOOKUPS_PER_MINUTE / 60, burst: LOOKUPS_PER_MINUTE };

/**
 * Every rate limit of the server, over one store of token buckets (in memory, or in Redis and
 * shared by every process): the per-family limits on authenticated requests (per device, user and
 * address), failed logins (per account and address), registrations and unauthenticated look-ups
 * (per address). Over a limit is 429 M_LIMIT_EXCEEDED with retry_after_ms. spec/limits.md
 * documents the families and their defaults.
 */
export class RateLimits {
  private readonly exempt: Set<string>;

  constructor(
    private readonly store: RateLimitStore,
    private readonly config: Config,
    /** Keeps the buckets of homeservers sharing one Redis apart. */
    private readonly prefix: string,
  ) {
    this.exempt = new Set(config.rateLimitExemptUsers);
  }

  get storeKind(): 'memory' | 'redis' {
    return this.store.kind;
  }

  /**
   * Takes one request of `family` from the device's, the user's and the address's buckets.
   * Server admins and the configured users are exempt; nothing is limited when rate limits are off.
   */
  async limitRequest(family: RateLimitFamily, session: Session | undefined, address: string): Promise<void> {
    if (!this.config.rateLimits) return;
    if (session && (session.isAdmin || this.exempt.has(session.userId))) return;
    const rule = this.config.rateLimitRules[family];
    const keys: string[] = [];
    const rules: RateRule[] = [];
    const add = (scope: string, factor: number) => {
      keys.push(`${this.prefix}.rl.${family}.${scope}`);
      rules.push({ perSecond: rule.perSecond * factor, burst: rule.burst * factor });
    };
    if (session) {
      add(`d:${session.userId}|${session.deviceId}`, 1);
      add(`u:${session.userId}`, this.config.rateLimitUserFactor);
    }
    add(`a:${address}`, this.config.rateLimitAddressFactor);
    await this.enforce(keys, rules, 1);
  }

  /** 429 when the account or the address has failed to log in too often lately. */
  async checkLoginFailures(userId: string | undefined, address: string): Promise<void> {
    const { keys, rules } = this.loginBuckets(userId, address);
    await this.enforce(keys, rules, 0);
  }

  async recordLoginFailure(userId: string | undefined, address: string): Promise<void> {
    const { keys, rules } = this.loginBuckets(userId, address);
    await this.store.take(keys, rules, 1);
  }

  /** A successful login clears the account's failures (not the address's). */
  async clearLoginFailures(userId: string): Promise<void> {
    await this.store.reset([this.key('login', `u:${userId}`)]);
  }

  /** 429 when the address has registered too many accounts lately. */
  async checkRegistration(address: string): Promise<void> {
    await this.enforce([this.key('register', `a:${address}`)], [this.registrationRule()], 0);
  }

  async recordRegistration(address: string): Promise<void> {
    await this.store.take([this.key('register', `a:${address}`)], [this.registrationRule()], 1);
  }

  /** Counts one unauthenticated look-up by an address; 429 past LOOKUPS_PER_MINUTE. */
  async limitLookup(address: string): Promise<void> {
    await this.enforce([this.key('lookup', `a:${address}`)], [LOOKUPS], 1);
  }

  /** The stricter bucket of a user or address a detector throttled (src/services/detection). */
  async limitThrottled(scope: string, rule: RateRule): Promise<void> {
    await this.enforce([this.key('throttled', scope)], [rule], 1);
  }

  private async enforce(keys: string[], rules: RateRule[], cost: 0 | 1): Promise<void> {
    const wait = await this.store.take(keys, rules, cost);
    if (wait > 0) throw errors.limitExceeded(wait);
  }

  private key(name: string, scope: string): string {
    return `${this.prefix}.rl.${name}.${scope}`;
  }

  private loginBuckets(userId: string | undefined, address: string) {
    const rule = windowRule(this.config.loginFailuresPerWindow, this.config.loginFailureWindowMs);
    const keys = [this.key('login', `a:${address}`), ...(userId ? [this.key('login', `u:${userId}`)] : [])];
    return { keys, rules: keys.map(() => rule) };
  }

  private registrationRule(): RateRule {
    return windowRule(this.config.registrationsPerWindow, this.config.registrationWindowMs);
  }
}

/** `count` per `windowMs` as a bucket: a burst of `count`, refilled over the window. */
function windowRule(count: number, windowMs: number): RateRule {
  return { perSecond: (count * 1000) / windowMs, burst: count };
}
