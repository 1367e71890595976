import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { parseUserId } from '../../protocol/identifiers.ts';

const V1 = '/_matrix/federation/v1';

/**
 * What another server asks of this server's users' end-to-end keys (server-server API: Device
 * Management, End-to-End Encryption). Only users of this server are answered: the list of a
 * user of another server is a 400; in the key query and claim such users are left out.
 */
export async function userKeysRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { keys, config } = app.services;

  // GET /_matrix/federation/v1/user/devices/{userId}
  app.get(
    `${V1}/user/devices/:userId`,
    { schema: { params: Type.Object({ userId: Type.String({ minLength: 1, maxLength: 255 }) }) } },
    async (request) => {
      const { userId } = request.params;
      const parsed = parseUserId(userId);
      if (!parsed) throw errors.invalidParam('userId is not a valid user ID');
      if (parsed.serverName !== config.serverName) {
        throw errors.invalidParam(`${userId} is not a user of this server`);
      }
      return keys.userDevices(userId);
    },
  );

  // POST /_matrix/federation/v1/user/keys/query
  app.post(
    `${V1}/user/keys/query`,
    {
      schema: {
        body: Type.Object({
          device_keys: Type.Record(
            Type.String({ maxLength: 255 }),
            Type.Array(Type.String({ maxLength: 255 })),
          ),
        }),
      },
    },
    async (request) => keys.federationQuery(request.body.device_keys),
  );

  // POST /_matrix/federation/v1/user/keys/claim
  app.post(
    `${V1}/user/keys/claim`,
    {
      schema: {
        body: Type.Object({
          one_time_keys: Type.Record(
            Type.String({ maxLength: 255 }),
            Type.Record(Type.String({ maxLength: 255 }), Type.String({ maxLength: 255 })),
          ),
        }),
      },
    },
    async (request) => keys.federationClaim(request.body.one_time_keys),
  );
}
