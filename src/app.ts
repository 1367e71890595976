import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Ajv } from 'ajv';
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from 'fastify';
import { errors } from './errors.ts';
import { createFederation, type Federation } from './federation/index.ts';
import { federationRoutes } from './federation/routes/index.ts';
import { observeRequest } from './http/detection.ts';
import { CORS_HEADERS, frameworkErrors, installErrorHandling, redactQuery } from './http/errors.ts';
import { refuseControlCharactersInNames } from './http/input-checks.ts';
import { parseJsonBody } from './http/json-body.ts';
import { installMetrics, listenForMetrics, metricsRoute } from './http/metrics.ts';
import { aliasedUrl } from './http/path-aliases.ts';
import { limitRequestRate } from './http/rate-limits.ts';
import { webClientPlugin } from './http/web-client.ts';
import { adminRoutes } from './routes/admin/index.ts';
import { clientRoutes } from './routes/client/index.ts';
import type { Services } from './services/index.ts';

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
    /** The outbound client and key ring (src/federation). */
    federation: Federation;
    /** The address of the separate /metrics listener (metrics_listen: <host>:<port>), once ready. */
    metricsAddress: () => { host: string; port: number } | undefined;
  }
  interface FastifyRequest {
    /** The body exactly as it arrived, for anything whose hash or signature depends on the bytes. */
    rawBody?: Buffer;
    /** The errcode of an error answer, for the request log line. */
    errcode?: string;
  }
}

export type App = FastifyInstance;

/**
 * Builds the HTTP application over a set of services. It does not listen: server.ts does, and
 * tests use inject().
 */
export async function buildApp(
  services: Services,
  opts: {
    logger?: FastifyServerOptions['logger'];
    /** The runtime's federation; without one the app builds its own over HTTPS. */
    federation?: Federation;
    /** The built web client's folder (web/dist by default). */
    webClientRoot?: string;
  } = {},
) {
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: services.config.maxRequestBytes,
    // The Matrix API has paths like /rooms/{roomId}/state/{type}/ with an empty state key, so a
    // trailing slash is significant.
    routerOptions: { maxParamLength: 1024, ignoreTrailingSlash: false },
    // Requests are logged once, by the onResponse hook below, with any token masked.
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors,
    // Older paths (/_matrix/client/r0, some /unstable ones) are served by the current route.
    rewriteUrl: (req) => aliasedUrl(req.url ?? '/'),
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorate('services', services);
  const federation =
    opts.federation ??
    createFederation({ config: services.config, db: services.db, serverKeys: services.serverKeys });
  app.decorate('federation', federation);
  if (!opts.federation) app.addHook('onClose', async () => federation.close());
  app.decorateRequest('session');
  app.decorateRequest('rawBody');
  app.decorateRequest('errcode');

  // Bodies must match their schema exactly: no type coercion, no silently dropped properties.
  // Query strings and path parameters are text, so there numbers are coerced.
  const strict = new Ajv({ allErrors: false, coerceTypes: false, useDefaults: true, strict: false });
  const lenient = new Ajv({ allErrors: false, coerceTypes: 'array', useDefaults: true, strict: false });
  app.setValidatorCompiler(({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? strict : lenient;
    return ajv.compile(schema);
  });

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
    try {
      request.rawBody = body as Buffer;
      done(null, parseJsonBody(body as Buffer));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  // JSON answers say `application/json`, as the spec's examples and Complement expect, without
  // fastify's `; charset=utf-8` (JSON is UTF-8 by definition, RFC 8259).
  // An error answer's errcode is kept for the request log line, whoever sent it.
  app.addHook('onSend', async (request, reply, payload) => {
    if (reply.getHeader('content-type') === 'application/json; charset=utf-8') {
      void reply.header('content-type', 'application/json');
    }
    if (reply.statusCode >= 400 && typeof payload === 'string') {
      request.errcode = /^\{"errcode":"([A-Z0-9_.]{1,64})"/i.exec(payload)?.[1];
    }
    return payload;
  });

  app.addHook('onRequest', async (request, reply) => {
    void reply.headers(CORS_HEADERS);
    if (request.method === 'OPTIONS') return reply.code(204).send();
  });

  if (opts.logger) {
    app.addHook('onResponse', async (request, reply) => {
      request.log.info(
        {
          method: request.method,
          url: redactQuery(request.originalUrl),
          status: reply.statusCode,
          ...(request.errcode !== undefined ? { errcode: request.errcode } : {}),
          ms: Math.round(reply.elapsedTime),
        },
        'request',
      );
    });
  }

  // Path and query parameters holding U+0000 name nothing that can exist, and PostgreSQL cannot
  // even compare them: refuse them before any handler looks anything up.
  app.addHook('preValidation', async (request) => {
    const holdsNul = (v: unknown): boolean =>
      typeof v === 'string' ? v.includes('\u0000') : Array.isArray(v) && v.some(holdsNul);
    for (const part of [request.params, request.query]) {
      if (typeof part !== 'object' || part === null) continue;
      for (const value of Object.values(part)) {
        if (holdsNul(value)) throw errors.invalidParam('Parameters may not hold U+0000');
      }
    }
  });

  app.addHook('preValidation', refuseControlCharactersInNames);
  app.addHook('preValidation', limitRequestRate);
  app.addHook('onResponse', observeRequest);
  services.detection.setErrorHandler((err) => app.log.warn({ err }, 'alert notification failed'));
  services.push.setLogger((msg, fields) => app.log.warn(fields, msg));
  installMetrics(app, services.metrics);
  const { metricsListen } = services.config;
  if (metricsListen === 'main') await metricsRoute(app, services.metrics);
  let metricsServer: Awaited<ReturnType<typeof listenForMetrics>> | undefined;
  app.decorate('metricsAddress', () => {
    const a = metricsServer?.address();
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
  });
  if (metricsListen !== '' && metricsListen !== 'main') {
    app.addHook('onReady', async () => {
      metricsServer = await listenForMetrics(services.metrics, metricsListen);
    });
    app.addHook('onClose', async () => {
      await new Promise((resolve) => (metricsServer ? metricsServer.close(resolve) : resolve(undefined)));
    });
  }

  installErrorHandling(app);
  await app.register(clientRoutes);
  await app.register(federationRoutes);
  await app.register(adminRoutes);
  if (services.config.webClient !== '') {
    await app.register(webClientPlugin, {
      basePath: services.config.webClient,
      ...(opts.webClientRoot ? { root: opts.webClientRoot } : {}),
    });
  }
  return app;
}
