// Media of other servers: bob on hs2 downloads what alice uploaded to hs1, fetched over
// federation (GET /_matrix/federation/v1/media/download, multipart/mixed), kept, and served again
// without the network; thumbnails of remote media; and eve's scripted server for the deprecated
// endpoint, Location redirects, malformed and oversize answers, and one that never answers.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import t from 'tap';
import { defaultConfig } from '../src/config.ts';
import { fileNameOfDisposition } from '../src/media/disposition.ts';
import { MultipartError, mixedBoundary, parseMultipart } from '../src/media/multipart.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';

t.setTimeout(300_000);

const CLIENT_MEDIA = '/_matrix/client/v1/media';
const MAX_BYTES = 64 * 1024;

interface Reply {
  statusCode: number;
  headers: Record<string, unknown>;
  rawPayload: Buffer;
}

/** eve's server: answers each request with what `route` says (404 M_UNRECOGNIZED when it says nothing). */
function scripted(route: (url: string) => Reply | Promise<Reply> | undefined) {
  const seen: string[] = [];
  return {
    seen,
    async inject(opts: { method: string; url: string }): Promise<Reply> {
      seen.push(opts.url);
      return (
        (await route(opts.url)) ?? json(404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' })
      );
    },
  };
}

function json(status: number, body: object): Reply {
  return {
    statusCode: status,
    headers: { 'content-type': 'application/json' },
    rawPayload: Buffer.from(JSON.stringify(body)),
  };
}

/** A multipart/mixed answer: the JSON part, then `second` (headers and bytes). */
function multipart(second: { headers: Record<string, string>; body?: Buffer }, boundary = 'b0und4ry'): Reply {
  const head = Object.entries(second.headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const rawPayload = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Type: application/json\r\n\r\n{}\r\n--${boundary}\r\n${head}\r\n`),
    second.body ?? Buffer.alloc(0),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return {
    statusCode: 200,
    headers: { 'content-type': `multipart/mixed; boundary=${boundary}` },
    rawPayload,
  };
}

t.test('the multipart/mixed reader and Content-Disposition file names', async (t) => {
  t.equal(mixedBoundary('multipart/mixed; boundary="a b:c"'), 'a b:c', 'a quoted boundary');
  t.equal(mixedBoundary('Multipart/Mixed;charset=x; boundary=xyz'), 'xyz');
  t.equal(mixedBoundary('multipart/form-data; boundary=xyz'), undefined, 'only multipart/mixed');
  t.equal(mixedBoundary('multipart/mixed'), undefined, 'no boundary');
  t.equal(mixedBoundary(`multipart/mixed; boundary=${'x'.repeat(71)}`), undefined, 'at most 70 characters');
  const body = Buffer.from(
    'preamble\r\n--zz  \r\nContent-Type: application/json\r\n\r\n{}\r\n--zz\r\n\r\nno headers\r\n--zz--\r\nepilogue',
  );
  const parts = parseMultipart(body, 'zz');
  t.same(
    parts.map((p) => [p.headers, p.body.toString()]),
    [
      [{ 'content-type': 'application/json' }, '{}'],
      [{}, 'no headers'],
    ],
    'preamble, padding, a part without headers, epilogue',
  );
  const bytes = parseMultipart(Buffer.from('--q\r\nX: 1\r\n\r\n\r\n--q-\r\n--q--'), 'q');
  t.equal(bytes[0]?.body.toString(), '\r\n--q-', 'a boundary-like line inside the bytes is not a delimiter');
  for (const bad of ['--zz\r\nContent-Type: x\r\n\r\nno end', 'nothing', '--zz\r\nno blank line\r\n--zz--']) {
    t.throws(() => parseMultipart(Buffer.from(bad), 'zz'), MultipartError, JSON.stringify(bad));
  }
  t.equal(fileNameOfDisposition(`attachment; filename="a \\"b\\".txt"`), 'a "b".txt');
  t.equal(fileNameOfDisposition(`inline; filename="x.txt"; filename*=UTF-8''%E2%98%95.txt`), '☕.txt');
  t.equal(fileNameOfDisposition(`inline; filename*=UTF-8''%ZZ; filename=plain.txt`), 'plain.txt');
  t.equal(fileNameOfDisposition('inline'), undefined);
});

for (const backend of databaseBackends()) {
  t.test(`remote media on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test'], (name) =>
      name === 'hs2.test'
        ? {
            media: {
              ...defaultConfig().media,
              maxUploadBytes: MAX_BYTES,
              remoteMediaTimeoutMs: 2000,
              remoteMediaRedirectAllow: ['127.0.0.1'],
            },
          }
        : {},
    );
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const upload = async (body: Buffer, type: string, fileName = 'data.bin') => {
      const res = await hs1.request(
        'POST',
        `/_matrix/media/v3/upload?filename=${encodeURIComponent(fileName)}`,
        {
          token: alice.access_token,
          rawBody: body,
          headers: { 'content-type': type },
        },
      );
      return (res.json().content_uri as string).split('/').pop()!;
    };
    const bobGet = (path: string) =>
      hs2.request('GET', `${CLIENT_MEDIA}${path}`, { token: bob.access_token });
    /** Requests hs2 sent for this media ID. */
    const fetchesOf = (mediaId: string) =>
      network.sent.filter((r) => r.from === 'hs2.test' && r.uri.includes(mediaId)).length;

    t.test(
      'bob downloads what alice uploaded on the other server; the second time from the copy kept',
      async (t) => {
        const bytes = Buffer.from('remote bytes \u0000\u00ff\r\n--b0und4ry\r\n', 'latin1');
        const id = await upload(bytes, 'text/plain; charset=utf-8', 'notes ☕.txt');
        const first = await bobGet(`/download/hs1.test/${id}`);
        t.equal(first.statusCode, 200, first.body);
        t.ok(first.rawPayload.equals(bytes), 'the bytes, exactly');
        t.equal(first.headers['content-type'], 'text/plain; charset=utf-8');
        t.equal(
          first.headers['content-disposition'],
          `inline; filename="notes _.txt"; filename*=UTF-8''notes%20%E2%98%95.txt`,
          'the file name the uploader gave',
        );
        t.equal(first.headers['x-content-type-options'], 'nosniff');
        t.equal(fetchesOf(id), 1, 'one federation request');
        t.match(
          network.sent.find((r) => r.from === 'hs2.test' && r.uri.includes(id))?.uri,
          new RegExp(`^/_matrix/federation/v1/media/download/${id}\\?`),
        );

        // hs1 out of reach: served from hs2's store, without trying the network.
        network.cut('hs1.test', 'hs2.test');
        try {
          const again = await bobGet(`/download/hs1.test/${id}/other.txt`);
          t.equal(again.statusCode, 200, again.body);
          t.ok(again.rawPayload.equals(bytes));
          t.match(String(again.headers['content-disposition']), /filename="other.txt"/, 'the path name wins');
          t.equal(fetchesOf(id), 1, 'no second request');
          const allowRemoteFalse = await bobGet(`/download/hs1.test/${id}?allow_remote=false`);
          t.equal(allowRemoteFalse.statusCode, 200, 'a kept copy is served even with allow_remote=false');
          const unreachable = await bobGet(
            `/download/hs1.test/${await upload(Buffer.from('x'), 'text/plain')}`,
          );
          t.equal(unreachable.statusCode, 502, 'a server out of reach: 502');
          t.equal(unreachable.json().errcode, 'M_UNKNOWN');
        } finally {
          network.heal('hs1.test', 'hs2.test');
        }
      },
    );

    t.test(
      'a kept remote copy keeps its file when a local media with the same bytes is deleted',
      async (t) => {
        const bytes = Buffer.from('the same bytes on both servers');
        const remoteId = await upload(bytes, 'text/plain');
        t.equal((await bobGet(`/download/hs1.test/${remoteId}`)).statusCode, 200);
        const local = await hs2.request('POST', '/_matrix/media/v3/upload', {
          token: bob.access_token,
          rawBody: bytes,
          headers: { 'content-type': 'text/plain' },
        });
        const mxc = local.json().content_uri as string;
        const deleted = await hs2.runtime.services.media.deleteMedia(mxc, null);
        t.same(deleted, { files_deleted: 0 }, 'the file is still named by the remote copy');
        network.cut('hs1.test', 'hs2.test');
        try {
          const again = await bobGet(`/download/hs1.test/${remoteId}`);
          t.equal(again.statusCode, 200);
          t.ok(again.rawPayload.equals(bytes));
        } finally {
          network.heal('hs1.test', 'hs2.test');
        }
      },
    );

    t.test('requests at once share one fetch', async (t) => {
      const bytes = Buffer.alloc(5000, 7);
      const id = await upload(bytes, 'application/octet-stream');
      const answers = await Promise.all([1, 2, 3, 4].map(() => bobGet(`/download/hs1.test/${id}`)));
      t.same(
        answers.map((a) => a.statusCode),
        [200, 200, 200, 200],
      );
      t.ok(answers.every((a) => a.rawPayload.equals(bytes)));
      t.equal(fetchesOf(id), 1, 'one federation request for four downloads');
    });

    t.test('thumbnails of remote media: asked of the origin, kept', async (t) => {
      const image = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#336699' } })
        .png()
        .toBuffer();
      const id = await upload(image, 'image/png', 'photo.png');
      const res = await bobGet(`/thumbnail/hs1.test/${id}?width=96&height=96&method=crop`);
      t.equal(res.statusCode, 200, res.body);
      t.equal(res.headers['content-type'], 'image/png');
      const meta = await sharp(res.rawPayload).metadata();
      t.same([meta.width, meta.height], [96, 96]);
      const asked = network.sent.filter((r) => r.from === 'hs2.test' && r.uri.includes(id)).map((r) => r.uri);
      t.same(
        asked.map((u) => u.split('?')[0]),
        [`/_matrix/federation/v1/media/thumbnail/${id}`],
        'the thumbnail was asked of hs1, not the original',
      );
      network.cut('hs1.test', 'hs2.test');
      try {
        const again = await bobGet(`/thumbnail/hs1.test/${id}?width=96&height=96&method=crop`);
        t.equal(again.statusCode, 200, 'kept');
        t.ok(again.rawPayload.equals(res.rawPayload));
        const other = await bobGet(`/thumbnail/hs1.test/${id}?width=320&height=240&method=scale`);
        t.equal(other.statusCode, 502, 'another size needs the origin (or the original)');
      } finally {
        network.heal('hs1.test', 'hs2.test');
      }
    });

    t.test(
      'remote 404, allow_remote=false, the legacy endpoints, malformed and unauthenticated requests',
      async (t) => {
        const missing = await bobGet('/download/hs1.test/NoSuchMediaHere');
        t.equal(missing.statusCode, 404);
        t.equal(missing.json().errcode, 'M_NOT_FOUND');
        const missingThumb = await bobGet('/thumbnail/hs1.test/NoSuchMediaHere?width=32&height=32');
        t.equal(missingThumb.statusCode, 404);
        t.equal(missingThumb.json().errcode, 'M_NOT_FOUND');

        const id = await upload(Buffer.from('not fetched'), 'text/plain');
        const before = network.sent.length;
        const noRemote = await bobGet(`/download/hs1.test/${id}?allow_remote=false`);
        t.equal(noRemote.statusCode, 404);
        t.equal(noRemote.json().errcode, 'M_NOT_FOUND');
        const noRemoteThumb = await bobGet(`/thumbnail/hs1.test/${id}?width=32&height=32&allow_remote=false`);
        t.equal(noRemoteThumb.statusCode, 404);
        // media_legacy_freeze is off: the unauthenticated endpoints fetch nothing.
        const legacy = await hs2.request('GET', `/_matrix/media/v3/download/hs1.test/${id}`);
        t.equal(legacy.statusCode, 404);
        t.equal(legacy.json().errcode, 'M_NOT_FOUND');
        t.equal(network.sent.length, before, 'none of these asked hs1');

        const unauthenticated = await hs2.request('GET', `${CLIENT_MEDIA}/download/hs1.test/${id}`);
        t.equal(unauthenticated.statusCode, 401);
        t.equal(unauthenticated.json().errcode, 'M_MISSING_TOKEN');
        const unauthenticatedThumb = await hs2.request(
          'GET',
          `${CLIENT_MEDIA}/thumbnail/hs1.test/${id}?width=32&height=32`,
        );
        t.equal(unauthenticatedThumb.statusCode, 401);

        const badServer = await bobGet(`/download/${encodeURIComponent('bad_name!')}/${id}`);
        t.equal(badServer.statusCode, 400);
        t.equal(badServer.json().errcode, 'M_INVALID_PARAM');
        const badId = await bobGet(`/download/hs1.test/${encodeURIComponent('bad.id')}`);
        t.equal(badId.statusCode, 400);
        t.equal(badId.json().errcode, 'M_INVALID_PARAM');
        t.equal(network.sent.length, before, 'nor did these');
      },
    );

    t.test('the unauthenticated endpoints and the freeze', async (t) => {
      const media = hs2.config.media;
      t.teardown(() => {
        media.legacyFreezeTs = 0;
      });
      const id = await upload(Buffer.from('before the freeze'), 'text/plain');
      const legacy = (path: string) => hs2.request('GET', `/_matrix/media/v3${path}`);
      // A freeze date ahead: fetched now, so served without a token.
      media.legacyFreezeTs = Date.now() + 86_400_000;
      const fetched = await legacy(`/download/hs1.test/${id}`);
      t.equal(fetched.statusCode, 200, fetched.body);
      t.equal(fetched.body, 'before the freeze');
      // A freeze that came before the copy was fetched: no longer served there, still with a token.
      media.legacyFreezeTs = Date.now() - 86_400_000;
      const frozen = await legacy(`/download/hs1.test/${id}`);
      t.equal(frozen.statusCode, 404);
      t.equal(frozen.json().errcode, 'M_NOT_FOUND');
      const fresh = await upload(Buffer.from('after'), 'text/plain');
      const before = network.sent.length;
      t.equal((await legacy(`/download/hs1.test/${fresh}`)).statusCode, 404, 'nor fetched');
      t.equal(network.sent.length, before);
      t.equal(
        (await bobGet(`/download/hs1.test/${id}`)).statusCode,
        200,
        'the authenticated endpoint serves it',
      );
    });

    t.test('a media larger than this server takes is refused', async (t) => {
      const id = await upload(Buffer.alloc(MAX_BYTES + 1, 1), 'application/octet-stream');
      const res = await bobGet(`/download/hs1.test/${id}`);
      t.equal(res.statusCode, 502);
      t.equal(res.json().errcode, 'M_TOO_LARGE');
      const fits = await upload(Buffer.alloc(MAX_BYTES, 1), 'application/octet-stream');
      t.equal((await bobGet(`/download/hs1.test/${fits}`)).statusCode, 200, 'one at the limit is served');
    });

    t.test('a media not uploaded yet: the origin’s 504 M_NOT_YET_UPLOADED is passed on', async (t) => {
      const created = await hs1.request('POST', '/_matrix/media/v1/create', { token: alice.access_token });
      const id = (created.json().content_uri as string).split('/').pop()!;
      const res = await bobGet(`/download/hs1.test/${id}?timeout_ms=50`);
      t.equal(res.statusCode, 504, res.body);
      t.equal(res.json().errcode, 'M_NOT_YET_UPLOADED');
    });

    t.test("eve's server: the deprecated endpoint, Location, bad answers, no answer", async (t) => {
      const page = createServer((req, res) => {
        if (req.url === '/file') {
          res.writeHead(200, {
            'content-type': 'image/gif',
            'content-disposition': 'inline; filename="r.gif"',
          });
          res.end('GIF89a-redirected');
        } else if (req.url === '/hop') {
          res.writeHead(302, { location: '/file' });
          res.end();
        } else if (req.url === '/huge') {
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          res.end(Buffer.alloc(MAX_BYTES + 10));
        } else {
          res.writeHead(404);
          res.end();
        }
      });
      await new Promise<void>((resolve) => page.listen(0, '127.0.0.1', resolve));
      t.teardown(() => new Promise<void>((resolve) => page.close(() => resolve())));
      const base = `http://127.0.0.1:${(page.address() as AddressInfo).port}`;
      const fed = '/_matrix/federation/v1/media/download/';
      const eve = scripted((url) => {
        const [path, query] = url.split('?') as [string, string | undefined];
        if (path === '/_matrix/media/v3/download/eve.test/Old') {
          if (!new URLSearchParams(query).has('allow_remote', 'false'))
            return json(400, { errcode: 'M_UNKNOWN' });
          return {
            statusCode: 200,
            headers: {
              'content-type': 'text/plain',
              'content-disposition': 'attachment; filename="old.txt"',
            },
            rawPayload: Buffer.from('from an old server'),
          };
        }
        if (path === `${fed}Old`) return undefined; // 404 M_UNRECOGNIZED: the endpoint is unknown
        if (path === `${fed}Moved`) return multipart({ headers: { Location: `${base}/hop` } });
        if (path === `${fed}Inside`) return multipart({ headers: { Location: 'http://10.1.2.3/secret' } });
        if (path === `${fed}Huge`) return multipart({ headers: { Location: `${base}/huge` } });
        if (path === `${fed}Broken`) {
          const r = multipart({ headers: { 'Content-Type': 'text/plain' }, body: Buffer.from('x') });
          return { ...r, rawPayload: r.rawPayload.subarray(0, r.rawPayload.length - 10) };
        }
        if (path === `${fed}OnePart`) {
          return {
            statusCode: 200,
            headers: { 'content-type': 'multipart/mixed; boundary=zz' },
            rawPayload: Buffer.from('--zz\r\nContent-Type: application/json\r\n\r\n{}\r\n--zz--\r\n'),
          };
        }
        if (path === `${fed}Failing`) return json(500, { errcode: 'M_UNKNOWN', error: 'boom' });
        if (path === `${fed}Slow`) return new Promise<Reply>(() => {});
        if (path === `${fed}Image`) {
          return multipart({ headers: { 'Content-Type': 'image/png' }, body: imagePng });
        }
        if (path === '/_matrix/federation/v1/media/thumbnail/Image')
          return json(500, { errcode: 'M_UNKNOWN' });
        return json(404, { errcode: 'M_NOT_FOUND', error: 'No such media' });
      });
      const imagePng = await sharp({
        create: { width: 200, height: 100, channels: 3, background: '#aa0000' },
      })
        .png()
        .toBuffer();
      network.servers.set('eve.test', eve);

      const old = await bobGet('/download/eve.test/Old');
      t.equal(old.statusCode, 200, old.body);
      t.equal(old.body, 'from an old server', 'fetched from the deprecated endpoint, allow_remote=false');
      t.match(String(old.headers['content-disposition']), /filename="old.txt"/);
      t.same(
        eve.seen.filter((u) => u.includes('Old')).map((u) => u.split('?')[0]),
        [`${fed}Old`, '/_matrix/media/v3/download/eve.test/Old'],
        'the authenticated endpoint first',
      );

      const moved = await bobGet('/download/eve.test/Moved');
      t.equal(moved.statusCode, 200, moved.body);
      t.equal(moved.body, 'GIF89a-redirected', 'the bytes where Location points, after a redirect');
      t.equal(moved.headers['content-type'], 'image/gif');
      t.match(String(moved.headers['content-disposition']), /filename="r.gif"/);

      const inside = await bobGet('/download/eve.test/Inside');
      t.equal(inside.statusCode, 502, 'a Location into a private network is not followed');
      const huge = await bobGet('/download/eve.test/Huge');
      t.equal(huge.statusCode, 502);
      t.equal(huge.json().errcode, 'M_TOO_LARGE');
      for (const id of ['Broken', 'OnePart', 'Failing']) {
        const res = await bobGet(`/download/eve.test/${id}`);
        t.equal(res.statusCode, 502, `${id}: 502`);
        t.equal(res.json().errcode, 'M_UNKNOWN');
      }
      const started = Date.now();
      const slow = await bobGet('/download/eve.test/Slow?timeout_ms=0');
      t.equal(slow.statusCode, 504, 'no answer within remote_media_timeout_ms: 504');
      t.ok(Date.now() - started < 10_000);
      const gone = await bobGet('/download/eve.test/Gone');
      t.equal(gone.statusCode, 404);
      t.equal(gone.json().errcode, 'M_NOT_FOUND');

      // eve cannot make thumbnails: hs2 makes one from the original it fetches.
      const thumb = await bobGet('/thumbnail/eve.test/Image?width=32&height=32&method=crop');
      t.equal(thumb.statusCode, 200, 'a thumbnail');
      const meta = await sharp(thumb.rawPayload).metadata();
      t.same([meta.width, meta.height], [32, 32], 'made here');
      t.ok(
        eve.seen.some((u) => u.startsWith(`${fed}Image`)),
        'from the original',
      );
    });
  });
}
