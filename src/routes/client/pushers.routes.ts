import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { AnyObject, V3 } from './schemas.ts';

/** Pushers and notifications (spec/push.md). */
export async function pushersRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { push } = app.services;

  // GET /_matrix/client/v3/pushers
  app.get(`${V3}/pushers`, { onRequest: requireAuth }, async (request) => push.pushers(request.session));

  // POST /_matrix/client/v3/pushers/set
  app.post(
    `${V3}/pushers/set`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          pushkey: Type.String({ minLength: 1 }),
          kind: Type.Union([Type.String(), Type.Null()]),
          app_id: Type.String({ minLength: 1 }),
          app_display_name: Type.Optional(Type.String({ maxLength: 256 })),
          device_display_name: Type.Optional(Type.String({ maxLength: 256 })),
          profile_tag: Type.Optional(Type.String({ maxLength: 256 })),
          lang: Type.Optional(Type.String({ maxLength: 64 })),
          data: Type.Optional(AnyObject),
          append: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request) => {
      const b = request.body;
      await push.setPusher(request.session, { ...b, data: b.data as JsonObject | undefined });
      return {};
    },
  );

  // GET /_matrix/client/v3/notifications
  app.get(
    `${V3}/notifications`,
    {
      onRequest: requireAuth,
      schema: {
        querystring: Type.Object({
          from: Type.Optional(Type.String({ maxLength: 64 })),
          limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
          only: Type.Optional(Type.String({ maxLength: 64 })),
        }),
      },
    },
    async (request) => push.notifications(request.session, request.query),
  );
}
