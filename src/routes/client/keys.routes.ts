import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import type { JsonObject, JsonValue } from '../../protocol/json.ts';
import { DEFAULT_KEYS_TIMEOUT_MS } from '../../services/remote-keys.service.ts';
import { AnyObject, AuthDict, V3 } from './schemas.ts';

/**
 * Maps of user ID to something: the keys are checked by the service (M_INVALID_PARAM), and so are
 * the counts (413 M_TOO_LARGE, spec/limits.md).
 */

const Signatures = Type.Record(Type.String(), Type.Record(Type.String(), Type.String()));

const DeviceKeys = Type.Object({
  user_id: Type.String({ maxLength: 255 }),
  device_id: Type.String({ maxLength: 255 }),
  algorithms: Type.Array(Type.String({ maxLength: 255 }), { maxItems: 100 }),
  keys: Type.Record(Type.String(), Type.String()),
  signatures: Signatures,
});

/** One-time and fallback keys: `algorithm:key_id` to a key object (or, unsigned, a bare key). */
const OneTimeKeys = Type.Record(Type.String(), Type.Union([Type.String(), AnyObject]));

const CrossSigningKey = Type.Object({
  user_id: Type.String({ maxLength: 255 }),
  usage: Type.Array(Type.String({ maxLength: 32 }), { minItems: 1, maxItems: 3 }),
  keys: Type.Record(Type.String(), Type.String()),
  signatures: Type.Optional(Signatures),
});

const SyncTokenParam = Type.String({ minLength: 1, maxLength: 64 });

/** End-to-end encryption keys: upload, query, claim, changes, cross-signing. */
export async function keysRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { keys } = app.services;

  // POST /_matrix/client/v3/keys/upload
  app.post(
    `${V3}/keys/upload`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          device_keys: Type.Optional(DeviceKeys),
          one_time_keys: Type.Optional(OneTimeKeys),
          fallback_keys: Type.Optional(OneTimeKeys),
        }),
      },
    },
    async (request) =>
      keys.upload(request.session, {
        device_keys: request.body.device_keys as JsonObject | undefined,
        one_time_keys: request.body.one_time_keys as Record<string, JsonValue> | undefined,
        fallback_keys: request.body.fallback_keys as Record<string, JsonValue> | undefined,
      }),
  );

  // POST /_matrix/client/v3/keys/query
  app.post(
    `${V3}/keys/query`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          device_keys: Type.Record(Type.String(), Type.Array(Type.String({ maxLength: 255 }))),
          timeout: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      },
    },
    async (request) =>
      keys.query(request.session, request.body.device_keys, keysTimeout(request.body.timeout)),
  );

  // POST /_matrix/client/v3/keys/claim
  app.post(
    `${V3}/keys/claim`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          one_time_keys: Type.Record(
            Type.String(),
            Type.Record(Type.String(), Type.String({ maxLength: 255 })),
          ),
          timeout: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      },
    },
    async (request) =>
      keys.claim(request.session, request.body.one_time_keys, keysTimeout(request.body.timeout)),
  );

  // GET /_matrix/client/v3/keys/changes
  app.get(
    `${V3}/keys/changes`,
    {
      onRequest: requireAuth,
      schema: { querystring: Type.Object({ from: SyncTokenParam, to: SyncTokenParam }) },
    },
    async (request) => keys.changes(request.session, request.query.from, request.query.to),
  );

  // POST /_matrix/client/v3/keys/device_signing/upload
  app.post(
    `${V3}/keys/device_signing/upload`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          master_key: Type.Optional(CrossSigningKey),
          self_signing_key: Type.Optional(CrossSigningKey),
          user_signing_key: Type.Optional(CrossSigningKey),
          auth: AuthDict,
        }),
      },
    },
    async (request) => {
      const { auth, ...uploaded } = request.body;
      await keys.uploadCrossSigningKeys(
        request.session,
        uploaded as { master_key?: JsonObject; self_signing_key?: JsonObject; user_signing_key?: JsonObject },
        auth,
        request.ip,
      );
      return {};
    },
  );

  // POST /_matrix/client/v3/keys/signatures/upload
  app.post(
    `${V3}/keys/signatures/upload`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Record(Type.String(), Type.Record(Type.String(), AnyObject)),
      },
    },
    async (request) =>
      keys.uploadSignatures(request.session, request.body as Record<string, Record<string, JsonObject>>),
  );
}

/**
 * How long /keys/query and /keys/claim wait for other servers: the request's `timeout` (ms; the
 * spec's default is 10 s), at least 1 ms, at most a minute.
 */
function keysTimeout(timeout: number | undefined): number {
  return Math.min(Math.max(timeout ?? DEFAULT_KEYS_TIMEOUT_MS, 1), 60_000);
}
