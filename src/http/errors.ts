import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import FindMyWay, { type HTTPMethod } from 'find-my-way';
import { errors, MatrixError } from '../errors.ts';

/**
 * Maps every failure to a Matrix error body, once: MatrixError as it is, fastify's own errors
 * (validation, body size, content type) to their Matrix equivalents, anything else to a logged
 * 500 M_UNKNOWN that tells the client nothing more.
 */
export interface RouteEntry {
  method: HTTPMethod;
  url: string;
  /** The route's validation schemas (body, querystring, params), as declared. */
  schema: Record<string, unknown> | undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every (method, path) the app serves, HEAD and OPTIONS left out. */
    routeTable: RouteEntry[];
  }
}

/**
 * Fastify's option `frameworkErrors`: errors raised while routing (bad percent-encoding, an
 * over-long path parameter) reach the client as Matrix errors too.
 */
export function frameworkErrors(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const matrix = toMatrixError(error);
  void reply.code(matrix.status).headers(CORS_HEADERS).send(matrix.toJSON());
}

/** Browsers' Matrix clients call from other origins (client-server API: Web Browser Clients). */
export const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization',
};

export function installErrorHandling(app: FastifyInstance): void {
  // A shadow router of every (method, path) served, to tell 405 from 404.
  const routes = FindMyWay();
  const methods = new Set<HTTPMethod>();
  const table: RouteEntry[] = [];
  app.decorate('routeTable', table);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat() as HTTPMethod[]) {
      if (method === 'HEAD' || method === 'OPTIONS') continue;
      methods.add(method);
      routes.on(method, route.url, () => {});
      table.push({ method, url: route.url, schema: route.schema as Record<string, unknown> | undefined });
    }
  });

  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0] ?? '/';
    const servedElsewhere = [...methods].some((m) => m !== request.method && routes.find(m, path) !== null);
    const err = servedElsewhere
      ? errors.unrecognized(`Method ${request.method} is not allowed on this endpoint`, 405)
      : errors.unrecognized('Unrecognized request');
    void reply.code(err.status).send(err.toJSON());
  });

  app.setErrorHandler((error: FastifyError | MatrixError | Error, request, reply) => {
    const matrix = toMatrixError(error);
    if (matrix.status >= 500) {
      // Log the error itself, never the request body or headers (they may hold secrets).
      request.log.error(
        { err: error, url: redactQuery(request.originalUrl), method: request.method },
        'request failed',
      );
    }
    void reply.code(matrix.status).send(matrix.toJSON());
  });
}

export function toMatrixError(error: unknown): MatrixError {
  if (error instanceof MatrixError) return error;
  const e = error as FastifyError & { validationContext?: string };
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.tooLarge('Request body too large');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.badJson('Content-Length does not match the body');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return errors.notJson('Body is not JSON');
    case 'FST_ERR_VALIDATION':
      if (e.validationContext === 'body')
        return errors.badJson(`Invalid body: ${e.message.replace(/^body\/?/, '')}`);
      if (e.validation?.some((v) => v.keyword === 'required')) return errors.missingParam(e.message);
      return errors.invalidParam(e.message);
    case 'FST_ERR_BAD_URL':
      return errors.invalidParam('The URL is not validly percent-encoded');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new MatrixError(414, 'M_UNKNOWN', 'A path parameter is too long');
  }
  if (e.validation) return errors.badJson(e.message);
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new MatrixError(e.statusCode, 'M_UNKNOWN', e.message);
  }
  return errors.unknown();
}

/** The URL with any access_token query parameter masked, for logs. */
export function redactQuery(url: string): string {
  return url.replace(/([?&]access_token=)[^&]*/g, '$1***');
}
