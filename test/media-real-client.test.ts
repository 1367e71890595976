/**
 * matrix-js-sdk against the media repository over HTTP: an encrypted attachment (the client
 * encrypts, as Matrix clients do for encrypted rooms; the server stores opaque bytes) makes the
 * round trip byte for byte, and a thumbnail is fetched for an uploaded PNG through the URL the SDK
 * builds for authenticated media.
 */
import './helpers/sdk-node.ts';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createClient } from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import sharp from 'sharp';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import { startTestServer } from './helpers/server.ts';

t.setTimeout(300_000);
(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');

/** Encrypts an attachment as the spec's "Sending encrypted attachments" describes (AES-256-CTR). */
function encryptAttachment(plain: Buffer) {
  const key = randomBytes(32);
  // The counter's low 64 bits start at zero, as clients do so that the counter cannot wrap.
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const data = Buffer.concat([cipher.update(plain), cipher.final()]);
  const info = {
    v: 'v2',
    key: {
      alg: 'A256CTR',
      ext: true,
      k: key.toString('base64url'),
      key_ops: ['encrypt', 'decrypt'],
      kty: 'oct',
    },
    iv: iv.toString('base64').replace(/=+$/, ''),
    hashes: { sha256: createHash('sha256').update(data).digest('base64').replace(/=+$/, '') },
  };
  return { data, info };
}

function decryptAttachment(data: Buffer, info: ReturnType<typeof encryptAttachment>['info']): Buffer {
  const hash = createHash('sha256').update(data).digest('base64').replace(/=+$/, '');
  if (hash !== info.hashes.sha256) throw new Error('the ciphertext does not match its hash');
  const decipher = createDecipheriv(
    'aes-256-ctr',
    Buffer.from(info.key.k, 'base64url'),
    Buffer.from(info.iv, 'base64'),
  );
  return Buffer.concat([decipher.update(data), decipher.final()]);
}

for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk and media on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const baseUrl = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
    const alice = await s.register('alice');
    const sdkLog: { level: string; line: string }[] = [];
    const client = createClient({
      baseUrl,
      userId: alice.user_id,
      accessToken: alice.access_token,
      deviceId: alice.device_id,
      logger: recordingLogger('alice', sdkLog, false),
    });
    t.teardown(() => client.stopClient());
    const fetchAuthed = (url: string) =>
      fetch(url, { headers: { authorization: `Bearer ${alice.access_token}` } });

    t.test('an encrypted attachment round-trips', async (t) => {
      const plain = randomBytes(256 * 1024);
      const { data, info } = encryptAttachment(plain);
      const { content_uri } = await client.uploadContent(data, {
        type: 'application/octet-stream',
        name: 'encrypted-data.bin',
      });
      t.match(content_uri, /^mxc:\/\//, 'the SDK gets an mxc URI');
      const url = client.mxcUrlToHttp(content_uri, undefined, undefined, undefined, false, true, true);
      t.ok(url?.includes('/_matrix/client/v1/media/download/'), 'the SDK builds an authenticated media URL');
      const res = await fetchAuthed(url!);
      t.equal(res.status, 200);
      const fetched = Buffer.from(await res.arrayBuffer());
      t.ok(fetched.equals(data), 'the server gives back the exact ciphertext');
      t.ok(decryptAttachment(fetched, info).equals(plain), 'which decrypts to the original file');
      const anonymous = await fetch(url!);
      t.equal(anonymous.status, 401, 'not without a token');
    });

    t.test('a thumbnail of an uploaded PNG', async (t) => {
      const image = await sharp({
        create: { width: 1200, height: 900, channels: 4, background: '#2a7f62ff' },
      })
        .png()
        .toBuffer();
      const { content_uri } = await client.uploadContent(image, { type: 'image/png', name: 'figure-1.png' });
      const url = client.mxcUrlToHttp(content_uri, 96, 96, 'crop', false, true, true);
      t.ok(url?.includes('/_matrix/client/v1/media/thumbnail/'), 'the SDK builds a thumbnail URL');
      const res = await fetchAuthed(url!);
      t.equal(res.status, 200);
      t.equal(res.headers.get('content-type'), 'image/png');
      const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
      t.same([meta.format, meta.width, meta.height], ['png', 96, 96], 'a 96x96 PNG thumbnail');
      const scaled = await fetchAuthed(
        client.mxcUrlToHttp(content_uri, 800, 600, 'scale', false, true, true)!,
      );
      const scaledMeta = await sharp(Buffer.from(await scaled.arrayBuffer())).metadata();
      t.same([scaledMeta.width, scaledMeta.height], [800, 600], 'and scaled within 800x600');
    });

    t.test('the SDK reads the media config', async (t) => {
      const config = await client.getMediaConfig(true);
      t.equal(config['m.upload.size'], s.config.media.maxUploadBytes);
      t.same(
        sdkLog.filter((l) => l.level === 'error'),
        [],
        'the SDK logged no errors',
      );
    });
  });
}
