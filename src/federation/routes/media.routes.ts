import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { contentDisposition, MEDIA_SECURITY_HEADERS } from '../../media/disposition.ts';
import type { MediaContent } from '../../media/media.service.ts';
import { DownloadQuery, MediaIdParams, ThumbnailQuery, waitOf } from '../../routes/client/media.routes.ts';

const V1 = '/_matrix/federation/v1';

/**
 * Media of this server for other servers (server-server API: Content Repository, spec v1.11):
 * answered as `multipart/mixed`, a JSON part (empty metadata) and then the bytes, streamed.
 * The X-Matrix signature is checked by the context these routes are registered in.
 */
export async function mediaRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { media, config } = app.services;

  // GET /_matrix/federation/v1/media/download/{mediaId}
  app.get(
    `${V1}/media/download/:mediaId`,
    { schema: { params: MediaIdParams, querystring: DownloadQuery } },
    async (request, reply) => {
      const content = await media.download(config.serverName, request.params.mediaId, waitOf(request.query));
      return sendMultipart(reply, content);
    },
  );

  // GET /_matrix/federation/v1/media/thumbnail/{mediaId}
  app.get(
    `${V1}/media/thumbnail/:mediaId`,
    { schema: { params: MediaIdParams, querystring: ThumbnailQuery } },
    async (request, reply) => {
      const q = request.query;
      const content = await media.thumbnail(config.serverName, request.params.mediaId, {
        width: q.width,
        height: q.height,
        method: q.method ?? 'scale',
        animated: q.animated ?? false,
        ...waitOf(q),
      });
      return sendMultipart(reply, content);
    },
  );
}

function sendMultipart(reply: FastifyReply, content: MediaContent): FastifyReply {
  const boundary = randomBytes(16).toString('hex');
  const head = Buffer.from(
    `--${boundary}\r\nContent-Type: application/json\r\n\r\n{}\r\n` +
      `--${boundary}\r\nContent-Type: ${content.contentType}\r\n` +
      `Content-Disposition: ${contentDisposition(content.contentType, content.fileName)}\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const body = Readable.from(
    (async function* () {
      yield head;
      yield* content.stream;
      yield tail;
    })(),
  );
  void reply.headers({
    ...MEDIA_SECURITY_HEADERS,
    'content-type': `multipart/mixed; boundary=${boundary}`,
    'content-length': String(head.length + content.size + tail.length),
  });
  return reply.send(body);
}
