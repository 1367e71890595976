import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { MatrixError } from '../../errors.ts';
import { requireAuth } from '../../http/auth.ts';
import { AnyObject, AuthDict, V3 } from './schemas.ts';

const noThreepids = () =>
  new MatrixError(
    403,
    'M_THREEPID_DENIED',
    'This server does not support third-party identifiers (email addresses, phone numbers)',
  );

/** Deactivation, third-party identifiers (none), third-party networks (none) and TURN (spec/account.md). */
export async function accountRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { accountExtras } = app.services;

  // POST /_matrix/client/v3/account/deactivate
  app.post(
    `${V3}/account/deactivate`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          auth: AuthDict,
          erase: Type.Optional(Type.Boolean()),
          id_server: Type.Optional(Type.String({ maxLength: 255 })),
        }),
      },
    },
    async (request) => {
      const result = await accountExtras.deactivate(request.session, {
        auth: request.body.auth,
        erase: request.body.erase ?? false,
        address: request.ip,
      });
      return { id_server_unbind_result: result.id_server_unbind_result };
    },
  );

  // GET /_matrix/client/v3/account/3pid
  app.get(`${V3}/account/3pid`, { onRequest: requireAuth }, async () => ({ threepids: [] }));

  // POST /_matrix/client/v3/account/3pid, /3pid/add, /3pid/bind
  for (const path of ['3pid', '3pid/add', '3pid/bind']) {
    app.post(`${V3}/account/${path}`, { onRequest: requireAuth, schema: { body: AnyObject } }, async () => {
      throw noThreepids();
    });
  }

  // POST /_matrix/client/v3/account/3pid/email/requestToken, .../msisdn/requestToken
  for (const medium of ['email', 'msisdn']) {
    app.post(`${V3}/account/3pid/${medium}/requestToken`, { schema: { body: AnyObject } }, async () => {
      throw noThreepids();
    });
  }

  // POST /_matrix/client/v3/account/3pid/delete, /3pid/unbind: the account has none to remove.
  for (const path of ['3pid/delete', '3pid/unbind']) {
    app.post(
      `${V3}/account/${path}`,
      {
        onRequest: requireAuth,
        schema: {
          body: Type.Object({
            medium: Type.String({ maxLength: 32 }),
            address: Type.String({ maxLength: 512 }),
            id_server: Type.Optional(Type.String({ maxLength: 255 })),
          }),
        },
      },
      async () => ({ id_server_unbind_result: 'no-support' }),
    );
  }

  // GET /_matrix/client/v3/thirdparty/protocols
  app.get(`${V3}/thirdparty/protocols`, { onRequest: requireAuth }, async () => ({}));

  // GET /_matrix/client/v3/thirdparty/protocol/{protocol}
  app.get(
    `${V3}/thirdparty/protocol/:protocol`,
    {
      onRequest: requireAuth,
      schema: { params: Type.Object({ protocol: Type.String({ maxLength: 255 }) }) },
    },
    async () => {
      throw new MatrixError(404, 'M_NOT_FOUND', 'No bridges to third-party networks are configured');
    },
  );

  // GET /_matrix/client/v3/voip/turnServer
  app.get(`${V3}/voip/turnServer`, { onRequest: requireAuth }, async (request) =>
    accountExtras.turnServer(request.session.userId),
  );
}
