// Shared ban lists (spec/detection.md): the server follows the policy rooms of its configuration
// and enforces their m.ban rules on joins, invites and federation; lifting a rule (redacting it or
// replacing it with empty content) lifts the ban. Real rooms, real state events.
import t from 'tap';
import { globPattern } from '../src/services/detection/policy-lists.ts';
import { databaseBackends } from './helpers/backends.ts';
import { until } from './helpers/detection.ts';
import {
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
  xMatrixHeader,
} from './helpers/federation.ts';
import type { Login, TestServer } from './helpers/server.ts';

t.setTimeout(600_000);
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

t.test('policy globs', async (t) => {
  t.ok(globPattern('@spam*:evil.test').test('@spammer:evil.test'));
  t.notOk(globPattern('@spam*:evil.test').test('@spammer:good.test'));
  t.ok(globPattern('*.evil.test').test('a.b.evil.test'));
  t.notOk(globPattern('*.evil.test').test('evil.test'));
  t.ok(globPattern('ev?l.test').test('evil.test'));
  t.notOk(globPattern('evil.test').test('evilXtest'), 'a dot is literal');
  t.ok(globPattern('a+(b)[c]').test('a+(b)[c]'), 'regex characters are literal');
  t.ok(globPattern('*').test('@anyone:anywhere\nelse'));
});

for (const backend of databaseBackends()) {
  t.test(`ban lists from policy rooms on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test'], () => ({
      policyRooms: ['#bans:hs1.test'],
    }));
    const hs = servers[0] as TestServer;
    const eve = rawServer('eve.test');
    network.servers.set(
      'eve.test',
      rawServerEndpoint(() => rawServerKeys(eve)),
    );
    const [moderator, alice, bob, mallory, mallory2] = (await Promise.all(
      ['moderator', 'alice', 'bob', 'mallory', 'mallory2'].map((u) => hs.register(u)),
    )) as Login[];
    const create = async (who: Login, body: Record<string, unknown>) => {
      const res = await hs.request('POST', `${V3}/createRoom`, { token: who.access_token, body });
      t.equal(res.statusCode, 200, res.body);
      return res.json().room_id as string;
    };
    const policyRoom = await create(moderator!, { room_alias_name: 'bans', preset: 'private_chat' });
    const town = await create(alice!, { preset: 'public_chat', room_alias_name: 'town' });
    const den = await create(alice!, { preset: 'public_chat', room_alias_name: 'den' });
    const rule = (type: string, key: string, content: Record<string, unknown>) =>
      hs.request('PUT', `${V3}/rooms/${enc(policyRoom)}/state/${type}/${key}`, {
        token: moderator!.access_token,
        body: content,
      });
    const join = (who: Login, room: string) =>
      hs.request('POST', `${V3}/join/${enc(room)}`, { token: who.access_token });
    const invite = (who: Login, room: string, userId: string) =>
      hs.request('POST', `${V3}/rooms/${enc(room)}/invite`, {
        token: who.access_token,
        body: { user_id: userId },
      });
    const uri = `/_matrix/federation/v1/query/profile?user_id=${enc(alice!.user_id)}`;
    const fromEve = () =>
      hs.request('GET', uri, {
        headers: { authorization: xMatrixHeader(eve, { method: 'GET', uri, destination: 'hs1.test' }) },
      });
    t.equal((await fromEve()).statusCode, 200, 'eve is served before any rule');

    t.test(
      'user rules: banned users cannot join, invite or be invited; removing the rule lifts it',
      async (t) => {
        const set = await rule('m.policy.rule.user', 'r1', {
          entity: '@mallory*:hs1.test',
          recommendation: 'm.ban',
          reason: 'spam',
        });
        t.equal(set.statusCode, 200, set.body);
        const refused = await join(mallory!, town);
        t.equal(refused.statusCode, 403);
        t.equal(refused.json().errcode, 'M_FORBIDDEN');
        t.equal(
          (await join(mallory2!, '#town:hs1.test')).statusCode,
          403,
          'the glob covers mallory2, by alias too',
        );
        t.equal((await invite(alice!, den, mallory!.user_id)).statusCode, 403, 'cannot be invited');
        const own = await create(mallory!, {});
        t.equal((await invite(mallory!, own, bob!.user_id)).statusCode, 403, 'cannot invite');
        const withInvite = await hs.request('POST', `${V3}/createRoom`, {
          token: alice!.access_token,
          body: { invite: [mallory!.user_id] },
        });
        t.equal(withInvite.statusCode, 403, 'not through createRoom either');
        t.equal((await join(bob!, town)).statusCode, 200, 'bob is not banned');
        // Lifted by a redaction of the rule.
        const ruleId = (
          await hs.request('GET', `${V3}/rooms/${enc(policyRoom)}/state/m.policy.rule.user/r1`, {
            token: moderator!.access_token,
          })
        ).json();
        t.equal(ruleId.entity, '@mallory*:hs1.test');
        const stateEvent = (
          await hs.request('GET', `${V3}/rooms/${enc(policyRoom)}/state`, { token: moderator!.access_token })
        )
          .json()
          .find((e: { type: string }) => e.type === 'm.policy.rule.user');
        const redacted = await hs.request(
          'PUT',
          `${V3}/rooms/${enc(policyRoom)}/redact/${enc(stateEvent.event_id)}/lift1`,
          {
            token: moderator!.access_token,
            body: { reason: 'appeal granted' },
          },
        );
        t.equal(redacted.statusCode, 200, redacted.body);
        t.equal((await join(mallory!, town)).statusCode, 200, 'the redacted rule no longer bans');
        t.equal((await invite(mallory!, own, bob!.user_id)).statusCode, 200);
      },
    );

    t.test('room rules: a banned room cannot be joined; empty content lifts it', async (t) => {
      t.equal(
        (await rule('m.policy.rule.room', 'den', { entity: den, recommendation: 'm.ban', reason: 'abuse' }))
          .statusCode,
        200,
      );
      t.equal((await join(bob!, den)).statusCode, 403);
      t.equal((await join(bob!, '#den:hs1.test')).statusCode, 403);
      t.equal((await invite(alice!, den, bob!.user_id)).statusCode, 403, 'nor invited into');
      // A rule with another recommendation, or no entity, bans nothing.
      await rule('m.policy.rule.room', 'odd', { entity: town, recommendation: 'org.example.watch' });
      await rule('m.policy.rule.room', 'broken', { entity: 42, recommendation: 'm.ban' });
      t.equal(
        (await join(mallory2!, town)).statusCode,
        200,
        'other recommendations and malformed rules ban nothing',
      );
      t.equal((await rule('m.policy.rule.room', 'den', {})).statusCode, 200);
      t.equal((await join(bob!, den)).statusCode, 200, 'lifted');
    });

    t.test('server rules: refused at federation, and their users cannot join or be invited', async (t) => {
      t.equal(
        (await rule('m.policy.rule.server', 'eve', { entity: 'eve.t*', recommendation: 'm.ban' })).statusCode,
        200,
      );
      const refused = await until('eve refused', async () => {
        const res = await fromEve();
        return res.statusCode === 403 ? res : undefined;
      });
      t.equal(refused.json().errcode, 'M_FORBIDDEN');
      t.equal((await invite(alice!, town, '@friend:eve.test')).statusCode, 403, 'no invites to its users');
      const makeJoin = `/_matrix/federation/v1/make_join/${enc(town)}/${enc('@friend:eve.test')}`;
      const mj = await hs.request('GET', makeJoin, {
        headers: {
          authorization: xMatrixHeader(eve, { method: 'GET', uri: makeJoin, destination: 'hs1.test' }),
        },
      });
      t.equal(mj.statusCode, 403, 'its users cannot join');
      t.equal(
        (await rule('m.policy.rule.server', 'eve', { entity: '', recommendation: 'm.ban' })).statusCode,
        200,
      );
      await until('eve served again', async () => (await fromEve()).statusCode === 200);
    });

    t.test('rules in a room the server does not follow ban nothing', async (t) => {
      const other = await create(bob!, {});
      await hs.request('PUT', `${V3}/rooms/${enc(other)}/state/m.policy.rule.user/all`, {
        token: bob!.access_token,
        body: { entity: '@alice:hs1.test', recommendation: 'm.ban' },
      });
      t.equal((await join(alice!, town)).statusCode, 200);
      t.equal((await invite(alice!, den, mallory2!.user_id)).statusCode, 200);
    });
  });
}
