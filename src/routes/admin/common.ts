import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { isJsonObject, type JsonObject } from '../../protocol/json.ts';
import type { AdminActor } from '../../services/admin/actor.ts';

export const ADMIN_V1 = '/_synapse/admin/v1';
export const ADMIN_V2 = '/_synapse/admin/v2';
/** Conclave's own admin actions, which Synapse's admin API has no path for (spec/admin.md). */
export const CONCLAVE_ADMIN_V1 = '/_conclave/admin/v1';

export const UserIdParam = Type.String({ minLength: 1, maxLength: 255 });
export const RoomIdParam = Type.String({ minLength: 1, maxLength: 255 });
export const DeviceIdParam = Type.String({ minLength: 1, maxLength: 255 });
export const From = Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000 }));
export const Limit = Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 }));
export const Dir = Type.Optional(Type.Union([Type.Literal('f'), Type.Literal('b')]));
export const NullableString = (max: number) => Type.Union([Type.String({ maxLength: max }), Type.Null()]);

/** Who acts: the admin whose token the request carries, from the request's address. */
export function actorOf(request: FastifyRequest): AdminActor {
  return { actor: request.session.userId, address: request.ip };
}

/**
 * A body the route takes optionally (the admin tools send some requests with no body, or with
 * `Content-Type: application/json` and nothing after it): an object, or {} when absent.
 */
export function optionalBody(body: unknown): JsonObject {
  if (body === undefined || body === null) return {};
  if (!isJsonObject(body)) throw errors.badJson('Body must be a JSON object');
  return body;
}

/** A boolean field of an optional body, `fallback` when absent. */
export function boolField(body: JsonObject, name: string, fallback: boolean): boolean {
  const v = body[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw errors.badJson(`${name} must be a boolean`);
  return v;
}
