import { randomBytes } from 'node:crypto';
import { Ajv } from 'ajv';
import { Type } from 'typebox';
import { errors, MatrixError } from '../errors.ts';
import { checkJsonLimits } from '../http/json-body.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Db } from '../storage/connect.ts';
import * as repo from '../storage/filters.repository.ts';
import type { Session } from './accounts.service.ts';
import { type Filter, type RoomEventFilter, type SyncFilterView, syncFilterView } from './filter-matching.ts';
import { LIMITS } from './request-limits.ts';

/**
 * The schema of a filter (client-server API, Filtering), used for uploaded filters and for filters
 * given inline to /sync. Properties it does not name are accepted and kept, as everywhere in the
 * API. Limits must be non-negative integers (0: no events, as a /sync that only wants state or
 * the list of rooms asks for); how many events a filter is granted is clamped where it
 * is used (filter-matching.ts, effectiveLimit).
 */
const MAX_LIST = LIMITS.filterListEntries;
// A timeline limit of 0 is allowed (the spec's own example; Complement's TestSync).
const Limit = Type.Integer({ minimum: 0 });
const EventTypes = Type.Array(Type.String({ maxLength: 255 }), { maxItems: MAX_LIST });
const UserIds = Type.Array(Type.String({ maxLength: 255, pattern: '^@' }), { maxItems: MAX_LIST });
const RoomIds = Type.Array(Type.String({ maxLength: 255, pattern: '^!' }), { maxItems: MAX_LIST });

const eventFilterProperties = {
  limit: Type.Optional(Limit),
  types: Type.Optional(EventTypes),
  not_types: Type.Optional(EventTypes),
  senders: Type.Optional(UserIds),
  not_senders: Type.Optional(UserIds),
};

export const EventFilterSchema = Type.Object(eventFilterProperties);

export const RoomEventFilterSchema = Type.Object({
  ...eventFilterProperties,
  rooms: Type.Optional(RoomIds),
  not_rooms: Type.Optional(RoomIds),
  contains_url: Type.Optional(Type.Boolean()),
  lazy_load_members: Type.Optional(Type.Boolean()),
  include_redundant_members: Type.Optional(Type.Boolean()),
  unread_thread_notifications: Type.Optional(Type.Boolean()),
});

export const RoomFilterSchema = Type.Object({
  rooms: Type.Optional(RoomIds),
  not_rooms: Type.Optional(RoomIds),
  include_leave: Type.Optional(Type.Boolean()),
  ephemeral: Type.Optional(RoomEventFilterSchema),
  state: Type.Optional(RoomEventFilterSchema),
  timeline: Type.Optional(RoomEventFilterSchema),
  account_data: Type.Optional(RoomEventFilterSchema),
});

export const FilterSchema = Type.Object({
  event_fields: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 100 })),
  event_format: Type.Optional(Type.Enum(['client', 'federation'], { type: 'string' })),
  presence: Type.Optional(EventFilterSchema),
  account_data: Type.Optional(EventFilterSchema),
  room: Type.Optional(RoomFilterSchema),
});

const validator = new Ajv({ allErrors: false, coerceTypes: false, strict: false }).compile(FilterSchema);

/** Checks a parsed value against the filter schema; the message names the first problem. */
export function checkFilter(value: unknown): { ok: true; filter: Filter } | { ok: false; message: string } {
  if (validator(value)) return { ok: true, filter: value as Filter };
  const e = validator.errors?.[0];
  const where = e?.instancePath ? `${e.instancePath} ` : '';
  return { ok: false, message: `Invalid filter: ${where}${e?.message ?? 'does not match the schema'}` };
}

const roomEventValidator = new Ajv({ allErrors: false, coerceTypes: false, strict: false }).compile(
  RoomEventFilterSchema,
);

/**
 * The `filter` query parameter of /messages and /context: an inline RoomEventFilter (JSON).
 * Returns undefined when absent; 400 M_INVALID_PARAM when it is not a valid filter.
 */
export function parseRoomEventFilter(raw: string | undefined): RoomEventFilter | undefined {
  if (raw === undefined || raw === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw errors.invalidParam('filter must be a JSON RoomEventFilter');
  }
  if (!roomEventValidator(value)) {
    const e = roomEventValidator.errors?.[0];
    throw errors.invalidParam(`Invalid filter: ${e?.instancePath ?? ''} ${e?.message ?? ''}`.trim());
  }
  return value as RoomEventFilter;
}

function filterBytes(filter: Filter): number {
  return Buffer.byteLength(JSON.stringify(filter));
}

/** Filter IDs: short, opaque, never starting with `{` (which marks an inline filter). */
function newFilterId(): string {
  return randomBytes(8).readBigUInt64BE().toString(36);
}

/** Uploaded filters, and reading the `filter` parameter of /sync and other event APIs. */
export class FiltersService {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * POST /user/{userId}/filter: stores the filter (already checked against FilterSchema) and
   * returns its ID. Uploading a filter equal to one the user already has returns that one's ID,
   * so clients that upload their filter at every start do not pile up copies.
   */
  async createFilter(session: Session, userId: string, filter: Filter): Promise<{ filter_id: string }> {
    this.assertSelf(session, userId, 'You cannot create filters for another user');
    if (filterBytes(filter) > LIMITS.filterBytes) {
      throw errors.tooLarge(`Filters may not exceed ${LIMITS.filterBytes} bytes as JSON`);
    }
    const content = filter as JsonObject;
    const existing = await repo.findFilterIdByContent(this.db, userId, content);
    if (existing !== undefined) return { filter_id: existing };
    for (let attempt = 0; attempt < 5; attempt++) {
      const filterId = newFilterId();
      if (await repo.insertFilter(this.db, userId, filterId, content, this.now())) {
        return { filter_id: filterId };
      }
    }
    throw errors.unknown('Could not allocate a filter ID');
  }

  /** GET /user/{userId}/filter/{filterId}: the filter as uploaded. */
  async getFilter(session: Session, userId: string, filterId: string): Promise<Filter> {
    this.assertSelf(session, userId, 'You cannot read the filters of another user');
    const filter = await repo.findFilter(this.db, userId, filterId);
    if (filter === undefined) throw errors.notFound('No such filter');
    return filter as Filter;
  }

  /**
   * The `filter` query parameter of /sync (and of other event APIs that take a filter ID or
   * inline JSON): absent or empty means no filter; text starting with `{` is a filter as JSON;
   * anything else is the ID of one of the user's filters. Every problem is 400 M_INVALID_PARAM,
   * as for any query parameter: JSON that does not parse or breaks the JSON limits, a filter that
   * does not match the schema, an unknown filter ID.
   */
  async parseFilterParam(raw: string | undefined, userId: string): Promise<Filter> {
    if (raw === undefined || raw === '') return {};
    if (raw.startsWith('{')) {
      let value: unknown;
      try {
        value = JSON.parse(raw);
        checkJsonLimits(value);
      } catch (err) {
        throw errors.invalidParam(
          err instanceof MatrixError ? `filter: ${err.message}` : 'filter is not valid JSON',
        );
      }
      const checked = checkFilter(value);
      if (!checked.ok) throw errors.invalidParam(checked.message);
      if (filterBytes(checked.filter) > LIMITS.filterBytes) {
        throw errors.invalidParam(`filter: filters may not exceed ${LIMITS.filterBytes} bytes as JSON`);
      }
      return checked.filter;
    }
    const stored = await repo.findFilter(this.db, userId, raw);
    if (stored === undefined) throw errors.invalidParam('No such filter');
    return stored as Filter;
  }

  /**
   * The `filter` parameter of /sync, parsed (as parseFilterParam, with its errors) and digested
   * into what sync uses. The default timeline limit applies when the filter sets none.
   */
  async syncFilter(
    userId: string,
    raw: string | undefined,
    defaultTimelineLimit = 10,
  ): Promise<SyncFilterView> {
    return syncFilterView(await this.parseFilterParam(raw, userId), defaultTimelineLimit);
  }

  private assertSelf(session: Session, userId: string, message: string): void {
    if (session.userId !== userId) throw errors.forbidden(message);
  }
}
