import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { requireAuth } from '../../http/auth.ts';
import { isPlainObject } from '../../protocol/json.ts';
import { AuthDict, DeviceId, DisplayName, V3 } from './schemas.ts';

const DeviceParams = Type.Object({ deviceId: DeviceId });

/** The user's own devices. */
export async function devicesRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { accounts } = app.services;

  // GET /_matrix/client/v3/devices
  app.get(`${V3}/devices`, { onRequest: requireAuth }, async (request) => ({
    devices: await accounts.listDevices(request.session),
  }));

  // GET /_matrix/client/v3/devices/{deviceId}
  app.get(
    `${V3}/devices/:deviceId`,
    { onRequest: requireAuth, schema: { params: DeviceParams } },
    async (request) => accounts.getDevice(request.session, request.params.deviceId),
  );

  // PUT /_matrix/client/v3/devices/{deviceId}
  app.put(
    `${V3}/devices/:deviceId`,
    {
      onRequest: requireAuth,
      schema: {
        params: DeviceParams,
        body: Type.Object({ display_name: Type.Optional(Type.Union([DisplayName, Type.Null()])) }),
      },
    },
    async (request) => {
      if (request.body.display_name !== undefined) {
        await accounts.renameDevice(request.session, request.params.deviceId, request.body.display_name);
      } else {
        await accounts.getDevice(request.session, request.params.deviceId);
      }
      return {};
    },
  );

  // DELETE /_matrix/client/v3/devices/{deviceId}
  app.delete(
    `${V3}/devices/:deviceId`,
    {
      onRequest: requireAuth,
      // The body is optional here (a first UIA round may send none), which a schema cannot say.
      schema: { params: DeviceParams },
    },
    async (request) => {
      const body = request.body;
      if (body !== undefined && !isPlainObject(body)) throw errors.badJson('Body must be a JSON object');
      await accounts.getDevice(request.session, request.params.deviceId);
      await accounts.deleteDevices(request.session, [request.params.deviceId], body?.auth, request.ip);
      return {};
    },
  );

  // POST /_matrix/client/v3/delete_devices
  app.post(
    `${V3}/delete_devices`,
    {
      onRequest: requireAuth,
      schema: { body: Type.Object({ devices: Type.Array(DeviceId, { maxItems: 1000 }), auth: AuthDict }) },
    },
    async (request) => {
      await accounts.deleteDevices(request.session, request.body.devices, request.body.auth, request.ip);
      return {};
    },
  );
}
