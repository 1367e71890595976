import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { ADMIN_V1, actorOf, Dir, From, Limit, optionalBody, RoomIdParam, UserIdParam } from './common.ts';

const ReportParams = Type.Object({ reportId: Type.String({ pattern: '^[0-9]{1,15}$' }) });
const TokenParams = Type.Object({ token: Type.String({ minLength: 1, maxLength: 64 }) });
const UsesAllowed = Type.Optional(
  Type.Union([Type.Integer({ minimum: 0, maximum: 2_147_483_647 }), Type.Null()]),
);
const ExpiryTime = Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]));

/** Synapse's admin API for event reports and registration tokens (spec/admin.md). */
export async function adminMiscRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { reports, tokens } = app.services.admin;

  // GET /_synapse/admin/v1/event_reports
  app.get(
    `${ADMIN_V1}/event_reports`,
    {
      schema: {
        querystring: Type.Object({
          from: From,
          limit: Limit,
          dir: Dir,
          room_id: Type.Optional(RoomIdParam),
          user_id: Type.Optional(UserIdParam),
          event_sender_user_id: Type.Optional(UserIdParam),
          kind: Type.Optional(
            Type.Union([Type.Literal('event'), Type.Literal('room'), Type.Literal('user')]),
          ),
        }),
      },
    },
    async (request) => {
      const q = request.query;
      return reports.list(
        {
          ...(q.room_id !== undefined ? { roomId: q.room_id } : {}),
          ...(q.user_id !== undefined ? { reporter: q.user_id } : {}),
          ...(q.event_sender_user_id !== undefined ? { eventSender: q.event_sender_user_id } : {}),
          ...(q.kind !== undefined ? { kind: q.kind } : {}),
        },
        { from: q.from ?? 0, limit: q.limit ?? 100, dir: q.dir ?? 'b' },
      );
    },
  );

  // GET /_synapse/admin/v1/event_reports/{reportId}
  app.get(`${ADMIN_V1}/event_reports/:reportId`, { schema: { params: ReportParams } }, async (request) =>
    reports.get(Number(request.params.reportId)),
  );

  // DELETE /_synapse/admin/v1/event_reports/{reportId}: synapse-admin sends the report as the body; it is ignored.
  app.delete(`${ADMIN_V1}/event_reports/:reportId`, { schema: { params: ReportParams } }, async (request) => {
    await reports.dismiss(actorOf(request), Number(request.params.reportId));
    return {};
  });

  // GET /_synapse/admin/v1/registration_tokens
  app.get(
    `${ADMIN_V1}/registration_tokens`,
    { schema: { querystring: Type.Object({ valid: Type.Optional(Type.Boolean()) }) } },
    async (request) => tokens.list(request.query.valid),
  );

  // POST /_synapse/admin/v1/registration_tokens/new
  app.post(`${ADMIN_V1}/registration_tokens/new`, async (request) => {
    const b = optionalBody(request.body);
    const int = (name: string, max: number) => {
      const v = b[name];
      if (v === undefined || v === null) return v;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max)
        throw errors.invalidParam(`${name} must be a non-negative integer`);
      return v;
    };
    if (b.token !== undefined && typeof b.token !== 'string')
      throw errors.invalidParam('token must be a string');
    const length = int('length', 64);
    if (length === null || length === 0) throw errors.invalidParam('length must be between 1 and 64');
    const usesAllowed = int('uses_allowed', 2_147_483_647);
    const expiryTime = int('expiry_time', Number.MAX_SAFE_INTEGER);
    return tokens.create(actorOf(request), {
      ...(typeof b.token === 'string' ? { token: b.token } : {}),
      ...(length !== undefined ? { length } : {}),
      ...(usesAllowed !== undefined ? { usesAllowed } : {}),
      ...(expiryTime !== undefined ? { expiryTime } : {}),
    });
  });

  // GET /_synapse/admin/v1/registration_tokens/{token}
  app.get(`${ADMIN_V1}/registration_tokens/:token`, { schema: { params: TokenParams } }, async (request) =>
    tokens.get(request.params.token),
  );

  // PUT /_synapse/admin/v1/registration_tokens/{token}
  app.put(
    `${ADMIN_V1}/registration_tokens/:token`,
    {
      schema: {
        params: TokenParams,
        body: Type.Object({ uses_allowed: UsesAllowed, expiry_time: ExpiryTime }),
      },
    },
    async (request) =>
      tokens.update(actorOf(request), request.params.token, {
        ...(request.body.uses_allowed !== undefined ? { usesAllowed: request.body.uses_allowed } : {}),
        ...(request.body.expiry_time !== undefined ? { expiryTime: request.body.expiry_time } : {}),
      }),
  );

  // DELETE /_synapse/admin/v1/registration_tokens/{token}
  app.delete(
    `${ADMIN_V1}/registration_tokens/:token`,
    { schema: { params: TokenParams } },
    async (request) => {
      await tokens.delete(actorOf(request), request.params.token);
      return {};
    },
  );
}
