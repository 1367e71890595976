import http from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Metrics } from '../services/metrics.ts';
import { familyOf } from './rate-limits.ts';

const SYNC_ROUTE = 'GET /_matrix/client/v3/sync';

/**
 * Counts every request for GET /metrics (spec/detection.md): by method, route pattern (never the
 * raw URL, so label values stay few) and status, its latency, the 429s per endpoint family, and
 * the long-polls of /sync in flight.
 */
export function installMetrics(app: FastifyInstance, metrics: Metrics): void {
  const routeOf = (request: FastifyRequest) => request.routeOptions.url ?? 'unmatched';
  app.addHook('onRequest', async (request) => {
    if (`${request.method} ${routeOf(request)}` === SYNC_ROUTE)
      metrics.syncConnections.inc({ transport: 'long_poll' });
  });
  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = routeOf(request);
    if (`${request.method} ${route}` === SYNC_ROUTE) metrics.syncConnections.dec({ transport: 'long_poll' });
    metrics.requests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.latency.observe({ method: request.method, route }, reply.elapsedTime / 1000);
    if (request.errcode === 'M_LIMIT_EXCEEDED')
      metrics.rateLimited.inc({ family: familyOf(request.method, route) });
  });
}

/** GET /metrics on the main port (metrics_listen: main). */
export async function metricsRoute(app: FastifyInstance, metrics: Metrics): Promise<void> {
  // GET /metrics (Prometheus text exposition)
  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await metrics.exposition();
    return reply.type(contentType).send(body);
  });
}

/**
 * A listener of its own for GET /metrics (metrics_listen: <host>:<port>), so the figures can stay
 * on an internal address while the API faces the world. Anything but GET /metrics is 404.
 */
export async function listenForMetrics(metrics: Metrics, hostPort: string): Promise<http.Server> {
  const colon = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(hostPort.slice(colon + 1));
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errcode: 'M_UNRECOGNIZED', error: 'Only GET /metrics is served here' }));
      return;
    }
    metrics.exposition().then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType });
        res.end(body);
      },
      () => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errcode: 'M_UNKNOWN', error: 'Metrics could not be read' }));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, resolve);
  });
  return server;
}
