import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import { V3 } from './schemas.ts';

/** The user directory (spec/user-directory.md). */
export async function userDirectoryRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { userDirectory } = app.services;

  // POST /_matrix/client/v3/user_directory/search
  app.post(
    `${V3}/user_directory/search`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          search_term: Type.String({ maxLength: 256 }),
          limit: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      },
    },
    async (request) =>
      userDirectory.search(request.session.userId, request.body.search_term, request.body.limit ?? 10),
  );
}
