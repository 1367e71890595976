import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';

const RoomParams = Type.Object({ roomId: Type.String({ minLength: 2, maxLength: 255, pattern: '^!' }) });

/** Retention: the effective policy of a room (spec/retention.md). */
export async function retentionRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { retention } = app.services;

  // GET /_conclave/client/v1/rooms/{roomId}/retention
  app.get(
    '/_conclave/client/v1/rooms/:roomId/retention',
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) => retention.clientPolicy(request.session, request.params.roomId),
  );
}
