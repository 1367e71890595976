import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { isValidServerName } from '../../protocol/identifiers.ts';
import type { JsonObject } from '../../protocol/json.ts';

/** A notary query may ask for this many servers at once. */
export const MAX_NOTARY_SERVERS = 100;

const Timestamp = Type.Integer({ minimum: 0, maximum: 9007199254740991 });

/** Publishing this server's keys and acting as a notary for others' (server-server API: Retrieving server keys). */
export async function keysRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { serverKeys } = app.services;
  const { keyRing, directFetchers } = app.federation;

  /** The responses for one server, each signed by us as well. */
  const notarise = async (serverName: string, minimumValidUntilTs: number): Promise<JsonObject[]> => {
    if (serverName === serverKeys.serverName) return [await serverKeys.publishedKeys()];
    const responses = await keyRing.keyResponsesFor(serverName, minimumValidUntilTs, directFetchers);
    return responses.map((r) => serverKeys.sign(r));
  };

  // GET /_matrix/key/v2/server
  app.get('/_matrix/key/v2/server', async () => serverKeys.publishedKeys());

  // GET /_matrix/key/v2/query/{serverName}
  app.get(
    '/_matrix/key/v2/query/:serverName',
    {
      schema: {
        params: Type.Object({ serverName: Type.String({ maxLength: 255 }) }),
        querystring: Type.Object({ minimum_valid_until_ts: Type.Optional(Timestamp) }),
      },
    },
    async (request) => {
      const { serverName } = request.params;
      if (!isValidServerName(serverName)) throw errors.invalidParam('Not a valid server name');
      return { server_keys: await notarise(serverName, request.query.minimum_valid_until_ts ?? Date.now()) };
    },
  );

  // POST /_matrix/key/v2/query
  app.post(
    '/_matrix/key/v2/query',
    {
      schema: {
        body: Type.Object({
          server_keys: Type.Record(
            Type.String(),
            Type.Record(Type.String(), Type.Object({ minimum_valid_until_ts: Type.Optional(Timestamp) })),
          ),
        }),
      },
    },
    async (request) => {
      const wanted = Object.entries(request.body.server_keys);
      if (wanted.length > MAX_NOTARY_SERVERS) {
        throw errors.invalidParam(`At most ${MAX_NOTARY_SERVERS} servers can be queried at once`);
      }
      for (const [serverName] of wanted) {
        if (!isValidServerName(serverName))
          throw errors.invalidParam(`${serverName} is not a valid server name`);
      }
      const now = Date.now();
      const results = await Promise.all(
        wanted.map(([serverName, criteria]) => {
          const asked = Object.values(criteria).map((c) => c.minimum_valid_until_ts ?? now);
          return notarise(serverName, asked.length > 0 ? Math.max(...asked) : now);
        }),
      );
      return { server_keys: results.flat() };
    },
  );
}
