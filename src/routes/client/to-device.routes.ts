import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { AnyObject, V3 } from './schemas.ts';

const EventType = Type.String({ minLength: 1, maxLength: 255 });
const TxnId = Type.String({ minLength: 1, maxLength: 255 });

/** Send-to-device messaging. */
export async function toDeviceRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { toDevice } = app.services;

  // PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
  app.put(
    `${V3}/sendToDevice/:eventType/:txnId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ eventType: EventType, txnId: TxnId }),
        body: Type.Object({
          // Counts are checked by the service (413 M_TOO_LARGE, spec/limits.md).
          messages: Type.Record(Type.String(), Type.Record(Type.String(), AnyObject)),
        }),
      },
    },
    async (request) => {
      await toDevice.send(
        request.session,
        request.params.eventType,
        request.params.txnId,
        request.body.messages as Record<string, Record<string, JsonObject>>,
      );
      return {};
    },
  );
}
