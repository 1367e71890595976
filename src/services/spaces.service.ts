import { errors } from '../errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow } from '../storage/database.ts';
import type { Session } from './accounts.service.ts';
import {
  chunkFromState,
  SUMMARY_TYPES as DIRECTORY_SUMMARY_TYPES,
  type PublicRoomsChunk,
} from './directory.service.ts';
import { decodeOpaqueToken, encodeOpaqueToken } from './opaque-token.ts';
import type { RoomReader } from './room-reads.ts';
import type { RoomsService } from './rooms.service.ts';

/** Rooms per /hierarchy page by default and at most; how deep it goes by default and at most. */
export const DEFAULT_HIERARCHY_LIMIT = 50;
export const MAX_HIERARCHY_LIMIT = 100;
export const MAX_HIERARCHY_DEPTH = 10;
/** Rooms one /hierarchy request walks through at most (pages before it included). */
const MAX_WALK = 1000;

/** The state a summary reads (with an empty state key): the directory's, and the encryption. */
const SUMMARY_TYPES = new Set<string>([...DIRECTORY_SUMMARY_TYPES, 'm.room.encryption']);

/** The summary of a room (client-server API: RoomSummary, the fields of /publicRooms and more). */
export interface RoomSummary extends PublicRoomsChunk {
  room_version: string;
  encryption?: string;
  allowed_room_ids?: string[];
}

interface RoomView {
  summary: RoomSummary;
  /** The room's `m.space.child` events with a non-empty `via`, in the spec's order. */
  children: EventRow[];
}

/** `order` of an m.space.child: at most 50 characters of printable ASCII, else ignored. */
function childOrder(row: EventRow): string | undefined {
  const order = (row.json.content as JsonObject).order;
  return typeof order === 'string' && order.length <= 50 && /^[\x20-\x7E]*$/.test(order) ? order : undefined;
}

/** The children order of the spec (m.space.child): by `order`, then by timestamp, then by room ID. */
function compareChildren(a: EventRow, b: EventRow): number {
  const oa = childOrder(a);
  const ob = childOrder(b);
  if (oa !== undefined && ob === undefined) return -1;
  if (oa === undefined && ob !== undefined) return 1;
  if (oa !== undefined && ob !== undefined && oa !== ob) return oa < ob ? -1 : 1;
  if (a.origin_server_ts !== b.origin_server_ts) return a.origin_server_ts - b.origin_server_ts;
  const ka = a.state_key ?? '';
  const kb = b.state_key ?? '';
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

interface HierarchyToken {
  root: string;
  offset: number;
  max_depth: number;
  suggested_only: boolean;
}

/**
 * Room summaries (GET /v1/room_summary/{roomIdOrAlias}, MSC3266) and the space hierarchy
 * (GET /v1/rooms/{roomId}/hierarchy) over the rooms this server holds (spec/spaces.md). Who may
 * see a room's summary is the spec's "potential joiner" rule (see `mayPreview`); rooms of other
 * servers are not fetched over federation yet.
 */
export class SpacesService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly reader: RoomReader,
  ) {}

  /** A room's summary and children from its current state; undefined for a room not held. */
  private async view(roomId: string): Promise<RoomView | undefined> {
    const version = await this.reader.roomVersionOf(this.db, roomId);
    if (version === undefined) return undefined;
    const group = await this.rooms.currentGroup(roomId);
    const rows = await this.reader.stateEventsAt(this.db, group, (k) => {
      const [type, stateKey] = k.split('\u0000') as [string, string];
      return (SUMMARY_TYPES.has(type) && stateKey === '') || type === 'm.space.child';
    });
    const content = new Map<string, JsonObject>();
    const children: EventRow[] = [];
    for (const row of rows) {
      if (row.redacted_by !== null) continue;
      const c = row.json.content as JsonObject;
      if (row.type === 'm.space.child') {
        const via = c.via;
        if (Array.isArray(via) && via.length > 0 && via.every((v) => typeof v === 'string'))
          children.push(row);
      } else content.set(row.type, c);
    }
    const base = chunkFromState(roomId, content, 0);
    // Only a space has children: an m.space.child in any other room is ignored, as Synapse
    // ignores it (and Complement's TestClientSpacesSummary expects).
    if (base.room_type !== 'm.space') children.length = 0;
    children.sort(compareChildren);
    const allow = content.get('m.room.join_rules')?.allow;
    const allowed =
      (base.join_rule === 'restricted' || base.join_rule === 'knock_restricted') && Array.isArray(allow)
        ? allow.flatMap((a) => {
            const entry = a as JsonObject;
            return entry?.type === 'm.room_membership' && typeof entry.room_id === 'string'
              ? [entry.room_id]
              : [];
          })
        : [];
    const joined = await this.db
      .selectFrom('memberships')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('room_id', '=', roomId)
      .where('membership', '=', 'join')
      .executeTakeFirst();
    const encryption = content.get('m.room.encryption')?.algorithm;
    const summary: RoomSummary = {
      ...base,
      num_joined_members: Number(joined?.n ?? 0),
      room_version: version,
      ...(typeof encryption === 'string' && encryption !== '' ? { encryption } : {}),
      ...(allowed.length > 0 ? { allowed_room_ids: allowed } : {}),
    };
    return { summary, children };
  }

  /**
   * Whether `userId` (undefined: an unauthenticated request) may see the room's summary: a room
   * whose join rule is public, knock or knock_restricted, or whose history is world-readable,
   * to anyone; to a user, also a room they are joined to, invited to or knocking on, and a
   * restricted one whose allowed rooms they are joined to. A banned user sees only what
   * anyone sees.
   */
  private async mayPreview(summary: RoomSummary, userId: string | undefined): Promise<boolean> {
    const open =
      ['public', 'knock', 'knock_restricted'].includes(summary.join_rule) || summary.world_readable;
    if (open || userId === undefined) return open;
    const membership = await this.rooms.membership(summary.room_id, userId);
    if (membership === 'join' || membership === 'invite' || membership === 'knock') return true;
    if (membership === 'ban') return false;
    for (const allowedRoom of summary.allowed_room_ids ?? []) {
      if ((await this.rooms.membership(allowedRoom, userId)) === 'join') return true;
    }
    return false;
  }

  /** GET /v1/room_summary/{roomIdOrAlias} (and MSC3266's unstable paths) */
  async summary(session: Session | undefined, roomIdOrAlias: string, opts: { unstable: boolean }) {
    if (!roomIdOrAlias.startsWith('#') && !isValidRoomId(roomIdOrAlias))
      throw errors.invalidParam('Not a valid room ID or alias');
    const notFound = () => errors.notFound('Room not found or not accessible');
    const roomId = await this.rooms.resolveRoom(roomIdOrAlias);
    const view = await this.view(roomId);
    if (!view || !(await this.mayPreview(view.summary, session?.userId))) throw notFound();
    const out: Record<string, unknown> = { ...view.summary };
    if (session) out.membership = (await this.rooms.membership(roomId, session.userId)) ?? 'leave';
    if (opts.unstable) {
      // The field names of MSC3266's unstable prefix, as clients of it read them.
      out['im.nheko.summary.room_version'] = view.summary.room_version;
      if (view.summary.encryption !== undefined) out['im.nheko.summary.encryption'] = view.summary.encryption;
    }
    return out;
  }

  /**
   * GET /v1/rooms/{roomId}/hierarchy: the space tree from the room, depth first, children in the
   * spec's order, each room once; rooms the user may not preview are left out with the rooms
   * below them, and rooms this server does not hold are not followed. Pages are offsets into
   * this walk, bound to the root, `max_depth` and `suggested_only` of the first request.
   */
  async hierarchy(
    session: Session,
    roomId: string,
    opts: { from?: string; limit?: number; max_depth?: number; suggested_only?: boolean },
  ) {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const limit = Math.min(opts.limit ?? DEFAULT_HIERARCHY_LIMIT, MAX_HIERARCHY_LIMIT);
    const maxDepth = Math.min(opts.max_depth ?? MAX_HIERARCHY_DEPTH, MAX_HIERARCHY_DEPTH);
    const suggestedOnly = opts.suggested_only ?? false;
    let offset = 0;
    if (opts.from !== undefined) {
      const token = decodeHierarchyToken(opts.from);
      if (token.root !== roomId) throw errors.invalidParam('The from token belongs to another room');
      if (token.max_depth !== maxDepth || token.suggested_only !== suggestedOnly)
        throw errors.invalidParam('suggested_only and max_depth cannot change on paginated requests');
      offset = token.offset;
    }
    const root = await this.view(roomId);
    if (!root || !(await this.mayPreview(root.summary, session.userId)))
      throw errors.forbidden('You are not allowed to view this room');

    const out: JsonObject[] = [];
    const seen = new Set<string>([roomId]);
    // Depth first: a stack of rooms still to visit, the next one on top.
    const stack: Array<{ view: RoomView; depth: number }> = [{ view: root, depth: 0 }];
    let position = 0;
    let more = false;
    while (stack.length > 0 && position < MAX_WALK) {
      const { view, depth } = stack.pop()!;
      // With suggested_only, the other children are left out of children_state too (Synapse).
      const considered = view.children.filter(
        (c) => !suggestedOnly || (c.json.content as JsonObject).suggested === true,
      );
      const children = depth < maxDepth ? considered : [];
      if (position >= offset) {
        if (out.length >= limit) {
          more = true;
          break;
        }
        out.push({
          ...view.summary,
          children_state: considered.map(strippedChild),
        } as unknown as JsonObject);
      }
      position++;
      const next: Array<{ view: RoomView; depth: number }> = [];
      for (const child of children) {
        const childId = child.state_key ?? '';
        if (seen.has(childId) || !isValidRoomId(childId)) continue;
        seen.add(childId);
        const childView = await this.view(childId);
        if (!childView || !(await this.mayPreview(childView.summary, session.userId))) continue;
        next.push({ view: childView, depth: depth + 1 });
      }
      for (let i = next.length - 1; i >= 0; i--) stack.push(next[i]!);
    }
    return {
      rooms: out,
      ...(more
        ? {
            next_batch: encodeHierarchyToken({
              root: roomId,
              offset: offset + out.length,
              max_depth: maxDepth,
              suggested_only: suggestedOnly,
            }),
          }
        : {}),
    };
  }
}

/** An m.space.child event as /hierarchy shows it: stripped state with its timestamp. */
function strippedChild(row: EventRow): JsonObject {
  return {
    type: row.type,
    state_key: row.state_key ?? '',
    content: row.json.content as JsonObject,
    sender: row.sender,
    origin_server_ts: row.origin_server_ts,
  };
}

const encodeHierarchyToken = (t: HierarchyToken) => encodeOpaqueToken(t);

function decodeHierarchyToken(raw: string): HierarchyToken {
  const message = 'Unknown from token';
  const bad = () => errors.invalidParam(message);
  const { root, offset, max_depth: depth, suggested_only: suggested } = decodeOpaqueToken(raw, message);
  if (
    typeof root !== 'string' ||
    !Number.isSafeInteger(offset) ||
    (offset as number) < 0 ||
    !Number.isSafeInteger(depth) ||
    typeof suggested !== 'boolean'
  )
    throw bad();
  return { root, offset: offset as number, max_depth: depth as number, suggested_only: suggested };
}
