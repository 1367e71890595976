import t from 'tap';
import { runAdmin } from '../src/admin.ts';
import { databaseBackends } from './helpers/backends.ts';
import { crossSigning } from './helpers/e2ee.ts';
import { deviceRows, equipDevice, NOTHING_LEFT, uploadCrossSigning } from './helpers/key-management.ts';
import { type Login, PASSWORD, startTestServer, syncOnce } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const ACTION = (userId: string) => `/_conclave/admin/v1/users/${encodeURIComponent(userId)}/compromised`;
const NEW_PASSWORD = 'a much longer new password';

/**
 * The compromised-account action: someone got into alice's account; the admin ends it all (every
 * session, device, key, waiting message and her cross-signing identity) and sets a new password.
 * bob, who shares a room, is told her keys changed. mallory is no admin. carol's account is
 * handled from the command line, locked.
 */
for (const backend of databaseBackends()) {
  t.test(`compromised account on ${backend.name}`, async (t) => {
    t.setTimeout(180_000);
    const s = await startTestServer(t, backend);
    const admin = await s.registerAdmin('admin');
    const alice = await s.register('alice');
    const alicePhone = await s.login('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const room = await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} });
    const roomId = room.json().room_id as string;
    await s.request('POST', `${V3}/rooms/${encodeURIComponent(roomId)}/invite`, {
      token: alice.access_token,
      body: { user_id: bob.user_id },
    });
    await s.request('POST', `${V3}/join/${encodeURIComponent(roomId)}`, {
      token: bob.access_token,
      body: {},
    });
    for (const device of [alice, alicePhone]) await equipDevice(s, device, bob);
    await uploadCrossSigning(s, alice, crossSigning(alice.user_id).body);
    await s.request(
      'PUT',
      `${V3}/user/${encodeURIComponent(alice.user_id)}/account_data/m.cross_signing.master`,
      {
        token: alice.access_token,
        body: { encrypted: { k: { iv: 'x', ciphertext: 'y', mac: 'z' } } },
      },
    );
    const bobSince = (await syncOnce(s, bob)).next_batch as string;
    const call = (who: Pick<Login, 'access_token'> | undefined, userId: string, body?: unknown) =>
      s.request('POST', ACTION(userId), {
        ...(who ? { token: who.access_token } : {}),
        ...(body !== undefined ? { body } : {}),
      });

    // Forbidden: no token, a non-admin.
    const anonymous = await call(undefined, alice.user_id, {});
    t.equal(anonymous.statusCode, 401);
    t.equal(anonymous.json().errcode, 'M_MISSING_TOKEN');
    const byMallory = await call(mallory, alice.user_id, {});
    t.equal(byMallory.statusCode, 403);
    t.equal(byMallory.json().errcode, 'M_FORBIDDEN');

    // Malformed: 400 with an errcode, never a 500.
    for (const [userId, body, errcode] of [
      [alice.user_id, { lock: 'yes' }, 'M_BAD_JSON'],
      [alice.user_id, { new_password: 5 }, 'M_BAD_JSON'],
      [alice.user_id, { new_password: 'short' }, 'M_WEAK_PASSWORD'],
      [alice.user_id, [], 'M_BAD_JSON'],
      ['not-a-user', {}, 'M_INVALID_PARAM'],
      ['@alice:elsewhere.test', {}, 'M_INVALID_PARAM'],
    ] as const) {
      const r = await call(admin, userId, body);
      t.equal(r.statusCode, 400, `malformed: ${userId} ${JSON.stringify(body)}`);
      t.equal(r.json().errcode, errcode);
    }
    const noBody = await call(admin, alice.user_id);
    t.equal(noBody.statusCode, 400, 'a body is required ({} will do)');
    t.match(noBody.json().errcode, /^M_/);
    const notJson = await s.request('POST', ACTION(alice.user_id), {
      token: admin.access_token,
      rawBody: '{',
      headers: { 'content-type': 'application/json' },
    });
    t.equal(notJson.statusCode, 400);
    t.equal(notJson.json().errcode, 'M_NOT_JSON');
    const unknown = await call(admin, '@nobody:conclave.test', {});
    t.equal(unknown.statusCode, 404);
    t.equal(unknown.json().errcode, 'M_NOT_FOUND');
    // Nothing happened to alice meanwhile.
    t.equal((await s.request('GET', `${V3}/account/whoami`, { token: alice.access_token })).statusCode, 200);

    // The action.
    const res = await call(admin, alice.user_id, { new_password: NEW_PASSWORD });
    t.equal(res.statusCode, 200, res.body);
    t.same(res.json(), {
      devices_deleted: [alice.device_id, alicePhone.device_id].sort(),
      cross_signing_keys_removed: 3,
      password_reset: true,
      locked: false,
    });
    for (const device of [alice, alicePhone]) {
      const who = await s.request('GET', `${V3}/account/whoami`, { token: device.access_token });
      t.equal(who.statusCode, 401, 'every session ended');
      t.equal(who.json().soft_logout, false);
      t.same(
        await deviceRows(s, alice.user_id, device.device_id),
        NOTHING_LEFT,
        'device, keys, messages gone',
      );
    }
    const query = await s.request('POST', `${V3}/keys/query`, {
      token: bob.access_token,
      body: { device_keys: { [alice.user_id]: [] } },
    });
    t.same(query.json().device_keys[alice.user_id] ?? {}, {}, 'bob sees no device of alice');
    t.notOk(query.json().master_keys?.[alice.user_id], 'nor her master key');
    t.notOk(query.json().self_signing_keys?.[alice.user_id], 'nor her self-signing key');
    const bobSync = await syncOnce(s, bob, { since: bobSince, timeout: 0 });
    t.ok(bobSync.device_lists?.changed?.includes(alice.user_id), "bob is told alice's keys changed");
    const secrets = await s.runtime.services.db
      .selectFrom('account_data')
      .select('type')
      .where('user_id', '=', alice.user_id)
      .where('type', 'like', 'm.cross_signing.%')
      .execute();
    t.same(secrets, [], 'the stored private cross-signing keys are gone');

    // The old password no longer logs in; the new one does, into an account with no identity.
    const login = (password: string) =>
      s.request('POST', `${V3}/login`, {
        body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password },
      });
    t.equal((await login(PASSWORD)).statusCode, 403, 'the old password is refused');
    const back = await login(NEW_PASSWORD);
    t.equal(back.statusCode, 200);
    const again = (
      await s.request('POST', `${V3}/keys/query`, {
        token: back.json().access_token,
        body: { device_keys: { [alice.user_id]: [] } },
      })
    ).json();
    t.notOk(again.master_keys?.[alice.user_id], 'at the next login cross-signing must be set up anew');

    // Audited, with counts only.
    const audit = await s.runtime.services.audit.list({ action: 'admin.user.compromised' });
    t.equal(audit.length, 1);
    t.equal(audit[0]?.actor, admin.user_id);
    t.equal(audit[0]?.target, alice.user_id);
    t.same(audit[0]?.details, {
      devices: 2,
      cross_signing_keys_removed: 3,
      password_reset: true,
      lock: false,
    });

    // The command line calls the same function: carol, locked.
    const carol = await s.register('carol');
    await equipDevice(s, carol, bob);
    const lines: string[] = [];
    t.equal(await runAdmin(['compromised', carol.user_id, '--lock'], (l) => lines.push(l), s.runtime), 0);
    t.same(JSON.parse(lines[0] ?? '{}'), {
      devices_deleted: [carol.device_id],
      cross_signing_keys_removed: 0,
      password_reset: false,
      locked: true,
    });
    t.same(await deviceRows(s, carol.user_id, carol.device_id), NOTHING_LEFT);
    const carolLogin = await s.request('POST', `${V3}/login`, {
      body: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'carol' },
        password: PASSWORD,
      },
    });
    t.equal(carolLogin.json().errcode, 'M_USER_LOCKED', 'a locked account cannot log in');
    const cli = await s.runtime.services.audit.list({ action: 'admin.user.compromised' });
    t.match(cli[1]?.actor, /^cli:/);

    // A deactivated account: 400 M_BAD_STATE.
    await s.request('POST', `/_synapse/admin/v1/deactivate/${encodeURIComponent(mallory.user_id)}`, {
      token: admin.access_token,
      body: {},
    });
    const dead = await call(admin, mallory.user_id, {});
    t.equal(dead.statusCode, 400);
    t.equal(dead.json().errcode, 'M_BAD_STATE');
  });
}
