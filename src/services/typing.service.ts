import type { Bus } from '../bus/bus.ts';
import type { Notifier } from '../streams/notifier.ts';

const CHANNEL = 'conclave.typing';
/** Longest typing notice a client may ask for. */
export const MAX_TYPING_MS = 30_000;
/**
 * How long a remote user's typing notice lasts when their server sends no update: m.typing
 * carries no timeout, and servers repeat it while the user types (Synapse every 40 s), so a
 * notice lasts longer than a client's longest (as Synapse's 60 s for federated notices).
 */
export const REMOTE_TYPING_MS = 60_000;

/** Told of a local user's typing change (the federation sender hands it to the room's servers). */
export type TypingListener = (roomId: string, userId: string, typing: boolean, until: number) => void;

interface TypingMessage {
  roomId: string;
  userId: string;
  /** Epoch ms until which the user is typing; 0 when they stopped. */
  until: number;
}

/**
 * Typing notices are ephemeral: each process keeps who is typing where, fed by the bus (so a
 * notice sent to one process reaches syncs on every other), and wakes its own waiting syncs.
 * `serial` rises with every change this process sees, for sync tokens; it follows the clock, so
 * tokens taken on one process compare right on another.
 */
export class TypingService {
  private readonly rooms = new Map<string, Map<string, { until: number; timer: NodeJS.Timeout }>>();
  private unsubscribe: (() => Promise<void>) | undefined;
  private listener: TypingListener | undefined;
  serial = 0;

  constructor(
    private readonly bus: Bus,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.bus.subscribe(CHANNEL, (raw) => {
      try {
        const m = JSON.parse(raw) as TypingMessage;
        if (typeof m.roomId === 'string' && typeof m.userId === 'string' && typeof m.until === 'number')
          this.apply(m);
      } catch {
        // ignore malformed messages
      }
    });
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    for (const users of this.rooms.values()) for (const u of users.values()) clearTimeout(u.timer);
    this.rooms.clear();
  }

  /** Local typing changes go to `listener` too, from now on (set once federation is built). */
  setListener(listener: TypingListener): void {
    this.listener = listener;
  }

  /**
   * Records that a local user started (with a timeout) or stopped typing, on every process, and
   * tells the listener (the process the client asked tells the other servers, once).
   */
  async setTyping(roomId: string, userId: string, typing: boolean, timeoutMs: number): Promise<void> {
    const until = typing ? this.now() + Math.min(Math.max(timeoutMs, 0), MAX_TYPING_MS) : 0;
    await this.bus.publish(CHANNEL, JSON.stringify({ roomId, userId, until } satisfies TypingMessage));
    this.listener?.(roomId, userId, typing, until);
  }

  /** A remote user's typing notice (checked by the inbound EDU handler), on every process. */
  async setRemoteTyping(roomId: string, userId: string, typing: boolean): Promise<void> {
    const until = typing ? this.now() + REMOTE_TYPING_MS : 0;
    await this.bus.publish(CHANNEL, JSON.stringify({ roomId, userId, until } satisfies TypingMessage));
  }

  /** Until when the user types in the room, as this process knows (undefined: not typing). */
  typingUntil(roomId: string, userId: string): number | undefined {
    return this.rooms.get(roomId)?.get(userId)?.until;
  }

  /** The serial at this room's latest typing change (0 when none seen). */
  roomSerial(roomId: string): number {
    return this.roomSerials.get(roomId) ?? 0;
  }

  private readonly roomSerials = new Map<string, number>();

  typingUsers(roomId: string): string[] {
    return [...(this.rooms.get(roomId)?.keys() ?? [])].sort();
  }

  private apply(m: TypingMessage): void {
    let users = this.rooms.get(m.roomId);
    const existing = users?.get(m.userId);
    if (existing) clearTimeout(existing.timer);
    const remaining = m.until - this.now();
    if (remaining > 0) {
      if (!users) {
        users = new Map();
        this.rooms.set(m.roomId, users);
      }
      const timer = setTimeout(() => this.apply({ ...m, until: 0 }), remaining);
      timer.unref();
      users.set(m.userId, { until: m.until, timer });
    } else {
      if (!existing) return;
      users?.delete(m.userId);
      if (users?.size === 0) this.rooms.delete(m.roomId);
    }
    // Serials follow the clock (and rise by at least one), so a sync token from one process
    // compares right on another, even one started later that has seen fewer changes.
    // Microseconds: bursts of changes within one millisecond stay below the next millisecond.
    this.serial = Math.max(this.serial + 1, this.now() * 1000);
    this.roomSerials.set(m.roomId, this.serial);
    this.notifier.notifyLocal({ kind: 'typing', roomId: m.roomId });
  }
}
