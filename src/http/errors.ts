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
        { err: error, url: redactQuery(request.url), method: request.method },
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
      return errors.invalidParam(e.message);
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
