import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import { V1 } from './schemas.ts';

const Id = Type.String({ minLength: 1, maxLength: 255 });
const Token = Type.String({ maxLength: 64 });
const Query = Type.Object({
  from: Type.Optional(Token),
  to: Type.Optional(Token),
  limit: Type.Optional(Type.Integer({ minimum: 0 })),
  dir: Type.Optional(Type.Union([Type.Literal('b'), Type.Literal('f')])),
  recurse: Type.Optional(Type.Boolean()),
});

/** Relations and threads (spec/relations.md). */
export async function relationsRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { relations } = app.services;

  // GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}
  app.get(
    `${V1}/rooms/:roomId/relations/:eventId`,
    {
      onRequest: requireAuth,
      schema: { params: Type.Object({ roomId: Id, eventId: Id }), querystring: Query },
    },
    async (request) =>
      relations.relations(request.session, request.params.roomId, request.params.eventId, request.query),
  );

  // GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}
  app.get(
    `${V1}/rooms/:roomId/relations/:eventId/:relType`,
    {
      onRequest: requireAuth,
      schema: { params: Type.Object({ roomId: Id, eventId: Id, relType: Id }), querystring: Query },
    },
    async (request) =>
      relations.relations(request.session, request.params.roomId, request.params.eventId, {
        ...request.query,
        relType: request.params.relType,
      }),
  );

  // GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}
  app.get(
    `${V1}/rooms/:roomId/relations/:eventId/:relType/:eventType`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: Id, eventId: Id, relType: Id, eventType: Id }),
        querystring: Query,
      },
    },
    async (request) =>
      relations.relations(request.session, request.params.roomId, request.params.eventId, {
        ...request.query,
        relType: request.params.relType,
        eventType: request.params.eventType,
      }),
  );

  // GET /_matrix/client/v1/rooms/{roomId}/threads
  app.get(
    `${V1}/rooms/:roomId/threads`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: Id }),
        querystring: Type.Object({
          include: Type.Optional(Type.Union([Type.Literal('all'), Type.Literal('participated')])),
          from: Type.Optional(Token),
          limit: Type.Optional(Type.Integer({ minimum: 1 })),
        }),
      },
    },
    async (request) => relations.threads(request.session, request.params.roomId, request.query),
  );
}
