import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { ROOM_ORDER } from '../../storage/admin.repository.ts';
import {
  ADMIN_V1,
  ADMIN_V2,
  actorOf,
  boolField,
  Dir,
  From,
  Limit,
  optionalBody,
  RoomIdParam,
} from './common.ts';

const RoomParams = Type.Object({ roomId: RoomIdParam });

/** Synapse's admin API for rooms (spec/admin.md). */
export async function adminRoomsRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { rooms } = app.services.admin;

  // GET /_synapse/admin/v1/rooms
  app.get(
    `${ADMIN_V1}/rooms`,
    {
      schema: {
        querystring: Type.Object({
          from: From,
          limit: Limit,
          order_by: Type.Optional(Type.Union(ROOM_ORDER.map((o) => Type.Literal(o)))),
          dir: Dir,
          search_term: Type.Optional(Type.String({ maxLength: 255 })),
        }),
      },
    },
    async (request) => {
      const q = request.query;
      return rooms.list({
        ...(q.search_term !== undefined && q.search_term !== '' ? { searchTerm: q.search_term } : {}),
        from: q.from ?? 0,
        limit: q.limit ?? 100,
        orderBy: q.order_by ?? 'name',
        dir: q.dir ?? 'f',
      });
    },
  );

  // GET /_synapse/admin/v1/rooms/{roomId}
  app.get(`${ADMIN_V1}/rooms/:roomId`, { schema: { params: RoomParams } }, async (request) =>
    rooms.details(request.params.roomId),
  );

  // GET /_synapse/admin/v1/rooms/{roomId}/members
  app.get(`${ADMIN_V1}/rooms/:roomId/members`, { schema: { params: RoomParams } }, async (request) =>
    rooms.members(request.params.roomId),
  );

  // GET /_synapse/admin/v1/rooms/{roomId}/state
  app.get(`${ADMIN_V1}/rooms/:roomId/state`, { schema: { params: RoomParams } }, async (request) =>
    rooms.state(request.params.roomId),
  );

  // GET /_synapse/admin/v1/rooms/{roomId}/messages
  app.get(
    `${ADMIN_V1}/rooms/:roomId/messages`,
    {
      schema: {
        params: RoomParams,
        querystring: Type.Object({
          from: Type.Optional(Type.String({ maxLength: 64 })),
          to: Type.Optional(Type.String({ maxLength: 64 })),
          dir: Dir,
          limit: Limit,
        }),
      },
    },
    async (request) => {
      const q = request.query;
      return rooms.messages(request.params.roomId, {
        ...(q.from !== undefined ? { from: q.from } : {}),
        ...(q.to !== undefined ? { to: q.to } : {}),
        dir: q.dir ?? 'b',
        ...(q.limit !== undefined ? { limit: q.limit } : {}),
      });
    },
  );

  // GET /_synapse/admin/v1/rooms/{roomId}/block
  app.get(`${ADMIN_V1}/rooms/:roomId/block`, { schema: { params: RoomParams } }, async (request) =>
    rooms.getBlock(request.params.roomId),
  );

  // PUT /_synapse/admin/v1/rooms/{roomId}/block
  app.put(
    `${ADMIN_V1}/rooms/:roomId/block`,
    { schema: { params: RoomParams, body: Type.Object({ block: Type.Boolean() }) } },
    async (request) => rooms.block(actorOf(request), request.params.roomId, request.body.block),
  );

  const deleteOptions = (body: unknown) => {
    const b = optionalBody(body);
    if (b.message !== undefined && (typeof b.message !== 'string' || b.message.length > 1000))
      throw errors.badJson('message must be a string of at most 1000 characters');
    return {
      block: boolField(b, 'block', false),
      purge: boolField(b, 'purge', true),
      ...(typeof b.message === 'string' ? { message: b.message } : {}),
    };
  };

  // DELETE /_synapse/admin/v2/rooms/{roomId}: done before answering; the delete_id names the audit entry.
  app.delete(`${ADMIN_V2}/rooms/:roomId`, { schema: { params: RoomParams } }, async (request) => {
    const result = await rooms.deleteRoom(
      actorOf(request),
      request.params.roomId,
      deleteOptions(request.body),
    );
    return { delete_id: result.deleteId };
  });

  // DELETE /_synapse/admin/v1/rooms/{roomId}
  app.delete(`${ADMIN_V1}/rooms/:roomId`, { schema: { params: RoomParams } }, async (request) => {
    const result = await rooms.deleteRoom(
      actorOf(request),
      request.params.roomId,
      deleteOptions(request.body),
    );
    return {
      kicked_users: result.kicked_users,
      failed_to_kick_users: result.failed_to_kick_users,
      local_aliases: result.local_aliases,
      new_room_id: result.new_room_id,
    };
  });

  // POST /_synapse/admin/v1/rooms/{roomId}/make_room_admin
  app.post(
    `${ADMIN_V1}/rooms/:roomId/make_room_admin`,
    { schema: { params: RoomParams } },
    async (request) => {
      const b = optionalBody(request.body);
      if (b.user_id !== undefined && (typeof b.user_id !== 'string' || b.user_id.length > 255))
        throw errors.badJson('user_id must be a user ID');
      const userId = typeof b.user_id === 'string' ? b.user_id : request.session.userId;
      return rooms.makeRoomAdmin(actorOf(request), request.params.roomId, userId);
    },
  );
}
