import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import { V3 } from './schemas.ts';

const Presence = Type.Union([Type.Literal('online'), Type.Literal('offline'), Type.Literal('unavailable')]);
const Params = Type.Object({ userId: Type.String({ minLength: 1, maxLength: 255 }) });

/** Presence of this server's users (spec/presence.md). */
export async function presenceRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { presence } = app.services;

  // GET /_matrix/client/v3/presence/{userId}/status
  app.get(
    `${V3}/presence/:userId/status`,
    { onRequest: requireAuth, schema: { params: Params } },
    async (request) => presence.getStatus(request.session.userId, request.params.userId),
  );

  // PUT /_matrix/client/v3/presence/{userId}/status
  app.put(
    `${V3}/presence/:userId/status`,
    {
      onRequest: requireAuth,
      schema: {
        params: Params,
        body: Type.Object({
          presence: Presence,
          status_msg: Type.Optional(Type.String({ maxLength: 2048 })),
        }),
      },
    },
    async (request) => {
      await presence.setStatus(
        request.session.userId,
        request.params.userId,
        request.body.presence,
        request.body.status_msg,
      );
      return {};
    },
  );
}
