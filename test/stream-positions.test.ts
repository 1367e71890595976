import t from 'tap';
import { parseSyncToken } from '../src/services/sync.service.ts';
import { type Executor, putAccountData } from '../src/storage/accounts.repository.ts';
import type { Db } from '../src/storage/connect.ts';
import { currentPosition, nextPosition } from '../src/streams/positions.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

/**
 * A transaction that takes a position, hands it to `write`, and stays open until `release`: a
 * slow writer.
 */
function heldTransaction(db: Db, write: (trx: Executor, position: number) => Promise<void> = async () => {}) {
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  let taken!: (p: number) => void;
  const position = new Promise<number>((r) => {
    taken = r;
  });
  const done = db.transaction().execute(async (trx) => {
    const p = await nextPosition(trx);
    await write(trx, p);
    taken(p);
    await released;
  });
  return { position, release, done };
}

for (const backend of databaseBackends()) {
  t.test(`${backend.name}: positions`, async (t) => {
    const server = await startTestServer(t, backend);
    const db = server.runtime.database.db;

    t.test('a rolled-back position is a hole that holds no reader back', async (t) => {
      const p1 = await db.transaction().execute((trx) => nextPosition(trx));
      t.ok((await currentPosition(db)) >= p1);
      let p2 = 0;
      await t.rejects(
        db.transaction().execute(async (trx) => {
          p2 = await nextPosition(trx);
          throw new Error('roll back');
        }),
      );
      t.ok(p2 > p1);
      const p3 = await db.transaction().execute((trx) => nextPosition(trx));
      t.ok(p3 > p2, 'the hole is not handed out again');
      t.equal(await currentPosition(db), p3, 'readers go past the hole');
    });

    const concurrent =
      backend.name === 'pglite' && 'PGlite has one connection: its transactions run one at a time';

    t.test(
      'a writer does not wait for another one, and readers stop below the older',
      { skip: concurrent },
      async (t) => {
        const a = heldTransaction(db);
        const pA = await a.position;
        // Under a single counter row, this transaction would wait for A's commit (A is held until
        // this one is done, so the test would never end): it must commit while A is open.
        const pB = await db.transaction().execute((trx) => nextPosition(trx));
        t.ok(pB > pA);
        t.equal(await currentPosition(db), pA - 1, 'B is committed, but A, below it, is still in flight');
        a.release();
        await a.done;
        t.ok((await currentPosition(db)) >= pB, 'once A commits, readers reach B');
      },
    );

    t.test('a sync never runs ahead of a position in flight', { skip: concurrent }, async (t) => {
      const alice = await server.register('alice');
      const room = (
        await server.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })
      ).json().room_id as string;
      const first = (await server.request('GET', `${V3}/sync`, { token: alice.access_token })).json();
      // A slow writer: account data for alice at a position taken before her message's.
      const slow = heldTransaction(db, (trx, p) =>
        putAccountData(trx, alice.user_id, '', 'org.example.slow', { n: 1 }, p),
      );
      const pSlow = await slow.position;
      const sent = await server.request(
        'PUT',
        `${V3}/rooms/${encodeURIComponent(room)}/send/m.room.message/t1`,
        {
          token: alice.access_token,
          body: { msgtype: 'm.text', body: 'after the slow one' },
        },
      );
      t.equal(sent.statusCode, 200, 'the send does not wait for the slow writer');
      const during = (
        await server.request('GET', `${V3}/sync?since=${first.next_batch}&timeout=0`, {
          token: alice.access_token,
        })
      ).json();
      t.ok(
        parseSyncToken(during.next_batch).position < pSlow,
        'next_batch stays below the position in flight',
      );
      t.notOk(
        (during.rooms?.join?.[room]?.timeline?.events ?? []).some(
          (e: { event_id: string }) => e.event_id === sent.json().event_id,
        ),
        'the newer message waits too',
      );
      slow.release();
      await slow.done;
      const after = (
        await server.request('GET', `${V3}/sync?since=${during.next_batch}&timeout=10000`, {
          token: alice.access_token,
        })
      ).json();
      t.ok(
        (after.account_data?.events ?? []).some((e: { type: string }) => e.type === 'org.example.slow'),
        'the slow change arrives in the next sync',
      );
      t.ok(
        (after.rooms?.join?.[room]?.timeline?.events ?? []).some(
          (e: { event_id: string }) => e.event_id === sent.json().event_id,
        ),
        'and so does the message',
      );
    });
  });
}
