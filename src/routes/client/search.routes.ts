import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import { RoomEventFilterSchema } from '../../services/filters.service.ts';
import type { RoomEventsCriteria } from '../../services/search.service.ts';
import { V3 } from './schemas.ts';

const Limit = Type.Integer({ minimum: 0 });

const RoomEvents = Type.Object({
  search_term: Type.String({ maxLength: 512 }),
  keys: Type.Optional(
    Type.Array(
      Type.Union([Type.Literal('content.body'), Type.Literal('content.name'), Type.Literal('content.topic')]),
      { maxItems: 3 },
    ),
  ),
  filter: Type.Optional(RoomEventFilterSchema),
  order_by: Type.Optional(Type.Union([Type.Literal('recent'), Type.Literal('rank')])),
  event_context: Type.Optional(
    Type.Object({
      before_limit: Type.Optional(Limit),
      after_limit: Type.Optional(Limit),
      include_profile: Type.Optional(Type.Boolean()),
    }),
  ),
  include_state: Type.Optional(Type.Boolean()),
  groupings: Type.Optional(
    Type.Object({
      group_by: Type.Optional(
        Type.Array(Type.Object({ key: Type.Union([Type.Literal('room_id'), Type.Literal('sender')]) }), {
          maxItems: 2,
        }),
      ),
    }),
  ),
});

/** Server-side search (spec/search.md). */
export async function searchRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { search } = app.services;

  // POST /_matrix/client/v3/search
  app.post(
    `${V3}/search`,
    {
      onRequest: requireAuth,
      schema: {
        querystring: Type.Object({ next_batch: Type.Optional(Type.String({ maxLength: 512 })) }),
        body: Type.Object({ search_categories: Type.Object({ room_events: Type.Optional(RoomEvents) }) }),
      },
    },
    async (request) =>
      search.search(
        request.session,
        request.body as { search_categories: { room_events?: RoomEventsCriteria } },
        request.query.next_batch,
      ),
  );
}
