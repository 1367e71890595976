import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { USER_ORDER } from '../../storage/admin.repository.ts';
import { AnyObject } from '../client/schemas.ts';
import {
  ADMIN_V1,
  ADMIN_V2,
  actorOf,
  boolField,
  CONCLAVE_ADMIN_V1,
  DeviceIdParam,
  Dir,
  From,
  Limit,
  NullableString,
  optionalBody,
  UserIdParam,
} from './common.ts';

const UserParams = Type.Object({ userId: UserIdParam });
const DeviceParams = Type.Object({ userId: UserIdParam, deviceId: DeviceIdParam });
const Password = Type.String({ minLength: 1, maxLength: 512 });

/** Synapse's admin API for accounts and their devices (spec/admin.md). */
export async function adminUsersRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { users, notices } = app.services.admin;

  // GET /_synapse/admin/v2/users
  app.get(
    `${ADMIN_V2}/users`,
    {
      schema: {
        querystring: Type.Object({
          from: From,
          limit: Limit,
          user_id: Type.Optional(Type.String({ maxLength: 255 })),
          name: Type.Optional(Type.String({ maxLength: 255 })),
          guests: Type.Optional(Type.Boolean()),
          deactivated: Type.Optional(Type.Boolean()),
          locked: Type.Optional(Type.Boolean()),
          admins: Type.Optional(Type.Boolean()),
          order_by: Type.Optional(Type.Union(USER_ORDER.map((o) => Type.Literal(o)))),
          dir: Dir,
        }),
      },
    },
    async (request) => {
      const q = request.query;
      return users.list(
        {
          ...(q.user_id !== undefined ? { userId: q.user_id } : {}),
          ...(q.name !== undefined ? { name: q.name } : {}),
          ...(q.deactivated !== undefined ? { deactivated: q.deactivated } : {}),
          ...(q.locked !== undefined ? { locked: q.locked } : {}),
          ...(q.admins !== undefined ? { admins: q.admins } : {}),
        },
        { from: q.from ?? 0, limit: q.limit ?? 100, orderBy: q.order_by ?? 'name', dir: q.dir ?? 'f' },
      );
    },
  );

  // GET /_synapse/admin/v2/users/{userId}
  app.get(`${ADMIN_V2}/users/:userId`, { schema: { params: UserParams } }, async (request) =>
    users.get(request.params.userId),
  );

  // PUT /_synapse/admin/v2/users/{userId}: creates or modifies; 201 when created.
  app.put(
    `${ADMIN_V2}/users/:userId`,
    {
      schema: {
        params: UserParams,
        body: Type.Object({
          password: Type.Optional(Password),
          logout_devices: Type.Optional(Type.Boolean()),
          displayname: Type.Optional(NullableString(256)),
          avatar_url: Type.Optional(NullableString(1024)),
          admin: Type.Optional(Type.Boolean()),
          deactivated: Type.Optional(Type.Boolean()),
          locked: Type.Optional(Type.Boolean()),
          user_type: Type.Optional(NullableString(64)),
        }),
      },
    },
    async (request, reply) => {
      const b = request.body;
      const { created, user } = await users.upsert(actorOf(request), request.params.userId, {
        ...(b.password !== undefined ? { password: b.password } : {}),
        ...(b.logout_devices !== undefined ? { logoutDevices: b.logout_devices } : {}),
        ...(b.displayname !== undefined ? { displayname: b.displayname } : {}),
        ...(b.avatar_url !== undefined ? { avatarUrl: b.avatar_url } : {}),
        ...(b.admin !== undefined ? { admin: b.admin } : {}),
        ...(b.deactivated !== undefined ? { deactivated: b.deactivated } : {}),
        ...(b.locked !== undefined ? { locked: b.locked } : {}),
        ...(b.user_type !== undefined ? { userType: b.user_type } : {}),
      });
      return reply.code(created ? 201 : 200).send(user);
    },
  );

  // POST /_synapse/admin/v1/deactivate/{userId}: the body ({"erase": true}) may be left out.
  app.post(`${ADMIN_V1}/deactivate/:userId`, { schema: { params: UserParams } }, async (request) => {
    const erase = boolField(optionalBody(request.body), 'erase', false);
    await users.deactivate(actorOf(request), request.params.userId, erase);
    return { id_server_unbind_result: 'success' };
  });

  // POST /_synapse/admin/v1/reset_password/{userId}
  app.post(
    `${ADMIN_V1}/reset_password/:userId`,
    {
      schema: {
        params: UserParams,
        body: Type.Object({ new_password: Password, logout_devices: Type.Optional(Type.Boolean()) }),
      },
    },
    async (request) => {
      await users.resetPassword(
        actorOf(request),
        request.params.userId,
        request.body.new_password,
        request.body.logout_devices ?? true,
      );
      return {};
    },
  );

  // GET /_synapse/admin/v1/users/{userId}/admin
  app.get(`${ADMIN_V1}/users/:userId/admin`, { schema: { params: UserParams } }, async (request) => ({
    admin: (await users.get(request.params.userId)).admin,
  }));

  // PUT /_synapse/admin/v1/users/{userId}/admin
  app.put(
    `${ADMIN_V1}/users/:userId/admin`,
    { schema: { params: UserParams, body: Type.Object({ admin: Type.Boolean() }) } },
    async (request) => {
      await users.setAdmin(actorOf(request), request.params.userId, request.body.admin);
      return {};
    },
  );

  // PUT /_synapse/admin/v1/suspend/{userId} (MSC3823)
  app.put(
    `${ADMIN_V1}/suspend/:userId`,
    { schema: { params: UserParams, body: Type.Object({ suspend: Type.Boolean() }) } },
    async (request) => {
      await users.suspendUser(request.params.userId, request.body.suspend, actorOf(request));
      return { [`user_${request.params.userId}_suspended`]: request.body.suspend };
    },
  );

  // POST /_synapse/admin/v1/users/{userId}/shadow_ban
  app.post(`${ADMIN_V1}/users/:userId/shadow_ban`, { schema: { params: UserParams } }, async (request) => {
    await users.shadowBan(actorOf(request), request.params.userId, true);
    return {};
  });

  // DELETE /_synapse/admin/v1/users/{userId}/shadow_ban
  app.delete(`${ADMIN_V1}/users/:userId/shadow_ban`, { schema: { params: UserParams } }, async (request) => {
    await users.shadowBan(actorOf(request), request.params.userId, false);
    return {};
  });

  // GET /_synapse/admin/v1/whois/{userId}
  app.get(`${ADMIN_V1}/whois/:userId`, { schema: { params: UserParams } }, async (request) =>
    users.whois(request.params.userId),
  );

  // GET /_synapse/admin/v1/users/{userId}/joined_rooms
  app.get(`${ADMIN_V1}/users/:userId/joined_rooms`, { schema: { params: UserParams } }, async (request) =>
    users.joinedRooms(request.params.userId),
  );

  // GET /_synapse/admin/v2/users/{userId}/devices
  app.get(`${ADMIN_V2}/users/:userId/devices`, { schema: { params: UserParams } }, async (request) =>
    users.devices(request.params.userId),
  );

  // GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}
  app.get(
    `${ADMIN_V2}/users/:userId/devices/:deviceId`,
    { schema: { params: DeviceParams } },
    async (request) => users.device(request.params.userId, request.params.deviceId),
  );

  // DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}: no body, or an empty one.
  app.delete(
    `${ADMIN_V2}/users/:userId/devices/:deviceId`,
    { schema: { params: DeviceParams } },
    async (request) => {
      optionalBody(request.body);
      await users.device(request.params.userId, request.params.deviceId);
      await users.deleteDevices(actorOf(request), request.params.userId, [request.params.deviceId]);
      return {};
    },
  );

  // POST /_synapse/admin/v2/users/{userId}/delete_devices
  app.post(
    `${ADMIN_V2}/users/:userId/delete_devices`,
    {
      schema: {
        params: UserParams,
        body: Type.Object({ devices: Type.Array(DeviceIdParam, { maxItems: 1000 }) }),
      },
    },
    async (request) => {
      await users.deleteDevices(actorOf(request), request.params.userId, request.body.devices);
      return {};
    },
  );

  // POST /_synapse/admin/v1/send_server_notice
  app.post(
    `${ADMIN_V1}/send_server_notice`,
    {
      schema: {
        body: Type.Object({
          user_id: UserIdParam,
          content: AnyObject,
          type: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
          state_key: Type.Optional(Type.String({ maxLength: 255 })),
        }),
      },
    },
    async (request) => {
      const b = request.body;
      return notices.send(
        actorOf(request),
        b.user_id,
        b.content as never,
        b.type ?? 'm.room.message',
        b.state_key,
      );
    },
  );

  // POST /_conclave/admin/v1/users/{userId}/compromised
  app.post(
    `${CONCLAVE_ADMIN_V1}/users/:userId/compromised`,
    {
      schema: {
        params: UserParams,
        body: Type.Object({ lock: Type.Optional(Type.Boolean()), new_password: Type.Optional(Password) }),
      },
    },
    async (request) =>
      users.markCompromised(actorOf(request), request.params.userId, {
        ...(request.body.lock !== undefined ? { lock: request.body.lock } : {}),
        ...(request.body.new_password !== undefined ? { newPassword: request.body.new_password } : {}),
      }),
  );
}
