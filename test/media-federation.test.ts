// Media of this server served to other servers (GET /_matrix/federation/v1/media/download and
// thumbnail, multipart/mixed), as eve's server, which the test scripts, fetches them.
import sharp from 'sharp';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import {
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
  xMatrixHeader,
} from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';

t.setTimeout(300_000);

const FED_MEDIA = '/_matrix/federation/v1/media';

/** The parts of a multipart/mixed body: headers (lower-cased names) and bytes. */
function parts(body: Buffer, contentType: string): Array<{ headers: Record<string, string>; body: Buffer }> {
  const boundary = /boundary=([^;]+)/.exec(contentType)?.[1];
  if (!boundary) throw new Error(`no boundary in ${contentType}`);
  const text = body.toString('latin1');
  const pieces = text.split(`--${boundary}`);
  if (pieces.at(-1)?.trim() !== '--') throw new Error('no closing boundary');
  return pieces.slice(1, -1).map((piece) => {
    const raw = piece.replace(/^\r\n/, '').replace(/\r\n$/, '');
    const split = raw.indexOf('\r\n\r\n');
    const headers: Record<string, string> = {};
    for (const line of raw.slice(0, split).split('\r\n')) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    return { headers, body: Buffer.from(raw.slice(split + 4), 'latin1') };
  });
}

for (const backend of databaseBackends()) {
  t.test(`federation media on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test']);
    const [hs1] = servers as [TestServer];
    const eve = rawServer('eve.test');
    network.servers.set(
      'eve.test',
      rawServerEndpoint(() => rawServerKeys(eve)),
    );
    const alice = await hs1.register('alice');
    const upload = async (body: Buffer, type: string) => {
      const res = await hs1.request('POST', '/_matrix/media/v3/upload?filename=data.bin', {
        token: alice.access_token,
        rawBody: body,
        headers: { 'content-type': type },
      });
      return (res.json().content_uri as string).split('/').pop()!;
    };
    const signedGet = (uri: string) =>
      hs1.request('GET', uri, {
        headers: { authorization: xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs1.test' }) },
      });

    t.test('download', async (t) => {
      const bytes = Buffer.from([0, 1, 2, 255, 13, 10, 45, 45, 42]);
      const id = await upload(bytes, 'application/octet-stream');
      const res = await signedGet(`${FED_MEDIA}/download/${id}`);
      t.equal(res.statusCode, 200, res.body);
      const contentType = String(res.headers['content-type']);
      t.match(contentType, /^multipart\/mixed; boundary=/);
      t.equal(Number(res.headers['content-length']), res.rawPayload.length, 'the length is exact');
      const [meta, file] = parts(res.rawPayload, contentType);
      t.equal(meta?.headers['content-type'], 'application/json');
      t.same(JSON.parse(meta!.body.toString()), {}, 'an empty metadata object first');
      t.equal(file?.headers['content-type'], 'application/octet-stream');
      t.equal(file?.headers['content-disposition'], 'attachment; filename="data.bin"');
      t.ok(file?.body.equals(bytes), 'then the bytes, exactly');

      const unsigned = await hs1.request('GET', `${FED_MEDIA}/download/${id}`);
      t.equal(unsigned.statusCode, 401, 'not without a signature');
      t.equal(unsigned.json().errcode, 'M_UNAUTHORIZED');
      const unknown = await signedGet(`${FED_MEDIA}/download/NoSuchMedia`);
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      const bad = await signedGet(`${FED_MEDIA}/download/${encodeURIComponent('bad!id')}`);
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');

      await hs1.runtime.services.media.quarantineMedia(`mxc://hs1.test/${id}`, null);
      t.equal(
        (await signedGet(`${FED_MEDIA}/download/${id}`)).statusCode,
        404,
        'quarantined media are not served',
      );
    });

    t.test('thumbnail', async (t) => {
      const image = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#123456' } })
        .png()
        .toBuffer();
      const id = await upload(image, 'image/png');
      const res = await signedGet(`${FED_MEDIA}/thumbnail/${id}?width=96&height=96&method=crop`);
      t.equal(res.statusCode, 200, res.body);
      const [, file] = parts(res.rawPayload, String(res.headers['content-type']));
      t.equal(file?.headers['content-type'], 'image/png');
      const meta = await sharp(file!.body).metadata();
      t.same([meta.width, meta.height], [96, 96], 'a 96x96 thumbnail in the second part');
      const bad = await signedGet(`${FED_MEDIA}/thumbnail/${id}?width=0&height=96`);
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
    });
  });
}
