import { sql } from 'kysely';
import t from 'tap';
import { migrations } from '../migrations/index.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import * as repo from '../src/storage/accounts.repository.ts';
import { migrateToLatest, openDatabase } from '../src/storage/connect.ts';
import { currentPosition, nextPosition } from '../src/streams/positions.ts';
import { databaseBackends } from './helpers/backends.ts';

/** The migrations and repositories, from an empty database, on every backend. */
for (const backend of databaseBackends()) {
  t.test(`storage on ${backend.name}`, async (t) => {
    const created = await backend.create();
    // No template here: PGlite starts empty so the migrations run from scratch.
    const handle = await openDatabase({ databaseUrl: created.url, pgliteDir: null });
    t.teardown(async () => {
      await handle.close();
      await created.drop();
    });
    const db = handle.db;

    await migrateToLatest(db);
    const applied = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
    t.same(
      applied.rows.map((r) => r.name),
      Object.keys(migrations),
      'every migration applied, in order',
    );
    await migrateToLatest(db);
    t.pass('migrating again is a no-op');

    t.test('bigint columns come back as numbers', async (t) => {
      const ts = 2 ** 52 + 3;
      await repo.insertUser(db, {
        user_id: '@a:x.test',
        localpart: 'a',
        password_hash: null,
        display_name: null,
        avatar_url: null,
        created_ts: ts,
      });
      const row = await repo.findUser(db, '@a:x.test');
      t.equal(row?.created_ts, ts);
      t.equal(typeof row?.created_ts, 'number');
      t.equal(
        await repo.insertUser(db, {
          user_id: '@a:x.test',
          localpart: 'a',
          password_hash: null,
          display_name: null,
          avatar_url: null,
          created_ts: 1,
        }),
        false,
        'a duplicate user is not inserted',
      );
    });

    t.test('account data: upsert, stream ids rise, JSON round-trips', async (t) => {
      const content = { nested: { list: [1, 'two', null, true] }, unicode: 'é😀' };
      const write = (c: JsonObject) =>
        db.transaction().execute(async (trx) => {
          const position = await nextPosition(trx);
          await repo.putAccountData(trx, '@a:x.test', '', 'm.test', c, position);
          return position;
        });
      const s1 = await write(content);
      t.same(await repo.getAccountData(db, '@a:x.test', '', 'm.test'), content);
      const s2 = await write({ v: 2 });
      t.ok(s2 > s1, 'a new write gets a higher stream position');
      t.equal(await currentPosition(db), s2, 'the current position is the last committed one');
      t.same(await repo.getAccountData(db, '@a:x.test', '', 'm.test'), { v: 2 });
      t.equal(await repo.getAccountData(db, '@a:x.test', '!r:x.test', 'm.test'), undefined);
    });

    t.test('devices cascade to their tokens', async (t) => {
      await repo.upsertDevice(db, {
        user_id: '@a:x.test',
        device_id: 'D1',
        display_name: 'one',
        last_seen_ts: null,
        last_seen_ip: null,
        created_ts: 1,
      });
      await repo.upsertDevice(db, {
        user_id: '@a:x.test',
        device_id: 'D1',
        display_name: null,
        last_seen_ts: null,
        last_seen_ip: null,
        created_ts: 2,
      });
      t.equal(
        (await repo.findDevice(db, '@a:x.test', 'D1'))?.display_name,
        'one',
        'a re-login without a name keeps the name',
      );
      await repo.insertAccessToken(db, {
        token_hash: 'h1',
        user_id: '@a:x.test',
        device_id: 'D1',
        created_ts: 1,
      });
      t.ok(await repo.findAccessToken(db, 'h1'));
      await repo.deleteDevices(db, '@a:x.test', ['D1']);
      t.equal(await repo.findAccessToken(db, 'h1'), undefined, 'deleting a device deletes its tokens');
    });

    t.test('a failed transaction leaves nothing behind', async (t) => {
      await t.rejects(
        db.transaction().execute(async (trx) => {
          await repo.insertUser(trx, {
            user_id: '@b:x.test',
            localpart: 'b',
            password_hash: null,
            display_name: null,
            avatar_url: null,
            created_ts: 1,
          });
          throw new Error('boom');
        }),
      );
      t.equal(await repo.findUser(db, '@b:x.test'), undefined);
      t.ok(await repo.findUser(db, '@a:x.test'), 'earlier data is intact');
    });

    t.test('concurrent queries and transactions on one handle', async (t) => {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          db.transaction().execute(async (trx) => {
            await repo.putAccountData(
              trx,
              '@a:x.test',
              '',
              `m.concurrent.${i % 5}`,
              { i },
              await nextPosition(trx),
            );
            return repo.getAccountData(trx, '@a:x.test', '', `m.concurrent.${i % 5}`);
          }),
        ),
      );
      t.equal(results.length, 20);
      results.forEach((r, i) => {
        t.same(r, { i }, `transaction ${i} saw its own write`);
      });
    });
  });
}
