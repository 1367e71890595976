import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { parseKind } from '../../services/push-rules.service.ts';
import { V3 } from './schemas.ts';

const RuleParams = Type.Object({
  scope: Type.String({ maxLength: 64 }),
  kind: Type.String({ maxLength: 64 }),
  ruleId: Type.String({ minLength: 1, maxLength: 512 }),
});
const RULE = `${V3}/pushrules/:scope/:kind/:ruleId`;

/** Push rules: the server defaults with the user's changes (spec/push.md). */
export async function pushRulesRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { pushRules } = app.services;

  // GET /_matrix/client/v3/pushrules/
  app.get(`${V3}/pushrules/`, { onRequest: requireAuth }, async (request) =>
    pushRules.allRulesets(request.session),
  );

  // GET /_matrix/client/v3/pushrules/global/
  app.get(`${V3}/pushrules/global/`, { onRequest: requireAuth }, async (request) =>
    pushRules.globalRuleset(request.session),
  );

  // GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
  app.get(RULE, { onRequest: requireAuth, schema: { params: RuleParams } }, async (request) => {
    const { scope, kind, ruleId } = request.params;
    return pushRules.getRule(request.session, parseKind(scope, kind), ruleId);
  });

  // PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
  app.put(
    RULE,
    {
      onRequest: requireAuth,
      schema: {
        params: RuleParams,
        querystring: Type.Object({
          before: Type.Optional(Type.String({ maxLength: 512 })),
          after: Type.Optional(Type.String({ maxLength: 512 })),
        }),
        body: Type.Object({
          actions: Type.Array(Type.Unknown()),
          conditions: Type.Optional(Type.Array(Type.Unknown())),
          pattern: Type.Optional(Type.String()),
        }),
      },
    },
    async (request) => {
      const { scope, kind, ruleId } = request.params;
      await pushRules.putRule(
        request.session,
        parseKind(scope, kind),
        ruleId,
        request.body as JsonObject,
        request.query,
      );
      return {};
    },
  );

  // DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
  app.delete(RULE, { onRequest: requireAuth, schema: { params: RuleParams } }, async (request) => {
    const { scope, kind, ruleId } = request.params;
    await pushRules.deleteRule(request.session, parseKind(scope, kind), ruleId);
    return {};
  });

  for (const attribute of ['enabled', 'actions'] as const) {
    // GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled (and /actions)
    app.get(
      `${RULE}/${attribute}`,
      { onRequest: requireAuth, schema: { params: RuleParams } },
      async (request) => {
        const { scope, kind, ruleId } = request.params;
        const rule = await pushRules.getRule(request.session, parseKind(scope, kind), ruleId);
        return { [attribute]: rule[attribute] };
      },
    );

    // PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled (and /actions)
    app.put(
      `${RULE}/${attribute}`,
      {
        onRequest: requireAuth,
        schema: {
          params: RuleParams,
          body:
            attribute === 'enabled'
              ? Type.Object({ enabled: Type.Boolean() })
              : Type.Object({ actions: Type.Array(Type.Unknown()) }),
        },
      },
      async (request) => {
        const { scope, kind, ruleId } = request.params;
        const body = request.body as Record<string, unknown>;
        await pushRules.setAttribute(
          request.session,
          parseKind(scope, kind),
          ruleId,
          attribute,
          body[attribute],
        );
        return {};
      },
    );
  }
}
