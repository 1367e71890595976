import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import websocket from '@fastify/websocket';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { WebSocket } from 'ws';
import { MatrixError } from '../../errors.ts';
import { accessTokenOf, refuseAccountState, requireAuth } from '../../http/auth.ts';
import { isEmptySync, parseSyncToken } from '../../services/sync.service.ts';

/** Our extension: sync over a WebSocket. Documented in spec/websocket.md. */
export const WS_SYNC_PATH = '/_conclave/client/v1/sync';

/** Close codes (4000-4999 are free for applications). */
export const WS_CLOSE = {
  /** The client read too slowly; reconnect with `since` = the last next_batch received. */
  SLOW_READER: 4008,
  /** The sync failed (e.g. a bad filter); the reason says why. */
  SYNC_ERROR: 4400,
  /** The access token stopped being valid (logout). */
  UNAUTHORIZED: 4401,
} as const;

/** How long each round waits for news before it checks the socket and waits again. */
const ROUND_MS = 30_000;

export async function syncWebSocketRoutes(fastify: FastifyInstance): Promise<void> {
  await fastify.register(websocket, { options: { maxPayload: 4096 } });
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  // GET /_conclave/client/v1/sync (WebSocket upgrade)
  app.route({
    method: 'GET',
    url: WS_SYNC_PATH,
    onRequest: requireAuth,
    schema: {
      querystring: Type.Object({
        since: Type.Optional(Type.String({ maxLength: 64 })),
        filter: Type.Optional(Type.String({ maxLength: 8192 })),
        access_token: Type.Optional(Type.String({ maxLength: 512 })),
      }),
    },
    wsHandler: openSocket(app),
    // A plain GET (no upgrade) gets a Matrix error saying what to do, not an empty 404.
    handler: async (_request, reply) =>
      reply.code(426).header('upgrade', 'websocket').send({
        errcode: 'M_UNRECOGNIZED',
        error: 'This endpoint is a WebSocket: send the request as a WebSocket upgrade',
      }),
  });
}

function openSocket(app: FastifyInstance) {
  const { sync, accounts, filters, config } = app.services;
  return (socket: WebSocket, request: FastifyRequest) => {
    const query = request.query as { since?: string; filter?: string };
    const session = request.session;
    // The token the upgrade was authenticated with, checked again each round.
    const token = accessTokenOf(request) ?? '';
    const abort = new AbortController();
    app.services.metrics.syncConnections.inc({ transport: 'websocket' });
    socket.on('close', () => {
      app.services.metrics.syncConnections.dec({ transport: 'websocket' });
      abort.abort();
    });
    socket.on('error', () => abort.abort());
    // The client may send {"type":"ping"}; anything else is ignored.
    socket.on('message', (data) => {
      try {
        const msg = JSON.parse(String(data)) as { type?: unknown };
        if (msg.type === 'ping') socket.send(JSON.stringify({ type: 'pong' }));
      } catch {
        // not JSON: ignore
      }
    });

    const run = async () => {
      let since = query.since;
      if (since !== undefined) parseSyncToken(since);
      const filter = await filters.syncFilter(session.userId, query.filter);
      while (!abort.signal.aborted) {
        // A logged-out token ends the socket, and so does a lock.
        refuseAccountState(await accounts.authenticateToken(token), 'GET', WS_SYNC_PATH);
        const response = await sync.sync(session, {
          ...(since !== undefined ? { since } : {}),
          timeoutMs: ROUND_MS,
          fullState: false,
          filter,
          signal: abort.signal,
        });
        if (abort.signal.aborted) break;
        if (response.next_batch === since) continue;
        const isEmpty = since !== undefined && isEmptySync(response);
        since = response.next_batch;
        if (isEmpty) continue;
        if (socket.bufferedAmount > config.wsMaxBufferedBytes) {
          app.services.metrics.slowReaderCloses.inc();
          socket.close(WS_CLOSE.SLOW_READER, 'slow reader: resume with since=<last next_batch>');
          return;
        }
        socket.send(JSON.stringify({ type: 'sync', ...response }));
      }
    };
    run().catch((err: unknown) => {
      if (socket.readyState !== socket.OPEN) return;
      if (err instanceof MatrixError && err.status === 401) socket.close(WS_CLOSE.UNAUTHORIZED, err.errcode);
      else if (err instanceof MatrixError)
        socket.close(WS_CLOSE.SYNC_ERROR, `${err.errcode}: ${err.message}`.slice(0, 120));
      else {
        request.log.error({ err }, 'websocket sync failed');
        socket.close(1011, 'internal error');
      }
    });
  };
}
