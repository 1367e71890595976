import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import { MAX_REASON_LENGTH } from '../../services/admin/reports.service.ts';
import { V3 } from './schemas.ts';

const RoomId = Type.String({ minLength: 1, maxLength: 255 });
const Reason = Type.Optional(Type.String({ maxLength: MAX_REASON_LENGTH }));

/** Reporting content to the server's admins (client-server API: Reporting content). */
export async function reportsRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { reports } = app.services.admin;

  // POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
  app.post(
    `${V3}/rooms/:roomId/report/:eventId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: RoomId, eventId: Type.String({ minLength: 1, maxLength: 255 }) }),
        body: Type.Object({
          reason: Reason,
          score: Type.Optional(Type.Integer({ minimum: -100, maximum: 0 })),
        }),
      },
    },
    async (request) =>
      reports.reportEvent(
        request.session,
        request.params.roomId,
        request.params.eventId,
        request.body.reason,
        request.body.score,
      ),
  );

  // POST /_matrix/client/v3/rooms/{roomId}/report
  app.post(
    `${V3}/rooms/:roomId/report`,
    {
      onRequest: requireAuth,
      schema: { params: Type.Object({ roomId: RoomId }), body: Type.Object({ reason: Reason }) },
    },
    async (request) => reports.reportRoom(request.session, request.params.roomId, request.body.reason),
  );

  // POST /_matrix/client/v3/users/{userId}/report
  app.post(
    `${V3}/users/:userId/report`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ userId: Type.String({ minLength: 1, maxLength: 255 }) }),
        body: Type.Object({ reason: Reason }),
      },
    },
    async (request) => reports.reportUser(request.session, request.params.userId, request.body.reason),
  );
}
