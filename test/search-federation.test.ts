import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { sendText } from './helpers/retention.ts';
import type { Login, TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

// Two homeservers in one process, on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

/**
 * Events that arrive over federation go through the same pipeline and are indexed the same:
 * bob on hs2 finds what alice on hs1 said, and no longer once she redacts it.
 */
for (const backend of databaseBackends()) {
  t.test(`search finds federated events on ${backend.name}`, async (t) => {
    t.setTimeout(300_000);
    const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const created = await hs1.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat' },
    });
    const roomId: string = created.json().room_id;
    const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
      token: bob.access_token,
      body: {},
    });
    t.equal(join.statusCode, 200, join.body);

    const searchOn = async (s: TestServer, who: Login, term: string) => {
      const res = await s.request('POST', `${V3}/search`, {
        token: who.access_token,
        body: { search_categories: { room_events: { search_term: term } } },
      });
      if (res.statusCode !== 200) throw new Error(`search: ${res.statusCode} ${res.body}`);
      return (
        res.json().search_categories.room_events.results as Array<{ result: { event_id: string } }>
      ).map((r) => r.result.event_id);
    };
    const eventId = await sendText(hs1, alice, roomId, 'The neutrino detector is calibrated');
    const found = await until(
      'bob on hs2 to find the message',
      async () => {
        const ids = await searchOn(hs2, bob, 'neutrino');
        return ids.length > 0 ? ids : undefined;
      },
      60_000,
    );
    t.same(found, [eventId], "alice's message, found on hs2");
    t.same(await searchOn(hs1, alice, 'neutrino'), [eventId], 'and on hs1');

    const redaction = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/redact/${enc(eventId)}/r1`, {
      token: alice.access_token,
      body: {},
    });
    t.equal(redaction.statusCode, 200, redaction.body);
    await until(
      'the redaction to reach hs2',
      async () => (await searchOn(hs2, bob, 'neutrino')).length === 0,
      60_000,
    );
    const rows = await hs2.runtime.services.db
      .selectFrom('event_search')
      .select('event_id')
      .where('event_id', '=', eventId)
      .execute();
    t.same(rows, [], "hs2's index row is gone with the redaction");
  });
}
