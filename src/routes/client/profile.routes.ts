import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { accessTokenOf, requireAuth } from '../../http/auth.ts';
import { isValidUserId } from '../../protocol/identifiers.ts';
import { AnyObject, DisplayName, V3 } from './schemas.ts';

const UserParams = Type.Object({ userId: Type.String({ maxLength: 255 }) });
const MatrixType = Type.String({ minLength: 1, maxLength: 255 });

function checkUserId(userId: string): void {
  if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
}

/** Profiles and account data. */
export async function profileRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { profile, config } = app.services;
  // Profile lookups need a token unless require_auth_for_profile_requests is off; a token that
  // is sent is checked all the same (a client must learn that it was logged out).
  const profileAuth = async (request: FastifyRequest) => {
    if (config.requireAuthForProfileRequests || accessTokenOf(request) !== undefined)
      await requireAuth(request);
  };

  // GET /_matrix/client/v3/profile/{userId}
  app.get(
    `${V3}/profile/:userId`,
    { onRequest: profileAuth, schema: { params: UserParams } },
    async (request) => {
      checkUserId(request.params.userId);
      return profile.getProfile(request.params.userId);
    },
  );

  for (const field of ['displayname', 'avatar_url'] as const) {
    // GET /_matrix/client/v3/profile/{userId}/displayname and /avatar_url
    app.get(
      `${V3}/profile/:userId/${field}`,
      { onRequest: profileAuth, schema: { params: UserParams } },
      async (request) => {
        checkUserId(request.params.userId);
        const p = await profile.getProfile(request.params.userId);
        if (p[field] === undefined) throw errors.notFound(`No ${field} set`);
        return { [field]: p[field] };
      },
    );

    // PUT /_matrix/client/v3/profile/{userId}/displayname and /avatar_url
    app.put(
      `${V3}/profile/:userId/${field}`,
      {
        onRequest: requireAuth,
        schema: {
          params: UserParams,
          body: Type.Object({
            [field]: Type.Union([
              field === 'displayname' ? DisplayName : Type.String({ maxLength: 1000 }),
              Type.Null(),
            ]),
          }),
        },
      },
      async (request) => {
        checkUserId(request.params.userId);
        const value = (request.body as Record<string, string | null>)[field];
        if (value === undefined) throw errors.missingParam(`${field} is required`);
        await profile.setProfileField(request.session, request.params.userId, field, value);
        return {};
      },
    );
  }

  const GlobalParams = Type.Object({ userId: Type.String({ maxLength: 255 }), type: MatrixType });
  const RoomParams = Type.Object({
    userId: Type.String({ maxLength: 255 }),
    roomId: Type.String({ minLength: 2, maxLength: 255, pattern: '^!' }),
    type: MatrixType,
  });

  // GET /_matrix/client/v3/user/{userId}/account_data/{type}
  app.get(
    `${V3}/user/:userId/account_data/:type`,
    { onRequest: requireAuth, schema: { params: GlobalParams } },
    async (request) =>
      profile.getAccountData(request.session, request.params.userId, '', request.params.type),
  );

  // PUT /_matrix/client/v3/user/{userId}/account_data/{type}
  app.put(
    `${V3}/user/:userId/account_data/:type`,
    { onRequest: requireAuth, schema: { params: GlobalParams, body: AnyObject } },
    async (request) => {
      await profile.setAccountData(
        request.session,
        request.params.userId,
        '',
        request.params.type,
        request.body as never,
      );
      return {};
    },
  );

  // GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
  app.get(
    `${V3}/user/:userId/rooms/:roomId/account_data/:type`,
    { onRequest: requireAuth, schema: { params: RoomParams } },
    async (request) =>
      profile.getAccountData(
        request.session,
        request.params.userId,
        request.params.roomId,
        request.params.type,
      ),
  );

  // PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
  app.put(
    `${V3}/user/:userId/rooms/:roomId/account_data/:type`,
    { onRequest: requireAuth, schema: { params: RoomParams, body: AnyObject } },
    async (request) => {
      await profile.setAccountData(
        request.session,
        request.params.userId,
        request.params.roomId,
        request.params.type,
        request.body as never,
      );
      return {};
    },
  );
}
