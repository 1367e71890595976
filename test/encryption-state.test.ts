import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
const MEGOLM = 'm.megolm.v1.aes-sha2';

interface ClientEvent {
  type: string;
  state_key?: string;
  event_id: string;
  content: Record<string, unknown>;
}

for (const backend of databaseBackends()) {
  t.test(`an encrypted room stays encrypted, on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const call = (method: 'GET' | 'POST' | 'PUT', url: string, token: string, body?: unknown) =>
      s.request(method, url, { token, ...(body !== undefined ? { body } : {}) });
    const stateUrl = (roomId: string, stateKey = '') =>
      `${V3}/rooms/${enc(roomId)}/state/m.room.encryption/${enc(stateKey)}`;
    const encryptionOf = async (roomId: string) =>
      (await call('GET', stateUrl(roomId), alice.access_token)).json();

    for (const preset of ['private_chat', 'trusted_private_chat'] as const) {
      t.test(`createRoom with initial_state encryption, preset ${preset}`, async (t) => {
        const created = await call('POST', `${V3}/createRoom`, alice.access_token, {
          preset,
          invite: [bob.user_id],
          name: 'Encrypted lab',
          initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: MEGOLM } }],
        });
        t.equal(created.statusCode, 200, created.body);
        const roomId: string = created.json().room_id;
        t.same(await encryptionOf(roomId), { algorithm: MEGOLM }, 'the room is encrypted');
        const state = (await call('GET', `${V3}/rooms/${enc(roomId)}/state`, alice.access_token)).json();
        t.ok(
          state.some((e: ClientEvent) => e.type === 'm.room.encryption' && e.state_key === ''),
          'the encryption event is in the state',
        );

        const join = await call('POST', `${V3}/rooms/${enc(roomId)}/join`, bob.access_token, {});
        t.equal(join.statusCode, 200, join.body);
        const sent = await call(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/send/m.room.encrypted/first`,
          alice.access_token,
          {
            algorithm: MEGOLM,
            ciphertext: 'opaque',
            sender_key: 'k',
            session_id: 's',
            device_id: 'D',
          },
        );
        t.equal(sent.statusCode, 200, sent.body);
        const history = await call(
          'GET',
          `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=100`,
          bob.access_token,
        );
        t.equal(history.statusCode, 200);
        const chunk: ClientEvent[] = history.json().chunk;
        const encryptionAt = chunk.findIndex((e) => e.type === 'm.room.encryption');
        const firstMessageAt = chunk.findIndex((e) => e.state_key === undefined);
        t.ok(encryptionAt >= 0, 'the encryption event is in the history');
        t.equal(chunk[firstMessageAt]?.event_id, sent.json().event_id, 'the first message is the one sent');
        t.ok(encryptionAt < firstMessageAt, 'the room was encrypted before its first message');
        t.same(await encryptionOf(roomId), { algorithm: MEGOLM }, 'bob sees it too');

        // In a trusted private chat bob has the creator's power, and still cannot weaken the room.
        const change = await call('PUT', stateUrl(roomId), bob.access_token, {
          algorithm: 'm.olm.v1.curve25519-aes-sha2',
        });
        t.equal(change.statusCode, 403);
        t.equal(change.json().errcode, 'M_FORBIDDEN');
        if (preset === 'trusted_private_chat') {
          const topic = await call('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, bob.access_token, {
            topic: 'bob may change state',
          });
          t.equal(topic.statusCode, 200, 'bob has the power to send state here');
          const off = await call('PUT', stateUrl(roomId), bob.access_token, {});
          t.equal(off.statusCode, 403, 'power is not enough to turn encryption off');
        }
        t.same(await encryptionOf(roomId), { algorithm: MEGOLM });
      });
    }

    t.test('createRoom refuses an initial_state that turns encryption off again', async (t) => {
      const before = (await call('GET', `${V3}/joined_rooms`, alice.access_token)).json().joined_rooms.length;
      for (const later of [{}, { algorithm: 'm.other' }]) {
        const res = await call('POST', `${V3}/createRoom`, alice.access_token, {
          preset: 'private_chat',
          initial_state: [
            { type: 'm.room.encryption', content: { algorithm: MEGOLM } },
            { type: 'm.room.encryption', state_key: '', content: later },
          ],
        });
        t.equal(res.statusCode, 403, JSON.stringify(later));
        t.equal(res.json().errcode, 'M_FORBIDDEN');
      }
      const after = (await call('GET', `${V3}/joined_rooms`, alice.access_token)).json().joined_rooms.length;
      t.equal(after, before, 'no room was created');
      const twice = await call('POST', `${V3}/createRoom`, alice.access_token, {
        initial_state: [
          { type: 'm.room.encryption', content: { algorithm: MEGOLM } },
          { type: 'm.room.encryption', content: { algorithm: MEGOLM, rotation_period_msgs: 50 } },
        ],
      });
      t.equal(twice.statusCode, 200, 'the same algorithm twice is fine');
      t.same(await encryptionOf(twice.json().room_id), { algorithm: MEGOLM, rotation_period_msgs: 50 });
    });

    t.test('enabling, re-sending and trying to weaken encryption', async (t) => {
      const created = await call('POST', `${V3}/createRoom`, alice.access_token, { preset: 'private_chat' });
      const roomId: string = created.json().room_id;
      await call('POST', `${V3}/rooms/${enc(roomId)}/invite`, alice.access_token, { user_id: bob.user_id });
      await call('POST', `${V3}/rooms/${enc(roomId)}/join`, bob.access_token, {});
      const plain = await call(
        'PUT',
        `${V3}/rooms/${enc(roomId)}/send/m.room.message/m0`,
        alice.access_token,
        {
          msgtype: 'm.text',
          body: 'before encryption',
        },
      );
      t.equal(plain.statusCode, 200);

      const enable = await call('PUT', stateUrl(roomId), alice.access_token, { algorithm: MEGOLM });
      t.equal(enable.statusCode, 200, 'an unencrypted room can be encrypted');
      const again = await call('PUT', stateUrl(roomId), alice.access_token, { algorithm: MEGOLM });
      t.equal(again.statusCode, 200, 'an identical re-send is allowed');
      t.equal(again.json().event_id, enable.json().event_id, 'and idempotent: the same event stands');
      const rotation = await call(
        'PUT',
        `${V3}/rooms/${enc(roomId)}/state/m.room.encryption`,
        alice.access_token,
        {
          algorithm: MEGOLM,
          rotation_period_ms: 604800000,
          rotation_period_msgs: 100,
        },
      );
      t.equal(rotation.statusCode, 200, 'rotation settings may change with the same algorithm');

      const weaker: Array<[string, unknown]> = [
        ['no content', {}],
        ['no algorithm', { rotation_period_ms: 1 }],
        ['a null algorithm', { algorithm: null }],
        ['an empty algorithm', { algorithm: '' }],
        ['a numeric algorithm', { algorithm: 1 }],
        ['another algorithm', { algorithm: 'm.megolm.v2.aes-sha2' }],
        ['the algorithm in other case', { algorithm: MEGOLM.toUpperCase() }],
      ];
      for (const [what, content] of weaker) {
        for (const url of [stateUrl(roomId), `${V3}/rooms/${enc(roomId)}/state/m.room.encryption`]) {
          const res = await call('PUT', url, alice.access_token, content);
          t.equal(res.statusCode, 403, `${what}: refused`);
          t.equal(res.json().errcode, 'M_FORBIDDEN', `${what}: M_FORBIDDEN`);
        }
      }
      t.same(
        await encryptionOf(roomId),
        { algorithm: MEGOLM, rotation_period_ms: 604800000, rotation_period_msgs: 100 },
        'the state is unchanged',
      );

      const redact = await call(
        'PUT',
        `${V3}/rooms/${enc(roomId)}/redact/${enc(rotation.json().event_id)}/r1`,
        alice.access_token,
        { reason: 'strip it' },
      );
      t.equal(redact.statusCode, 403, 'the encryption event cannot be redacted');
      t.equal(redact.json().errcode, 'M_FORBIDDEN');
      const redactOld = await call(
        'PUT',
        `${V3}/rooms/${enc(roomId)}/redact/${enc(enable.json().event_id)}/r2`,
        alice.access_token,
        {},
      );
      t.equal(redactOld.statusCode, 403, 'nor an earlier one');
      const redactMessage = await call(
        'PUT',
        `${V3}/rooms/${enc(roomId)}/redact/${enc(plain.json().event_id)}/r3`,
        alice.access_token,
        {},
      );
      t.equal(redactMessage.statusCode, 200, 'other events still can');

      const byBob = await call('PUT', stateUrl(roomId), bob.access_token, { algorithm: MEGOLM });
      t.equal(byBob.statusCode, 403, 'bob lacks the power level for the encryption event');
      t.equal(byBob.json().errcode, 'M_FORBIDDEN');
      const byMallory = await call('PUT', stateUrl(roomId), mallory.access_token, {});
      t.equal(byMallory.statusCode, 403, 'an outsider cannot send it');
      t.notMatch(byMallory.json().error, /encrypt/i, 'and is not told whether the room is encrypted');
    });

    t.test('two concurrent changes: exactly one wins', async (t) => {
      const created = await call('POST', `${V3}/createRoom`, alice.access_token, { preset: 'private_chat' });
      const roomId: string = created.json().room_id;
      const [a, b] = await Promise.all([
        call('PUT', stateUrl(roomId), alice.access_token, { algorithm: MEGOLM }),
        call('PUT', stateUrl(roomId), alice.access_token, { algorithm: 'm.other.algorithm' }),
      ]);
      t.same([a.statusCode, b.statusCode].sort(), [200, 403]);
      const winner = a.statusCode === 200 ? MEGOLM : 'm.other.algorithm';
      t.same(await encryptionOf(roomId), { algorithm: winner });
    });

    t.test('malformed requests', async (t) => {
      const created = await call('POST', `${V3}/createRoom`, alice.access_token, {
        initial_state: [{ type: 'm.room.encryption', content: { algorithm: MEGOLM } }],
      });
      const roomId: string = created.json().room_id;
      const array = await s.request('PUT', stateUrl(roomId), {
        token: alice.access_token,
        rawBody: '["algorithm"]',
        headers: { 'content-type': 'application/json' },
      });
      t.equal(array.statusCode, 400, 'a body that is not an object');
      t.equal(array.json().errcode, 'M_BAD_JSON');
      const notJson = await s.request('PUT', stateUrl(roomId), {
        token: alice.access_token,
        rawBody: '{"algorithm":',
        headers: { 'content-type': 'application/json' },
      });
      t.equal(notJson.statusCode, 400);
      t.equal(notJson.json().errcode, 'M_NOT_JSON');
      const badRoom = await call('PUT', stateUrl('not-a-room'), alice.access_token, { algorithm: MEGOLM });
      t.equal(badRoom.statusCode, 400);
      t.equal(badRoom.json().errcode, 'M_INVALID_PARAM');
      const badInitial = await call('POST', `${V3}/createRoom`, alice.access_token, {
        initial_state: [{ type: 'm.room.encryption', content: 'megolm' }],
      });
      t.equal(badInitial.statusCode, 400, 'initial_state content must be an object');
      t.equal(badInitial.json().errcode, 'M_BAD_JSON');
      t.same(await encryptionOf(roomId), { algorithm: MEGOLM });
    });
  });
}
