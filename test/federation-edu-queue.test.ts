import t from 'tap';
import type { JsonObject } from '../src/protocol/json.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/**
 * The sender's EDU queue (FederationSender.queueEdu), against a destination the test plays: at
 * most 100 EDUs per transaction, persistent ones first and in order; persistent EDUs survive
 * failures and are forgotten once acknowledged; ephemeral ones with one key keep only the
 * latest; an ephemeral EDU past its time is dropped; nothing is queued for this server itself.
 */
t.setTimeout(300_000);

interface Txn {
  uri: string;
  edus: Array<{ edu_type: string; content: JsonObject }>;
}

for (const backend of databaseBackends()) {
  t.test(`the EDU queue on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test']);
    const hs1 = servers[0] as TestServer;
    const sender = hs1.runtime.services.sender;
    const db = hs1.runtime.services.db;
    const received: Txn[] = [];
    let down = false;
    network.servers.set('rec.test', {
      async inject(opts) {
        if (down) {
          return {
            statusCode: 503,
            headers: { 'content-type': 'application/json' },
            rawPayload: Buffer.from('{}'),
          };
        }
        const body = opts.payload ? JSON.parse(opts.payload.toString()) : {};
        if (opts.url.startsWith('/_matrix/federation/v1/send/'))
          received.push({ uri: opts.url, edus: body.edus ?? [] });
        return {
          statusCode: 200,
          headers: { 'content-type': 'application/json' },
          rawPayload: Buffer.from(JSON.stringify({ pdus: {} })),
        };
      },
    });
    const all = () => received.flatMap((r) => r.edus);

    t.test('250 EDUs go in transactions of 100 at most, persistent first and in order', async (t) => {
      down = true;
      for (let i = 0; i < 200; i++)
        await sender.queueEdu('rec.test', { edu_type: 'org.example.ephemeral', content: { i } });
      for (let i = 0; i < 50; i++)
        await sender.queueEdu(
          'rec.test',
          { edu_type: 'org.example.persistent', content: { i } },
          { persistent: true },
        );
      await until('the failure was recorded', async () => {
        await sender.idle();
        const row = await db
          .selectFrom('federation_destinations')
          .select('failure_count')
          .where('destination', '=', 'rec.test')
          .executeTakeFirst();
        return (row?.failure_count ?? 0) > 0;
      });
      t.equal(received.length, 0);
      down = false;
      sender.wake('rec.test', { resetBackoff: true });
      await until('all 250 arrived', async () => all().length >= 250, 30_000);
      await sender.idle();
      t.ok(
        received.every((r) => r.edus.length <= 100),
        'no transaction holds more than 100',
      );
      t.equal(all().length, 250, 'each EDU once');
      t.same(
        all()
          .slice(0, 50)
          .map((e) => [e.edu_type, e.content.i]),
        Array.from({ length: 50 }, (_, i) => ['org.example.persistent', i]),
        'persistent first, in the order queued',
      );
      t.same(
        all()
          .slice(50)
          .map((e) => e.content.i),
        Array.from({ length: 200 }, (_, i) => i),
        'then the ephemeral ones, in order',
      );
      t.equal(new Set(received.map((r) => r.uri)).size, received.length, 'each transaction has its own ID');
      const left = await db
        .selectFrom('federation_queued_edus')
        .select('id')
        .where('destination', '=', 'rec.test')
        .execute();
      t.same(left, [], 'acknowledged persistent EDUs are forgotten');
      t.equal(sender.ephemeralWaiting('rec.test'), 0);
    });

    t.test('one key keeps only the latest; an expired EDU is dropped; none for ourselves', async (t) => {
      received.length = 0;
      down = true;
      for (let i = 0; i < 5; i++)
        await sender.queueEdu('rec.test', { edu_type: 'org.example.keyed', content: { i } }, { key: 'k' });
      await sender.queueEdu('rec.test', { edu_type: 'org.example.short', content: {} }, { ttlMs: 1 });
      await sender.queueEdu('hs1.test', { edu_type: 'org.example.self', content: {} });
      await sender.idle();
      t.equal(sender.ephemeralWaiting('hs1.test'), 0, 'nothing queued for this server');
      await new Promise((r) => setTimeout(r, 20));
      down = false;
      sender.wake('rec.test', { resetBackoff: true });
      await until('the keyed EDU arrived', async () => all().length > 0, 30_000);
      await sender.idle();
      t.same(
        all().map((e) => [e.edu_type, e.content]),
        [['org.example.keyed', { i: 4 }]],
        'the latest of the key only, and not the expired one',
      );
    });
  });
}
