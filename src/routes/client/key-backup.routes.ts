import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { requireAuth } from '../../http/auth.ts';
import {
  AllKeysSchema,
  BackupAlgorithm,
  KeyBackupDataSchema,
  RoomKeyBackupSchema,
} from '../../services/key-backup.service.ts';
import { AnyObject, V3 } from './schemas.ts';

const BackupVersion = Type.String({ minLength: 1, maxLength: 255 });
const VersionParams = Type.Object({ version: BackupVersion });
const VersionQuery = Type.Object({ version: BackupVersion });
const RoomParams = Type.Object({ roomId: Type.String({ minLength: 1, maxLength: 255 }) });
const SessionParams = Type.Object({
  roomId: Type.String({ minLength: 1, maxLength: 255 }),
  sessionId: Type.String({ minLength: 1, maxLength: 255 }),
});

const NewVersionBody = Type.Object({ algorithm: BackupAlgorithm, auth_data: AnyObject });
const UpdateVersionBody = Type.Object({
  algorithm: BackupAlgorithm,
  auth_data: AnyObject,
  version: Type.Optional(BackupVersion),
});

/** Server-side key backups: the user's own backup versions and the session keys in them. */
export async function keyBackupRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { keyBackup } = app.services;

  // POST /_matrix/client/v3/room_keys/version
  app.post(
    `${V3}/room_keys/version`,
    { onRequest: requireAuth, schema: { body: NewVersionBody } },
    async (request) => keyBackup.createVersion(request.session, request.body),
  );

  // GET /_matrix/client/v3/room_keys/version
  app.get(`${V3}/room_keys/version`, { onRequest: requireAuth }, async (request) =>
    keyBackup.getVersion(request.session),
  );

  // GET /_matrix/client/v3/room_keys/version/{version}
  app.get(
    `${V3}/room_keys/version/:version`,
    { onRequest: requireAuth, schema: { params: VersionParams } },
    async (request) => keyBackup.getVersion(request.session, request.params.version),
  );

  // PUT /_matrix/client/v3/room_keys/version/{version}
  app.put(
    `${V3}/room_keys/version/:version`,
    { onRequest: requireAuth, schema: { params: VersionParams, body: UpdateVersionBody } },
    async (request) => keyBackup.updateVersion(request.session, request.params.version, request.body),
  );

  // DELETE /_matrix/client/v3/room_keys/version/{version}
  app.delete(
    `${V3}/room_keys/version/:version`,
    { onRequest: requireAuth, schema: { params: VersionParams } },
    async (request) => keyBackup.deleteVersion(request.session, request.params.version),
  );

  // PUT /_matrix/client/v3/room_keys/keys
  app.put(
    `${V3}/room_keys/keys`,
    { onRequest: requireAuth, schema: { querystring: VersionQuery, body: AllKeysSchema } },
    async (request) => keyBackup.putAllKeys(request.session, request.query.version, request.body.rooms),
  );

  // GET /_matrix/client/v3/room_keys/keys
  app.get(
    `${V3}/room_keys/keys`,
    { onRequest: requireAuth, schema: { querystring: VersionQuery } },
    async (request) => keyBackup.getAllKeys(request.session, request.query.version),
  );

  // DELETE /_matrix/client/v3/room_keys/keys
  app.delete(
    `${V3}/room_keys/keys`,
    { onRequest: requireAuth, schema: { querystring: VersionQuery } },
    async (request) => keyBackup.deleteKeys(request.session, request.query.version, {}),
  );

  // PUT /_matrix/client/v3/room_keys/keys/{roomId}
  app.put(
    `${V3}/room_keys/keys/:roomId`,
    {
      onRequest: requireAuth,
      schema: { params: RoomParams, querystring: VersionQuery, body: RoomKeyBackupSchema },
    },
    async (request) =>
      keyBackup.putRoomKeys(
        request.session,
        request.query.version,
        request.params.roomId,
        request.body.sessions,
      ),
  );

  // GET /_matrix/client/v3/room_keys/keys/{roomId}
  app.get(
    `${V3}/room_keys/keys/:roomId`,
    { onRequest: requireAuth, schema: { params: RoomParams, querystring: VersionQuery } },
    async (request) => keyBackup.getRoomKeys(request.session, request.query.version, request.params.roomId),
  );

  // DELETE /_matrix/client/v3/room_keys/keys/{roomId}
  app.delete(
    `${V3}/room_keys/keys/:roomId`,
    { onRequest: requireAuth, schema: { params: RoomParams, querystring: VersionQuery } },
    async (request) =>
      keyBackup.deleteKeys(request.session, request.query.version, { roomId: request.params.roomId }),
  );

  // PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
  app.put(
    `${V3}/room_keys/keys/:roomId/:sessionId`,
    {
      onRequest: requireAuth,
      schema: { params: SessionParams, querystring: VersionQuery, body: KeyBackupDataSchema },
    },
    async (request) =>
      keyBackup.putSessionKey(
        request.session,
        request.query.version,
        request.params.roomId,
        request.params.sessionId,
        request.body,
      ),
  );

  // GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
  app.get(
    `${V3}/room_keys/keys/:roomId/:sessionId`,
    { onRequest: requireAuth, schema: { params: SessionParams, querystring: VersionQuery } },
    async (request) =>
      keyBackup.getSessionKey(
        request.session,
        request.query.version,
        request.params.roomId,
        request.params.sessionId,
      ),
  );

  // DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
  app.delete(
    `${V3}/room_keys/keys/:roomId/:sessionId`,
    { onRequest: requireAuth, schema: { params: SessionParams, querystring: VersionQuery } },
    async (request) =>
      keyBackup.deleteKeys(request.session, request.query.version, {
        roomId: request.params.roomId,
        sessionId: request.params.sessionId,
      }),
  );
}
