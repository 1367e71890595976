import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { isValidRoomAlias, parseUserId } from '../../protocol/identifiers.ts';

const V1 = '/_matrix/federation/v1';

/** Queries another server answers about its own users and aliases (server-server: Querying for information). */
export async function queryRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { profile, directory, config } = app.services;

  // GET /_matrix/federation/v1/query/profile
  app.get(
    `${V1}/query/profile`,
    {
      schema: {
        querystring: Type.Object({
          user_id: Type.String({ maxLength: 255 }),
          field: Type.Optional(Type.String({ maxLength: 255 })),
        }),
      },
    },
    async (request) => {
      const { user_id: userId, field } = request.query;
      const parsed = parseUserId(userId);
      if (!parsed) throw errors.invalidParam('user_id is not a valid user ID');
      if (parsed.serverName !== config.serverName) {
        throw errors.invalidParam(`${userId} is not a user of this server`);
      }
      const found: Record<string, string | undefined> = await profile.getProfile(userId);
      if (field === undefined) return found;
      const value = Object.hasOwn(found, field) ? found[field] : undefined;
      if (value === undefined) throw errors.notFound(`The user has no ${field}`);
      return { [field]: value };
    },
  );

  // GET /_matrix/federation/v1/query/directory
  app.get(
    `${V1}/query/directory`,
    { schema: { querystring: Type.Object({ room_alias: Type.String({ maxLength: 255 }) }) } },
    async (request) => {
      const alias = request.query.room_alias;
      if (!isValidRoomAlias(alias)) throw errors.invalidParam('room_alias is not a valid room alias');
      return directory.resolveAlias(alias);
    },
  );
}
