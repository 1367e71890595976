import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

/** Where `npm run build -w web` writes the client (web/dist at the root of the repository). */
export const WEB_CLIENT_DIST = fileURLToPath(new URL('../../web/dist/', import.meta.url));

/**
 * The client's pages run only our own scripts and talk only to this server (fetch, WebSocket).
 * 'wasm-unsafe-eval' lets the crypto WebAssembly compile; nothing allows eval of JavaScript.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' blob: data:",
  "media-src 'self' blob:",
  "connect-src 'self' ws: wss:",
  "worker-src 'self' blob:",
  "object-src 'none'",
  "base-uri 'self'",
  "frame-ancestors 'none'",
  "form-action 'self'",
].join('; ');

/**
 * Serves the built web client under basePath, same origin as the API. Each file of the build
 * gets its own route (no wildcard), so every other path still gets the Matrix 404
 * (M_UNRECOGNIZED). Files under assets/ have content hashes in their names and are cached for a
 * year; index.html is revalidated on every load so a new build is picked up.
 */
export async function webClientPlugin(
  app: FastifyInstance,
  opts: { basePath: string; root?: string },
): Promise<void> {
  const root = opts.root ?? WEB_CLIENT_DIST;
  if (!existsSync(`${root}/index.html`)) {
    app.log.warn({ root }, 'the web client is not built (npm run build -w web): not serving it');
    app.get(opts.basePath, async (_request, reply) =>
      reply
        .code(503)
        .type('text/plain; charset=utf-8')
        .send('The Conclave web client has not been built. Run `npm run build -w web`, then restart.\n'),
    );
    return;
  }
  await app.register(fastifyStatic, {
    root,
    prefix: opts.basePath,
    wildcard: false,
    index: ['index.html'],
    serveDotFiles: false,
    setHeaders: (reply, filePath) => {
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
      reply.header(
        'cache-control',
        /[\\/]assets[\\/]/.test(filePath) ? 'public, max-age=31536000, immutable' : 'no-cache',
      );
    },
  });
}
