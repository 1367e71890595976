import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import type { PublicRoomsQuery } from '../../services/directory.service.ts';
import { V3 } from './schemas.ts';

// Identifiers are checked against their grammar by the service, so a bad one is M_INVALID_PARAM.
const AliasParams = Type.Object({ roomAlias: Type.String({ minLength: 1, maxLength: 255 }) });
const RoomParams = Type.Object({ roomId: Type.String({ minLength: 2, maxLength: 255, pattern: '^!' }) });
const Visibility = Type.Union([Type.Literal('public'), Type.Literal('private')]);
const Limit = Type.Optional(Type.Integer({ minimum: 1 }));
const Since = Type.Optional(Type.String({ maxLength: 1024 }));
const Server = Type.Optional(Type.String({ minLength: 1, maxLength: 255 }));

/** Room aliases and the published room directory. */
export async function directoryRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { directory } = app.services;

  // PUT /_matrix/client/v3/directory/room/{roomAlias}
  app.put(
    `${V3}/directory/room/:roomAlias`,
    {
      onRequest: requireAuth,
      schema: {
        params: AliasParams,
        body: Type.Object({ room_id: Type.String({ minLength: 1, maxLength: 255 }) }),
      },
    },
    async (request) => {
      await directory.createAlias(request.session, request.params.roomAlias, request.body.room_id);
      return {};
    },
  );

  // GET /_matrix/client/v3/directory/room/{roomAlias} (no token needed)
  app.get(`${V3}/directory/room/:roomAlias`, { schema: { params: AliasParams } }, async (request) =>
    directory.resolveAlias(request.params.roomAlias, { remote: true }),
  );

  // DELETE /_matrix/client/v3/directory/room/{roomAlias}
  app.delete(
    `${V3}/directory/room/:roomAlias`,
    { onRequest: requireAuth, schema: { params: AliasParams } },
    async (request) => {
      await directory.deleteAlias(request.session, request.params.roomAlias);
      return {};
    },
  );

  // GET /_matrix/client/v3/rooms/{roomId}/aliases
  app.get(
    `${V3}/rooms/:roomId/aliases`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => directory.localAliases(request.session, request.params.roomId),
  );

  // GET /_matrix/client/v3/directory/list/room/{roomId} (no token needed)
  app.get(`${V3}/directory/list/room/:roomId`, { schema: { params: RoomParams } }, async (request) =>
    directory.getVisibility(request.params.roomId),
  );

  // PUT /_matrix/client/v3/directory/list/room/{roomId}
  app.put(
    `${V3}/directory/list/room/:roomId`,
    {
      onRequest: requireAuth,
      schema: { params: RoomParams, body: Type.Object({ visibility: Type.Optional(Visibility) }) },
    },
    async (request) => {
      await directory.setVisibility(
        request.session,
        request.params.roomId,
        request.body.visibility ?? 'public',
      );
      return {};
    },
  );

  // GET /_matrix/client/v3/publicRooms (no token needed)
  app.get(
    `${V3}/publicRooms`,
    {
      schema: {
        querystring: Type.Object({ limit: Limit, since: Since, server: Server }),
      },
    },
    async (request) => {
      const { limit, since, server } = request.query;
      return directory.publicRooms({
        ...(limit !== undefined ? { limit } : {}),
        ...(since !== undefined ? { since } : {}),
        ...(server !== undefined ? { server } : {}),
      });
    },
  );

  // POST /_matrix/client/v3/publicRooms
  app.post(
    `${V3}/publicRooms`,
    {
      onRequest: requireAuth,
      schema: {
        querystring: Type.Object({ server: Server }),
        body: Type.Object({
          limit: Limit,
          since: Since,
          filter: Type.Optional(
            Type.Object({
              generic_search_term: Type.Optional(Type.String({ maxLength: 1024 })),
              room_types: Type.Optional(
                Type.Array(Type.Union([Type.String({ maxLength: 255 }), Type.Null()]), { maxItems: 100 }),
              ),
            }),
          ),
          include_all_networks: Type.Optional(Type.Boolean()),
          third_party_instance_id: Type.Optional(Type.String({ maxLength: 255 })),
        }),
      },
    },
    async (request) => {
      const query: PublicRoomsQuery = { ...(request.body as PublicRoomsQuery) };
      if (request.query.server !== undefined) query.server = request.query.server;
      return directory.publicRooms(query);
    },
  );
}
