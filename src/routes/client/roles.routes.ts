import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import { PERMISSIONS, type Permission } from '../../services/room-roles.service.ts';

const C1 = '/_conclave/client/v1';
const RoomId = Type.String({ minLength: 1, maxLength: 255 });
const UserId = Type.String({ minLength: 1, maxLength: 255 });
const Level = Type.Integer({ minimum: -9007199254740991, maximum: 9007199254740991 });
const Ts = Type.Integer({ minimum: 0, maximum: 9007199254740991 });
const MemberParams = Type.Object({ roomId: RoomId, userId: UserId });

/** Conclave's roles, named permissions and expiries over power levels (spec/admin.md). */
export async function rolesRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { roomRoles } = app.services;

  // GET /_conclave/client/v1/rooms/{roomId}/roles
  app.get(
    `${C1}/rooms/:roomId/roles`,
    { onRequest: requireAuth, schema: { params: Type.Object({ roomId: RoomId }) } },
    async (request) => roomRoles.roles(request.session, request.params.roomId),
  );

  // PUT /_conclave/client/v1/rooms/{roomId}/roles/{userId}
  app.put(
    `${C1}/rooms/:roomId/roles/:userId`,
    {
      onRequest: requireAuth,
      schema: {
        params: MemberParams,
        body: Type.Object({
          role: Type.Optional(Type.String({ maxLength: 32 })),
          level: Type.Optional(Level),
          expires_ts: Type.Optional(Ts),
          level_after: Type.Optional(Level),
        }),
      },
    },
    async (request) => {
      const b = request.body;
      return roomRoles.setRole(request.session, request.params.roomId, request.params.userId, {
        ...(b.role !== undefined ? { role: b.role } : {}),
        ...(b.level !== undefined ? { level: b.level } : {}),
        ...(b.expires_ts !== undefined ? { expiresTs: b.expires_ts } : {}),
        ...(b.level_after !== undefined ? { levelAfter: b.level_after } : {}),
      });
    },
  );

  // PUT /_conclave/client/v1/rooms/{roomId}/permissions
  app.put(
    `${C1}/rooms/:roomId/permissions`,
    {
      onRequest: requireAuth,
      schema: {
        params: Type.Object({ roomId: RoomId }),
        body: Type.Object({
          permissions: Type.Object(
            Object.fromEntries(Object.keys(PERMISSIONS).map((p) => [p, Type.Optional(Level)])),
            { additionalProperties: false, minProperties: 1 },
          ),
        }),
      },
    },
    async (request) =>
      roomRoles.setPermissions(
        request.session,
        request.params.roomId,
        request.body.permissions as Partial<Record<Permission, number>>,
      ),
  );

  // GET /_conclave/client/v1/rooms/{roomId}/expiries
  app.get(
    `${C1}/rooms/:roomId/expiries`,
    { onRequest: requireAuth, schema: { params: Type.Object({ roomId: RoomId }) } },
    async (request) => roomRoles.listExpiries(request.session, request.params.roomId),
  );

  // PUT /_conclave/client/v1/rooms/{roomId}/expiries/{userId}: the membership ends at expires_ts.
  app.put(
    `${C1}/rooms/:roomId/expiries/:userId`,
    { onRequest: requireAuth, schema: { params: MemberParams, body: Type.Object({ expires_ts: Ts }) } },
    async (request) =>
      roomRoles.setMembershipExpiry(
        request.session,
        request.params.roomId,
        request.params.userId,
        request.body.expires_ts,
      ),
  );

  // DELETE /_conclave/client/v1/rooms/{roomId}/expiries/{userId}?kind=membership|role
  app.delete(
    `${C1}/rooms/:roomId/expiries/:userId`,
    {
      onRequest: requireAuth,
      schema: {
        params: MemberParams,
        querystring: Type.Object({
          kind: Type.Optional(Type.Union([Type.Literal('membership'), Type.Literal('role')])),
        }),
      },
    },
    async (request) =>
      roomRoles.clearExpiry(
        request.session,
        request.params.roomId,
        request.params.userId,
        request.query.kind ?? 'membership',
      ),
  );
}
