/**
 * Event filters (client-server API, Filtering): the shape of a filter and the pure rules that
 * decide what it lets through. No I/O: /sync, /messages and the filter endpoints share these.
 */

/** Filters events that belong to no room: presence and global account data. */
export interface EventFilter {
  /** How many events at most; a non-negative integer (clamp it with effectiveLimit before use). */
  limit?: number;
  /** Event types to include; `*` matches any run of characters. Absent: every type. */
  types?: string[];
  /** Event types to exclude, wins over `types`; `*` as in `types`. */
  not_types?: string[];
  /** Senders (user IDs) to include. Absent: every sender. */
  senders?: string[];
  /** Senders to exclude, wins over `senders`. */
  not_senders?: string[];
}

/** Filters the events of rooms: timeline, state, ephemeral and per-room account data. */
export interface RoomEventFilter extends EventFilter {
  /** Room IDs to include. Absent: every room. */
  rooms?: string[];
  /** Room IDs to exclude, wins over `rooms`. */
  not_rooms?: string[];
  /** true: only events whose content has a string `url`; false: only those without. */
  contains_url?: boolean;
  lazy_load_members?: boolean;
  include_redundant_members?: boolean;
  unread_thread_notifications?: boolean;
}

/** The room part of a filter. `rooms` and `not_rooms` apply before the inner filters. */
export interface RoomFilter {
  rooms?: string[];
  not_rooms?: string[];
  /** Include rooms the user has left (default false). */
  include_leave?: boolean;
  ephemeral?: RoomEventFilter;
  state?: RoomEventFilter;
  timeline?: RoomEventFilter;
  account_data?: RoomEventFilter;
}

/** A whole filter, as uploaded to POST /user/{userId}/filter or given inline to /sync. */
export interface Filter {
  /** Dot-separated paths of the event fields to keep (see applyEventFields). Absent: all. */
  event_fields?: string[];
  /** 'client' (the default) or 'federation'. */
  event_format?: 'client' | 'federation';
  presence?: EventFilter;
  account_data?: EventFilter;
  room?: RoomFilter;
}

/** What a filter looks at in an event (a room event, an ephemeral event or account data). */
export interface FilterableEvent {
  type: string;
  /** Absent for events without a sender (typing, receipts, account data): sender rules then do not apply. */
  sender?: string;
  /** Absent when the room is given separately: room rules then do not apply (see roomIncluded). */
  room_id?: string;
  content?: unknown;
}

/** The highest `limit` any filter is granted, whatever it asks for. */
export const MAX_EVENT_LIMIT = 1000;

/**
 * Glob matching as filters use it: `*` stands for any run of characters (also none), every other
 * character for itself. Runs in O(pattern × value) at worst, without regular expressions, so a
 * hostile pattern cannot make it backtrack exponentially.
 */
export function globMatches(pattern: string, value: string): boolean {
  let p = 0;
  let v = 0;
  // Where the last `*` was, and the value position it is currently made to cover up to.
  let star = -1;
  let starValue = 0;
  while (v < value.length) {
    if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      starValue = v;
    } else if (p < pattern.length && pattern[p] === value[v]) {
      p++;
      v++;
    } else if (star >= 0) {
      // Let the last `*` swallow one more character and retry from after it.
      p = star + 1;
      v = ++starValue;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

function anyGlob(patterns: readonly string[], value: string): boolean {
  return patterns.some((pattern) => globMatches(pattern, value));
}

/** Does the filter let the event through? Applies types, senders, rooms and contains_url. */
export function eventMatchesFilter(
  filter: EventFilter | RoomEventFilter | undefined,
  event: FilterableEvent,
): boolean {
  if (!filter) return true;
  if (filter.not_types && anyGlob(filter.not_types, event.type)) return false;
  if (filter.types && !anyGlob(filter.types, event.type)) return false;

  if (event.sender !== undefined) {
    if (filter.not_senders?.includes(event.sender)) return false;
    if (filter.senders && !filter.senders.includes(event.sender)) return false;
  }

  const roomFilter = filter as RoomEventFilter;
  if (event.room_id !== undefined && !roomIncluded(roomFilter, event.room_id)) return false;

  if (roomFilter.contains_url !== undefined) {
    const content = event.content;
    const hasUrl =
      typeof content === 'object' &&
      content !== null &&
      typeof (content as Record<string, unknown>).url === 'string';
    if (hasUrl !== roomFilter.contains_url) return false;
  }
  return true;
}

/** The events of a list the filter lets through, in order (the limit is not applied). */
export function filterEvents<E extends FilterableEvent>(
  filter: EventFilter | RoomEventFilter | undefined,
  events: readonly E[],
): E[] {
  return filter ? events.filter((e) => eventMatchesFilter(filter, e)) : [...events];
}

/**
 * Is the room let through by the `rooms` / `not_rooms` of a room filter (or of a room event
 * filter)? Exact room IDs; `not_rooms` wins.
 */
export function roomIncluded(
  roomFilter: Pick<RoomFilter, 'rooms' | 'not_rooms'> | undefined,
  roomId: string,
): boolean {
  if (!roomFilter) return true;
  if (roomFilter.not_rooms?.includes(roomId)) return false;
  if (roomFilter.rooms && !roomFilter.rooms.includes(roomId)) return false;
  return true;
}

/** A filter's limit clamped to 0..max, or the default when it sets none. */
export function effectiveLimit(
  limit: number | undefined,
  defaultLimit: number,
  max: number = MAX_EVENT_LIMIT,
): number {
  if (limit === undefined || !Number.isFinite(limit)) return Math.min(defaultLimit, max);
  return Math.max(0, Math.min(Math.floor(limit), max));
}

/** How many timeline events per room /sync returns under this filter. */
export function timelineLimit(
  filter: Filter | undefined,
  defaultLimit: number,
  max: number = MAX_EVENT_LIMIT,
): number {
  return effectiveLimit(filter?.room?.timeline?.limit, defaultLimit, max);
}

/** Should rooms the user has left appear in /sync? */
export function includeLeave(filter: Filter | undefined): boolean {
  return filter?.room?.include_leave === true;
}

/** Is lazy-loading of members asked for (on the state filter, as /sync reads it)? */
export function lazyLoadMembers(filter: RoomEventFilter | undefined): boolean {
  return filter?.lazy_load_members === true;
}

/**
 * Splits a dot-separated property path (appendices: `\.` is a literal dot, `\\` a literal
 * backslash, any other backslash stays as it is) into property names.
 */
export function splitPropertyPath(path: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i]!;
    const next = path[i + 1];
    if (c === '\\' && (next === '.' || next === '\\')) {
      current += next;
      i++;
    } else if (c === '.') {
      parts.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts;
}

/**
 * Keeps only the fields of an event named by `event_fields` (dot-separated paths). Absent
 * `fields` keeps everything. A path through a non-object, or to a missing property, contributes
 * nothing. The result is a copy: changing it never changes the event.
 */
export function applyEventFields<T extends Record<string, unknown>>(
  event: T,
  fields: readonly string[] | undefined,
): Partial<T> {
  if (fields === undefined) return event;
  const out: Record<string, unknown> = {};
  for (const field of fields) {
    const path = splitPropertyPath(field);
    let source: unknown = event;
    for (const key of path) {
      source = isRecord(source) && Object.hasOwn(source, key) ? source[key] : undefined;
      if (source === undefined) break;
    }
    if (source === undefined) continue;
    let target = out;
    for (const key of path.slice(0, -1)) {
      const existing = Object.hasOwn(target, key) ? target[key] : undefined;
      if (!isRecord(existing)) setOwn(target, key, {});
      target = target[key] as Record<string, unknown>;
    }
    setOwn(target, path[path.length - 1]!, structuredClone(source));
  }
  return out as Partial<T>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sets an own property, even one named `__proto__`, without touching any prototype. */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * What /sync needs of a filter, ready to use: the timeline limit (clamped), a timeline predicate,
 * the room predicate, lazy-loading (read from the state filter, where clients set it) and
 * include_leave. Structurally the `SyncFilter` the sync service takes.
 */
export interface SyncFilterView {
  timelineLimit: number;
  timelineMatches: (event: FilterableEvent) => boolean;
  /** Whether a state event may appear in a room's `state` (the room filter's `state` part). */
  stateMatches: (event: FilterableEvent) => boolean;
  lazyLoadMembers: boolean;
  includeLeave: boolean;
  roomIncluded: (roomId: string) => boolean;
  /** The filter itself, for the parts not digested here (event_fields, ephemeral, account_data...). */
  filter: Filter;
}

export function syncFilterView(filter: Filter, defaultTimelineLimit: number): SyncFilterView {
  const timeline = filter.room?.timeline;
  return {
    timelineLimit: timelineLimit(filter, defaultTimelineLimit),
    timelineMatches: (event) => eventMatchesFilter(timeline, event),
    stateMatches: (event) => eventMatchesFilter(filter.room?.state, event),
    lazyLoadMembers: lazyLoadMembers(filter.room?.state),
    includeLeave: includeLeave(filter),
    roomIncluded: (roomId) => roomIncluded(filter.room, roomId),
    filter,
  };
}
