/**
 * Counts events per key in a sliding window and says when a key is over its limit. Used for failed
 * logins (per account and per address) and registrations (per address). Kept in process memory:
 * with several processes each one limits on its own, so the effective limit is multiplied by the
 * number of processes (documented in README).
 */
export class RateLimiter {
  private readonly hits = new Map<string, number[]>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Milliseconds until the key may act again, or 0 when it is under the limit. */
  retryAfter(key: string): number {
    const recent = this.prune(key);
    if (recent.length < this.limit) return 0;
    return Math.max(1, recent[recent.length - this.limit]! + this.windowMs - this.now());
  }

  record(key: string): void {
    const recent = this.prune(key);
    recent.push(this.now());
    this.hits.set(key, recent);
  }

  reset(key: string): void {
    this.hits.delete(key);
  }

  private prune(key: string): number[] {
    const cutoff = this.now() - this.windowMs;
    const recent = (this.hits.get(key) ?? []).filter((t) => t > cutoff);
    if (recent.length === 0) this.hits.delete(key);
    else this.hits.set(key, recent);
    // Bound memory: drop the oldest keys when the map grows very large.
    if (this.hits.size > 100_000) {
      const first = this.hits.keys().next().value;
      if (first !== undefined) this.hits.delete(first);
    }
    return recent;
  }
}
