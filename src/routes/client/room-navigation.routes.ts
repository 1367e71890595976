import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { accessTokenOf, requireAuth } from '../../http/auth.ts';
import type { Session } from '../../services/accounts.service.ts';
import { V1 } from './schemas.ts';

const Id = Type.String({ minLength: 1, maxLength: 255 });
const SummaryQuery = Type.Object({
  via: Type.Optional(Type.Array(Type.String({ maxLength: 255 }), { maxItems: 50 })),
});

/** MSC3266's unstable prefix. */
const NHEKO = '/_matrix/client/unstable/im.nheko.summary';

/** onRequest: authenticates the request when it carries a token, and lets it through without one. */
async function optionalAuth(request: FastifyRequest): Promise<void> {
  if (accessTokenOf(request) !== undefined) await requireAuth(request);
}

/**
 * Finding one's way around rooms (spec/spaces.md): the event closest to a time, room
 * summaries and the space hierarchy.
 */
export async function roomNavigationRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { history, spaces } = app.services;

  // GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event
  app.get(
    `${V1}/rooms/:roomId/timestamp_to_event`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: Id }),
        querystring: Type.Object({
          ts: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
          dir: Type.Union([Type.Literal('b'), Type.Literal('f')]),
        }),
      },
    },
    async (request) =>
      history.timestampToEvent(request.session, request.params.roomId, request.query.ts, request.query.dir),
  );

  // GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
  // GET /_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}
  // GET /_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary
  for (const [path, unstable] of [
    [`${V1}/room_summary/:roomIdOrAlias`, false],
    [`${NHEKO}/summary/:roomIdOrAlias`, true],
    [`${NHEKO}/rooms/:roomIdOrAlias/summary`, true],
  ] as const) {
    app.get(
      path,
      {
        onRequest: optionalAuth,
        schema: { params: Type.Object({ roomIdOrAlias: Id }), querystring: SummaryQuery },
      },
      async (request) =>
        spaces.summary(request.session as Session | undefined, request.params.roomIdOrAlias, { unstable }),
    );
  }

  // GET /_matrix/client/v1/rooms/{roomId}/hierarchy
  app.get(
    `${V1}/rooms/:roomId/hierarchy`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: Id }),
        querystring: Type.Object({
          from: Type.Optional(Type.String({ maxLength: 512 })),
          limit: Type.Optional(Type.Integer({ minimum: 1 })),
          max_depth: Type.Optional(Type.Integer({ minimum: 0 })),
          suggested_only: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request) => spaces.hierarchy(request.session, request.params.roomId, request.query),
  );
}
