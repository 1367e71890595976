import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { requireAuth } from '../../http/auth.ts';
import { isValidUserId } from '../../protocol/identifiers.ts';
import type { Filter } from '../../services/filter-matching.ts';
import { FilterSchema } from '../../services/filters.service.ts';
import { V3 } from './schemas.ts';

const UserParams = Type.Object({ userId: Type.String({ maxLength: 255 }) });
const FilterParams = Type.Object({
  userId: Type.String({ maxLength: 255 }),
  filterId: Type.String({ minLength: 1, maxLength: 255 }),
});

function checkUserId(userId: string): void {
  if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
}

/** Filters: uploaded once, then named by ID in /sync and other event APIs. */
export async function filtersRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { filters } = app.services;

  // POST /_matrix/client/v3/user/{userId}/filter
  app.post(
    `${V3}/user/:userId/filter`,
    { onRequest: requireAuth, schema: { params: UserParams, body: FilterSchema } },
    async (request) => {
      checkUserId(request.params.userId);
      return filters.createFilter(request.session, request.params.userId, request.body as Filter);
    },
  );

  // GET /_matrix/client/v3/user/{userId}/filter/{filterId}
  app.get(
    `${V3}/user/:userId/filter/:filterId`,
    { onRequest: requireAuth, schema: { params: FilterParams } },
    async (request) => {
      checkUserId(request.params.userId);
      return filters.getFilter(request.session, request.params.userId, request.params.filterId);
    },
  );
}
