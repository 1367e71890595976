import t from 'tap';
import { FederationError } from '../src/federation/client/transport.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/** Across servers on a loaded machine: a minute. */
const untilLong = <T>(what: string, check: () => Promise<T | undefined | false>) =>
  until(what, check, 60_000);

/**
 * Server ACLs (server-server API: Server Access Control Lists): once alice's room on hs1 denies
 * hs2, hs1 ignores hs2's PDUs for the room (with an error for each) and refuses hs2 every room
 * endpoint with 403 M_FORBIDDEN; lifting the ACL lets hs2 back in.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

for (const backend of databaseBackends()) {
  t.test(`server ACLs on ${backend.name}`, async (t) => {
    const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const roomId = (
      await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'public_chat' },
      })
    ).json().room_id as string;
    const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
      token: bob.access_token,
      body: {},
    });
    t.equal(join.statusCode, 200, join.body);
    const bodiesOnHs1 = async () => {
      const r = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`, {
        token: alice.access_token,
      });
      return (r.json().chunk as Array<{ type: string; content: { body?: string } }>)
        .filter((e) => e.type === 'm.room.message')
        .map((e) => e.content.body);
    };
    const say = async (body: string) => {
      const r = await hs2.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${body}`, {
        token: bob.access_token,
        body: { msgtype: 'm.text', body },
      });
      t.equal(r.statusCode, 200, r.body);
      return r.json().event_id as string;
    };
    await say('before');
    await untilLong('the first message on hs1', async () =>
      (await bodiesOnHs1()).includes('before') ? true : undefined,
    );

    const setAcl = async (content: object) => {
      const r = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.server_acl/`, {
        token: alice.access_token,
        body: content,
      });
      t.equal(r.statusCode, 200, r.body);
    };
    await setAcl({ allow: ['*'], deny: ['hs2.test'], allow_ip_literals: false });

    t.test("hs2's PDUs are ignored with an error each", async (t) => {
      const blocked = await say('during');
      const response = await untilLong('hs1 answered the transaction', async () => {
        const rows = await hs1.runtime.services.db
          .selectFrom('federation_received_txns')
          .select('response')
          .where('origin', '=', 'hs2.test')
          .execute();
        const hit = rows.find((r) => (r.response.pdus as Record<string, unknown> | undefined)?.[blocked]);
        return hit?.response.pdus as Record<string, { error?: string }> | undefined;
      });
      t.match(response[blocked]?.error, /server ACL/);
      t.notOk((await bodiesOnHs1()).includes('during'), 'alice never sees it');
    });

    t.test('every room endpoint is 403 for hs2', async (t) => {
      const client = hs2.runtime.services.federation.client;
      const paths: Array<{
        method: 'GET' | 'PUT' | 'POST';
        path: string;
        body?: JsonObject;
        query?: Record<string, string[] | string>;
      }> = [
        {
          method: 'GET',
          path: `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc('@carol:hs2.test')}`,
          query: { ver: ['10', '11', '12'] },
        },
        { method: 'GET', path: `/_matrix/federation/v1/make_leave/${enc(roomId)}/${enc(bob.user_id)}` },
        { method: 'GET', path: `/_matrix/federation/v1/state_ids/${enc(roomId)}`, query: { event_id: '$x' } },
        {
          method: 'GET',
          path: `/_matrix/federation/v1/backfill/${enc(roomId)}`,
          query: { v: ['$x'], limit: '10' },
        },
        {
          method: 'POST',
          path: `/_matrix/federation/v1/get_missing_events/${enc(roomId)}`,
          body: { earliest_events: [], latest_events: ['$x'] },
        },
        { method: 'PUT', path: `/_matrix/federation/v2/send_leave/${enc(roomId)}/${enc('$x')}`, body: {} },
      ];
      for (const p of paths) {
        try {
          await client.request({
            destination: 'hs1.test',
            method: p.method,
            path: p.path,
            ...(p.query ? { query: p.query } : {}),
            ...(p.body ? { body: p.body } : {}),
          });
          t.fail(`${p.method} ${p.path} answered`);
        } catch (err) {
          t.ok(err instanceof FederationError, `${p.path} refused`);
          t.equal(
            (err as FederationError).status,
            403,
            `${p.method} ${p.path.split('/').slice(0, 5).join('/')}`,
          );
          t.equal((err as FederationError).errcode, 'M_FORBIDDEN');
        }
      }
    });

    t.test('lifting the ACL lets hs2 back in', async (t) => {
      await setAcl({ allow: ['*'], deny: [], allow_ip_literals: false });
      await say('after');
      await untilLong('the message after the ACL was lifted', async () =>
        (await bodiesOnHs1()).includes('after') ? true : undefined,
      );
      t.pass('hs1 takes hs2 events again');
    });
  });
}
