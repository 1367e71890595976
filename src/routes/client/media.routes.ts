import type { Readable } from 'node:stream';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../errors.ts';
import { requireAuth } from '../../http/auth.ts';
import { contentDisposition, MEDIA_SECURITY_HEADERS } from '../../media/disposition.ts';
import type { MediaContent, MediaUploadInput } from '../../media/media.service.ts';
import { V1 } from './schemas.ts';

/**
 * The content repository (spec/media.md): uploads under /_matrix/media, authenticated downloads
 * and thumbnails under /_matrix/client/v1/media, and the unauthenticated /_matrix/media/v3 ones
 * that serve only media from before the freeze.
 */
const MEDIA_V1 = '/_matrix/media/v1';
const MEDIA_V3 = '/_matrix/media/v3';
const CLIENT_MEDIA = `${V1}/media`;

const MediaIdSchema = Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9_-]+$' });
const MediaParams = Type.Object({
  serverName: Type.String({ minLength: 1, maxLength: 255 }),
  mediaId: MediaIdSchema,
});
/** The media ID alone, for the federation routes (media of this server). */
export const MediaIdParams = Type.Object({ mediaId: MediaIdSchema });
const MediaFileParams = Type.Object({
  serverName: Type.String({ minLength: 1, maxLength: 255 }),
  mediaId: MediaIdSchema,
  fileName: Type.String({ minLength: 1, maxLength: 255 }),
});
const UploadQuery = Type.Object({ filename: Type.Optional(Type.String({ maxLength: 255 })) });
const waitProperties = {
  timeout_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 9007199254740991 })),
  allow_remote: Type.Optional(Type.Boolean()),
  allow_redirect: Type.Optional(Type.Boolean()),
};
export const DownloadQuery = Type.Object(waitProperties);
export const ThumbnailQuery = Type.Object({
  width: Type.Integer({ minimum: 1, maximum: 10000 }),
  height: Type.Integer({ minimum: 1, maximum: 10000 }),
  method: Type.Optional(Type.Union([Type.Literal('crop'), Type.Literal('scale')])),
  animated: Type.Optional(Type.Boolean()),
  ...waitProperties,
});
const PreviewQuery = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2048 }),
  ts: Type.Optional(Type.Integer({ minimum: 0, maximum: 9007199254740991 })),
});

function uploadInput(request: FastifyRequest, filename: string | undefined): MediaUploadInput {
  const length = request.headers['content-length'];
  const contentLength = typeof length === 'string' && /^\d+$/.test(length) ? Number(length) : undefined;
  return {
    body: request.body as Readable,
    contentType: request.headers['content-type'],
    contentLength,
    fileName: filename,
  };
}

export function sendMedia(reply: FastifyReply, content: MediaContent, fileName?: string): FastifyReply {
  void reply.headers({
    ...MEDIA_SECURITY_HEADERS,
    'content-type': content.contentType,
    'content-length': String(content.size),
    'content-disposition': contentDisposition(content.contentType, fileName ?? content.fileName),
    // Media never change under their ID; only the user's own client should keep them.
    'cache-control': 'private, max-age=86400',
  });
  return reply.send(content.stream);
}

/** Routes whose body is the uploaded bytes: handed on as a stream, never read whole into memory. */
async function uploadRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { media } = app.services;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  // Whatever the bytes are, a Content-Type fastify cannot parse is a bad parameter, not bad JSON.
  app.setErrorHandler(async (error) => {
    if ((error as { code?: string }).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      throw errors.invalidParam('The Content-Type header is malformed');
    }
    throw error;
  });

  // POST /_matrix/media/v3/upload
  app.post(
    `${MEDIA_V3}/upload`,
    { onRequest: requireAuth, schema: { querystring: UploadQuery } },
    async (request) => media.upload(request.session.userId, uploadInput(request, request.query.filename)),
  );

  // PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
  app.put(
    `${MEDIA_V3}/upload/:serverName/:mediaId`,
    { onRequest: requireAuth, schema: { params: MediaParams, querystring: UploadQuery } },
    async (request) => {
      const { serverName, mediaId } = request.params;
      await media.uploadTo(
        request.session.userId,
        serverName,
        mediaId,
        uploadInput(request, request.query.filename),
      );
      return {};
    },
  );
}

export async function mediaRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { media } = app.services;
  await app.register(uploadRoutes);

  // POST /_matrix/media/v1/create
  app.post(`${MEDIA_V1}/create`, { onRequest: requireAuth }, async (request) =>
    media.create(request.session.userId),
  );

  // GET /_matrix/client/v1/media/config and GET /_matrix/media/v3/config
  for (const url of [`${CLIENT_MEDIA}/config`, `${MEDIA_V3}/config`]) {
    app.get(url, { onRequest: requireAuth }, async () => media.mediaConfig());
  }

  for (const legacy of [false, true]) {
    const base = legacy ? MEDIA_V3 : CLIENT_MEDIA;
    const auth = legacy ? {} : { onRequest: requireAuth };

    // GET /_matrix/client/v1/media/download/{serverName}/{mediaId} (and the legacy /_matrix/media/v3 one)
    app.get(
      `${base}/download/:serverName/:mediaId`,
      { ...auth, schema: { params: MediaParams, querystring: DownloadQuery } },
      async (request, reply) => {
        const { serverName, mediaId } = request.params;
        const content = await media.download(serverName, mediaId, { ...readOf(request.query), legacy });
        return sendMedia(reply, content);
      },
    );

    // GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName} (and the legacy one)
    app.get(
      `${base}/download/:serverName/:mediaId/:fileName`,
      { ...auth, schema: { params: MediaFileParams, querystring: DownloadQuery } },
      async (request, reply) => {
        const { serverName, mediaId, fileName } = request.params;
        const content = await media.download(serverName, mediaId, { ...readOf(request.query), legacy });
        return sendMedia(reply, content, fileName);
      },
    );

    // GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} (and the legacy one)
    app.get(
      `${base}/thumbnail/:serverName/:mediaId`,
      { ...auth, schema: { params: MediaParams, querystring: ThumbnailQuery } },
      async (request, reply) => {
        const { serverName, mediaId } = request.params;
        const q = request.query;
        const content = await media.thumbnail(serverName, mediaId, {
          width: q.width,
          height: q.height,
          method: q.method ?? 'scale',
          animated: q.animated ?? false,
          ...readOf(q),
          legacy,
        });
        return sendMedia(reply, content);
      },
    );
  }

  // GET /_matrix/client/v1/media/preview_url and GET /_matrix/media/v3/preview_url (deprecated;
  // it always needed a token, so the freeze does not concern it)
  for (const url of [`${CLIENT_MEDIA}/preview_url`, `${MEDIA_V3}/preview_url`]) {
    app.get(url, { onRequest: requireAuth, schema: { querystring: PreviewQuery } }, async (request) =>
      media.preview(request.session.userId, request.query.url),
    );
  }
}

export function waitOf(query: { timeout_ms?: number | undefined }): { timeoutMs?: number } {
  return query.timeout_ms !== undefined ? { timeoutMs: query.timeout_ms } : {};
}

/** timeout_ms and allow_remote of a client's download or thumbnail request. */
function readOf(query: { timeout_ms?: number | undefined; allow_remote?: boolean | undefined }): {
  timeoutMs?: number;
  allowRemote?: boolean;
} {
  return {
    ...waitOf(query),
    ...(query.allow_remote !== undefined ? { allowRemote: query.allow_remote } : {}),
  };
}
