// The detectors of suspicious activity (spec/detection.md): each one against a scripted attack
// and against normal use that must not trigger it, on a real server (PGlite and PostgreSQL; the
// counters in Redis when TEST_REDIS_URL is set), with their responses: throttle, lock, suspend,
// the admins' notices room, and always an audit record.
import t from 'tap';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { account, alertsFor, detecting, until } from './helpers/detection.ts';
import {
  type Login,
  PASSWORD,
  SERVER_NAME,
  startTestServer,
  syncOnce,
  type TestServer,
} from './helpers/server.ts';

t.setTimeout(600_000);
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
const redisUrl = testRedisUrl();
const MIN = 60_000;

/** A request from a given client address (inject's remoteAddress). */
function from(
  s: TestServer,
  address: string,
  method: 'GET' | 'POST' | 'PUT',
  url: string,
  body?: unknown,
  token?: string,
) {
  return s.app.inject({
    method,
    url,
    remoteAddress: address,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
  });
}

function loginBody(user: string, password: string) {
  return { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password };
}

for (const backend of databaseBackends()) {
  t.test(`detectors and responses on ${backend.name}${redisUrl ? ' with Redis counters' : ''}`, async (t) => {
    const s = await startTestServer(
      t,
      backend,
      detecting(
        {
          failed_logins_account: [5, MIN],
          failed_logins_address: [8, MIN],
          registrations_address: [4, MIN],
          message_flood: [15, MIN],
          invite_flood: [8, MIN],
          join_flood: [6, MIN],
          room_creation_flood: [5, MIN],
          stranger_invites: [4, MIN],
          key_flood: [10, MIN],
          to_device_flood: [10, MIN],
          login_addresses: [4, MIN],
        },
        {
          join_flood: ['lock', 'notify'],
          room_creation_flood: ['suspend', 'notify'],
          failed_logins_address: ['throttle', 'notify'],
          registrations_address: ['throttle', 'notify'],
        },
        redisUrl ? { redisUrl } : {},
      ),
    );
    const { detection, restrictions, rooms } = s.runtime.services;
    t.equal(detection.storeKind, redisUrl ? 'redis' : 'memory');
    const root = await account(s, 'root', true);
    const host = await account(s, 'host');
    const hostSession = { userId: host.user_id, deviceId: host.device_id, tokenHash: '', isAdmin: false };
    const publicRoom = async (name: string) =>
      (await rooms.createRoom(hostSession, { preset: 'public_chat', name })).room_id;
    const notThrottled = async (user: string) => !(await detection.isThrottled({ kind: 'user', id: user }));
    const send = (who: Login, roomId: string, i: number, body = `hello ${i}`) =>
      s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t${i}`, {
        token: who.access_token,
        body: { msgtype: 'm.text', body },
      });

    t.test('failed logins for one account', async (t) => {
      const victim = await account(s, 'victim');
      // Normal: a user mistypes twice, then logs in.
      const typo = await account(s, 'typo');
      for (const i of [1, 2])
        t.equal(
          (await from(s, '10.1.1.1', 'POST', `${V3}/login`, loginBody('typo', `wrong${i}`))).statusCode,
          403,
        );
      t.equal(
        (await from(s, '10.1.1.1', 'POST', `${V3}/login`, loginBody('typo', PASSWORD))).statusCode,
        200,
      );
      // Attack: guesses from five addresses (so no one address stands out).
      for (let i = 0; i < 5; i++) {
        const res = await from(s, `10.1.0.${i + 1}`, 'POST', `${V3}/login`, loginBody('victim', `guess${i}`));
        t.equal(res.statusCode, 403);
      }
      const alert = await until('the account alert', async () => (await alertsFor(s, victim.user_id))[0]);
      t.equal(alert!.actor, 'detector:failed_logins_account');
      t.match(alert!.details, {
        subject_kind: 'user',
        seen: 5,
        threshold: 5,
        window_ms: MIN,
        responses: ['notify'],
      });
      t.notOk(JSON.stringify(alert).includes('guess'), 'no password in the record');
      t.same(await alertsFor(s, typo.user_id), [], 'two typos are normal');
      t.same(await alertsFor(s, '10.1.1.1'), []);
    });

    t.test('failed logins from one address, throttled', async (t) => {
      // Normal: an address with a few failures.
      for (let i = 0; i < 3; i++)
        await from(s, '10.2.1.1', 'POST', `${V3}/login`, loginBody(`nobody${i}`, 'x'));
      for (let i = 0; i < 8; i++) {
        t.equal(
          (await from(s, '10.2.0.1', 'POST', `${V3}/login`, loginBody(`sprayed${i}`, 'password1')))
            .statusCode,
          403,
        );
      }
      await until('the address alert', async () => (await alertsFor(s, '10.2.0.1'))[0]);
      t.ok(await detection.isThrottled({ kind: 'address', id: '10.2.0.1' }));
      const refused = await until('a 429', async () => {
        const res = await from(s, '10.2.0.1', 'POST', `${V3}/login`, loginBody('sprayed9', 'password1'));
        return res.statusCode === 429 ? res : undefined;
      });
      t.equal(refused.json().errcode, 'M_LIMIT_EXCEEDED');
      t.ok(refused.json().retry_after_ms > 0, 'retry_after_ms given');
      t.same(await alertsFor(s, '10.2.1.1'), []);
      t.notOk(await detection.isThrottled({ kind: 'address', id: '10.2.1.1' }));
      t.equal(
        (await from(s, '10.2.1.1', 'POST', `${V3}/login`, loginBody('typo', PASSWORD))).statusCode,
        200,
      );
    });

    t.test('registration bursts from one address', async (t) => {
      const register = (address: string, username: string) =>
        from(s, address, 'POST', `${V3}/register`, {
          username,
          password: PASSWORD,
          auth: { type: 'm.login.dummy' },
        });
      for (let i = 0; i < 3; i++)
        t.equal((await register(`10.3.1.${i + 1}`, `newcomer${i}`)).statusCode, 200);
      for (let i = 0; i < 4; i++) t.equal((await register('10.3.0.1', `sock${i}`)).statusCode, 200);
      const alert = await until('the registration alert', async () => (await alertsFor(s, '10.3.0.1'))[0]);
      t.equal(alert!.actor, 'detector:registrations_address');
      const refused = await until('a 429', async () => {
        const res = await register('10.3.0.1', 'sock-more');
        return res.statusCode === 429 ? res : undefined;
      });
      t.equal(refused.json().errcode, 'M_LIMIT_EXCEEDED');
      for (let i = 0; i < 3; i++) t.same(await alertsFor(s, `10.3.1.${i + 1}`), []);
    });

    t.test('message floods from one user are throttled (429 with retry_after_ms)', async (t) => {
      const room = await publicRoom('chat');
      const alice = await account(s, 'alice');
      const flooder = await account(s, 'flooder');
      for (const u of [alice, flooder])
        await s.request('POST', `${V3}/join/${enc(room)}`, { token: u.access_token });
      for (let i = 0; i < 10; i++) t.equal((await send(alice, room, i)).statusCode, 200);
      for (let i = 0; i < 15; i++)
        t.equal((await send(flooder, room, i, `SECRET-BODY-${i}`)).statusCode, 200);
      const alert = await until('the flood alert', async () => (await alertsFor(s, flooder.user_id))[0]);
      t.equal(alert!.actor, 'detector:message_flood');
      t.notOk(JSON.stringify(alert).includes('SECRET-BODY'), 'no message content in the audit record');
      const refused = await until('a 429', async () => {
        const res = await send(flooder, room, 100 + Math.floor(Math.random() * 1e6));
        return res.statusCode === 429 ? res : undefined;
      });
      t.equal(refused.json().errcode, 'M_LIMIT_EXCEEDED');
      t.ok(refused.json().retry_after_ms > 1000, 'told to wait');
      t.ok(await notThrottled(alice.user_id), 'alice (10 messages) is not throttled');
      t.same(await alertsFor(s, alice.user_id), []);
      t.equal((await send(alice, room, 11)).statusCode, 200);

      // The notice reaches the admin: invited to the notices room, it names detector, user and
      // counts, never the content.
      const noticeRoom = await until('the notices room', async () => {
        const sync = await syncOnce(s, root);
        return Object.keys(sync.rooms?.invite ?? {})[0];
      });
      t.equal(
        (await s.request('POST', `${V3}/join/${enc(noticeRoom)}`, { token: root.access_token })).statusCode,
        200,
      );
      const notice = await until('the flood notice', async () => {
        const res = await s.request('GET', `${V3}/rooms/${enc(noticeRoom)}/messages?dir=b&limit=50`, {
          token: root.access_token,
        });
        const chunk = res.json().chunk as Array<{
          sender: string;
          content: { msgtype?: string; body?: string };
        }>;
        return chunk.find((e) => e.content.body?.includes('message_flood'));
      });
      t.equal(notice.sender, `@conclave-notices:${SERVER_NAME}`);
      t.equal(notice.content.msgtype, 'm.notice');
      t.match(notice.content.body, new RegExp(`${flooder.user_id}.*seen 15, threshold 15`));
      t.notOk(notice.content.body!.includes('SECRET'), 'no message content in the notice');
    });

    t.test('invite floods, and invites of strangers', async (t) => {
      const lobby = await publicRoom('lobby');
      const inviter = await account(s, 'inviter');
      const friendly = await account(s, 'friendly');
      const spammer = await account(s, 'spammer');
      const members: Login[] = [];
      for (let i = 0; i < 9; i++) members.push(await account(s, `member${i}`));
      for (const u of [inviter, friendly, ...members]) {
        t.equal(
          (await s.request('POST', `${V3}/join/${enc(lobby)}`, { token: u.access_token })).statusCode,
          200,
        );
      }
      const roomOf = async (who: Login) =>
        (await s.request('POST', `${V3}/createRoom`, { token: who.access_token, body: {} })).json()
          .room_id as string;
      const invite = (who: Login, roomId: string, userId: string) =>
        s.request('POST', `${V3}/rooms/${enc(roomId)}/invite`, {
          token: who.access_token,
          body: { user_id: userId },
        });
      // Normal: friendly invites four people it knows from the lobby (and only four).
      const small = await roomOf(friendly);
      for (const m of members.slice(0, 4))
        t.equal((await invite(friendly, small, m.user_id)).statusCode, 200);
      // Invite flood: eight invites of people the inviter shares the lobby with.
      const big = await roomOf(inviter);
      for (const m of members.slice(0, 8)) t.equal((await invite(inviter, big, m.user_id)).statusCode, 200);
      const flood = await until(
        'the invite flood alert',
        async () => (await alertsFor(s, inviter.user_id))[0],
      );
      t.equal(flood!.actor, 'detector:invite_flood');
      // Strangers: four users spammer never shared a room with.
      const strangers: Login[] = [];
      for (let i = 0; i < 4; i++) strangers.push(await account(s, `stranger${i}`));
      const spam = await roomOf(spammer);
      for (const u of strangers) t.equal((await invite(spammer, spam, u.user_id)).statusCode, 200);
      const stranger = await until(
        'the stranger alert',
        async () => (await alertsFor(s, spammer.user_id))[0],
      );
      t.equal(stranger!.actor, 'detector:stranger_invites');
      t.match(stranger!.details, { seen: 4, threshold: 4 });
      t.same(await alertsFor(s, friendly.user_id), [], 'four invites of acquaintances are normal');
      t.ok(await notThrottled(friendly.user_id));
    });

    t.test('join floods lock the account (401 M_USER_LOCKED, soft logout)', async (t) => {
      const joiner = await account(s, 'joiner');
      const visitor = await account(s, 'visitor');
      const targets: string[] = [];
      for (let i = 0; i < 6; i++) targets.push(await publicRoom(`room${i}`));
      for (const r of targets.slice(0, 3)) {
        t.equal(
          (await s.request('POST', `${V3}/join/${enc(r)}`, { token: visitor.access_token })).statusCode,
          200,
        );
      }
      for (const r of targets) {
        t.equal(
          (await s.request('POST', `${V3}/join/${enc(r)}`, { token: joiner.access_token })).statusCode,
          200,
        );
      }
      const locked = await until('the lock', async () => {
        const res = await s.request('GET', `${V3}/account/whoami`, { token: joiner.access_token });
        return res.statusCode === 401 ? res : undefined;
      });
      t.same(locked.json(), {
        errcode: 'M_USER_LOCKED',
        error: 'This account has been locked',
        soft_logout: true,
      });
      const sync = await s.request('GET', `${V3}/sync`, { token: joiner.access_token });
      t.equal(sync.json().errcode, 'M_USER_LOCKED', 'reads are refused too');
      const alert = await until('the alert', async () => (await alertsFor(s, joiner.user_id))[0]);
      t.match(alert.details, { responses: ['lock', 'notify'] });
      t.equal(
        (await s.request('POST', `${V3}/logout`, { token: joiner.access_token })).statusCode,
        200,
        'logout works',
      );
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, { token: visitor.access_token })).statusCode,
        200,
      );
      t.same(await alertsFor(s, visitor.user_id), []);
      // Lifting the lock (the admin command's way) lets the account log in again.
      await restrictions.clear(joiner.user_id);
      t.equal((await s.login('joiner')).user_id, joiner.user_id);
    });

    t.test('room-creation floods suspend the account: reads work, writes 403 M_USER_SUSPENDED', async (t) => {
      const maker = await account(s, 'maker');
      const builder = await account(s, 'builder');
      const lobby = await publicRoom('after');
      for (let i = 0; i < 2; i++) {
        t.equal(
          (await s.request('POST', `${V3}/createRoom`, { token: builder.access_token, body: {} })).statusCode,
          200,
        );
      }
      let first = '';
      for (let i = 0; i < 5; i++) {
        const res = await s.request('POST', `${V3}/createRoom`, { token: maker.access_token, body: {} });
        t.equal(res.statusCode, 200);
        first ||= res.json().room_id;
      }
      await until('the suspension', async () => (await restrictions.get(maker.user_id)).suspended);
      const suspended = (res: { statusCode: number; json(): { errcode?: string } }) =>
        res.statusCode === 403 && res.json().errcode === 'M_USER_SUSPENDED';
      t.ok(suspended(await send(maker, first, 1)), 'no sends');
      t.ok(
        suspended(await s.request('POST', `${V3}/createRoom`, { token: maker.access_token, body: {} })),
        'no rooms',
      );
      t.ok(
        suspended(await s.request('POST', `${V3}/join/${enc(lobby)}`, { token: maker.access_token })),
        'no joins',
      );
      t.ok(
        suspended(
          await s.request('POST', `${V3}/rooms/${enc(first)}/invite`, {
            token: maker.access_token,
            body: { user_id: builder.user_id },
          }),
        ),
        'no invites',
      );
      t.ok(
        suspended(
          await s.request('PUT', `${V3}/profile/${enc(maker.user_id)}/displayname`, {
            token: maker.access_token,
            body: { displayname: 'x' },
          }),
        ),
        'no profile changes',
      );
      t.equal(
        (await s.request('GET', `${V3}/joined_rooms`, { token: maker.access_token })).json().joined_rooms
          .length,
        5,
      );
      t.ok((await syncOnce(s, maker)).next_batch, 'sync works');
      t.equal(
        (await s.request('GET', `${V3}/rooms/${enc(first)}/messages?dir=b`, { token: maker.access_token }))
          .statusCode,
        200,
      );
      t.equal((await send(builder, lobby, 1)).statusCode, 403, 'builder is not in the lobby');
      t.equal(
        (await s.request('POST', `${V3}/join/${enc(lobby)}`, { token: builder.access_token })).statusCode,
        200,
      );
      t.equal((await send(builder, lobby, 2)).statusCode, 200, 'two rooms are normal');
      t.notOk((await restrictions.get(builder.user_id)).suspended);
    });

    t.test('key and to-device floods', async (t) => {
      const keyer = await account(s, 'keyer');
      const quiet = await account(s, 'quiet');
      const query = (who: Login) =>
        s.request('POST', `${V3}/keys/query`, {
          token: who.access_token,
          body: { device_keys: { [host.user_id]: [] } },
        });
      for (let i = 0; i < 3; i++) t.equal((await query(quiet)).statusCode, 200);
      for (let i = 0; i < 10; i++) t.equal((await query(keyer)).statusCode, 200);
      const alert = await until('the key alert', async () => (await alertsFor(s, keyer.user_id))[0]);
      t.equal(alert!.actor, 'detector:key_flood');
      const toDevice = (who: Login, i: number) =>
        s.request('PUT', `${V3}/sendToDevice/m.test/${i}`, {
          token: who.access_token,
          body: { messages: { [host.user_id]: { [host.device_id]: { n: i } } } },
        });
      const pager = await account(s, 'pager');
      for (let i = 0; i < 3; i++) t.equal((await toDevice(quiet, i)).statusCode, 200);
      for (let i = 0; i < 10; i++) t.equal((await toDevice(pager, i)).statusCode, 200);
      const td = await until('the to-device alert', async () => (await alertsFor(s, pager.user_id))[0]);
      t.equal(td!.actor, 'detector:to_device_flood');
      t.same(await alertsFor(s, quiet.user_id), []);
    });

    t.test('logins of one account from many addresses', async (t) => {
      const roamer = await account(s, 'roamer');
      const homebody = await account(s, 'homebody');
      for (let i = 0; i < 3; i++) {
        t.equal(
          (await from(s, '10.5.1.1', 'POST', `${V3}/login`, loginBody('homebody', PASSWORD))).statusCode,
          200,
        );
      }
      for (let i = 0; i < 4; i++) {
        t.equal(
          (await from(s, `10.5.0.${i + 1}`, 'POST', `${V3}/login`, loginBody('roamer', PASSWORD))).statusCode,
          200,
        );
      }
      const alert = await until('the address alert', async () => (await alertsFor(s, roamer.user_id))[0]);
      t.equal(alert!.actor, 'detector:login_addresses');
      t.match(alert!.details, { seen: 4 });
      t.same(await alertsFor(s, homebody.user_id), []);
    });

    t.test('admins are neither counted nor throttled', async (t) => {
      const room = await publicRoom('admins');
      await s.request('POST', `${V3}/join/${enc(room)}`, { token: root.access_token });
      for (let i = 0; i < 20; i++) t.equal((await send(root, room, i)).statusCode, 200);
      t.same(await alertsFor(s, root.user_id), []);
    });
  });
}
