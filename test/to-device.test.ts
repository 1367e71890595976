import t from 'tap';
import { ToDeviceService, TXN_KEPT_MS } from '../src/services/to-device.service.ts';
import { currentPosition } from '../src/streams/positions.ts';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

for (const backend of databaseBackends()) {
  t.test(`to-device messaging on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const { toDevice, notifier } = s.runtime.services;
    const db = s.runtime.database.db;
    const alice = await s.register('alice', { deviceId: 'ALICEPHONE' });
    const bob = await s.register('bob', { deviceId: 'BOBLAPTOP' });
    const mallory = await s.register('mallory', { deviceId: 'MALLORYDEV' });
    const bobPhone = await s.login('bob', { deviceId: 'BOBPHONE' });

    const send = (who: Login, type: string, txn: string, messages: unknown) =>
      s.request('PUT', `${V3}/sendToDevice/${encodeURIComponent(type)}/${encodeURIComponent(txn)}`, {
        token: who.access_token,
        body: { messages },
      });
    const position = () => currentPosition(db);

    t.test('a message reaches the device it names, as sent', async (t) => {
      const from = await position();
      const content = {
        algorithm: 'm.olm.v1.curve25519-aes-sha2',
        ciphertext: { k: { type: 0, body: 'x\u00e9y \ud83d\ude00' } },
      };
      const nul = await send(alice, 'm.room.encrypted', 'txn0', {
        [bob.user_id]: { BOBLAPTOP: { ciphertext: 'x\u0000y' } },
      });
      t.equal(nul.statusCode, 400, 'U+0000 is refused (it is not text; PostgreSQL cannot store it)');
      const res = await send(alice, 'm.room.encrypted', 'txn1', { [bob.user_id]: { BOBLAPTOP: content } });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), {});
      const upTo = await position();
      t.equal(upTo, from + 1, 'one stream position for the request');
      t.same(await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', from, upTo), [
        { sender: alice.user_id, type: 'm.room.encrypted', content },
      ]);
      t.same(await toDevice.messagesFor(bob.user_id, 'BOBPHONE', from, upTo), [], 'not the other device');
      t.same(await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', upTo, upTo), [], 'nothing after it');
    });

    t.test('a retried PUT stores nothing new', async (t) => {
      const from = await position();
      for (let i = 0; i < 3; i++) {
        const res = await send(alice, 'm.test', 'retry', { [bob.user_id]: { BOBLAPTOP: { n: i } } });
        t.equal(res.statusCode, 200);
      }
      const concurrent = await Promise.all(
        [0, 1, 2].map((i) => send(alice, 'm.test', 'racing', { [bob.user_id]: { BOBLAPTOP: { r: i } } })),
      );
      for (const r of concurrent) t.equal(r.statusCode, 200);
      const got = await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', from, await position());
      t.equal(got.length, 2, 'one message per transaction ID');
      t.same(got[0], { sender: alice.user_id, type: 'm.test', content: { n: 0 } });
      // The same transaction ID from another sender, or another device, is another transaction.
      await send(mallory, 'm.test', 'retry', { [bob.user_id]: { BOBLAPTOP: { from: 'mallory' } } });
      await send(bobPhone, 'm.test', 'retry', { [bob.user_id]: { BOBLAPTOP: { from: 'phone' } } });
      const more = await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', from, await position());
      t.equal(more.length, 4);
    });

    t.test('"*" addresses every device; a named device gets its own message', async (t) => {
      const from = await position();
      await send(alice, 'm.test', 'star', { [bob.user_id]: { '*': { to: 'all' } } });
      await send(alice, 'm.test', 'star-and-named', {
        [bob.user_id]: { '*': { to: 'all' }, BOBPHONE: { to: 'phone' } },
      });
      const upTo = await position();
      t.same(
        (await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', from, upTo)).map((m) => m.content),
        [{ to: 'all' }, { to: 'all' }],
      );
      t.same(
        (await toDevice.messagesFor(bob.user_id, 'BOBPHONE', from, upTo)).map((m) => m.content),
        [{ to: 'all' }, { to: 'phone' }],
        'in position order',
      );
    });

    t.test('unknown devices, unknown users and other servers store nothing', async (t) => {
      const from = await position();
      const res = await send(alice, 'm.test', 'nobody', {
        [bob.user_id]: { NOSUCHDEVICE: { a: 1 } },
        [`@nobody:${SERVER_NAME}`]: { '*': { a: 1 } },
        '@carol:elsewhere.test': { DEV: { a: 1 } },
      });
      t.equal(res.statusCode, 200);
      t.equal(await position(), from, 'no stream position taken');
      const rows = await db.selectFrom('to_device_messages').select('recipient_device_id').execute();
      t.notOk(rows.some((r) => r.recipient_device_id === 'NOSUCHDEVICE'));
    });

    t.test('malformed and forbidden requests', async (t) => {
      const bad = await send(alice, 'm.test', 'bad-user', { 'not a user': { DEV: {} } });
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const notObject = await send(alice, 'm.test', 'bad-content', { [bob.user_id]: { BOBLAPTOP: 'text' } });
      t.equal(notObject.statusCode, 400);
      t.equal(notObject.json().errcode, 'M_BAD_JSON');
      const noMessages = await s.request('PUT', `${V3}/sendToDevice/m.test/none`, {
        token: alice.access_token,
        body: {},
      });
      t.equal(noMessages.statusCode, 400);
      t.equal(noMessages.json().errcode, 'M_BAD_JSON');
      const noToken = await s.request('PUT', `${V3}/sendToDevice/m.test/none`, { body: { messages: {} } });
      t.equal(noToken.statusCode, 401);
      t.equal(noToken.json().errcode, 'M_MISSING_TOKEN');
      const longTxn = await send(alice, 'm.test', 'x'.repeat(300), {});
      t.equal(longTxn.statusCode, 400);
      // A refused request does not burn its transaction ID.
      const retried = await send(alice, 'm.test', 'bad-user', { [bob.user_id]: { BOBLAPTOP: { ok: true } } });
      t.equal(retried.statusCode, 200);
      const from = (await position()) - 1;
      t.same((await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', from, await position()))[0]?.content, {
        ok: true,
      });
    });

    t.test('acknowledge deletes what the device has received', async (t) => {
      const all = await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', 0, await position());
      t.ok(all.length >= 6);
      const from = await position();
      await send(alice, 'm.test', 'after-ack', { [bob.user_id]: { BOBLAPTOP: { late: true } } });
      await toDevice.acknowledge(bob.user_id, 'BOBLAPTOP', from);
      const left = await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', 0, await position());
      t.same(
        left,
        [{ sender: alice.user_id, type: 'm.test', content: { late: true } }],
        'only the later one remains',
      );
      t.ok(
        (await toDevice.messagesFor(bob.user_id, 'BOBPHONE', 0, await position())).length > 0,
        'other devices keep theirs',
      );
    });

    t.test('transaction IDs are forgotten after a day', async (t) => {
      // The same service over the same database and notifier, with a clock the test moves.
      let clock = Date.now();
      const { config, notifier: n } = s.runtime.services;
      const later = new ToDeviceService(db, config, n, () => clock);
      const session = { userId: alice.user_id, deviceId: alice.device_id, tokenHash: '', isAdmin: false };
      const count = async () =>
        (await toDevice.messagesFor(bob.user_id, 'BOBLAPTOP', 0, await position())).filter(
          (m) => m.type === 'm.aged',
        ).length;
      await later.send(session, 'm.aged', 'aged-txn', { [bob.user_id]: { BOBLAPTOP: { n: 1 } } });
      await later.send(session, 'm.aged', 'aged-txn', { [bob.user_id]: { BOBLAPTOP: { n: 1 } } });
      t.equal(await count(), 1, 'a retry within the day stores nothing');
      clock += TXN_KEPT_MS + 2 * 60 * 60 * 1000;
      await later.send(session, 'm.aged', 'another-txn', { [bob.user_id]: { BOBLAPTOP: { n: 2 } } });
      await later.send(session, 'm.aged', 'aged-txn', { [bob.user_id]: { BOBLAPTOP: { n: 1 } } });
      t.equal(await count(), 3, 'after a day the ID is free again');
    });

    t.test('a message wakes the recipient, not others', async (t) => {
      let bobWoken = false;
      let malloryWokenAfter = 0;
      const bobWait = notifier.wait(bob.user_id, new Set(), 5000).then(() => {
        bobWoken = true;
      });
      const started = Date.now();
      const malloryWait = notifier.wait(mallory.user_id, new Set(), 300).then(() => {
        malloryWokenAfter = Date.now() - started;
      });
      await send(alice, 'm.test', 'wake', { [bob.user_id]: { BOBPHONE: { wake: true } } });
      await bobWait;
      t.ok(bobWoken && Date.now() - started < 4000, 'bob was woken');
      await malloryWait;
      t.ok(malloryWokenAfter >= 250, 'mallory only by her timeout');
    });

    t.test('logging a device out deletes its waiting messages', async (t) => {
      t.ok((await toDevice.messagesFor(bob.user_id, 'BOBPHONE', 0, await position())).length > 0);
      t.equal(
        (await s.request('POST', `${V3}/logout`, { token: bobPhone.access_token, body: {} })).statusCode,
        200,
      );
      const rows = await db
        .selectFrom('to_device_messages')
        .select('stream_position')
        .where('recipient_device_id', '=', 'BOBPHONE')
        .execute();
      t.same(rows, []);
      const from = await position();
      await send(alice, 'm.test', 'to-gone', { [bob.user_id]: { BOBPHONE: { gone: true } } });
      t.equal(await position(), from, 'a message to a deleted device is not stored');
    });
  });
}
