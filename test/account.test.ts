import { createHmac } from 'node:crypto';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { testDevice } from './helpers/e2ee.ts';
import { type Login, okCaller, PASSWORD, startTestServer, syncOnce } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely in tests
type Json = Record<string, any>;

const passwordAuth = (who: Login, session?: string) => ({
  type: 'm.login.password',
  identifier: { type: 'm.id.user', user: who.user_id },
  password: PASSWORD,
  ...(session ? { session } : {}),
});

/**
 * The account endpoints: alice deactivates her account (erasing it) after sharing a room with
 * bob; mallory tries to deactivate with the wrong password.
 */
for (const backend of databaseBackends()) {
  t.test(`account deactivation on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const aliceLaptop = await s.login('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const ok = okCaller(s);
    const room = (await ok('POST', `${V3}/createRoom`, bob, { preset: 'public_chat' })).room_id as string;
    await ok('POST', `${V3}/join/${enc(room)}`, alice, {});
    const invitedTo = (
      await ok('POST', `${V3}/createRoom`, bob, { preset: 'private_chat', invite: [alice.user_id] })
    ).room_id as string;
    await ok('PUT', `${V3}/profile/${enc(alice.user_id)}/displayname`, alice, { displayname: 'Alice' });
    await ok('PUT', `${V3}/user/${enc(alice.user_id)}/account_data/org.example.notes`, alice, { x: 1 });
    await ok('POST', `${V3}/keys/upload`, alice, { device_keys: testDevice(alice).deviceKeys });
    await ok('POST', `${V3}/room_keys/version`, alice, {
      algorithm: 'm.megolm_backup.v1.curve25519-aes-sha2',
      auth_data: { public_key: 'alice-backup-public-key', signatures: {} },
    });
    await ok('PUT', `${V3}/sendToDevice/m.test/t1`, bob, {
      messages: { [alice.user_id]: { '*': { n: 1 } } },
    });
    await ok('PUT', `${V3}/presence/${enc(alice.user_id)}/status`, alice, { presence: 'online' });

    // Without auth: the UIA flows.
    const first = await s.request('POST', `${V3}/account/deactivate`, {
      token: alice.access_token,
      body: {},
    });
    t.equal(first.statusCode, 401);
    t.same(first.json().flows, [{ stages: ['m.login.password'] }]);
    const session = first.json().session as string;

    // Forbidden: a wrong password, or another user's identifier.
    const wrong = await s.request('POST', `${V3}/account/deactivate`, {
      token: mallory.access_token,
      body: { auth: { ...passwordAuth(mallory), password: 'not it' } },
    });
    t.equal(wrong.statusCode, 401);
    t.equal(wrong.json().errcode, 'M_FORBIDDEN');
    const otherUser = await s.request('POST', `${V3}/account/deactivate`, {
      token: mallory.access_token,
      body: { auth: passwordAuth(alice) },
    });
    t.not(otherUser.statusCode, 200, "mallory cannot use alice's identifier");
    t.equal(
      (await s.request('GET', `${V3}/account/whoami`, { token: mallory.access_token })).statusCode,
      200,
    );

    // Malformed.
    for (const body of [{ erase: 'yes' }, { auth: 'password' }, { id_server: 7 }]) {
      const res = await s.request('POST', `${V3}/account/deactivate`, { token: alice.access_token, body });
      t.equal(res.statusCode, 400, `refused: ${JSON.stringify(body)}`);
    }

    const done = await s.request('POST', `${V3}/account/deactivate`, {
      token: alice.access_token,
      body: { auth: passwordAuth(alice, session), erase: true },
    });
    t.equal(done.statusCode, 200, done.body);
    t.same(done.json(), { id_server_unbind_result: 'no-support' });

    // Every token is dead, and the password no longer logs in.
    for (const token of [alice.access_token, aliceLaptop.access_token]) {
      const res = await s.request('GET', `${V3}/account/whoami`, { token });
      t.equal(res.statusCode, 401);
    }
    const login = await s.request('POST', `${V3}/login`, {
      body: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'alice' },
        password: PASSWORD,
      },
    });
    t.equal(login.statusCode, 403);
    t.equal(login.json().errcode, 'M_USER_DEACTIVATED');

    // Rooms left with leave events (the invite rejected), as bob sees.
    const members = await ok('GET', `${V3}/rooms/${enc(room)}/members`, bob);
    const aliceMember = (members.chunk as Json[]).find((e) => e.state_key === alice.user_id);
    t.equal(aliceMember?.content.membership, 'leave');
    const invited = await ok('GET', `${V3}/rooms/${enc(invitedTo)}/members`, bob);
    t.equal(
      (invited.chunk as Json[]).find((e) => e.state_key === alice.user_id)?.content.membership,
      'leave',
    );

    // Devices, keys, backups, to-device messages, presence, profile and account data are gone.
    const db = s.runtime.services.db;
    const rows = async (
      table: 'devices' | 'e2e_device_keys' | 'room_key_backup_versions' | 'presence' | 'account_data',
    ) => (await db.selectFrom(table).select('user_id').where('user_id', '=', alice.user_id).execute()).length;
    for (const table of [
      'devices',
      'e2e_device_keys',
      'room_key_backup_versions',
      'presence',
      'account_data',
    ] as const) {
      t.equal(await rows(table), 0, `no ${table} rows`);
    }
    const toDevice = await db
      .selectFrom('to_device_messages')
      .select('recipient_user_id')
      .where('recipient_user_id', '=', alice.user_id)
      .execute();
    t.equal(toDevice.length, 0, 'no to-device messages waiting');
    const profile = await s.request('GET', `${V3}/profile/${enc(alice.user_id)}`, {
      token: bob.access_token,
    });
    t.notOk(profile.json().displayname, 'erased profile');
    const keys = await ok('POST', `${V3}/keys/query`, bob, { device_keys: { [alice.user_id]: [] } });
    t.same(keys.device_keys[alice.user_id] ?? {}, {}, 'no device keys served');
    // The audit log has it.
    const audit = await db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'account.deactivate')
      .execute();
    t.equal(audit.length, 1);
    t.same(audit[0]?.details, { erase: true });
    // The user ID stays taken.
    const again = await s.request('GET', `${V3}/register/available?username=alice`);
    t.equal(again.statusCode, 400);
    await syncOnce(s, bob);
  });

  t.test(`3PIDs, third-party protocols and TURN on ${backend.name}`, async (t) => {
    const secret = 'turn-secret-for-tests';
    const s = await startTestServer(t, backend, {
      turnUris: ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349'],
      turnSharedSecret: secret,
      turnUserLifetimeMs: 3_600_000,
    });
    const alice = await s.register('alice');
    const get = (url: string, token?: string) => s.request('GET', url, token ? { token } : {});

    const threepids = await get(`${V3}/account/3pid`, alice.access_token);
    t.equal(threepids.statusCode, 200);
    t.same(threepids.json(), { threepids: [] });
    for (const path of [
      '3pid',
      '3pid/add',
      '3pid/bind',
      '3pid/email/requestToken',
      '3pid/msisdn/requestToken',
    ]) {
      const res = await s.request('POST', `${V3}/account/${path}`, {
        token: alice.access_token,
        body: { client_secret: 'x', sid: '1' },
      });
      t.equal(res.statusCode, 403, path);
      t.equal(res.json().errcode, 'M_THREEPID_DENIED');
    }
    const del = await s.request('POST', `${V3}/account/3pid/delete`, {
      token: alice.access_token,
      body: { medium: 'email', address: 'alice@example.org' },
    });
    t.same(del.json(), { id_server_unbind_result: 'no-support' });
    const badDel = await s.request('POST', `${V3}/account/3pid/unbind`, {
      token: alice.access_token,
      body: {},
    });
    t.equal(badDel.statusCode, 400);

    t.same((await get(`${V3}/thirdparty/protocols`, alice.access_token)).json(), {});
    const protocol = await get(`${V3}/thirdparty/protocol/irc`, alice.access_token);
    t.equal(protocol.statusCode, 404);
    t.equal(protocol.json().errcode, 'M_NOT_FOUND');

    const before = Math.floor(Date.now() / 1000);
    const turn = await get(`${V3}/voip/turnServer`, alice.access_token);
    t.equal(turn.statusCode, 200);
    const body = turn.json();
    t.same(body.uris, ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349']);
    t.equal(body.ttl, 3600);
    const [expiry, user] = [
      Number(body.username.split(':')[0]),
      body.username.slice(body.username.indexOf(':') + 1),
    ];
    t.equal(user, alice.user_id);
    t.ok(expiry >= before + 3600 && expiry <= before + 3602, 'expires after the lifetime');
    // What coturn computes with use-auth-secret and static-auth-secret.
    t.equal(body.password, createHmac('sha1', secret).update(body.username).digest('base64'));

    for (const url of [`${V3}/account/3pid`, `${V3}/thirdparty/protocols`, `${V3}/voip/turnServer`]) {
      t.equal((await get(url)).statusCode, 401, `${url} needs a token`);
    }
  });

  t.test(`no TURN configured on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const turn = await s.request('GET', `${V3}/voip/turnServer`, { token: alice.access_token });
    t.equal(turn.statusCode, 200);
    t.same(turn.json(), {});
  });
}
