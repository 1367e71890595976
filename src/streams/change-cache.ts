import type { StreamChange, StreamChangeKind } from './notifier.ts';

/**
 * What changed at each recent stream position, as this process heard it from the notifier, so a
 * sync can learn which rooms and users changed in (from, upTo] without asking the database.
 *
 * Every write that takes a position announces it after commit, but positions commit out of order
 * and some are never used (their transaction rolled back: src/streams/positions.ts). The cache
 * knows everything up to `position`, the highest position below which it heard every one;
 * positions heard above a hole wait in `pending`. Most holes fill within milliseconds (a slower
 * transaction commits, or an announcement from another process arrives). While a hole is open,
 * `hasGap` is true and syncs ask the database for its "persisted up to" position instead; they
 * hand it to `settle`, and a hole open longer than `gapGraceMs` that the database says is behind
 * (a rolled-back position, a process that died between commit and announcement, a message the bus
 * dropped) is given up on: ranges reaching below it are answered by the database again. The cache
 * never assumes a hole is filled without the database saying so, since a position can stay in
 * flight for as long as its transaction runs.
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
    return this.high;
  }

  /** True while positions above `position` have been heard but one below them has not. */
  get hasGap(): boolean {
    return this.pending.size > 0;
  }

  /**
   * The database says every position up to `persisted` is committed or abandoned. A hole below it
   * that has stayed open past the grace period will not fill: forget what lies below, and go on
   * from `persisted`. A younger hole may still be an announcement on its way, so it is kept.
   */
  settle(persisted: number): void {
    if (this.gapSince === undefined || this.now() - this.gapSince < this.gapGraceMs) return;
    if (persisted <= this.high) return;
    this.onGapGivenUp?.(this.high + 1);
    this.skipTo(persisted);
  }

  record(change: StreamChange): void {
    const p = change.position;
    if (p === undefined || p <= this.high || this.pending.has(p)) return;
    if (p !== this.high + 1) {
      this.pending.set(p, change);
      this.gapSince ??= this.now();
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
    const before = this.high;
    for (;;) {
      const next = this.pending.get(this.high + 1);
      if (!next) break;
      this.pending.delete(this.high + 1);
      this.append(next);
    }
    // The grace period runs from when the hole now open was first waited on.
    if (this.pending.size === 0) this.gapSince = undefined;
    else if (this.high !== before || this.gapSince === undefined) this.gapSince = this.now();
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
