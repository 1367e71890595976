import t from 'tap';
import { type Config, defaultConfig } from '../src/config.ts';
import { startRuntime } from '../src/runtime.ts';
import type { Services } from '../src/services/index.ts';
import { databaseBackends } from './helpers/backends.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const C1 = '/_conclave/client/v1';
const enc = encodeURIComponent;

async function until(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const backend of databaseBackends()) {
  t.test(`room roles and expiries on ${backend.name}`, async (t) => {
    t.setTimeout(240_000);
    const s = await startTestServer(t, backend, { roomExpiryIntervalMs: 200 });
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const carol = await s.register('carol');
    const mallory = await s.register('mallory');
    const as = (who: { access_token: string }) => ({ token: who.access_token });
    // Room version 10: the creator has level 100, not infinite power, so the caps show.
    const roomId = (
      await s.request('POST', `${V3}/createRoom`, {
        ...as(alice),
        body: { room_version: '10', preset: 'public_chat' },
      })
    ).json().room_id as string;
    for (const who of [bob, carol])
      await s.request('POST', `${V3}/join/${enc(roomId)}`, { ...as(who), body: {} });
    const role = (who: { access_token: string }, target: string, body: unknown) =>
      s.request('PUT', `${C1}/rooms/${enc(roomId)}/roles/${enc(target)}`, { ...as(who), body });
    const levels = async () =>
      (await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels/`, as(alice))).json()
        .users as Record<string, number>;

    t.test('a role preset applied returns the new power levels event', async (t) => {
      const res = await role(alice, bob.user_id, { role: 'moderator' });
      t.equal(res.statusCode, 200, res.body);
      t.equal(res.json().type, 'm.room.power_levels');
      t.equal(res.json().sender, alice.user_id);
      t.equal(res.json().content.users[bob.user_id], 50);
      const roles = (await s.request('GET', `${C1}/rooms/${enc(roomId)}/roles`, as(carol))).json();
      t.same(roles.presets, { admin: 100, moderator: 50, member: 0 });
      t.same(roles.users[bob.user_id], { level: 50, role: 'moderator' });
      t.same(roles.users[alice.user_id], { level: 100, role: 'admin' });
      t.equal(roles.permissions.kick, 50);
    });

    t.test('nobody gives more than they have, nor changes those at or above them', async (t) => {
      const above = await role(bob, carol.user_id, { role: 'admin' });
      t.equal(above.statusCode, 403);
      t.equal(above.json().errcode, 'M_FORBIDDEN');
      t.equal((await role(bob, alice.user_id, { role: 'member' })).statusCode, 403);
      const rules = await role(bob, carol.user_id, { level: 10 });
      t.equal(rules.statusCode, 403, 'the room says moderators may not change power levels (100 needed)');
      const perm = await s.request('PUT', `${C1}/rooms/${enc(roomId)}/permissions`, {
        ...as(alice),
        body: { permissions: { change_roles: 50 } },
      });
      t.equal(perm.statusCode, 200, perm.body);
      t.equal((await role(bob, carol.user_id, { level: 50 })).statusCode, 200, 'up to their own level');
      t.equal((await levels())[carol.user_id], 50);
      t.equal(
        (await role(bob, carol.user_id, { role: 'member' })).statusCode,
        403,
        'carol is now at their level',
      );
      t.equal((await role(alice, carol.user_id, { role: 'member' })).statusCode, 200);
      t.equal((await role(mallory, carol.user_id, { role: 'member' })).statusCode, 403, 'an outsider');
    });

    t.test('malformed requests', async (t) => {
      for (const body of [
        { role: 'king' },
        { role: 'admin', level: 1 },
        {},
        { level: '50' },
        { level: 1.5 },
        { role: 'member', expires_ts: 5 },
      ]) {
        const res = await role(alice, carol.user_id, body);
        t.equal(res.statusCode, 400, JSON.stringify(body));
        t.equal(res.json().errcode, 'M_BAD_JSON');
      }
      t.equal((await role(alice, 'carol', { role: 'member' })).statusCode, 400);
      const unknown = await s.request(
        'PUT',
        `${C1}/rooms/${enc(`!nope:${SERVER_NAME}`)}/roles/${enc(carol.user_id)}`,
        { ...as(alice), body: { role: 'member' } },
      );
      t.equal(unknown.statusCode, 404);
      t.equal(
        (
          await s.request('PUT', `${C1}/rooms/${enc(roomId)}/permissions`, {
            ...as(alice),
            body: { permissions: { fly: 1 } },
          })
        ).statusCode,
        400,
      );
      t.equal(
        (
          await s.request('PUT', `${C1}/rooms/${enc(roomId)}/expiries/${enc(carol.user_id)}`, {
            ...as(alice),
            body: { expires_ts: 'soon' },
          })
        ).statusCode,
        400,
      );
    });

    t.test('named permissions', async (t) => {
      const res = await s.request('PUT', `${C1}/rooms/${enc(roomId)}/permissions`, {
        ...as(alice),
        body: { permissions: { invite: 50, change_topic: 50, change_retention: 100 } },
      });
      t.equal(res.statusCode, 200, res.body);
      t.equal(res.json().content.invite, 50);
      t.equal(res.json().content.events['m.room.topic'], 50);
      t.equal(res.json().content.events['m.room.retention'], 100);
      const tooHigh = await s.request('PUT', `${C1}/rooms/${enc(roomId)}/permissions`, {
        ...as(bob),
        body: { permissions: { change_topic: 100 } },
      });
      t.equal(tooHigh.statusCode, 403);
      const fromAbove = await s.request('PUT', `${C1}/rooms/${enc(roomId)}/permissions`, {
        ...as(bob),
        body: { permissions: { change_retention: 0 } },
      });
      t.equal(fromAbove.statusCode, 403, 'a permission set above them is not theirs to lower');
    });

    t.test('a role that expires drops back, sent as the admin who set it, audited', async (t) => {
      // Listed while due far ahead (a loaded machine may take a while between two requests),
      // then set again to fall due soon.
      const res = await role(alice, carol.user_id, {
        role: 'moderator',
        expires_ts: Date.now() + 600_000,
        level_after: 0,
      });
      t.equal(res.statusCode, 200, res.body);
      t.equal((await levels())[carol.user_id], 50);
      const listed = (await s.request('GET', `${C1}/rooms/${enc(roomId)}/expiries`, as(bob))).json();
      t.match(listed.expiries, [
        { user_id: carol.user_id, kind: 'role', set_by: alice.user_id, level_after: 0 },
      ]);
      const soon = await role(alice, carol.user_id, {
        role: 'moderator',
        expires_ts: Date.now() + 1500,
        level_after: 0,
      });
      t.equal(soon.statusCode, 200, soon.body);
      await until('the role to expire', async () => (await levels())[carol.user_id] === undefined);
      const pl = await s.runtime.services.rooms.currentStateRow(roomId, 'm.room.power_levels', '');
      t.equal(pl?.sender, alice.user_id, "the event is sent on the admin's behalf");
      const audit = await s.runtime.services.audit.list({ action: 'room.expiry.apply' });
      t.match(audit.at(-1), {
        actor: alice.user_id,
        target: carol.user_id,
        details: { room_id: roomId, kind: 'role' },
      });
      t.same((await s.request('GET', `${C1}/rooms/${enc(roomId)}/expiries`, as(bob))).json().expiries, []);
    });

    t.test('a membership that expires ends with a kick by the admin', async (t) => {
      t.equal(
        (
          await s.request('PUT', `${C1}/rooms/${enc(roomId)}/expiries/${enc(carol.user_id)}`, {
            ...as(carol),
            body: { expires_ts: Date.now() + 60_000 },
          })
        ).statusCode,
        403,
        'a member without kick power',
      );
      const res = await s.request('PUT', `${C1}/rooms/${enc(roomId)}/expiries/${enc(carol.user_id)}`, {
        ...as(alice),
        body: { expires_ts: Date.now() + 1500 },
      });
      t.equal(res.statusCode, 200, res.body);
      await until(
        'the membership to expire',
        async () => (await s.runtime.services.rooms.membership(roomId, carol.user_id)) === 'leave',
      );
      const member = await s.runtime.services.rooms.currentStateRow(roomId, 'm.room.member', carol.user_id);
      t.equal(member?.sender, alice.user_id);
      t.equal((member?.json.content as { reason?: string }).reason, 'Membership expired');
      const outsider = await s.request('PUT', `${C1}/rooms/${enc(roomId)}/expiries/${enc(bob.user_id)}`, {
        ...as(mallory),
        body: { expires_ts: Date.now() + 60_000 },
      });
      t.equal(outsider.statusCode, 403);
    });

    t.test('an expiry cleared before it is due does nothing', async (t) => {
      await s.request('POST', `${V3}/join/${enc(roomId)}`, { ...as(carol), body: {} });
      await s.request('PUT', `${C1}/rooms/${enc(roomId)}/expiries/${enc(carol.user_id)}`, {
        ...as(alice),
        body: { expires_ts: Date.now() + 1000 },
      });
      const del = await s.request(
        'DELETE',
        `${C1}/rooms/${enc(roomId)}/expiries/${enc(carol.user_id)}?kind=membership`,
        as(alice),
      );
      t.equal(del.statusCode, 200);
      t.equal(
        (await s.request('DELETE', `${C1}/rooms/${enc(roomId)}/expiries/${enc(carol.user_id)}`, as(alice)))
          .statusCode,
        404,
      );
      await new Promise((r) => setTimeout(r, 1500)); // past the cleared due time: nothing may happen
      t.equal(await s.runtime.services.rooms.membership(roomId, carol.user_id), 'join');
    });

    t.test('make_room_admin is audited', async (t) => {
      await s.runtime.services.accounts.createAccount({
        localpart: 'root',
        password: 'correct horse battery',
        admin: true,
        login: false,
      });
      const root = await s.login('root');
      const res = await s.request('POST', `/_synapse/admin/v1/rooms/${enc(roomId)}/make_room_admin`, {
        ...as(root),
        body: { user_id: carol.user_id },
      });
      t.equal(res.statusCode, 200, res.body);
      t.equal((await levels())[carol.user_id], 100);
      const audit = await s.runtime.services.audit.list({ action: 'admin.room.make_admin' });
      t.match(audit.at(-1), {
        actor: root.user_id,
        target: roomId,
        details: { user_id: carol.user_id, acting_as: alice.user_id },
      });
    });
  });
}

/** Two processes on one PostgreSQL: each due expiry is applied once; expiries survive a restart. */
const postgres = databaseBackends().find((b) => b.name === 'postgres');
if (postgres) {
  t.test('expiries run once across processes and survive restarts', async (t) => {
    t.setTimeout(180_000);
    const database = await postgres.create();
    t.teardown(() => database.drop());
    const config = (interval: number): Config => ({
      ...defaultConfig(),
      serverName: SERVER_NAME,
      registration: 'open',
      passwordHashCost: 10,
      rateLimits: false,
      databaseUrl: database.url,
      dataDir: '',
      logLevel: 'silent',
      webClient: '',
      roomExpiryIntervalMs: interval,
    });
    const a = await startRuntime(config(86_400_000));
    const b = await startRuntime(config(86_400_000));
    const session = async (svc: Services, localpart: string) => {
      const login = await svc.accounts.createAccount({
        localpart,
        password: 'correct horse battery',
        login: true,
      });
      return svc.accounts.authenticateToken(login.access_token!);
    };
    const admin = await session(a.services, 'alice');
    const { room_id: roomId } = await a.services.rooms.createRoom(admin, { preset: 'public_chat' });
    const members = [];
    for (let i = 0; i < 8; i++) {
      const m = await session(a.services, `visitor${i}`);
      await a.services.rooms.join(m, roomId);
      members.push(m.userId);
    }
    const due = Date.now() + 300;
    for (const u of members) await a.services.roomRoles.setMembershipExpiry(admin, roomId, u, due);
    await until('the expiries to be due', async () => Date.now() > due + 10);
    const [na, nb] = await Promise.all([a.services.roomRoles.runDue(), b.services.roomRoles.runDue()]);
    t.equal(na + nb, members.length, `applied ${na} + ${nb}`);
    const applied = await a.services.audit.list({ action: 'room.expiry.apply', limit: 1000 });
    t.same(applied.map((r) => r.target).sort(), [...members].sort(), 'each once');
    for (const u of members) t.equal(await a.services.rooms.membership(roomId, u), 'leave');

    // A restart: set, stop every process before it is due, start another.
    const late = await session(a.services, 'late');
    await a.services.rooms.join(late, roomId);
    await a.services.roomRoles.setMembershipExpiry(admin, roomId, late.userId, Date.now() + 500);
    await a.close();
    await b.close();
    const c = await startRuntime(config(200));
    t.teardown(() => c.close());
    await until(
      'the expiry to apply after the restart',
      async () => (await c.services.rooms.membership(roomId, late.userId)) === 'leave',
    );
    t.pass('applied by the new process');
  });
}
