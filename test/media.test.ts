import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import sharp from 'sharp';
import t from 'tap';
import { ConfigError, defaultConfig, loadConfig } from '../src/config.ts';
import { contentDisposition } from '../src/media/disposition.ts';
import { chooseSize } from '../src/media/thumbnails.ts';
import { isPublicAddress, openGraph } from '../src/media/url-preview.ts';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, SERVER_NAME, startTestServer } from './helpers/server.ts';

/**
 * The media repository through its HTTP API (spec/media.md): alice uploads, bob (another user of
 * the server) reads, mallory tries what she may not. Some subtests change the running server's
 * media settings (quota, freeze date, URL previews) in place, as an operator would in its
 * configuration, to avoid starting a server per setting.
 */
t.setTimeout(600_000);

const MEDIA_V3 = '/_matrix/media/v3';
const CLIENT_MEDIA = '/_matrix/client/v1/media';
const MAX_UPLOAD = 300_000;

/** Every file the store holds (its temporary folder aside). */
function storedFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) {
        if (full !== path.join(root, 'tmp')) walk(full);
      } else out.push(name);
    }
  };
  walk(root);
  return out;
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function png(width: number, height: number, color = '#3366cc'): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: color } })
    .png()
    .toBuffer();
}

t.test('content disposition follows RFC 6266 and is inline only for safe types', async (t) => {
  t.equal(contentDisposition('image/png', 'cat.png'), 'inline; filename="cat.png"');
  t.equal(contentDisposition('text/html', 'page.html'), 'attachment; filename="page.html"');
  t.equal(contentDisposition('image/svg+xml', null), 'attachment');
  t.equal(contentDisposition('IMAGE/PNG; x=y', null), 'inline', 'parameters and case do not matter');
  t.equal(
    contentDisposition('application/pdf', 'résumé "final".pdf'),
    `attachment; filename="r_sum_ _final_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf`,
  );
});

t.test('URL preview address checks and Open Graph parsing', async (t) => {
  for (const a of [
    '127.0.0.1',
    '10.1.2.3',
    '172.16.0.1',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '::1',
    '::',
    'fe80::1',
    'fc00::1',
    '::ffff:127.0.0.1',
    '::ffff:10.0.0.1',
    '::ffff:7f00:1',
    '0:0:0:0:0:ffff:7f00:1',
    '::127.0.0.1',
    'ff02::1',
  ]) {
    t.notOk(isPublicAddress(a), `${a} is not public`);
  }
  for (const a of ['8.8.8.8', '93.184.216.34', '2001:4860:4860::8888', '::ffff:8.8.8.8', '::ffff:808:808']) {
    t.ok(isPublicAddress(a), `${a} is public`);
  }
  t.same(
    openGraph(
      `<html><head><title>Fallback &amp; title</title><meta property="og:description" content='A &quot;paper&quot;'>` +
        `<meta property="og:image" content="https://x/y.png"><meta name="og:site_name" content=Lab></head></html>`,
    ),
    { 'og:description': 'A "paper"', 'og:site_name': 'Lab', 'og:title': 'Fallback & title' },
    'og tags, the title standing in, images left out',
  );
});

t.test('media settings', async (t) => {
  const media = loadConfig({
    CONCLAVE_MEDIA_LEGACY_FREEZE: '2024-09-04T00:00:00Z',
    CONCLAVE_MAX_UPLOAD_BYTES: '1000',
    CONCLAVE_MEDIA_QUOTA_BYTES: '5000',
    CONCLAVE_URL_PREVIEWS: 'on',
    CONCLAVE_URL_PREVIEW_ALLOW: '127.0.0.1, 10.0.0.0/8, ::1',
  }).media;
  t.equal(media.legacyFreezeTs, Date.parse('2024-09-04T00:00:00Z'));
  t.same([media.maxUploadBytes, media.quotaBytes, media.urlPreviews], [1000, 5000, true]);
  t.same(media.urlPreviewAllowAddresses, ['127.0.0.1', '10.0.0.0/8', '::1']);
  t.equal(loadConfig({}).media.legacyFreezeTs, 0, 'the freeze is off by default');
  t.equal(loadConfig({}).media.urlPreviews, false, 'previews are off by default');
  for (const [env, value] of [
    ['CONCLAVE_MEDIA_LEGACY_FREEZE', 'someday'],
    ['CONCLAVE_URL_PREVIEW_ALLOW', 'example.org'],
    ['CONCLAVE_URL_PREVIEW_ALLOW', '10.0.0.0/33'],
    ['CONCLAVE_MAX_UPLOAD_BYTES', '0'],
  ] as const) {
    t.throws(() => loadConfig({ [env]: value }), ConfigError, `${env}=${value} is refused`);
  }
});

t.test('the thumbnail sizes offered', async (t) => {
  t.same(chooseSize(32, 32, 'crop'), { width: 32, height: 32, method: 'crop' });
  t.same(chooseSize(40, 40, 'crop'), { width: 96, height: 96, method: 'crop' });
  t.same(chooseSize(800, 600, 'scale'), { width: 800, height: 600, method: 'scale' });
  t.same(
    chooseSize(5000, 5000, 'scale'),
    { width: 800, height: 600, method: 'scale' },
    'the largest at most',
  );
  t.same(
    chooseSize(200, 200, 'crop'),
    { width: 320, height: 240, method: 'scale' },
    'beyond the crops, a scale',
  );
});

for (const backend of databaseBackends()) {
  t.test(`media on ${backend.name}`, async (t) => {
    const mediaDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-media-test-'));
    t.teardown(() => rmSync(mediaDir, { recursive: true, force: true }));
    const s = await startTestServer(t, backend, {
      media: { ...defaultConfig().media, dir: mediaDir, maxUploadBytes: MAX_UPLOAD, maxPendingPerUser: 3 },
    });
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');

    const upload = (body: Buffer | string, opts: { token?: string; type?: string; filename?: string } = {}) =>
      s.request(
        'POST',
        `${MEDIA_V3}/upload${opts.filename !== undefined ? `?filename=${encodeURIComponent(opts.filename)}` : ''}`,
        {
          token: opts.token ?? alice.access_token,
          rawBody: body,
          headers: { 'content-type': opts.type ?? 'application/octet-stream' },
        },
      );
    const uploaded = async (body: Buffer | string, opts: { type?: string; filename?: string } = {}) => {
      const res = await upload(body, opts);
      if (res.statusCode !== 200) throw new Error(`upload: ${res.statusCode} ${res.body}`);
      return mediaPath(res.json().content_uri as string);
    };
    const download = (p: string, who: Login | null = bob, query = '') =>
      s.request('GET', `${CLIENT_MEDIA}/download/${p}${query}`, who ? { token: who.access_token } : {});
    const thumbnail = (p: string, query: string, who: Login | null = bob) =>
      s.request('GET', `${CLIENT_MEDIA}/thumbnail/${p}?${query}`, who ? { token: who.access_token } : {});

    t.test('config', async (t) => {
      for (const url of [`${CLIENT_MEDIA}/config`, `${MEDIA_V3}/config`]) {
        const res = await s.request('GET', url, { token: bob.access_token });
        t.equal(res.statusCode, 200, url);
        t.same(res.json(), { 'm.upload.size': MAX_UPLOAD }, 'the configured maximum upload size');
        const bare = await s.request('GET', url);
        t.equal(bare.statusCode, 401);
        t.equal(bare.json().errcode, 'M_MISSING_TOKEN');
      }
    });

    t.test('upload and download', async (t) => {
      const bytes = Buffer.from('the results of experiment 7\n');
      const res = await upload(bytes, { type: 'text/plain', filename: 'results.txt' });
      t.equal(res.statusCode, 200);
      const uri = res.json().content_uri as string;
      t.match(uri, new RegExp(`^mxc://${SERVER_NAME.replace('.', '\\.')}/[A-Za-z0-9_-]{24}$`), 'an mxc URI');
      const p = mediaPath(uri);

      const got = await download(p);
      t.equal(got.statusCode, 200);
      t.same(got.rawPayload, bytes, 'bob gets the bytes alice uploaded');
      t.equal(got.headers['content-type'], 'text/plain');
      t.equal(got.headers['content-length'], String(bytes.length));
      t.equal(got.headers['content-disposition'], 'inline; filename="results.txt"');
      t.match(got.headers['content-security-policy'], /^sandbox; default-src 'none'; script-src 'none'/);
      t.equal(got.headers['x-content-type-options'], 'nosniff');
      t.equal(got.headers['access-control-allow-origin'], '*');

      const named = await download(`${p}/${encodeURIComponent('données.txt')}`);
      t.equal(named.statusCode, 200);
      t.equal(
        named.headers['content-disposition'],
        `inline; filename="donn_es.txt"; filename*=UTF-8''donn%C3%A9es.txt`,
        'the name in the path wins, encoded per RFC 6266',
      );

      const r0 = await s.request('POST', '/_matrix/media/r0/upload?filename=r0.txt', {
        token: alice.access_token,
        rawBody: 'old path',
        headers: { 'content-type': 'text/plain' },
      });
      t.equal(r0.statusCode, 200, 'the r0 path of the media API answers as v3 does');
      t.equal((await download(mediaPath(r0.json().content_uri))).body, 'old path');

      const head = await s.app.inject({
        method: 'HEAD',
        url: `${CLIENT_MEDIA}/download/${p}`,
        headers: { authorization: `Bearer ${bob.access_token}` },
      });
      t.equal(head.statusCode, 200, 'HEAD is answered');

      const noToken = await download(p, null);
      t.equal(noToken.statusCode, 401);
      t.equal(noToken.json().errcode, 'M_MISSING_TOKEN');
      const uploadNoToken = await s.request('POST', `${MEDIA_V3}/upload`, { rawBody: 'x' });
      t.equal(uploadNoToken.statusCode, 401);
      t.equal(uploadNoToken.json().errcode, 'M_MISSING_TOKEN');

      const unknown = await download(`${SERVER_NAME}/NoSuchMediaIdHere`);
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      const badId = await download(`${SERVER_NAME}/${encodeURIComponent('bad!id')}`);
      t.equal(badId.statusCode, 400);
      t.equal(badId.json().errcode, 'M_INVALID_PARAM');
      // Remote media are fetched (test/media-remote.test.ts), unless allow_remote=false.
      const remote = await download(`other.example/${p.split('/')[1]}`, bob, '?allow_remote=false');
      t.equal(remote.statusCode, 404, 'a remote media not kept here, with allow_remote=false');
      t.equal(remote.json().errcode, 'M_NOT_FOUND');
      const badTimeout = await download(p, bob, '?timeout_ms=-1');
      t.equal(badTimeout.statusCode, 400);
      t.equal(badTimeout.json().errcode, 'M_INVALID_PARAM');
    });

    t.test('HTML and SVG are served as attachments, never inline', async (t) => {
      for (const [type, body] of [
        ['text/html', '<script>alert(document.cookie)</script>'],
        ['image/svg+xml', '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'],
        ['application/xhtml+xml', '<html xmlns="http://www.w3.org/1999/xhtml"><script>1</script></html>'],
      ] as const) {
        const p = await uploaded(body, { type, filename: 'x' });
        const got = await download(p);
        t.equal(got.statusCode, 200);
        t.match(got.headers['content-disposition'], /^attachment/, `${type} is an attachment`);
        t.match(got.headers['content-security-policy'], /sandbox/, `${type} is sandboxed`);
        t.equal(got.headers['x-content-type-options'], 'nosniff');
      }
      const untyped = await s.request('POST', `${MEDIA_V3}/upload`, {
        token: alice.access_token,
        rawBody: 'x',
        headers: { 'content-type': 'not a type' },
      });
      t.equal(untyped.statusCode, 400, 'a malformed Content-Type is refused');
      t.equal(untyped.json().errcode, 'M_INVALID_PARAM');
      const odd = await uploaded('x', { type: 'application/x-conclave-test' });
      const got = await download(odd);
      t.equal(got.headers['content-type'], 'application/x-conclave-test');
      t.equal(got.headers['content-disposition'], 'attachment', 'an unknown type is an attachment');
    });

    t.test('identical files are stored once and deleted when the last media goes', async (t) => {
      const bytes = Buffer.from(`shared bytes ${Math.random()}`);
      const first = await uploaded(bytes);
      const second = await uploaded(bytes);
      t.not(first, second, 'two media IDs');
      const hash = sha256(bytes);
      t.equal(storedFiles(mediaDir).filter((f) => f === hash).length, 1, 'one copy on disk');

      const { media } = s.runtime.services;
      t.same(await media.deleteMedia(`mxc://${first}`, '@admin:conclave.test'), { files_deleted: 0 });
      t.equal((await download(first)).statusCode, 404, 'the deleted media is gone');
      t.equal((await download(second)).statusCode, 200, 'the other keeps its bytes');
      t.ok(storedFiles(mediaDir).includes(hash), 'the shared file stays');
      t.same(await media.deleteMedia(`mxc://${second}`, '@admin:conclave.test'), { files_deleted: 1 });
      t.notOk(storedFiles(mediaDir).includes(hash), 'the last reference took the file with it');
      const again = await media
        .deleteMedia(`mxc://${second}`, null)
        .catch((e: { errcode: string }) => e.errcode);
      t.equal(again, 'M_NOT_FOUND');
    });

    t.test('upload size limit and quota', async (t) => {
      const big = await upload(Buffer.alloc(MAX_UPLOAD + 1));
      t.equal(big.statusCode, 413);
      t.equal(big.json().errcode, 'M_TOO_LARGE');
      const exact = await upload(Buffer.alloc(MAX_UPLOAD, 7));
      t.equal(exact.statusCode, 200, 'the maximum itself is accepted');

      // Without a Content-Length the limit holds while streaming.
      const { media } = s.runtime.services;
      const chunks = function* () {
        for (let i = 0; i < 40; i++) yield Buffer.alloc(10_000, i);
      };
      const streamed = await media
        .upload(mallory.user_id, {
          body: Readable.from(chunks()),
          contentType: 'application/octet-stream',
          contentLength: undefined,
          fileName: undefined,
        })
        .catch((e: { errcode: string; status: number }) => `${e.status} ${e.errcode}`);
      t.equal(streamed, '413 M_TOO_LARGE', 'a body without Content-Length is cut off at the limit');
      t.same(
        readdirSync(path.join(mediaDir, 'tmp')),
        [],
        'no temporary file is left behind by refused uploads',
      );

      s.config.media.quotaBytes = 2500;
      t.teardown(() => {
        s.config.media.quotaBytes = 0;
      });
      const token = mallory.access_token;
      t.equal((await upload(Buffer.alloc(1000, 1), { token })).statusCode, 200);
      t.equal((await upload(Buffer.alloc(1000, 2), { token })).statusCode, 200);
      const over = await upload(Buffer.alloc(1000, 3), { token });
      t.equal(over.statusCode, 403, 'over the quota');
      t.equal(over.json().errcode, 'M_RESOURCE_LIMIT_EXCEEDED');
      t.equal((await upload(Buffer.alloc(400, 4), { token })).statusCode, 200, 'what still fits is taken');
      t.equal((await upload(Buffer.alloc(10, 5), { token: bob.access_token })).statusCode, 200, 'per user');
    });

    t.test('create, then upload later (async upload)', async (t) => {
      const created = await s.request('POST', '/_matrix/media/v1/create', { token: alice.access_token });
      t.equal(created.statusCode, 200);
      const { content_uri, unused_expires_at } = created.json() as {
        content_uri: string;
        unused_expires_at: number;
      };
      t.ok(unused_expires_at > Date.now(), 'an expiry in the future');
      const p = mediaPath(content_uri);
      const put = (who: Login | null, body: string, query = '') =>
        s.request('PUT', `${MEDIA_V3}/upload/${p}${query}`, {
          ...(who ? { token: who.access_token } : {}),
          rawBody: body,
          headers: { 'content-type': 'text/plain' },
        });

      const early = await download(p, bob, '?timeout_ms=0');
      t.equal(early.statusCode, 504, 'not uploaded yet');
      t.equal(early.json().errcode, 'M_NOT_YET_UPLOADED');

      t.equal((await put(null, 'x')).json().errcode, 'M_MISSING_TOKEN');
      const stolen = await put(mallory, 'not yours');
      t.equal(stolen.statusCode, 403, 'only the creator may upload');
      t.equal(stolen.json().errcode, 'M_FORBIDDEN');

      // A download that waits gets the bytes once they arrive.
      const waiting = download(p, bob, '?timeout_ms=60000');
      const done = await put(alice, 'arrived later', '?filename=late.txt');
      t.equal(done.statusCode, 200);
      t.same(done.json(), {});
      const got = await waiting;
      t.equal(got.statusCode, 200, 'the waiting download is answered');
      t.equal(got.body, 'arrived later');
      t.equal(got.headers['content-disposition'], 'inline; filename="late.txt"');

      const twice = await put(alice, 'again');
      t.equal(twice.statusCode, 409);
      t.equal(twice.json().errcode, 'M_CANNOT_OVERWRITE_MEDIA');

      const badId = await s.request('PUT', `${MEDIA_V3}/upload/${SERVER_NAME}/${encodeURIComponent('a.b')}`, {
        token: alice.access_token,
        rawBody: 'x',
      });
      t.equal(badId.statusCode, 400);
      t.equal(badId.json().errcode, 'M_INVALID_PARAM');
      const unknown = await s.request('PUT', `${MEDIA_V3}/upload/${SERVER_NAME}/NeverCreated`, {
        token: alice.access_token,
        rawBody: 'x',
      });
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      const bare = await s.request('POST', '/_matrix/media/v1/create');
      t.equal(bare.statusCode, 401);
      t.equal(bare.json().errcode, 'M_MISSING_TOKEN');
    });

    t.test('pending media IDs are limited per user and expire', async (t) => {
      const create = () => s.request('POST', '/_matrix/media/v1/create', { token: bob.access_token });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await create();
        t.equal(res.statusCode, 200);
        ids.push(mediaPath(res.json().content_uri));
      }
      const fourth = await create();
      t.equal(fourth.statusCode, 429, 'the fourth pending media ID is refused');
      t.equal(fourth.json().errcode, 'M_LIMIT_EXCEEDED');
      t.type(fourth.json().retry_after_ms, 'number');

      // One of them runs out of time (as if a day had passed).
      const expiredId = ids[0]!.split('/')[1]!;
      await s.runtime.database.db
        .updateTable('media')
        .set({ unused_expires_ts: Date.now() - 1 })
        .where('media_id', '=', expiredId)
        .execute();
      const late = await s.request('PUT', `${MEDIA_V3}/upload/${ids[0]}`, {
        token: bob.access_token,
        rawBody: 'too late',
      });
      t.equal(late.statusCode, 404, 'an expired media ID takes no upload');
      t.equal(late.json().errcode, 'M_NOT_FOUND');
      t.equal((await download(ids[0]!, bob, '?timeout_ms=0')).statusCode, 404, 'nor serves anything');
      t.equal((await create()).statusCode, 200, 'and no longer counts against the limit');
    });

    t.test('thumbnails of PNG, JPEG, GIF and WebP', async (t) => {
      const source = await png(1000, 800);
      const p = await uploaded(source, { type: 'image/png', filename: 'figure.png' });

      const crop = await thumbnail(p, 'width=96&height=96&method=crop');
      t.equal(crop.statusCode, 200, crop.body.slice(0, 200));
      t.equal(crop.headers['content-type'], 'image/png');
      t.equal(crop.headers['content-disposition'], 'inline');
      t.match(crop.headers['content-security-policy'], /sandbox/);
      const cropMeta = await sharp(crop.rawPayload).metadata();
      t.same([cropMeta.format, cropMeta.width, cropMeta.height], ['png', 96, 96], 'cropped to 96x96');

      const scale = await thumbnail(p, 'width=320&height=240&method=scale');
      const scaleMeta = await sharp(scale.rawPayload).metadata();
      t.same([scaleMeta.width, scaleMeta.height], [300, 240], 'scaled inside 320x240, aspect kept');

      const odd = await thumbnail(p, 'width=50&height=50');
      const oddMeta = await sharp(odd.rawPayload).metadata();
      t.same([oddMeta.width, oddMeta.height], [300, 240], 'an unoffered size gets the next offered one');

      const again = await thumbnail(p, 'width=96&height=96&method=crop');
      t.same(again.rawPayload, crop.rawPayload, 'the same thumbnail again');
      const rows = await s.runtime.database.db
        .selectFrom('media_thumbnails')
        .select(['width', 'height', 'method'])
        .where('media_id', '=', p.split('/')[1]!)
        .execute();
      t.equal(rows.length, 2, 'made once per offered size and kept');

      const jpeg = await uploaded(
        await sharp({ create: { width: 640, height: 640, channels: 3, background: '#884422' } })
          .jpeg()
          .toBuffer(),
        { type: 'image/jpeg' },
      );
      const jpegThumb = await thumbnail(jpeg, 'width=32&height=32&method=crop');
      t.equal(jpegThumb.headers['content-type'], 'image/jpeg');
      t.same(
        [
          (await sharp(jpegThumb.rawPayload).metadata()).width,
          (await sharp(jpegThumb.rawPayload).metadata()).format,
        ],
        [32, 'jpeg'],
      );

      const frames = [await png(200, 100, '#ff0000'), await png(200, 100, '#00ff00')];
      for (const format of ['gif', 'webp'] as const) {
        const animatedImage = await sharp(frames, { join: { animated: true } })
          [format]()
          .toBuffer();
        const ap = await uploaded(animatedImage, { type: `image/${format}` });
        const still = await thumbnail(ap, 'width=96&height=96&method=crop');
        t.equal(still.statusCode, 200, `${format}: a still thumbnail`);
        const stillMeta = await sharp(still.rawPayload, { animated: true }).metadata();
        t.equal(stillMeta.pages ?? 1, 1, `${format}: one frame without animated=true`);
        const moving = await thumbnail(ap, 'width=96&height=96&method=crop&animated=true');
        t.equal(moving.headers['content-type'], `image/${format}`);
        const movingMeta = await sharp(moving.rawPayload, { animated: true }).metadata();
        t.equal(movingMeta.pages, 2, `${format}: animated=true keeps the frames`);
      }

      const text = await uploaded('not an image', { type: 'text/plain' });
      const refused = await thumbnail(text, 'width=96&height=96');
      t.equal(refused.statusCode, 400, 'text is not thumbnailed');
      t.equal(refused.json().errcode, 'M_UNKNOWN');
      const svg = await uploaded('<svg xmlns="http://www.w3.org/2000/svg"/>', { type: 'image/svg+xml' });
      t.equal((await thumbnail(svg, 'width=96&height=96')).statusCode, 400, 'nor SVG');
      const broken = await uploaded(Buffer.from('\x89PNG\r\n\x1a\nbroken'), { type: 'image/png' });
      const brokenRes = await thumbnail(broken, 'width=96&height=96');
      t.equal(brokenRes.statusCode, 400, 'a corrupt image is a client error, not a 500');

      for (const [query, errcode] of [
        ['width=0&height=96', 'M_INVALID_PARAM'],
        ['width=-5&height=96', 'M_INVALID_PARAM'],
        ['width=abc&height=96', 'M_INVALID_PARAM'],
        ['width=96&height=96&method=zoom', 'M_INVALID_PARAM'],
        ['width=20000&height=96', 'M_INVALID_PARAM'],
        ['height=96', 'M_MISSING_PARAM'],
      ] as const) {
        const res = await thumbnail(p, query);
        t.equal(res.statusCode, 400, query);
        t.equal(res.json().errcode, errcode, query);
      }
      const noToken = await thumbnail(p, 'width=96&height=96', null);
      t.equal(noToken.statusCode, 401);
      t.equal(noToken.json().errcode, 'M_MISSING_TOKEN');
    });

    t.test('the unauthenticated v3 endpoints serve only media from before the freeze', async (t) => {
      const p = await uploaded(await png(100, 100), { type: 'image/png' });
      const legacyDownload = () => s.request('GET', `${MEDIA_V3}/download/${p}`);
      const legacyThumb = () => s.request('GET', `${MEDIA_V3}/thumbnail/${p}?width=32&height=32&method=crop`);
      for (const res of [await legacyDownload(), await legacyThumb()]) {
        t.equal(res.statusCode, 404, 'off by default: nothing is served there');
        t.equal(res.json().errcode, 'M_NOT_FOUND');
      }
      // An install that served media before the freeze keeps serving those, and only those.
      s.config.media.legacyFreezeTs = Date.now() + 60_000;
      t.teardown(() => {
        s.config.media.legacyFreezeTs = 0;
      });
      const old = await legacyDownload();
      t.equal(old.statusCode, 200, 'media from before the freeze are served without a token');
      t.match(old.headers['content-security-policy'], /sandbox/);
      t.equal((await legacyThumb()).statusCode, 200);
      t.equal((await s.request('GET', `${MEDIA_V3}/download/${p}/old.png`)).statusCode, 200);
      s.config.media.legacyFreezeTs = Date.now() - 60_000;
      t.equal((await legacyDownload()).statusCode, 404, 'media from after the freeze are not');
    });

    t.test('quarantine and the admin functions', async (t) => {
      const { media } = s.runtime.services;
      const p = await uploaded('a questionable file', { type: 'text/plain' });
      const mxc = `mxc://${p}`;
      const listed = await media.listUserMedia(alice.user_id);
      t.ok(
        listed.some((m) => m.mxc === mxc && m.uploaded && !m.quarantined),
        'listUserMedia lists it',
      );
      await media.quarantineMedia(mxc, '@admin:conclave.test');
      const got = await download(p);
      t.equal(got.statusCode, 404, 'a quarantined media is not served');
      t.equal(got.json().errcode, 'M_NOT_FOUND');
      t.ok((await media.listUserMedia(alice.user_id)).find((m) => m.mxc === mxc)?.quarantined);
      const audit = await s.runtime.services.audit.list({ action: 'media.quarantine' });
      t.same(
        audit.map((r) => [r.actor, r.target]),
        [['@admin:conclave.test', mxc]],
        'the quarantine is audited',
      );
      for (const bad of ['https://x/y', `mxc://${SERVER_NAME}/bad!id`, 'mxc://other.example/abc']) {
        const err = await media.quarantineMedia(bad, null).catch((e: { errcode: string }) => e.errcode);
        t.equal(err, 'M_INVALID_PARAM', `${bad} is refused`);
      }
    });

    t.test('URL previews', async (t) => {
      const get = (url: string, who: Login | null = bob) =>
        s.request(
          'GET',
          `${CLIENT_MEDIA}/preview_url?url=${encodeURIComponent(url)}`,
          who ? { token: who.access_token } : {},
        );
      const page = await servePage(t);
      const off = await get(page.url('/'));
      t.equal(off.statusCode, 403, 'off by default');
      t.equal(off.json().errcode, 'M_FORBIDDEN');
      t.equal((await get(page.url('/'), null)).json().errcode, 'M_MISSING_TOKEN');

      s.config.media.urlPreviews = true;
      s.config.media.urlPreviewTimeoutMs = 1500;
      t.teardown(() => {
        s.config.media.urlPreviews = false;
        s.config.media.urlPreviewAllowAddresses = [];
      });
      for (const target of [
        page.url('/'),
        `http://localhost:${page.port}/`,
        `http://[::1]:${page.port}/`,
        'http://10.0.0.1/',
        'http://169.254.169.254/latest/meta-data/',
        'http://[::ffff:127.0.0.1]/',
      ]) {
        const res = await get(target);
        t.equal(res.statusCode, 403, `${target} is refused`);
        t.equal(res.json().errcode, 'M_FORBIDDEN');
      }
      t.equal(page.hits(), 0, 'no request reached the loopback server');
      const redirectToPrivate = page.url('/to-private');
      s.config.media.urlPreviewAllowAddresses = ['127.0.0.1'];
      const redirected = await get(redirectToPrivate);
      t.equal(redirected.statusCode, 403, 'a redirect to a private address is refused too');

      const ok = await get(page.url('/'));
      t.equal(ok.statusCode, 200, ok.body);
      t.same(ok.json(), { 'og:title': 'Experiment 7', 'og:description': 'Results' });

      // The page's og:image (relative) is fetched, kept as bob's media, and described.
      const withImage = await get(page.url('/with-image'));
      t.equal(withImage.statusCode, 200, withImage.body);
      const og = withImage.json();
      t.match(og, {
        'og:title': 'Figure',
        'og:image:type': 'image/png',
        'og:image:width': 60,
        'og:image:height': 40,
        'matrix:image:size': page.png.length,
      });
      t.match(og['og:image'], /^mxc:\/\/conclave\.test\//, 'og:image is an mxc URI of this server');
      const kept = await download(mediaPath(og['og:image']));
      t.equal(kept.statusCode, 200);
      t.ok(kept.rawPayload.equals(page.png), 'the image, as the page served it');
      t.ok(
        (await s.runtime.services.media.listUserMedia(bob.user_id)).some((m) => m.mxc === og['og:image']),
        'kept as a media of the user who asked',
      );
      for (const path of ['/with-svg', '/with-private-image', '/with-missing-image']) {
        const res = await get(page.url(path));
        t.equal(res.statusCode, 200, `${path}: the preview is answered`);
        t.same(res.json(), { 'og:title': 'Figure' }, `${path}: without an image`);
      }
      const legacyPath = await s.request(
        'GET',
        `${MEDIA_V3}/preview_url?url=${encodeURIComponent(page.url('/'))}`,
        { token: bob.access_token },
      );
      t.equal(legacyPath.statusCode, 200, 'the deprecated /_matrix/media/v3/preview_url too');
      t.same(legacyPath.json(), { 'og:title': 'Experiment 7', 'og:description': 'Results' });
      const legacyNoToken = await s.request(
        'GET',
        `${MEDIA_V3}/preview_url?url=${encodeURIComponent(page.url('/'))}`,
      );
      t.equal(legacyNoToken.statusCode, 401, 'with a token only');

      s.config.media.urlPreviewMaxBytes = 2048;
      t.teardown(() => {
        s.config.media.urlPreviewMaxBytes = defaultConfig().media.urlPreviewMaxBytes;
      });
      const long = await get(page.url('/long'));
      t.equal(long.statusCode, 200);
      t.same(long.json(), { 'og:title': 'Early' }, 'what lies past the size limit is not read');

      const slow = await get(page.url('/slow'));
      t.equal(slow.statusCode, 504, 'a page that does not answer in time');

      for (const bad of ['ftp://example.org/', 'not a url']) {
        const res = await get(bad);
        t.equal(res.statusCode, 400, bad);
        t.equal(res.json().errcode, 'M_INVALID_PARAM');
      }
      const missing = await s.request('GET', `${CLIENT_MEDIA}/preview_url`, { token: bob.access_token });
      t.equal(missing.json().errcode, 'M_MISSING_PARAM');
    });
  });
}

/** `<server>/<mediaId>` of an mxc URI, for the paths. */
function mediaPath(uri: string): string {
  const m = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(uri);
  if (!m) throw new Error(`not an mxc URI: ${uri}`);
  return `${m[1]}/${m[2]}`;
}

/** A page server on loopback for the preview tests, counting its hits. */
async function servePage(t: { teardown(fn: () => unknown): void }) {
  let hits = 0;
  const png = await sharp({ create: { width: 60, height: 40, channels: 3, background: '#0a0' } })
    .png()
    .toBuffer();
  const server = http.createServer((req, res) => {
    hits++;
    if (req.url === '/to-private') {
      res.writeHead(302, { location: 'http://10.0.0.1/' }).end();
      return;
    }
    if (req.url === '/slow') return; // never answers
    const figure = (image: string) =>
      `<html><head><meta property="og:title" content="Figure"><meta property="og:image" content="${image}"></head></html>`;
    const images: Record<string, string> = {
      '/with-image': 'img/fig.png',
      '/with-svg': '/fig.svg',
      '/with-private-image': 'http://10.0.0.1/fig.png',
      '/with-missing-image': '/nothing.png',
    };
    if (req.url === '/img/fig.png') {
      res.writeHead(200, { 'content-type': 'image/png' }).end(png);
      return;
    }
    if (req.url === '/fig.svg') {
      res
        .writeHead(200, { 'content-type': 'image/svg+xml' })
        .end('<svg xmlns="http://www.w3.org/2000/svg"/>');
      return;
    }
    if (req.url === '/nothing.png') {
      res.writeHead(404).end();
      return;
    }
    if (req.url && images[req.url]) {
      res.writeHead(200, { 'content-type': 'text/html' }).end(figure(images[req.url]!));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    if (req.url === '/long') {
      res.end(
        `<meta property="og:title" content="Early">${' '.repeat(5000)}<meta property="og:description" content="Late">`,
      );
      return;
    }
    res.end(
      '<html><head><meta property="og:title" content="Experiment 7"><meta property="og:description" content="Results"></head></html>',
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  return { port, png, url: (p: string) => `http://127.0.0.1:${port}${p}`, hits: () => hits };
}
