import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
const ALGORITHM = 'm.megolm_backup.v1.curve25519-aes-sha2';
const ROOM_A = `!labnotes:${SERVER_NAME}`;
const ROOM_B = `!fieldwork:${SERVER_NAME}`;

/** Key data as a client would upload it; session_data is opaque to the server. */
function keyData(first: number, forwarded: number, verified: boolean, tag = 'x') {
  return {
    first_message_index: first,
    forwarded_count: forwarded,
    is_verified: verified,
    session_data: { ephemeral: `eph-${tag}`, ciphertext: `ct-${tag}`, mac: `mac-${tag}` },
  };
}

for (const backend of databaseBackends()) {
  t.test(`key backup on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token: string, body?: unknown) =>
      s.request(method, url, { token, ...(body !== undefined ? { body } : {}) });
    const keysUrl = (version: string, roomId?: string, sessionId?: string) =>
      `${V3}/room_keys/keys${roomId !== undefined ? `/${enc(roomId)}` : ''}${
        sessionId !== undefined ? `/${enc(sessionId)}` : ''
      }?version=${enc(version)}`;
    const authData = { public_key: 'alice-backup-public-key', signatures: {} };

    t.test('before any backup', async (t) => {
      const current = await call('GET', `${V3}/room_keys/version`, alice.access_token);
      t.equal(current.statusCode, 404);
      t.equal(current.json().errcode, 'M_NOT_FOUND');
      const put = await call('PUT', keysUrl('1', ROOM_A, 's1'), alice.access_token, keyData(0, 0, false));
      t.equal(put.statusCode, 404, 'writing with no backup at all is 404');
      t.equal(put.json().errcode, 'M_NOT_FOUND');
      const get = await call('GET', keysUrl('1'), alice.access_token);
      t.equal(get.statusCode, 404);
      t.equal(get.json().errcode, 'M_NOT_FOUND');
      const del = await call('DELETE', `${V3}/room_keys/version/1`, alice.access_token);
      t.equal(del.statusCode, 404, 'deleting a version that never existed is 404');
    });

    t.test('create a version and read it', async (t) => {
      const created = await call('POST', `${V3}/room_keys/version`, alice.access_token, {
        algorithm: ALGORITHM,
        auth_data: authData,
      });
      t.equal(created.statusCode, 200, created.body);
      t.same(created.json(), { version: '1' });
      const current = await call('GET', `${V3}/room_keys/version`, alice.access_token);
      t.equal(current.statusCode, 200);
      t.same(current.json(), {
        algorithm: ALGORITHM,
        auth_data: authData,
        count: 0,
        etag: '0',
        version: '1',
      });
      const byNumber = await call('GET', `${V3}/room_keys/version/1`, alice.access_token);
      t.same(byNumber.json(), current.json());
    });

    t.test('store keys and read them back in every shape', async (t) => {
      const one = await call(
        'PUT',
        keysUrl('1', ROOM_A, 'sessA1'),
        alice.access_token,
        keyData(3, 1, false, 'a1'),
      );
      t.equal(one.statusCode, 200, one.body);
      t.equal(one.json().count, 1);
      t.type(one.json().etag, 'string');
      t.not(one.json().etag, '0', 'the etag moved');

      const room = await call('PUT', keysUrl('1', ROOM_A), alice.access_token, {
        sessions: { sessA2: keyData(0, 0, true, 'a2') },
      });
      t.equal(room.statusCode, 200, room.body);
      t.equal(room.json().count, 2);
      t.not(room.json().etag, one.json().etag);

      const all = await call('PUT', keysUrl('1'), alice.access_token, {
        rooms: {
          [ROOM_B]: { sessions: { sessB1: keyData(5, 0, false, 'b1'), sessB2: keyData(6, 2, true, 'b2') } },
        },
      });
      t.equal(all.statusCode, 200, all.body);
      t.equal(all.json().count, 4);
      const etag = all.json().etag;

      const single = await call('GET', keysUrl('1', ROOM_A, 'sessA1'), alice.access_token);
      t.equal(single.statusCode, 200);
      t.same(single.json(), keyData(3, 1, false, 'a1'), 'session_data comes back as stored');
      const roomKeys = await call('GET', keysUrl('1', ROOM_A), alice.access_token);
      t.same(roomKeys.json(), {
        sessions: { sessA1: keyData(3, 1, false, 'a1'), sessA2: keyData(0, 0, true, 'a2') },
      });
      const everything = await call('GET', keysUrl('1'), alice.access_token);
      t.same(everything.json(), {
        rooms: {
          [ROOM_A]: { sessions: { sessA1: keyData(3, 1, false, 'a1'), sessA2: keyData(0, 0, true, 'a2') } },
          [ROOM_B]: { sessions: { sessB1: keyData(5, 0, false, 'b1'), sessB2: keyData(6, 2, true, 'b2') } },
        },
      });
      const info = await call('GET', `${V3}/room_keys/version`, alice.access_token);
      t.equal(info.json().count, 4);
      t.equal(info.json().etag, etag, 'the version reports the etag of the last upload');

      const missing = await call('GET', keysUrl('1', ROOM_A, 'nope'), alice.access_token);
      t.equal(missing.statusCode, 404, 'a session the backup lacks is 404');
      t.equal(missing.json().errcode, 'M_NOT_FOUND');
      const emptyRoom = await call('GET', keysUrl('1', `!empty:${SERVER_NAME}`), alice.access_token);
      t.equal(emptyRoom.statusCode, 200);
      t.same(emptyRoom.json(), { sessions: {} }, 'a room without keys is an empty sessions map');
    });

    t.test('which copy of a session key is kept', async (t) => {
      const room = `!rules:${SERVER_NAME}`;
      const put = async (sid: string, data: ReturnType<typeof keyData>) => {
        const res = await call('PUT', keysUrl('1', room, sid), alice.access_token, data);
        t.equal(res.statusCode, 200, res.body);
        return res.json() as { etag: string; count: number };
      };
      const stored = async (sid: string) =>
        (await call('GET', keysUrl('1', room, sid), alice.access_token)).json();
      const cases: Array<[string, ReturnType<typeof keyData>, ReturnType<typeof keyData>, 'old' | 'new']> = [
        ['verified beats unverified', keyData(0, 0, false, 'o'), keyData(9, 9, true, 'n'), 'new'],
        ['unverified never replaces verified', keyData(9, 9, true, 'o'), keyData(0, 0, false, 'n'), 'old'],
        ['lower first_message_index wins', keyData(5, 0, false, 'o'), keyData(2, 7, false, 'n'), 'new'],
        ['higher first_message_index loses', keyData(2, 7, true, 'o'), keyData(5, 0, true, 'n'), 'old'],
        ['then lower forwarded_count wins', keyData(4, 3, true, 'o'), keyData(4, 1, true, 'n'), 'new'],
        ['higher forwarded_count loses', keyData(4, 1, false, 'o'), keyData(4, 3, false, 'n'), 'old'],
        ['a full tie keeps the stored key', keyData(4, 1, false, 'o'), keyData(4, 1, false, 'n'), 'old'],
      ];
      let i = 0;
      for (const [what, first, second, winner] of cases) {
        const sid = `rule${i++}`;
        const before = await put(sid, first);
        const after = await put(sid, second);
        t.same(await stored(sid), winner === 'new' ? second : first, what);
        if (winner === 'new') t.not(after.etag, before.etag, `${what}: the etag moves`);
        else t.equal(after.etag, before.etag, `${what}: nothing changed, the etag stays`);
        t.equal(after.count, before.count, `${what}: still one key for the session`);
      }
      const clean = await call('DELETE', keysUrl('1', room), alice.access_token);
      t.equal(clean.statusCode, 200);
      t.equal(clean.json().count, 4);
    });

    t.test('an upload that changes nothing keeps the etag', async (t) => {
      const again = await call(
        'PUT',
        keysUrl('1', ROOM_A, 'sessA1'),
        alice.access_token,
        keyData(3, 1, false, 'a1'),
      );
      t.equal(again.statusCode, 200);
      const info = (await call('GET', `${V3}/room_keys/version/1`, alice.access_token)).json();
      t.equal(again.json().etag, info.etag);
      t.equal(again.json().count, 4);
    });

    t.test('updating a version', async (t) => {
      const newAuth = {
        public_key: 'alice-backup-public-key',
        signatures: { [alice.user_id]: { 'ed25519:X': 'sig' } },
      };
      const etagBefore = (await call('GET', `${V3}/room_keys/version/1`, alice.access_token)).json().etag;
      const ok = await call('PUT', `${V3}/room_keys/version/1`, alice.access_token, {
        algorithm: ALGORITHM,
        auth_data: newAuth,
        version: '1',
      });
      t.equal(ok.statusCode, 200, ok.body);
      t.same(ok.json(), {});
      const info = (await call('GET', `${V3}/room_keys/version/1`, alice.access_token)).json();
      t.same(info.auth_data, newAuth);
      t.equal(info.count, 4, 'the keys stay');
      t.equal(info.etag, etagBefore, 'auth_data is not part of the etag');

      const otherAlgorithm = await call('PUT', `${V3}/room_keys/version/1`, alice.access_token, {
        algorithm: 'm.megolm_backup.v2.something',
        auth_data: newAuth,
      });
      t.equal(otherAlgorithm.statusCode, 400, 'the algorithm cannot change');
      t.equal(otherAlgorithm.json().errcode, 'M_INVALID_PARAM');
      const otherVersion = await call('PUT', `${V3}/room_keys/version/1`, alice.access_token, {
        algorithm: ALGORITHM,
        auth_data: newAuth,
        version: '2',
      });
      t.equal(otherVersion.statusCode, 400, 'a body version must match the path');
      t.equal(otherVersion.json().errcode, 'M_INVALID_PARAM');
      for (const version of ['99', 'abc', '01', '-1']) {
        const unknown = await call('PUT', `${V3}/room_keys/version/${version}`, alice.access_token, {
          algorithm: ALGORITHM,
          auth_data: newAuth,
        });
        t.equal(unknown.statusCode, 404, `version ${version}: unknown`);
        t.equal(unknown.json().errcode, 'M_NOT_FOUND');
      }
      t.same((await call('GET', `${V3}/room_keys/version/1`, alice.access_token)).json().auth_data, newAuth);
    });

    t.test('keys go to the current version only', async (t) => {
      const created = await call('POST', `${V3}/room_keys/version`, alice.access_token, {
        algorithm: ALGORITHM,
        auth_data: { public_key: 'second-key' },
      });
      t.same(created.json(), { version: '2' });
      const current = await call('GET', `${V3}/room_keys/version`, alice.access_token);
      t.same(current.json(), {
        algorithm: ALGORITHM,
        auth_data: { public_key: 'second-key' },
        count: 0,
        etag: '0',
        version: '2',
      });
      for (const version of ['1', '3', 'abc']) {
        for (const [what, res] of [
          [
            'one session',
            await call('PUT', keysUrl(version, ROOM_A, 's'), alice.access_token, keyData(0, 0, true)),
          ],
          ['one room', await call('PUT', keysUrl(version, ROOM_A), alice.access_token, { sessions: {} })],
          ['all rooms', await call('PUT', keysUrl(version), alice.access_token, { rooms: {} })],
        ] as const) {
          t.equal(res.statusCode, 403, `version ${version}, ${what}: refused`);
          t.same(res.json().errcode, 'M_WRONG_ROOM_KEYS_VERSION');
          t.equal(res.json().current_version, '2', 'the answer names the current version');
        }
      }
      const old = await call('GET', keysUrl('1', ROOM_A, 'sessA1'), alice.access_token);
      t.equal(old.statusCode, 200, 'an older version can still be read');
      const put = await call(
        'PUT',
        keysUrl('2', ROOM_A, 'sessA1'),
        alice.access_token,
        keyData(1, 0, true, 'v2'),
      );
      t.equal(put.statusCode, 200);
      t.same(put.json().count, 1, 'count is per version');
      t.same(
        (await call('GET', keysUrl('1', ROOM_A, 'sessA1'), alice.access_token)).json(),
        keyData(3, 1, false, 'a1'),
      );
    });

    t.test('deleting keys', async (t) => {
      const before = (await call('GET', `${V3}/room_keys/version/1`, alice.access_token)).json();
      const none = await call('DELETE', keysUrl('1', ROOM_A, 'no-such-session'), alice.access_token);
      t.equal(none.statusCode, 200);
      t.same(none.json(), { etag: before.etag, count: 4 }, 'deleting nothing changes nothing');
      const one = await call('DELETE', keysUrl('1', ROOM_A, 'sessA1'), alice.access_token);
      t.equal(one.statusCode, 200);
      t.equal(one.json().count, 3);
      t.not(one.json().etag, before.etag);
      t.equal((await call('GET', keysUrl('1', ROOM_A, 'sessA1'), alice.access_token)).statusCode, 404);
      const room = await call('DELETE', keysUrl('1', ROOM_B), alice.access_token);
      t.equal(room.json().count, 1);
      t.same((await call('GET', keysUrl('1', ROOM_B), alice.access_token)).json(), { sessions: {} });
      const all = await call('DELETE', keysUrl('1'), alice.access_token);
      t.equal(all.json().count, 0);
      t.same((await call('GET', keysUrl('1'), alice.access_token)).json(), { rooms: {} });
      t.equal(
        (await call('GET', keysUrl('2'), alice.access_token)).json().rooms[ROOM_A].sessions.sessA1
          .is_verified,
        true,
        'the other version is untouched',
      );
      const unknown = await call('DELETE', keysUrl('7'), alice.access_token);
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
    });

    t.test('deleting a version', async (t) => {
      const del = await call('DELETE', `${V3}/room_keys/version/2`, alice.access_token);
      t.equal(del.statusCode, 200);
      t.same(del.json(), {});
      const again = await call('DELETE', `${V3}/room_keys/version/2`, alice.access_token);
      t.equal(again.statusCode, 200, 'deleting a deleted version succeeds again');
      const gone = await call('GET', `${V3}/room_keys/version/2`, alice.access_token);
      t.equal(gone.statusCode, 404);
      t.equal(gone.json().errcode, 'M_NOT_FOUND');
      t.equal(
        (await call('GET', keysUrl('2'), alice.access_token)).statusCode,
        404,
        'its keys cannot be read',
      );
      const rows = await s.runtime.database.db
        .selectFrom('room_key_backup_keys')
        .select('session_id')
        .where('user_id', '=', alice.user_id)
        .where('version', '=', 2)
        .execute();
      t.same(rows, [], 'its keys are gone from the database');
      const current = await call('GET', `${V3}/room_keys/version`, alice.access_token);
      t.equal(current.json().version, '1', 'the highest remaining version is current again');
      const put = await call('PUT', keysUrl('2', ROOM_A, 's'), alice.access_token, keyData(0, 0, true));
      t.equal(put.statusCode, 403, 'a deleted version takes no keys');
      t.equal(put.json().current_version, '1');
      const next = await call('POST', `${V3}/room_keys/version`, alice.access_token, {
        algorithm: ALGORITHM,
        auth_data: {},
      });
      t.same(next.json(), { version: '3' }, 'version numbers are never reused');
      await call('DELETE', `${V3}/room_keys/version/3`, alice.access_token);
      await call('DELETE', `${V3}/room_keys/version/1`, alice.access_token);
      const none = await call('GET', `${V3}/room_keys/version`, alice.access_token);
      t.equal(none.statusCode, 404, 'no current version once all are deleted');
      const fresh = await call('POST', `${V3}/room_keys/version`, alice.access_token, {
        algorithm: ALGORITHM,
        auth_data: authData,
      });
      t.same(fresh.json(), { version: '4' });
      await call(
        'PUT',
        keysUrl('4', ROOM_A, 'secret'),
        alice.access_token,
        keyData(0, 0, true, 'alice-only'),
      );
    });

    t.test("bob cannot read, write or delete alice's backup", async (t) => {
      const aliceBefore = (await call('GET', keysUrl('4'), alice.access_token)).json();
      const aliceInfo = (await call('GET', `${V3}/room_keys/version`, alice.access_token)).json();
      const attempts: Array<[string, 'GET' | 'PUT' | 'DELETE', string, unknown?]> = [
        ['current version', 'GET', `${V3}/room_keys/version`],
        ['version by number', 'GET', `${V3}/room_keys/version/4`],
        ['update version', 'PUT', `${V3}/room_keys/version/4`, { algorithm: ALGORITHM, auth_data: {} }],
        ['delete version', 'DELETE', `${V3}/room_keys/version/4`],
        ['all keys', 'GET', keysUrl('4')],
        ['room keys', 'GET', keysUrl('4', ROOM_A)],
        ['one key', 'GET', keysUrl('4', ROOM_A, 'secret')],
        ['write a key', 'PUT', keysUrl('4', ROOM_A, 'secret'), keyData(0, 0, true, 'bob')],
        [
          'write room keys',
          'PUT',
          keysUrl('4', ROOM_A),
          { sessions: { secret: keyData(0, 0, true, 'bob') } },
        ],
        ['write all keys', 'PUT', keysUrl('4'), { rooms: {} }],
        ['delete a key', 'DELETE', keysUrl('4', ROOM_A, 'secret')],
        ['delete room keys', 'DELETE', keysUrl('4', ROOM_A)],
        ['delete all keys', 'DELETE', keysUrl('4')],
      ];
      for (const [what, method, url, body] of attempts) {
        const res = await call(method, url, bob.access_token, body);
        t.equal(res.statusCode, 404, `${what}: bob has no such backup`);
        t.equal(res.json().errcode, 'M_NOT_FOUND');
        t.notOk(
          res.body.includes('alice-only') || res.body.includes('alice-backup'),
          `${what}: nothing leaks`,
        );
      }
      // Bob's own backup, once he has one, is his alone: its numbers start at 1.
      const bobs = await call('POST', `${V3}/room_keys/version`, bob.access_token, {
        algorithm: ALGORITHM,
        auth_data: { public_key: 'bob-key' },
      });
      t.same(bobs.json(), { version: '1' });
      const wrong = await call(
        'PUT',
        keysUrl('4', ROOM_A, 'secret'),
        bob.access_token,
        keyData(0, 0, true, 'bob'),
      );
      t.equal(wrong.statusCode, 403, "alice's version number is not bob's current version");
      t.equal(wrong.json().current_version, '1');
      const own = await call(
        'PUT',
        keysUrl('1', ROOM_A, 'secret'),
        bob.access_token,
        keyData(0, 0, true, 'bob'),
      );
      t.equal(own.statusCode, 200);
      t.same((await call('GET', keysUrl('1'), bob.access_token)).json(), {
        rooms: { [ROOM_A]: { sessions: { secret: keyData(0, 0, true, 'bob') } } },
      });
      await call('DELETE', keysUrl('1'), bob.access_token);
      await call('DELETE', `${V3}/room_keys/version/1`, bob.access_token);
      t.same(
        (await call('GET', keysUrl('4'), alice.access_token)).json(),
        aliceBefore,
        "alice's keys are intact",
      );
      t.same((await call('GET', `${V3}/room_keys/version`, alice.access_token)).json(), aliceInfo);
    });

    t.test('concurrent new versions get distinct numbers; a large upload is stored whole', async (t) => {
      const carol = await s.register('carol');
      const created = await Promise.all(
        Array.from({ length: 5 }, () =>
          call('POST', `${V3}/room_keys/version`, carol.access_token, {
            algorithm: ALGORITHM,
            auth_data: {},
          }),
        ),
      );
      t.same(created.map((r) => r.json().version).sort(), ['1', '2', '3', '4', '5']);
      const sessions: Record<string, ReturnType<typeof keyData>> = {};
      for (let i = 0; i < 1500; i++) sessions[`bulk${i}`] = keyData(i % 7, i % 3, i % 2 === 0, String(i));
      const bulk = await call('PUT', keysUrl('5', ROOM_A), carol.access_token, { sessions });
      t.equal(bulk.statusCode, 200, bulk.body);
      t.equal(bulk.json().count, 1500);
      const back = await call('GET', keysUrl('5', ROOM_A), carol.access_token);
      t.same(back.json().sessions, sessions, 'every key comes back as stored');
      const again = await call('PUT', keysUrl('5', ROOM_A), carol.access_token, { sessions });
      t.equal(again.json().etag, bulk.json().etag, 'uploading the same keys again changes nothing');
    });

    t.test('malformed requests', async (t) => {
      const expect = async (
        what: string,
        res: Awaited<ReturnType<typeof call>>,
        status: number,
        errcode: string,
      ) => {
        t.equal(res.statusCode, status, `${what}: ${status}`);
        t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      };
      const noToken = await s.request('GET', `${V3}/room_keys/version`);
      await expect('no token', noToken, 401, 'M_MISSING_TOKEN');
      await expect(
        'no version parameter',
        await call('GET', `${V3}/room_keys/keys`, alice.access_token),
        400,
        'M_MISSING_PARAM',
      );
      await expect(
        'no version parameter on PUT',
        await call('PUT', `${V3}/room_keys/keys/${enc(ROOM_A)}/s`, alice.access_token, keyData(0, 0, true)),
        400,
        'M_MISSING_PARAM',
      );
      await expect(
        'a version parameter too long',
        await call('GET', keysUrl('1'.repeat(300)), alice.access_token),
        400,
        'M_INVALID_PARAM',
      );
      await expect(
        'a non-numeric version',
        await call('GET', `${V3}/room_keys/version/latest`, alice.access_token),
        404,
        'M_NOT_FOUND',
      );
      await expect(
        'a huge version',
        await call('GET', keysUrl('99999999999999999999'), alice.access_token),
        404,
        'M_NOT_FOUND',
      );
      for (const method of ['GET', 'PUT', 'DELETE'] as const) {
        const body = method === 'PUT' ? keyData(0, 0, true) : undefined;
        await expect(
          `${method} with a malformed room ID`,
          await call(method, keysUrl('4', 'not-a-room', 's'), alice.access_token, body),
          400,
          'M_INVALID_PARAM',
        );
        await expect(
          `${method} with a NUL in the session ID`,
          await call(method, keysUrl('4', ROOM_A, 'a\u0000b'), alice.access_token, body),
          400,
          'M_INVALID_PARAM',
        );
      }
      await expect(
        'a malformed room ID in the body',
        await call('PUT', keysUrl('4'), alice.access_token, { rooms: { 'not-a-room': { sessions: {} } } }),
        400,
        'M_BAD_JSON',
      );
      const badKeys: Array<[string, unknown]> = [
        ['a string index', { ...keyData(0, 0, true), first_message_index: '1' }],
        ['a negative index', { ...keyData(0, 0, true), first_message_index: -1 }],
        ['a fractional count', { ...keyData(0, 0, true), forwarded_count: 1.5 }],
        ['a string is_verified', { ...keyData(0, 0, true), is_verified: 'true' }],
        ['session_data an array', { ...keyData(0, 0, true), session_data: ['x'] }],
        ['session_data a string', { ...keyData(0, 0, true), session_data: 'opaque' }],
        ['session_data missing', { first_message_index: 0, forwarded_count: 0, is_verified: true }],
        ['a NUL in session_data', { ...keyData(0, 0, true), session_data: { ciphertext: 'a\u0000b' } }],
        ['an unpaired surrogate in session_data', { ...keyData(0, 0, true), session_data: { 'k\ud800': 1 } }],
      ];
      for (const [what, data] of badKeys) {
        await expect(
          what,
          await call('PUT', keysUrl('4', ROOM_A, 's'), alice.access_token, data),
          400,
          'M_BAD_JSON',
        );
        await expect(
          `${what}, in a room upload`,
          await call('PUT', keysUrl('4', ROOM_A), alice.access_token, { sessions: { s: data } }),
          400,
          'M_BAD_JSON',
        );
        await expect(
          `${what}, in a full upload`,
          await call('PUT', keysUrl('4'), alice.access_token, {
            rooms: { [ROOM_A]: { sessions: { s: data } } },
          }),
          400,
          'M_BAD_JSON',
        );
      }
      await expect(
        'sessions not an object',
        await call('PUT', keysUrl('4', ROOM_A), alice.access_token, { sessions: [] }),
        400,
        'M_BAD_JSON',
      );
      await expect(
        'rooms missing',
        await call('PUT', keysUrl('4'), alice.access_token, {}),
        400,
        'M_BAD_JSON',
      );
      const badVersions: Array<[string, unknown]> = [
        ['no algorithm', { auth_data: {} }],
        ['no auth_data', { algorithm: ALGORITHM }],
        ['auth_data an array', { algorithm: ALGORITHM, auth_data: [] }],
        ['auth_data a string', { algorithm: ALGORITHM, auth_data: 'x' }],
        ['an empty algorithm', { algorithm: '', auth_data: {} }],
        ['a numeric algorithm', { algorithm: 1, auth_data: {} }],
        ['a NUL in auth_data', { algorithm: ALGORITHM, auth_data: { public_key: '\u0000' } }],
      ];
      for (const [what, body] of badVersions) {
        await expect(
          what,
          await call('POST', `${V3}/room_keys/version`, alice.access_token, body),
          400,
          'M_BAD_JSON',
        );
        await expect(
          `${what}, in an update`,
          await call('PUT', `${V3}/room_keys/version/4`, alice.access_token, body),
          400,
          'M_BAD_JSON',
        );
      }
      await expect(
        'a numeric version in the update body',
        await call('PUT', `${V3}/room_keys/version/4`, alice.access_token, {
          algorithm: ALGORITHM,
          auth_data: {},
          version: 4,
        }),
        400,
        'M_BAD_JSON',
      );
      const notJson = await s.request('POST', `${V3}/room_keys/version`, {
        token: alice.access_token,
        rawBody: '{"algorithm":',
        headers: { 'content-type': 'application/json' },
      });
      await expect('not JSON', notJson, 400, 'M_NOT_JSON');
      const info = (await call('GET', `${V3}/room_keys/version`, alice.access_token)).json();
      t.same(
        { version: info.version, count: info.count, auth_data: info.auth_data },
        { version: '4', count: 1, auth_data: authData },
        'no bad request changed anything',
      );
    });
  });
}
