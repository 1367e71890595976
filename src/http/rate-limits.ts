import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RateLimitFamily } from '../config.ts';

/**
 * Which family of rate limits a route belongs to, by method and route pattern (spec/limits.md).
 * Authenticated routes not listed here are `client`; unauthenticated ones are limited where the
 * service knows what to count (failed logins, registrations, look-ups).
 */
const FAMILIES: Array<[RegExp, RateLimitFamily]> = [
  [/^PUT \/_matrix\/client\/v3\/rooms\/:roomId\/(send|state|redact)\//, 'send'],
  [/^POST \/_matrix\/client\/v3\/(join\/:roomIdOrAlias|knock\/:roomIdOrAlias|rooms\/:roomId\/join)$/, 'join'],
  [/^POST \/_matrix\/client\/v3\/rooms\/:roomId\/invite$/, 'invite'],
  [/^POST \/_matrix\/client\/v3\/createRoom$/, 'create_room'],
  [/^POST \/_matrix\/client\/v3\/keys\/(upload|device_signing\/upload|signatures\/upload)$/, 'keys_upload'],
  [/^POST \/_matrix\/client\/v3\/keys\/(claim|query)$/, 'keys_claim'],
  [/^PUT \/_matrix\/client\/v3\/sendToDevice\//, 'to_device'],
  [/^[A-Z]+ \/_matrix\/(media\/v[13]|client\/v1\/media)\//, 'media'],
  [/^[A-Z]+ \/_(conclave|synapse)\/admin\//, 'admin'],
];

const byRoute = new Map<string, RateLimitFamily>();

export function familyOf(method: string, url: string): RateLimitFamily {
  const route = `${method} ${url}`;
  let family = byRoute.get(route);
  if (family === undefined) {
    family = FAMILIES.find(([re]) => re.test(route))?.[1] ?? 'client';
    byRoute.set(route, family);
  }
  return family;
}

/**
 * preValidation hook (after each route's authentication, before its body is validated): takes one
 * request from the buckets of the route's family. 429 M_LIMIT_EXCEEDED with retry_after_ms, and
 * a Retry-After header in whole seconds, when one of them is empty.
 */
export async function limitRequestRate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const session = request.session as FastifyRequest['session'] | undefined;
  const url = request.routeOptions.url;
  const { rateLimits, detection } = request.server.services;
  try {
    // A user or address a detector throttled gets the stricter limit first (spec/detection.md).
    if (url !== undefined) await detection.enforceThrottle(session, request.ip);
    if (!session || url === undefined) return;
    await rateLimits.limitRequest(familyOf(request.method, url), session, request.ip);
  } catch (err) {
    const retry = (err as { extra?: { retry_after_ms?: unknown } }).extra?.retry_after_ms;
    if (typeof retry === 'number') void reply.header('retry-after', String(Math.ceil(retry / 1000)));
    throw err;
  }
}
