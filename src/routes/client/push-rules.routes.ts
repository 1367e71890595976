import type { FastifyInstance } from 'fastify';
import { requireAuth } from '../../http/auth.ts';
import { V3 } from './schemas.ts';

/** Push rules. Only reading the server defaults for now; changing rules is not served yet. */
export async function pushRulesRoutes(app: FastifyInstance): Promise<void> {
  const { pushRules } = app.services;

  // GET /_matrix/client/v3/pushrules/
  app.get(`${V3}/pushrules/`, { onRequest: requireAuth }, async (request) =>
    pushRules.allRulesets(request.session),
  );

  // GET /_matrix/client/v3/pushrules/global/
  app.get(`${V3}/pushrules/global/`, { onRequest: requireAuth }, async (request) =>
    pushRules.globalRuleset(request.session),
  );
}
