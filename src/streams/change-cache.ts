import type { StreamChange, StreamChangeKind } from './notifier.ts';

/**
 * What changed at each recent stream position, as this process heard it from the notifier, so a
 * sync can learn which rooms and users changed in (from, upTo] without asking the database.
 *
 * Positions are gapless and commit in order (src/streams/positions.ts), and every write that
 * takes one announces it after commit. So once every position up to N has been heard, the cache
 * knows everything committed up to N. Announcements from other processes can arrive out of order;
 * positions heard above a gap wait in `pending` until the gap fills. If a gap stays open longer
 * than `gapGraceMs` (a process died between commit and announcement, or the bus dropped a
 * message), the cache gives up on what lies below the gap: ranges reaching below it are answered
 * by the database again.
 *
 * `window(from, upTo)` answers only for ranges it holds completely; callers fall back to the
 * database otherwise, so the cache never changes what a sync returns, only how fast.
 */
export class ChangeCache {
  /** Every change in (low, high] is in `entries`; `entries[i]` holds position low + 1 + i. */
  private low: number;
  private high: number;
  private entries: Array<StreamChange | null> = [];
  private readonly pending = new Map<number, StreamChange>();
  private gapSince: number | undefined;
  /** Called when a gap is given up on (for a warning in the log). */
  onGapGivenUp: ((position: number) => void) | undefined;

  constructor(
    startPosition: number,
    private readonly capacity = 100_000,
    private readonly gapGraceMs = 2_000,
    private readonly now: () => number = Date.now,
  ) {
    this.low = startPosition;
    this.high = startPosition;
  }

  /** The highest position below which nothing is missing. */
  get position(): number {
    this.checkGap();
    return this.high;
  }

  /** True while positions above `position` have been heard but one below them has not. */
  get hasGap(): boolean {
    this.checkGap();
    return this.pending.size > 0;
  }

  record(change: StreamChange): void {
    const p = change.position;
    if (p === undefined || p <= this.high || this.pending.has(p)) return;
    if (p !== this.high + 1) {
      this.pending.set(p, change);
      this.gapSince ??= this.now();
      this.checkGap();
      return;
    }
    this.append(change);
    this.drain();
  }

  /**
   * Positions up to `position` were committed but not heard (the bus was down): forget what is
   * held, so ranges reaching below `position` are answered by the database, and go on from there.
   */
  skipTo(position: number): void {
    if (position <= this.high) return;
    this.entries = [];
    this.low = position;
    this.high = position;
    for (const p of this.pending.keys()) if (p <= position) this.pending.delete(p);
    this.gapSince = undefined;
    this.drain();
  }

  /** The changes in (from, upTo], or undefined when the cache does not hold all of them. */
  window(from: number, upTo: number): ChangeWindow | undefined {
    this.checkGap();
    if (from < this.low || upTo > this.high || from > upTo) return undefined;
    return new ChangeWindow(this.entries, this.low, from, upTo);
  }

  private append(change: StreamChange): void {
    this.entries.push(change);
    this.high++;
    if (this.entries.length > this.capacity) {
      // Drop the oldest half at once, so trimming is rare.
      const drop = this.entries.length - Math.floor(this.capacity / 2);
      this.entries = this.entries.slice(drop);
      this.low += drop;
    }
  }

  private drain(): void {
    for (;;) {
      const next = this.pending.get(this.high + 1);
      if (!next) break;
      this.pending.delete(this.high + 1);
      this.append(next);
    }
    if (this.pending.size === 0) this.gapSince = undefined;
    else this.gapSince ??= this.now();
  }

  private checkGap(): void {
    if (this.gapSince === undefined || this.now() - this.gapSince < this.gapGraceMs) return;
    // Forget everything up to and including the missing position, then continue above it.
    const missing = this.high + 1;
    this.onGapGivenUp?.(missing);
    this.entries = [];
    this.low = missing;
    this.high = missing;
    this.gapSince = undefined;
    this.drain();
    if (this.pending.size > 0) this.gapSince = this.now();
  }
}

/** The changes of one range of positions. */
export class ChangeWindow {
  constructor(
    private readonly entries: ReadonlyArray<StreamChange | null>,
    private readonly low: number,
    readonly from: number,
    readonly upTo: number,
  ) {}

  /** The changes with their positions, newest first. */
  *newestFirst(): Iterable<[number, StreamChange]> {
    for (let p = this.upTo; p > this.from; p--) {
      const c = this.entries[p - this.low - 1];
      if (c) yield [p, c];
    }
  }

  *changes(): Iterable<StreamChange> {
    for (let p = this.from + 1; p <= this.upTo; p++) {
      const c = this.entries[p - this.low - 1];
      if (c) yield c;
    }
  }

  /** Rooms with a change of one of the kinds in the range. */
  rooms(kinds: readonly StreamChangeKind[]): Set<string> {
    const out = new Set<string>();
    for (const c of this.changes()) if (c.roomId !== undefined && kinds.includes(c.kind)) out.add(c.roomId);
    return out;
  }

  /**
   * Whether a change of the kind concerns the user (is in `userIds`), optionally only in one
   * room (`roomId`), or only outside rooms (`roomId: null`).
   */
  concernsUser(userId: string, kind: StreamChangeKind, roomId?: string | null): boolean {
    for (const c of this.changes()) {
      if (c.kind !== kind || !c.userIds?.includes(userId)) continue;
      if (roomId === undefined || (c.roomId ?? null) === roomId) return true;
    }
    return false;
  }

  /** Whether the room had a change of the kind in the range. */
  roomHas(roomId: string, kind: StreamChangeKind): boolean {
    for (const c of this.changes()) if (c.kind === kind && c.roomId === roomId) return true;
    return false;
  }
}
