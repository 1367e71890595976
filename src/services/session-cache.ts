import type { Bus } from '../bus/bus.ts';
import type { Session } from './accounts.service.ts';

const CHANNEL = 'conclave.sessions';

/**
 * Recently checked access tokens (by hash), so a client that long-polls /sync does not cost a
 * database read per request. Whenever tokens of a user are removed (logout, device deletion,
 * password change, a new login as the same device), every process drops that user's entries:
 * this one before the removing request answers, the others as soon as the bus brings the word
 * (a Redis round trip). Entries also expire after `ttlMs`, a bound for a lost bus message.
 *
 * While the bus is down this process cannot be told of removals, so it caches nothing and checks
 * every token against the database; what it held before the outage is dropped, since removals
 * made meanwhile were never heard.
 */
export class SessionCache {
  private readonly entries = new Map<string, { session: Session; at: number }>();
  private unsubscribe: (() => Promise<void>) | undefined;
  private busWatch: NodeJS.Timeout | undefined;

  constructor(
    private readonly bus: Bus,
    private readonly ttlMs = 30_000,
    private readonly limit = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.bus.subscribe(CHANNEL, (userId) => this.dropUser(userId));
    // Drops everything as soon as the bus is seen down, even when no request asks meanwhile.
    this.busWatch = setInterval(() => {
      if (!this.bus.healthy()) this.entries.clear();
    }, 250);
    this.busWatch.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.busWatch);
    await this.unsubscribe?.();
    this.entries.clear();
  }

  get(tokenHash: string): Session | undefined {
    if (!this.bus.healthy()) {
      this.entries.clear();
      return undefined;
    }
    const hit = this.entries.get(tokenHash);
    if (!hit) return undefined;
    if (this.now() - hit.at >= this.ttlMs) {
      this.entries.delete(tokenHash);
      return undefined;
    }
    return hit.session;
  }

  set(session: Session): void {
    if (!this.bus.healthy()) return;
    if (this.entries.size >= this.limit) this.entries.clear();
    this.entries.set(session.tokenHash, { session, at: this.now() });
  }

  /** Forgets the user's sessions here and on every other process. */
  async revokeUser(userId: string): Promise<void> {
    this.dropUser(userId);
    await this.bus.publish(CHANNEL, userId);
  }

  private dropUser(userId: string): void {
    for (const [hash, entry] of this.entries) if (entry.session.userId === userId) this.entries.delete(hash);
  }
}
