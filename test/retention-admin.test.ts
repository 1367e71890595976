import { randomBytes } from 'node:crypto';
import t from 'tap';
import { MatrixError } from '../src/errors.ts';
import { databaseBackends } from './helpers/backends.ts';
import { runScript } from './helpers/process.ts';
import { pastTs, sendText, tracesOf } from './helpers/retention.ts';
import { SERVER_NAME, startTestServer, syncOnce } from './helpers/server.ts';

/**
 * Admin purges (spec/retention.md): purge-room-history before a time or an event, and
 * delete-room, through the service functions and the CLI.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

for (const backend of databaseBackends()) {
  t.test(`admin purges on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, { retentionPurgeIntervalMs: 0 });
    const db = s.runtime.database.db;
    const { retention } = s.runtime.services;
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const tag = randomBytes(6).toString('hex');
    const created = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat', room_alias_name: `gone${tag}` },
    });
    const roomId: string = created.json().room_id;
    await s.request('PUT', `${V3}/directory/list/room/${enc(roomId)}`, {
      token: alice.access_token,
      body: { visibility: 'public' },
    });
    await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token });
    const early: string[] = [];
    for (let i = 0; i < 6; i++) early.push(await sendText(s, bob, roomId, `early-${tag}-${i}`));
    const boundary = await sendText(s, alice, roomId, `boundary-${tag}`);
    const [row] = await db
      .selectFrom('pdus')
      .select('origin_server_ts')
      .where('event_id', '=', boundary)
      .execute();
    const late: string[] = [];
    await pastTs(row!.origin_server_ts);
    for (let i = 0; i < 3; i++) late.push(await sendText(s, bob, roomId, `late-${tag}-${i}`));

    t.test('purge-room-history before an event', async (t) => {
      const result = await retention.purgeRoomHistory(roomId, { before: boundary, actor: alice.user_id });
      t.ok(result, 'something was purged');
      const traces = await tracesOf(db, [...early.filter((_, i) => i < 5), `early-${tag}-0`], {
        skipPrevEvents: true,
      });
      t.same(traces, [], 'the early messages are gone from every table');
      const msgs = await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, {
        token: bob.access_token,
      });
      t.match(msgs.body, `late-${tag}-2`);
      t.match(msgs.body, `boundary-${tag}`, 'the event named is kept');
      const [record] = await s.runtime.services.audit.list({ action: 'retention.purge' });
      t.equal(record?.actor, alice.user_id);
      t.equal(record?.details.admin, true);
    });

    t.test('bad input: unknown room, unknown event, event of another room', async (t) => {
      await t.rejects(
        retention.purgeRoomHistory('!nope:conclave.test', { before: 0, actor: 'x' }),
        MatrixError,
      );
      await t.rejects(retention.purgeRoomHistory(roomId, { before: '$nope', actor: 'x' }), MatrixError);
      await t.rejects(retention.deleteRoom('!nope:conclave.test', { actor: 'x' }), MatrixError);
    });

    t.test('delete-room: everyone leaves, aliases and directory entry go, data deleted', async (t) => {
      const bobBefore = await syncOnce(s, bob);
      const result = await retention.deleteRoom(roomId, { actor: 'admin:test' });
      t.equal(result.membersRemoved, 2);
      t.ok(result.eventsDeleted > 5);
      const alias = await s.request('GET', `${V3}/directory/room/${enc(`#gone${tag}:${SERVER_NAME}`)}`);
      t.equal(alias.statusCode, 404, 'the alias is gone');
      const dir = await s.request('GET', `${V3}/publicRooms`);
      t.notOk(dir.body.includes(roomId), 'not in the directory');
      const joined = await s.request('GET', `${V3}/joined_rooms`, { token: bob.access_token });
      t.same(joined.json().joined_rooms, []);
      const traces = await tracesOf(db, [roomId, `late-${tag}`, `boundary-${tag}`], {
        skipPrevEvents: false,
      });
      t.same(
        traces.map((x) => x.table),
        ['audit_log'],
        'only the audit log names the room',
      );
      const inc = await syncOnce(s, bob, { since: bobBefore.next_batch, timeout: 0 });
      t.notOk(JSON.stringify(inc).includes(`late-${tag}`), 'sync serves nothing of it');
      const send = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/x1`, {
        token: alice.access_token,
        body: { msgtype: 'm.text', body: 'hello?' },
      });
      t.ok(send.statusCode >= 400 && send.statusCode < 500, `a send to it is refused: ${send.statusCode}`);
      const [record] = await s.runtime.services.audit.list({ action: 'retention.delete_room' });
      t.equal(record?.target, roomId);
      t.equal(record?.details.members_removed, 2);
    });

    if (backend.name === 'postgres') {
      t.test('the CLI: purge-room-history and delete-room', async (t) => {
        const r2 = await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} });
        const room2: string = r2.json().room_id;
        for (let i = 0; i < 3; i++) await sendText(s, alice, room2, `cli-${tag}-${i}`);
        const env = {
          CONCLAVE_DATABASE_URL: s.config.databaseUrl,
          CONCLAVE_SERVER_NAME: SERVER_NAME,
          CONCLAVE_LOG_LEVEL: 'silent',
        };
        const bad = runScript('src/admin.ts', ['purge-room-history', room2], env);
        t.equal(await bad.exited, 2, '--before is required');
        const purged = runScript(
          'src/admin.ts',
          ['purge-room-history', room2, '--before', new Date(Date.now() + 1000).toISOString()],
          env,
        );
        t.equal(await purged.exited, 0, purged.stdout());
        t.match(JSON.parse(purged.stdout()), { roomId: room2 });
        const deleted = runScript('src/admin.ts', ['purge-room', room2], env);
        t.equal(await deleted.exited, 0, deleted.stdout());
        t.match(JSON.parse(deleted.stdout()), { purge: { roomId: room2, membersRemoved: 1 } });
      });
    }
  });
}
