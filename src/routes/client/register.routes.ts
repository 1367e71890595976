import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { AuthDict, DeviceId, DisplayName, Password, V1, V3 } from './schemas.ts';

export async function registerRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { accounts, registrationTokens, config } = app.services;

  // POST /_matrix/client/v3/register
  app.post(
    `${V3}/register`,
    {
      schema: {
        querystring: Type.Object({ kind: Type.Optional(Type.String()) }),
        body: Type.Object({
          username: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
          password: Type.Optional(Password),
          device_id: Type.Optional(DeviceId),
          initial_device_display_name: Type.Optional(DisplayName),
          inhibit_login: Type.Optional(Type.Boolean()),
          refresh_token: Type.Optional(Type.Boolean()),
          auth: AuthDict,
        }),
      },
    },
    async (request) => {
      if (request.query.kind === 'guest') throw errors.guestAccessForbidden();
      if (request.query.kind !== undefined && request.query.kind !== 'user') {
        throw errors.invalidParam('kind must be user or guest');
      }
      const body = request.body;
      return accounts.registerWithUia({
        username: body.username,
        password: body.password,
        deviceId: body.device_id,
        initialDeviceDisplayName: body.initial_device_display_name,
        inhibitLogin: body.inhibit_login,
        refreshToken: body.refresh_token === true,
        auth: body.auth,
        address: request.ip,
      });
    },
  );

  // GET /_matrix/client/v3/register/available
  app.get(
    `${V3}/register/available`,
    { schema: { querystring: Type.Object({ username: Type.String({ maxLength: 255 }) }) } },
    async (request) => {
      await accounts.limitLookup(request.ip);
      if (!(await accounts.isUsernameAvailable(request.query.username))) throw errors.userInUse();
      return { available: true };
    },
  );

  // GET /_matrix/client/v1/register/m.login.registration_token/validity
  app.get(
    `${V1}/register/m.login.registration_token/validity`,
    { schema: { querystring: Type.Object({ token: Type.String({ maxLength: 64 }) }) } },
    async (request) => {
      if (config.registration !== 'token') throw errors.forbidden('Registration tokens are not in use here');
      await accounts.limitLookup(request.ip);
      return { valid: await registrationTokens.isValid(request.query.token) };
    },
  );
}
