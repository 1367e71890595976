import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { syncOnce, type TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/**
 * Knocking on a room of another server: make_knock and send_knock through a resident, the knock
 * stored out of band with the room's stripped state (knock_room_state), shown under `knock` in
 * /sync; the resident's members see it and can let the knocker in with an invite.
 */
const V3 = '/_matrix/client/v3';
t.setTimeout(600_000);
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`knocking across servers on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const create = async (joinRule: string) => {
      const r = await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: {
          preset: 'private_chat',
          room_version: '7',
          name: 'Knock lab',
          initial_state: [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: joinRule } }],
        },
      });
      t.equal(r.statusCode, 200, r.body);
      return r.json().room_id as string;
    };
    const knock = (roomId: string, query = '?via=hs1.test', body: Record<string, unknown> = {}) =>
      hs2.request('POST', `${V3}/knock/${enc(roomId)}${query}`, { token: bob.access_token, body });

    t.test('bob knocks through hs1, sees the room under knock, and is let in', async (t) => {
      const roomId = await create('knock');
      const res = await knock(roomId, '?via=hs1.test', { reason: 'I run the assays' });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { room_id: roomId });
      t.ok(
        network.sent.some(
          (r) => r.from === 'hs2.test' && r.uri.startsWith('/_matrix/federation/v1/send_knock/'),
        ),
        'through send_knock',
      );
      const synced = await syncOnce(hs2, bob);
      const knocked = synced.rooms.knock?.[roomId];
      t.ok(knocked, 'the room is under knock in bob sync');
      const events = knocked.knock_state.events as Array<{
        type: string;
        state_key: string;
        content: Record<string, unknown>;
      }>;
      t.equal(
        events.find((e) => e.type === 'm.room.name')?.content.name,
        'Knock lab',
        'with the stripped state',
      );
      t.equal(events.find((e) => e.type === 'm.room.join_rules')?.content.join_rule, 'knock');
      t.equal(
        events.find((e) => e.type === 'm.room.member' && e.state_key === bob.user_id)?.content.membership,
        'knock',
      );
      const member = await hs1.request(
        'GET',
        `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.user_id)}`,
        { token: alice.access_token },
      );
      t.equal(member.json().membership, 'knock', 'hs1 holds the knock');
      t.equal(member.json().reason, 'I run the assays');

      const invite = await hs1.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
        token: alice.access_token,
        body: { user_id: bob.user_id },
      });
      t.equal(invite.statusCode, 200, invite.body);
      await until(
        'the invite on hs2',
        async () => (await syncOnce(hs2, bob)).rooms.invite?.[roomId] !== undefined,
        60_000,
      );
      const join = await hs2.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(join.statusCode, 200, join.body);
    });

    t.test('a room whose join rule is not knock refuses the knock', async (t) => {
      const roomId = await create('invite');
      const res = await knock(roomId);
      t.equal(res.statusCode, 403, res.body);
      t.equal(res.json().errcode, 'M_FORBIDDEN');
      const synced = await syncOnce(hs2, bob);
      t.equal(synced.rooms.knock?.[roomId], undefined, 'nothing stored');
    });

    t.test('no server to knock through, or an unreachable one', async (t) => {
      const nowhere = await knock('!nowhere:unknown.test', '');
      t.equal(nowhere.statusCode, 502, nowhere.body);
      const roomId = await create('knock');
      network.cut('hs1.test', 'hs2.test');
      t.teardown(() => network.heal('hs1.test', 'hs2.test'));
      const cut = await knock(roomId);
      t.equal(cut.statusCode, 502, cut.body);
      t.equal(cut.json().errcode, 'M_UNKNOWN');
      const bad = await hs2.request('POST', `${V3}/knock/${enc('not a room')}`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(bad.statusCode, 400, bad.body);
      const noToken = await hs2.request('POST', `${V3}/knock/${enc(roomId)}`, { body: {} });
      t.equal(noToken.statusCode, 401);
    });
  });
}
