import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { isValidEventId, isValidRoomId, isValidUserId } from '../../protocol/identifiers.ts';
import type { JsonObject } from '../../protocol/json.ts';

const V1 = '/_matrix/federation/v1';
const V2 = '/_matrix/federation/v2';
const Id = Type.String({ minLength: 1, maxLength: 255 });
const AnyObject = Type.Object({}, { additionalProperties: true });

/**
 * Rooms over federation (server-server API: Transactions, Joining Rooms, Leaving Rooms,
 * Retrieving events, Backfilling). Every route sits behind the X-Matrix check (request.origin).
 */
export async function roomsRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { federationRooms: fed, sender, outOfBand } = app.services;
  const room = (roomId: string) => {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    return roomId;
  };
  const eventId = (id: string) => {
    if (!isValidEventId(id)) throw errors.invalidParam('Not a valid event ID');
    return id;
  };
  // A server that talks to us is up: whatever we owe it goes now.
  app.addHook('preHandler', async (request) => {
    if (request.origin) sender.wake(request.origin, { resetBackoff: true });
  });
  // Every route of a room (make_*, send_*, invite, state, state_ids, event_auth, backfill,
  // get_missing_events) is shut to a server the room's ACL denies; /send checks it per PDU.
  app.addHook('preHandler', async (request) => {
    const roomId = (request.params as { roomId?: unknown }).roomId;
    if (typeof roomId === 'string' && isValidRoomId(roomId)) await fed.requireAllowed(roomId, request.origin);
  });

  // PUT /_matrix/federation/v1/send/{txnId}
  app.put(
    `${V1}/send/:txnId`,
    {
      schema: {
        params: Type.Object({ txnId: Id }),
        body: Type.Object(
          {
            origin: Type.Optional(Type.String({ maxLength: 255 })),
            origin_server_ts: Type.Optional(Type.Integer()),
            pdus: Type.Array(AnyObject),
            // Checked one by one: a malformed EDU is dropped, not the transaction.
            edus: Type.Optional(Type.Array(Type.Unknown())),
          },
          { additionalProperties: true },
        ),
      },
    },
    async (request) =>
      fed.receiveTransaction(request.origin, request.params.txnId, request.body as JsonObject),
  );

  for (const membership of ['join', 'leave', 'knock'] as const) {
    // GET /_matrix/federation/v1/make_{join,leave,knock}/{roomId}/{userId}
    app.get(
      `${V1}/make_${membership}/:roomId/:userId`,
      {
        schema: {
          params: Type.Object({ roomId: Id, userId: Id }),
          querystring: Type.Object({
            ver: Type.Optional(Type.Array(Type.String({ maxLength: 32 }), { maxItems: 64 })),
          }),
        },
      },
      async (request) => {
        const { roomId, userId } = request.params;
        if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
        // A remote user the ban lists name may not join or knock (their server is refused earlier).
        if (membership !== 'leave') await app.services.policy.checkJoin(userId, room(roomId));
        return fed.makeMembership(
          request.origin,
          room(roomId),
          userId,
          membership,
          request.query.ver ?? ['1'],
        );
      },
    );
    // PUT /_matrix/federation/v2/send_{join,leave} and v1/send_knock; the deprecated
    // v1/send_{join,leave} give the same answer as [200, answer], as older servers expect.
    const versions = membership === 'knock' ? [V1] : [V2, V1];
    for (const version of versions) {
      const wrap = membership !== 'knock' && version === V1;
      app.put(
        `${version}/send_${membership}/:roomId/:eventId`,
        { schema: { params: Type.Object({ roomId: Id, eventId: Id }), body: AnyObject } },
        async (request) => {
          const answer = await fed.sendMembership(
            request.origin,
            room(request.params.roomId),
            eventId(request.params.eventId),
            membership,
            request.body as JsonObject,
          );
          return wrap ? [200, answer] : answer;
        },
      );
    }
  }

  // PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
  app.put(
    `${V2}/invite/:roomId/:eventId`,
    {
      schema: {
        params: Type.Object({ roomId: Id, eventId: Id }),
        body: Type.Object(
          {
            event: AnyObject,
            room_version: Type.String({ maxLength: 32 }),
            invite_room_state: Type.Optional(Type.Array(AnyObject, { maxItems: 200 })),
          },
          { additionalProperties: true },
        ),
      },
    },
    async (request) =>
      outOfBand.receiveInvite(
        request.origin,
        room(request.params.roomId),
        eventId(request.params.eventId),
        request.body as JsonObject,
      ),
  );

  // GET /_matrix/federation/v1/event/{eventId}
  app.get(`${V1}/event/:eventId`, { schema: { params: Type.Object({ eventId: Id }) } }, async (request) =>
    fed.getEvent(request.origin, eventId(request.params.eventId)),
  );

  for (const kind of ['state', 'state_ids'] as const) {
    // GET /_matrix/federation/v1/state/{roomId} and /state_ids/{roomId}
    app.get(
      `${V1}/${kind}/:roomId`,
      { schema: { params: Type.Object({ roomId: Id }), querystring: Type.Object({ event_id: Id }) } },
      async (request) =>
        fed.stateAt(
          request.origin,
          room(request.params.roomId),
          eventId(request.query.event_id),
          kind === 'state',
        ),
    );
  }

  // GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
  app.get(
    `${V1}/event_auth/:roomId/:eventId`,
    { schema: { params: Type.Object({ roomId: Id, eventId: Id }) } },
    async (request) =>
      fed.eventAuth(request.origin, room(request.params.roomId), eventId(request.params.eventId)),
  );

  // GET /_matrix/federation/v1/backfill/{roomId}
  app.get(
    `${V1}/backfill/:roomId`,
    {
      schema: {
        params: Type.Object({ roomId: Id }),
        querystring: Type.Object({
          v: Type.Array(Id, { minItems: 1, maxItems: 20 }),
          limit: Type.Integer({ minimum: 0 }),
        }),
      },
    },
    async (request) =>
      fed.backfill(
        request.origin,
        room(request.params.roomId),
        request.query.v.map(eventId),
        request.query.limit,
      ),
  );

  // POST /_matrix/federation/v1/get_missing_events/{roomId}
  app.post(
    `${V1}/get_missing_events/:roomId`,
    {
      schema: {
        params: Type.Object({ roomId: Id }),
        body: Type.Object({
          earliest_events: Type.Array(Id, { maxItems: 20 }),
          latest_events: Type.Array(Id, { maxItems: 20 }),
          limit: Type.Optional(Type.Integer({ minimum: 0 })),
          min_depth: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      },
    },
    async (request) => {
      const b = request.body;
      return fed.missingEvents(
        request.origin,
        room(request.params.roomId),
        b.earliest_events,
        b.latest_events,
        b.limit ?? 10,
        b.min_depth ?? 0,
      );
    },
  );
}
