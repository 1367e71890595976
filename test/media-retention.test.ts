import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import t from 'tap';
import { runAdmin } from '../src/admin.ts';
import { defaultConfig } from '../src/config.ts';
import { mediaIdsOf } from '../src/storage/media-references.repository.ts';
import { databaseBackends } from './helpers/backends.ts';
import { pastTs, retentionRoom, sendText, tracesOf } from './helpers/retention.ts';
import { type Login, SERVER_NAME, startTestServer, type TestServer } from './helpers/server.ts';

/**
 * Media follow the events that name them (spec/media.md, spec/retention.md): a media whose last
 * referencing event a purge or a room deletion removed is deleted (row, thumbnails, files nothing
 * else names), while media still named, never named (a file not sent, a profile avatar) or
 * sharing their bytes with another stay. And the admin API's room delete really purges the room,
 * through the same service function as the admin command's purge-room.
 */
const V3 = '/_matrix/client/v3';
const A1 = '/_synapse/admin/v1';
const A2 = '/_synapse/admin/v2';
const MEDIA_V3 = '/_matrix/media/v3';
const MEDIA_V1 = '/_matrix/client/v1/media';
const enc = encodeURIComponent;
t.setTimeout(600_000);

t.test('mediaIdsOf: the fields clients put media in, of this server only', async (t) => {
  const mine = (id: string) => `mxc://${SERVER_NAME}/${id}`;
  t.same(
    mediaIdsOf(
      'm.room.message',
      {
        msgtype: 'm.image',
        url: mine('aaa'),
        info: { thumbnail_url: mine('bbb'), thumbnail_file: { url: mine('ccc') } },
      },
      SERVER_NAME,
    ).sort(),
    ['aaa', 'bbb', 'ccc'],
  );
  t.same(
    mediaIdsOf('m.room.message', { file: { url: mine('enc') } }, SERVER_NAME),
    ['enc'],
    'encrypted file',
  );
  t.same(mediaIdsOf('m.room.avatar', { url: mine('av') }, SERVER_NAME), ['av'], 'room avatar');
  t.same(mediaIdsOf('m.room.member', { avatar_url: mine('me') }, SERVER_NAME), ['me'], 'member avatar');
  t.same(
    mediaIdsOf('m.room.message', { avatar_url: mine('me') }, SERVER_NAME),
    [],
    'avatar_url only of members',
  );
  t.same(mediaIdsOf('m.room.message', { url: 'mxc://elsewhere.test/abc' }, SERVER_NAME), [], 'other servers');
  t.same(
    mediaIdsOf('m.room.message', { url: `${mine('a/b')}` }, SERVER_NAME),
    [],
    'a malformed media ID is left out',
  );
  t.same(mediaIdsOf('m.room.message', { url: 42, file: 'x', info: [] }, SERVER_NAME), [], 'wrong types');
  t.same(mediaIdsOf('m.room.message', null, SERVER_NAME), []);
  t.same(
    mediaIdsOf('m.room.encrypted', { algorithm: 'm.megolm.v1.aes-sha2', ciphertext: 'AwgA...' }, SERVER_NAME),
    [],
    'an encrypted event names nothing the server can see',
  );
});

async function upload(s: TestServer, who: Login, body: Buffer, type: string): Promise<string> {
  const res = await s.request('POST', `${MEDIA_V3}/upload?filename=f`, {
    token: who.access_token,
    rawBody: body,
    headers: { 'content-type': type },
  });
  if (res.statusCode !== 200) throw new Error(`upload: ${res.statusCode} ${res.body}`);
  return res.json().content_uri as string;
}

let txn = 0;
async function sendFile(s: TestServer, who: Login, roomId: string, mxc: string, name: string) {
  const res = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/f${txn++}`, {
    token: who.access_token,
    body: { msgtype: 'm.file', body: name, url: mxc },
  });
  if (res.statusCode !== 200) throw new Error(`send: ${res.statusCode} ${res.body}`);
  return res.json().event_id as string;
}

const idOf = (mxc: string) => mxc.slice(mxc.lastIndexOf('/') + 1);

for (const backend of databaseBackends()) {
  t.test(`media follow their events on ${backend.name}`, async (t) => {
    const mediaDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-media-retention-'));
    t.teardown(() => rmSync(mediaDir, { recursive: true, force: true }));
    const s = await startTestServer(t, backend, {
      retentionAllowedMin: 1000,
      retentionPurgeIntervalMs: 0,
      media: { ...defaultConfig().media, dir: mediaDir, unreferencedGraceMs: 0 },
    });
    const db = s.runtime.database.db;
    const { retention } = s.runtime.services;
    const root = await s.registerAdmin('root');
    const alice = await s.register('alice');
    const bob = await s.register('bob');

    /** The media row, and where its file and its thumbnails' files are. */
    const stored = async (mxc: string) => {
      const row = await db
        .selectFrom('media')
        .selectAll()
        .where('media_id', '=', idOf(mxc))
        .executeTakeFirst();
      const thumbs = await db
        .selectFrom('media_thumbnails')
        .select('sha256')
        .where('media_id', '=', idOf(mxc))
        .execute();
      return { row, thumbs: thumbs.map((x) => x.sha256) };
    };
    const fileOf = (sha256: string) => path.join(mediaDir, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
    const download = (mxc: string) =>
      s.request('GET', `${MEDIA_V1}/download/${SERVER_NAME}/${idOf(mxc)}`, { token: bob.access_token });
    const references = async (mxc: string) =>
      (await db.selectFrom('media_references').selectAll().where('media_id', '=', idOf(mxc)).execute())
        .length;

    t.test('a purge deletes the media only purged events named', async (t) => {
      const roomId = await retentionRoom(s, alice, bob, 1000);

      const png = await sharp({
        create: { width: 120, height: 90, channels: 3, background: { r: 200, g: 30, b: 60 } },
      })
        .png()
        .toBuffer();
      const image = await upload(s, alice, png, 'image/png');
      const twin = await upload(s, bob, png, 'image/png'); // the same bytes, never sent
      const kept = await upload(s, alice, Buffer.from('still named by a later message'), 'text/plain');
      const unsent = await upload(s, alice, Buffer.from('uploaded, never sent'), 'text/plain');
      const avatar = await upload(
        s,
        alice,
        await sharp({ create: { width: 8, height: 8, channels: 3, background: '#00f' } })
          .png()
          .toBuffer(),
        'image/png',
      );
      // The profile avatar goes into a member event in the room (named there, then pruned).
      const prof = await s.request('PUT', `${V3}/profile/${enc(alice.user_id)}/avatar_url`, {
        token: alice.access_token,
        body: { avatar_url: avatar },
      });
      t.equal(prof.statusCode, 200);
      const thumb = await s.request(
        'GET',
        `${MEDIA_V1}/thumbnail/${SERVER_NAME}/${idOf(image)}?width=32&height=32&method=crop`,
        { token: bob.access_token },
      );
      t.equal(thumb.statusCode, 200, 'a thumbnail is made and kept');

      const fileEvent = await sendFile(s, alice, roomId, image, 'figure.png');
      const oldKept = await sendFile(s, bob, roomId, kept, 'notes.txt');
      const text = await sendText(s, bob, roomId, 'old words');
      t.equal(await references(image), 1, 'the file message is recorded as naming the image');
      t.ok((await references(avatar)) >= 1, 'the member event names the avatar');
      t.equal(await references(unsent), 0);

      const [last] = await db
        .selectFrom('pdus')
        .select('origin_server_ts')
        .where('event_id', '=', text)
        .execute();
      await pastTs(last!.origin_server_ts);
      const split = Date.now();
      await pastTs(split);
      const newKept = await sendFile(s, alice, roomId, kept, 'notes again.txt');
      await sendText(s, alice, roomId, 'the last word');

      const before = await stored(image);
      const sha = before.row!.sha256!;
      t.ok(existsSync(fileOf(sha)), 'the image is on disk');
      t.equal(before.thumbs.length, 1);
      t.ok(existsSync(fileOf(before.thumbs[0]!)), 'its thumbnail is on disk');

      const job = await retention.runJob({ now: split + 1000 });
      const purge = job.purges.find((p) => p.roomId === roomId);
      t.ok(purge, 'the room was purged');
      t.ok(purge!.mediaReleased >= 2, `media released: ${purge?.mediaReleased}`);

      const after = await stored(image);
      t.notOk(after.row, 'the image row is gone');
      t.same(after.thumbs, [], 'and its thumbnails');
      t.ok(existsSync(fileOf(sha)), 'the file stays: the twin upload names the same bytes');
      t.notOk(existsSync(fileOf(before.thumbs[0]!)), 'the thumbnail file is gone');
      t.equal((await download(image)).statusCode, 404, 'the image is no longer served');
      t.equal((await download(twin)).statusCode, 200, 'the twin never sent stays');
      t.equal((await download(kept)).statusCode, 200, 'a media a remaining event names stays');
      t.equal((await download(unsent)).statusCode, 200, 'a media never sent stays');
      t.equal((await download(avatar)).statusCode, 200, 'the profile avatar stays');
      t.equal(await references(kept), 1, 'only the remaining event names it');
      const left = await db
        .selectFrom('media_references')
        .select('event_id')
        .where('event_id', 'in', [fileEvent, oldKept])
        .execute();
      t.same(left, [], 'the purged events left no reference');
      t.ok(
        (await db.selectFrom('pdus').select('event_id').where('event_id', '=', newKept).execute()).length,
        'the later file message stays',
      );
      const audit = await s.runtime.services.audit.list({ action: 'media.delete' });
      const record = audit.find((r) => r.target === image);
      t.match(record, { actor: 'policy:retention', details: { reason: 'unreferenced' } });

      // Now the twin goes too (deleted by its admin): the shared file goes with the last name.
      await s.runtime.services.media.deleteMedia(twin, 'test');
      t.notOk(existsSync(fileOf(sha)), 'no row names the bytes any more: the file is gone');
    });

    t.test('the grace period, and a media named again', async (t) => {
      s.config.media.unreferencedGraceMs = 3_600_000;
      t.teardown(() => {
        s.config.media.unreferencedGraceMs = 0;
      });
      const roomId: string = (
        await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })
      ).json().room_id;
      const fresh = await upload(s, alice, Buffer.from('fresh upload'), 'text/plain');
      const again = await upload(s, alice, Buffer.from('sent twice'), 'text/plain');
      await sendFile(s, alice, roomId, fresh, 'a');
      await sendFile(s, alice, roomId, again, 'b');
      const mark = await sendText(s, alice, roomId, 'mark');
      await retention.purgeRoomHistory(roomId, { before: mark, actor: 'test' });
      const row = await stored(fresh);
      t.ok(row.row, 'uploaded within the grace period: kept for now');
      t.not(row.row!.unreferenced_ts, null, 'marked unreferenced');
      // Sent again: named again, so no longer a candidate.
      await sendFile(s, alice, roomId, again, 'b again');
      t.equal((await stored(again)).row!.unreferenced_ts, null, 'named again: unmarked');

      s.config.media.unreferencedGraceMs = 0;
      await retention.runJob();
      t.notOk((await stored(fresh)).row, 'the next job run deletes it once the grace period passed');
      t.ok((await stored(again)).row, 'the media named again stays');
    });

    t.test('the admin API room delete purges the room, its media and its traces', async (t) => {
      const alias = `purged${Date.now()}`;
      const created = await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'public_chat', room_alias_name: alias, name: 'Doomed lab' },
      });
      const roomId: string = created.json().room_id;
      await s.request('PUT', `${V3}/directory/list/room/${enc(roomId)}`, {
        token: alice.access_token,
        body: { visibility: 'public' },
      });
      await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} });
      const file = await upload(s, bob, Buffer.from('data only this room had'), 'text/plain');
      const shared = await upload(s, bob, Buffer.from('also posted elsewhere'), 'text/plain');
      const elsewhere: string = (
        await s.request('POST', `${V3}/createRoom`, { token: bob.access_token, body: {} })
      ).json().room_id;
      await sendFile(s, bob, elsewhere, shared, 'shared.txt');
      const ids = [
        await sendFile(s, bob, roomId, file, 'data.txt'),
        await sendFile(s, bob, roomId, shared, 'shared.txt'),
        await sendText(s, alice, roomId, 'secret-body-of-the-doomed-room'),
      ];
      const sha = (await stored(file)).row!.sha256!;
      const avatarMxc = (
        await s.request('GET', `${V3}/profile/${enc(alice.user_id)}/avatar_url`, {
          token: alice.access_token,
        })
      ).json().avatar_url as string;
      t.equal(await references(avatarMxc), 1, 'only her member event here still names her avatar');

      // Forbidden and malformed first: nothing may happen to the room.
      const asBob = await s.request('DELETE', `${A1}/rooms/${enc(roomId)}`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(asBob.statusCode, 403);
      t.equal(asBob.json().errcode, 'M_FORBIDDEN');
      const none = await s.request('DELETE', `${A2}/rooms/${enc(roomId)}`, { body: {} });
      t.equal(none.statusCode, 401);
      t.equal(none.json().errcode, 'M_MISSING_TOKEN');
      for (const [what, url, body, errcode] of [
        ['not a room ID', `${A1}/rooms/${enc('not a room')}`, {}, 'M_INVALID_PARAM'],
        ['purge not a boolean', `${A1}/rooms/${enc(roomId)}`, { purge: 'yes' }, 'M_BAD_JSON'],
        ['block not a boolean', `${A2}/rooms/${enc(roomId)}`, { block: 1 }, 'M_BAD_JSON'],
        ['message not a string', `${A2}/rooms/${enc(roomId)}`, { message: ['x'] }, 'M_BAD_JSON'],
        ['a body that is no object', `${A2}/rooms/${enc(roomId)}`, 'x', 'M_BAD_JSON'],
      ] as const) {
        const res = await s.request('DELETE', url, { token: root.access_token, body });
        t.equal(res.statusCode, 400, `${what}: ${res.body}`);
        t.equal(res.json().errcode, errcode);
      }
      const unknown = await s.request('DELETE', `${A1}/rooms/${enc(`!nope:${SERVER_NAME}`)}`, {
        token: root.access_token,
        body: {},
      });
      t.equal(unknown.statusCode, 404, 'an unknown room');
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      t.equal(
        (await db.selectFrom('pdus').select('event_id').where('event_id', 'in', ids).execute()).length,
        3,
        'the refused requests deleted nothing',
      );

      const res = await s.request('DELETE', `${A1}/rooms/${enc(roomId)}`, {
        token: root.access_token,
        body: { message: 'closed' },
      });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), {
        kicked_users: [alice.user_id, bob.user_id].sort(),
        failed_to_kick_users: [],
        local_aliases: [`#${alias}:${SERVER_NAME}`],
        new_room_id: null,
      });
      const traces = await tracesOf(db, [roomId, ...ids, 'secret-body-of-the-doomed-room', alias], {
        skipPrevEvents: false,
      });
      t.same(
        traces.map((x) => x.table),
        ['audit_log'],
        'no table but the audit log names the room, its events or their bodies',
      );
      t.equal((await download(file)).statusCode, 404, 'the file only its events named is deleted');
      t.notOk(existsSync(fileOf(sha)), 'and gone from disk');
      t.equal((await download(shared)).statusCode, 200, 'a file another room names stays');
      t.equal((await download(avatarMxc)).statusCode, 200, 'the profile avatar, no longer named, stays');
      const dir = await s.request('GET', `${V3}/publicRooms`);
      t.notOk(dir.body.includes(roomId), 'not in the directory');
      t.equal(
        (await s.request('GET', `${V3}/directory/room/${enc(`#${alias}:${SERVER_NAME}`)}`)).statusCode,
        404,
        'the alias is gone',
      );
      t.equal(
        (await s.request('GET', `${A1}/rooms/${enc(roomId)}`, { token: root.access_token })).statusCode,
        404,
      );
      const [record] = await s.runtime.services.audit.list({ action: 'retention.delete_room' });
      t.match(record, {
        actor: root.user_id,
        target: roomId,
        details: { members_removed: 2, aliases_removed: 1, block: false, media_released: 2 },
      });
      t.type(record?.details.delete_id, 'string');
      t.ok(Number(record?.details.events_deleted) >= 8, 'the count of events deleted');
      t.notOk(JSON.stringify(record).includes('secret-body'), 'never the content');
    });

    t.test('v2 with block, and the admin command purge-room: the same function', async (t) => {
      const make = async () => {
        const id: string = (
          await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })
        ).json().room_id;
        await sendText(s, alice, id, 'to be removed');
        return id;
      };
      const blocked = await make();
      const v2 = await s.request('DELETE', `${A2}/rooms/${enc(blocked)}`, {
        token: root.access_token,
        body: { block: true },
      });
      t.equal(v2.statusCode, 200, v2.body);
      t.type(v2.json().delete_id, 'string');
      t.same(
        (await s.request('GET', `${A1}/rooms/${enc(blocked)}/block`, { token: root.access_token })).json(),
        {
          block: true,
          user_id: root.user_id,
        },
      );
      t.equal(
        (await db.selectFrom('pdus').select('event_id').where('room_id', '=', blocked).execute()).length,
        0,
      );

      const unpurged = await make();
      const kept = await s.request('DELETE', `${A2}/rooms/${enc(unpurged)}`, {
        token: root.access_token,
        body: { purge: false },
      });
      t.equal(kept.statusCode, 200, kept.body);
      t.ok(
        (await db.selectFrom('pdus').select('event_id').where('room_id', '=', unpurged).execute()).length > 3,
        'purge: false keeps the data',
      );
      t.equal(
        await s.runtime.services.rooms.membership(unpurged, alice.user_id),
        'leave',
        'but everyone left',
      );
      const [noPurge] = await s.runtime.services.audit.list({ action: 'admin.room.delete' });
      t.match(noPurge, { target: unpurged, actor: root.user_id, details: { purged: false } });

      const viaCli = await make();
      const lines: string[] = [];
      t.equal(await runAdmin(['purge-room', viaCli], (l) => lines.push(l), s.runtime), 0);
      const out = JSON.parse(lines[0]!);
      t.match(out, { kicked_users: [alice.user_id], purge: { roomId: viaCli, membersRemoved: 1 } });
      t.ok(out.purge.eventsDeleted > 3);
      t.equal(
        (await db.selectFrom('rooms').select('room_id').where('room_id', '=', viaCli).execute()).length,
        0,
      );
      const records = await s.runtime.services.audit.list({ action: 'retention.delete_room' });
      t.ok(
        records.some((r) => r.target === viaCli && r.actor?.startsWith('cli:')),
        'audited with the command as actor',
      );
    });
  });
}
