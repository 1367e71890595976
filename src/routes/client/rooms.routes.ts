import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { eventMatchesFilter } from '../../services/filter-matching.ts';
import { parseRoomEventFilter } from '../../services/filters.service.ts';
import type { EventRow } from '../../storage/database.ts';
import { AnyObject, V3 } from './schemas.ts';

const RoomId = Type.String({ minLength: 1, maxLength: 255 });
const EventType = Type.String({ minLength: 1, maxLength: 255 });
const TxnId = Type.String({ minLength: 1, maxLength: 255 });
const UserId = Type.String({ minLength: 1, maxLength: 255 });
const Reason = Type.Optional(Type.String({ maxLength: 1024 }));
const RoomParams = Type.Object({ roomId: RoomId });
const MembershipValue = Type.Union([
  Type.Literal('join'),
  Type.Literal('invite'),
  Type.Literal('knock'),
  Type.Literal('leave'),
  Type.Literal('ban'),
]);

/** Servers to join or knock through: `via` (spec v1.12) and its older name `server_name`. */
const ViaQuery = Type.Object({
  via: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 20 })),
  server_name: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 20 })),
});
const viaOf = (q: { via?: string[]; server_name?: string[] }) => [...(q.via ?? []), ...(q.server_name ?? [])];

/** Rooms: creation, membership, state, messages, redaction, and reading them back. */
export async function roomsRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { rooms, history } = app.services;

  // POST /_matrix/client/v3/createRoom
  app.post(
    `${V3}/createRoom`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          preset: Type.Optional(
            Type.Union([
              Type.Literal('private_chat'),
              Type.Literal('public_chat'),
              Type.Literal('trusted_private_chat'),
            ]),
          ),
          visibility: Type.Optional(Type.Union([Type.Literal('public'), Type.Literal('private')])),
          name: Type.Optional(Type.String({ maxLength: 255 })),
          topic: Type.Optional(Type.String({ maxLength: 4096 })),
          room_alias_name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
          invite: Type.Optional(Type.Array(UserId, { maxItems: 100 })),
          invite_3pid: Type.Optional(Type.Array(AnyObject, { maxItems: 0 })),
          is_direct: Type.Optional(Type.Boolean()),
          initial_state: Type.Optional(
            Type.Array(
              Type.Object({
                type: EventType,
                state_key: Type.Optional(Type.String({ maxLength: 255 })),
                content: AnyObject,
              }),
              { maxItems: 100 },
            ),
          ),
          power_level_content_override: Type.Optional(AnyObject),
          creation_content: Type.Optional(AnyObject),
          room_version: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
        }),
      },
    },
    async (request) => rooms.createRoom(request.session, request.body as never),
  );

  // POST /_matrix/client/v3/join/{roomIdOrAlias}
  app.post(
    `${V3}/join/:roomIdOrAlias`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomIdOrAlias: RoomId }),
        querystring: ViaQuery,
      },
    },
    async (request) =>
      rooms.join(
        request.session,
        request.params.roomIdOrAlias,
        joinContentOf(request.body),
        viaOf(request.query),
      ),
  );

  // POST /_matrix/client/v3/rooms/{roomId}/join
  app.post(
    `${V3}/rooms/:roomId/join`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => rooms.join(request.session, request.params.roomId, joinContentOf(request.body)),
  );

  // POST /_matrix/client/v3/knock/{roomIdOrAlias}
  app.post(
    `${V3}/knock/:roomIdOrAlias`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomIdOrAlias: RoomId }),
        querystring: ViaQuery,
      },
    },
    async (request) =>
      rooms.knock(
        request.session,
        request.params.roomIdOrAlias,
        reasonOf(request.body),
        viaOf(request.query),
      ),
  );

  // POST /_matrix/client/v3/rooms/{roomId}/invite
  app.post(
    `${V3}/rooms/:roomId/invite`,
    {
      onRequest: requireAuth,
      schema: { params: RoomParams, body: Type.Object({ user_id: UserId, reason: Reason }) },
    },
    async (request) => {
      await rooms.invite(request.session, request.params.roomId, request.body.user_id, request.body.reason);
      return {};
    },
  );

  // POST /_matrix/client/v3/rooms/{roomId}/leave
  app.post(
    `${V3}/rooms/:roomId/leave`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => {
      await rooms.leave(request.session, request.params.roomId, reasonOf(request.body));
      return {};
    },
  );

  // POST /_matrix/client/v3/rooms/{roomId}/upgrade
  app.post(
    `${V3}/rooms/:roomId/upgrade`,
    {
      onRequest: requireAuth,
      schema: {
        params: RoomParams,
        body: Type.Object({
          new_version: Type.String({ minLength: 1, maxLength: 32 }),
          additional_creators: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 50 })),
        }),
      },
    },
    async (request) =>
      app.services.roomUpgrades.upgrade(
        request.session,
        request.params.roomId,
        request.body.new_version,
        request.body.additional_creators ?? [],
      ),
  );

  // POST /_matrix/client/v3/rooms/{roomId}/forget
  app.post(
    `${V3}/rooms/:roomId/forget`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => {
      await rooms.forget(request.session, request.params.roomId);
      return {};
    },
  );

  for (const action of ['kick', 'ban', 'unban'] as const) {
    // POST /_matrix/client/v3/rooms/{roomId}/kick, /ban, /unban
    app.post(
      `${V3}/rooms/:roomId/${action}`,
      {
        onRequest: requireAuth,
        schema: { params: RoomParams, body: Type.Object({ user_id: UserId, reason: Reason }) },
      },
      async (request) => {
        await rooms.moderate(
          request.session,
          request.params.roomId,
          action,
          request.body.user_id,
          request.body.reason,
        );
        return {};
      },
    );
  }

  // GET /_matrix/client/v3/joined_rooms
  app.get(`${V3}/joined_rooms`, { onRequest: requireAuth }, async (request) =>
    rooms.joinedRooms(request.session),
  );

  // GET /_matrix/client/v3/rooms/{roomId}/members
  app.get(
    `${V3}/rooms/:roomId/members`,
    {
      onRequest: requireAuth,
      schema: {
        params: RoomParams,
        querystring: Type.Object({
          at: Type.Optional(Type.String({ maxLength: 64 })),
          membership: Type.Optional(MembershipValue),
          not_membership: Type.Optional(MembershipValue),
        }),
      },
    },
    async (request) =>
      rooms.members(request.session, request.params.roomId, {
        ...(request.query.at !== undefined ? { at: request.query.at } : {}),
        ...(request.query.membership !== undefined ? { membership: request.query.membership } : {}),
        ...(request.query.not_membership !== undefined
          ? { notMembership: request.query.not_membership }
          : {}),
      }),
  );

  // GET /_matrix/client/v3/rooms/{roomId}/joined_members
  app.get(
    `${V3}/rooms/:roomId/joined_members`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => rooms.joinedMembers(request.session, request.params.roomId),
  );

  // GET /_matrix/client/v3/rooms/{roomId}/state
  app.get(
    `${V3}/rooms/:roomId/state`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => rooms.getState(request.session, request.params.roomId),
  );

  const StateParams = Type.Object({
    roomId: RoomId,
    eventType: EventType,
    stateKey: Type.String({ maxLength: 255 }),
  });
  const StateParamsNoKey = Type.Object({ roomId: RoomId, eventType: EventType });
  const FormatQuery = Type.Object({
    format: Type.Optional(Type.Union([Type.Literal('content'), Type.Literal('event')])),
  });
  // The state key may be empty: /state/{type} and /state/{type}/ both mean state_key "".
  for (const suffix of ['', '/'] as const) {
    // GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}
    app.get(
      `${V3}/rooms/:roomId/state/:eventType${suffix}`,
      { onRequest: requireAuth, schema: { params: StateParamsNoKey, querystring: FormatQuery } },
      async (request) =>
        rooms.getStateEvent(
          request.session,
          request.params.roomId,
          request.params.eventType,
          '',
          request.query.format,
        ),
    );
    // PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}
    app.put(
      `${V3}/rooms/:roomId/state/:eventType${suffix}`,
      { onRequest: requireAuth, schema: { params: StateParamsNoKey, body: AnyObject } },
      async (request) =>
        rooms.sendState(
          request.session,
          request.params.roomId,
          request.params.eventType,
          '',
          request.body as JsonObject,
        ),
    );
  }
  // GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
  app.get(
    `${V3}/rooms/:roomId/state/:eventType/:stateKey`,
    { onRequest: requireAuth, schema: { params: StateParams, querystring: FormatQuery } },
    async (request) =>
      rooms.getStateEvent(
        request.session,
        request.params.roomId,
        request.params.eventType,
        request.params.stateKey,
        request.query.format,
      ),
  );
  // PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
  app.put(
    `${V3}/rooms/:roomId/state/:eventType/:stateKey`,
    { onRequest: requireAuth, schema: { params: StateParams, body: AnyObject } },
    async (request) =>
      rooms.sendState(
        request.session,
        request.params.roomId,
        request.params.eventType,
        request.params.stateKey,
        request.body as JsonObject,
      ),
  );

  // PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
  app.put(
    `${V3}/rooms/:roomId/send/:eventType/:txnId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: RoomId, eventType: EventType, txnId: TxnId }),
        body: AnyObject,
      },
    },
    async (request) =>
      rooms.sendMessage(
        request.session,
        request.params.roomId,
        request.params.eventType,
        request.params.txnId,
        request.body as JsonObject,
      ),
  );

  // PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
  app.put(
    `${V3}/rooms/:roomId/redact/:eventId/:txnId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({
          roomId: RoomId,
          eventId: Type.String({ minLength: 1, maxLength: 255 }),
          txnId: TxnId,
        }),
        body: Type.Object({ reason: Reason }),
      },
    },
    async (request) =>
      rooms.redact(
        request.session,
        request.params.roomId,
        request.params.eventId,
        request.params.txnId,
        request.body.reason,
      ),
  );

  // GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
  app.get(
    `${V3}/rooms/:roomId/event/:eventId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: RoomId, eventId: Type.String({ minLength: 1, maxLength: 255 }) }),
      },
    },
    async (request) => rooms.getEvent(request.session, request.params.roomId, request.params.eventId),
  );

  // GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
  app.get(
    `${V3}/rooms/:roomId/context/:eventId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: RoomId, eventId: Type.String({ minLength: 1, maxLength: 255 }) }),
        querystring: Type.Object({
          limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
          filter: Type.Optional(Type.String({ maxLength: 8192 })),
        }),
      },
    },
    async (request) => {
      const { matches, lazyLoadMembers } = eventFilterOf(request.query.filter);
      return history.context(
        request.session,
        request.params.roomId,
        request.params.eventId,
        request.query.limit ?? 10,
        matches,
        lazyLoadMembers,
      );
    },
  );

  // GET /_matrix/client/v3/rooms/{roomId}/messages
  app.get(
    `${V3}/rooms/:roomId/messages`,
    {
      onRequest: requireAuth,
      schema: {
        params: RoomParams,
        querystring: Type.Object({
          from: Type.Optional(Type.String({ maxLength: 64 })),
          to: Type.Optional(Type.String({ maxLength: 64 })),
          dir: Type.Optional(Type.Union([Type.Literal('b'), Type.Literal('f')])),
          limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
          filter: Type.Optional(Type.String({ maxLength: 8192 })),
        }),
      },
    },
    async (request) => {
      const q = request.query;
      const { matches, lazyLoadMembers } = eventFilterOf(q.filter);
      return history.messages(request.session, request.params.roomId, {
        ...(matches ? { matches } : {}),
        lazyLoadMembers,
        dir: q.dir ?? 'b',
        ...(q.from !== undefined ? { from: q.from } : {}),
        ...(q.to !== undefined ? { to: q.to } : {}),
        ...(q.limit !== undefined ? { limit: q.limit } : {}),
      });
    },
  );
}

/**
 * The `filter` parameter (a RoomEventFilter) of /messages and /context: a matcher for the events
 * it keeps, and whether it asks for lazily loaded members.
 */
function eventFilterOf(raw: string | undefined): {
  matches: ((row: EventRow) => boolean) | undefined;
  lazyLoadMembers: boolean;
} {
  const filter = parseRoomEventFilter(raw);
  if (!filter) return { matches: undefined, lazyLoadMembers: false };
  return {
    matches: (row) =>
      eventMatchesFilter(filter, {
        type: row.type,
        sender: row.sender,
        room_id: row.room_id,
        content: row.json.content,
      }),
    lazyLoadMembers: filter.lazy_load_members === true,
  };
}

/** The optional `reason` of a membership request body, whose body may be absent. */
/** Keys of a join body that are not the member event's content (or that the server sets). */
const NOT_MEMBER_CONTENT = new Set([
  'membership',
  'third_party_signed',
  'join_authorised_via_users_server',
  'server_name',
  'via',
]);

/**
 * The member event content a join body asks for: its `reason` and any other fields the client
 * adds (clients put custom fields in their own member event, as they could with PUT state).
 */
function joinContentOf(body: unknown): JsonObject {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return {};
  const content: JsonObject = {};
  for (const [key, value] of Object.entries(body as JsonObject)) {
    if (!NOT_MEMBER_CONTENT.has(key)) content[key] = value;
  }
  const reason = reasonOf(body);
  if (reason === undefined) delete content.reason;
  else content.reason = reason;
  return content;
}

function reasonOf(body: unknown): string | undefined {
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    const reason = (body as Record<string, unknown>).reason;
    if (typeof reason === 'string') return reason.slice(0, 1024);
  }
  return undefined;
}
