import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { requireAuth } from '../../http/auth.ts';
import { AuthDict, DeviceId, DisplayName, Password, UserIdentifier, V3 } from './schemas.ts';

/** Login, token refresh, logout, whoami and password change. */
export async function sessionRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { accounts } = app.services;

  // GET /_matrix/client/v3/login
  app.get(`${V3}/login`, async () => ({ flows: [{ type: 'm.login.password' }] }));

  // POST /_matrix/client/v3/login
  app.post(
    `${V3}/login`,
    {
      schema: {
        body: Type.Object({
          type: Type.String({ maxLength: 255 }),
          identifier: Type.Optional(UserIdentifier),
          user: Type.Optional(Type.String({ maxLength: 255 })),
          password: Type.Optional(Password),
          device_id: Type.Optional(DeviceId),
          initial_device_display_name: Type.Optional(DisplayName),
          refresh_token: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request) => {
      const body = request.body;
      if (body.type !== 'm.login.password') throw errors.unknownLoginType(body.type);
      if (body.password === undefined) throw errors.missingParam('password is required');
      const identifier =
        body.identifier ?? (body.user !== undefined ? { type: 'm.id.user', user: body.user } : undefined);
      if (identifier === undefined) throw errors.missingParam('identifier is required');
      if (identifier.type !== 'm.id.user')
        throw errors.unknownLoginType(`identifier type ${identifier.type}`);
      return accounts.loginWithPassword({
        identifier,
        password: body.password,
        deviceId: body.device_id,
        initialDeviceDisplayName: body.initial_device_display_name,
        refreshToken: body.refresh_token === true,
        address: request.ip,
      });
    },
  );

  // POST /_matrix/client/v3/refresh (authenticated by the refresh token, not an access token)
  app.post(
    `${V3}/refresh`,
    { schema: { body: Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 512 }) }) } },
    async (request) => accounts.refresh(request.body.refresh_token),
  );

  // POST /_matrix/client/v3/logout
  app.post(`${V3}/logout`, { onRequest: requireAuth }, async (request) => {
    await accounts.logout(request.session);
    return {};
  });

  // POST /_matrix/client/v3/logout/all
  app.post(`${V3}/logout/all`, { onRequest: requireAuth }, async (request) => {
    await accounts.logoutAll(request.session);
    return {};
  });

  // GET /_matrix/client/v3/account/whoami
  app.get(`${V3}/account/whoami`, { onRequest: requireAuth }, async (request) => ({
    user_id: request.session.userId,
    device_id: request.session.deviceId,
    is_guest: false,
  }));

  // POST /_matrix/client/v3/account/password
  app.post(
    `${V3}/account/password`,
    {
      onRequest: requireAuth,
      schema: {
        body: Type.Object({
          new_password: Password,
          logout_devices: Type.Optional(Type.Boolean()),
          auth: AuthDict,
        }),
      },
    },
    async (request) => {
      await accounts.changePassword(request.session, {
        newPassword: request.body.new_password,
        logoutDevices: request.body.logout_devices ?? true,
        auth: request.body.auth,
        address: request.ip,
      });
      return {};
    },
  );
}
