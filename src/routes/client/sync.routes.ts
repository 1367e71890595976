import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { requireAuth } from '../../http/auth.ts';
import { DEFAULT_TIMELINE_LIMIT, type SyncFilter } from '../../services/sync.service.ts';
import { V3 } from './schemas.ts';

/** /sync (long-poll), typing, receipts and read markers. */
/** Why a waiting sync stops early: its client went away. */
const CLIENT_GONE = new Error('the client closed the request');

export async function syncRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { sync, typing, receipts, rooms, presence } = app.services;

  // GET /_matrix/client/v3/sync
  app.get(
    `${V3}/sync`,
    {
      onRequest: requireAuth,
      schema: {
        querystring: Type.Object({
          since: Type.Optional(Type.String({ maxLength: 64 })),
          timeout: Type.Optional(Type.Integer({ minimum: 0 })),
          full_state: Type.Optional(Type.Boolean()),
          filter: Type.Optional(Type.String({ maxLength: 8192 })),
          set_presence: Type.Optional(
            Type.Union([Type.Literal('online'), Type.Literal('offline'), Type.Literal('unavailable')]),
          ),
          use_state_after: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request) => {
      const q = request.query;
      const filter: SyncFilter = {
        ...(await syncFilterFor(app, request.session.userId, q.filter)),
        ...(q.use_state_after ? { useStateAfter: true } : {}),
      };
      // Stop waiting when the client goes away. (The request's 'close' also fires after every
      // normal answer; a given reason spares building a DOMException each time.)
      // Using /sync is activity: online, unless set_presence says otherwise.
      await presence
        .activity(request.session.userId, q.set_presence)
        .catch((err: unknown) => request.log.warn({ err }, 'presence update failed'));
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort(CLIENT_GONE));
      return sync.sync(request.session, {
        ...(q.since !== undefined ? { since: q.since } : {}),
        timeoutMs: q.timeout ?? 0,
        fullState: q.full_state ?? false,
        filter,
        signal: abort.signal,
      });
    },
  );

  // PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
  app.put(
    `${V3}/rooms/:roomId/typing/:userId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({
          roomId: Type.String({ maxLength: 255 }),
          userId: Type.String({ maxLength: 255 }),
        }),
        body: Type.Object({ typing: Type.Boolean(), timeout: Type.Optional(Type.Integer({ minimum: 0 })) }),
      },
    },
    async (request) => {
      if (request.params.userId !== request.session.userId)
        throw errors.forbidden('You can only set your own typing state');
      if ((await rooms.membership(request.params.roomId, request.session.userId)) !== 'join') {
        throw errors.forbidden('You are not joined to this room');
      }
      await typing.setTyping(
        request.params.roomId,
        request.session.userId,
        request.body.typing,
        request.body.timeout ?? 30_000,
      );
      return {};
    },
  );

  // POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
  app.post(
    `${V3}/rooms/:roomId/receipt/:receiptType/:eventId`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({
          roomId: Type.String({ maxLength: 255 }),
          receiptType: Type.String({ maxLength: 64 }),
          eventId: Type.String({ minLength: 1, maxLength: 255 }),
        }),
      },
    },
    async (request) => {
      const body = request.body;
      const threadId =
        body && typeof body === 'object' && typeof (body as Record<string, unknown>).thread_id === 'string'
          ? String((body as Record<string, unknown>).thread_id)
          : 'main';
      await receipts.setReceipt(
        request.session,
        request.params.roomId,
        request.params.receiptType,
        request.params.eventId,
        threadId,
      );
      return {};
    },
  );

  // POST /_matrix/client/v3/rooms/{roomId}/read_markers
  app.post(
    `${V3}/rooms/:roomId/read_markers`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: Type.String({ maxLength: 255 }) }),
        body: Type.Object({
          'm.fully_read': Type.Optional(Type.String({ maxLength: 255 })),
          'm.read': Type.Optional(Type.String({ maxLength: 255 })),
          'm.read.private': Type.Optional(Type.String({ maxLength: 255 })),
        }),
      },
    },
    async (request) => {
      await receipts.setReadMarkers(request.session, request.params.roomId, request.body);
      return {};
    },
  );
}

/** The sync filter from the `filter` parameter (an ID or inline JSON), defaults otherwise. */
async function syncFilterFor(
  app: FastifyInstance,
  userId: string,
  raw: string | undefined,
): Promise<SyncFilter> {
  const fromService = (
    app.services as unknown as { filters?: { syncFilter?: (u: string, r?: string) => Promise<SyncFilter> } }
  ).filters?.syncFilter;
  if (fromService) return fromService.call(app.services.filters, userId, raw);
  return { timelineLimit: DEFAULT_TIMELINE_LIMIT };
}
