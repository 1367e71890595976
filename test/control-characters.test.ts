import t from 'tap';
import { hasControlCharacters } from '../src/services/input-checks.ts';
import { databaseBackends } from './helpers/backends.ts';
import type { Json } from './helpers/e2ee.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
/** A label safe for TAP output, which line separators would break. */
const codePoints = (s: string) =>
  [...s].map((c) => `U+${c.codePointAt(0)!.toString(16).padStart(4, '0')}`).join(' ') || 'empty';

t.test('what counts as a control character', async (t) => {
  for (const bad of [
    'a\nb',
    '\u0000',
    '\u001f',
    '\u007f',
    '\u0080',
    'x\u009f',
    'm.room.name\r\n',
    '\u001b[31m',
  ]) {
    t.ok(hasControlCharacters(bad), codePoints(bad));
  }
  for (const good of ['m.room.name', '', 'é', 'ü:ß', '\u00a0', '🦊', 'a b', '\u2028']) {
    t.notOk(hasControlCharacters(good), codePoints(good));
  }
});

const [backend] = databaseBackends();
t.test(`control characters in names are refused (${backend!.name})`, async (t) => {
  const s = await startTestServer(t, backend!);
  const alice = await s.register('alice');
  const bob = await s.register('bob');
  const req = (method: 'PUT' | 'POST' | 'GET', path: string, body?: unknown) =>
    s.request(method, `${V3}${path}`, { token: alice.access_token, ...(body !== undefined ? { body } : {}) });
  const refused = (t: typeof outer, res: { statusCode: number; json(): Json }, what: RegExp) => {
    t.equal(res.statusCode, 400, res.json().error);
    t.equal(res.json().errcode, 'M_INVALID_PARAM');
    t.match(res.json().error, what);
    t.match(res.json().error, /control characters/);
  };
  const outer = t;
  const roomId: string = (await req('POST', '/createRoom', { preset: 'public_chat' })).json().room_id;
  const room = `/rooms/${enc(roomId)}`;

  t.test('event types and state keys in paths', async (t) => {
    refused(t, await req('PUT', `${room}/send/${enc('m.room.message\n')}/t1`, { body: 'x' }), /event type/);
    refused(t, await req('PUT', `${room}/state/${enc('m.room.name\n')}/`, { name: 'x' }), /event type/);
    refused(t, await req('PUT', `${room}/state/m.custom/${enc('key\u001b[2J')}`, { a: 1 }), /state key/);
    refused(t, await req('PUT', `${room}/state/m.custom/${enc('k\u0085')}`, { a: 1 }), /state key/);
    refused(t, await req('PUT', `/sendToDevice/${enc('m.x\r')}/t1`, { messages: {} }), /event type/);
    refused(
      t,
      await req('PUT', `/user/${enc(alice.user_id)}/account_data/${enc('m.x\u007f')}`, { a: 1 }),
      /type/,
    );
    // The happy path: Unicode that is not a control character is fine.
    t.equal((await req('PUT', `${room}/send/${enc('org.example.é')}/t2`, { body: 'x' })).statusCode, 200);
    t.equal((await req('PUT', `${room}/state/m.custom/${enc('clé 🦊')}`, { a: 1 })).statusCode, 200);
    const state = await req('GET', `${room}/state`);
    t.notOk(
      state.json().some((e: Json) => hasControlCharacters(e.type) || hasControlCharacters(e.state_key)),
      'no refused name reached the room',
    );
  });

  t.test('user IDs, in paths and bodies', async (t) => {
    const evil = `@bob\n:${SERVER_NAME}`;
    refused(t, await req('POST', `${room}/invite`, { user_id: evil }), /user ID/);
    refused(t, await req('POST', `${room}/ban`, { user_id: `@x\u0007:${SERVER_NAME}` }), /user ID/);
    refused(t, await req('POST', `${room}/kick`, { user_id: evil }), /user ID/);
    refused(t, await req('GET', `/profile/${enc(evil)}`), /user ID/);
    refused(t, await req('POST', '/createRoom', { invite: [bob.user_id, evil] }), /invited user ID/);
    t.equal(
      (await req('POST', `${room}/invite`, { user_id: bob.user_id })).statusCode,
      200,
      'a plain one works',
    );
  });

  t.test('room aliases and createRoom', async (t) => {
    refused(t, await req('POST', '/createRoom', { room_alias_name: 'lab\nnotes' }), /room_alias_name/);
    refused(
      t,
      await req('POST', '/createRoom', { initial_state: [{ type: 'm.x\n', state_key: '', content: {} }] }),
      /initial_state event type/,
    );
    refused(
      t,
      await req('POST', '/createRoom', { initial_state: [{ type: 'm.x', state_key: 'a\tb', content: {} }] }),
      /initial_state state key/,
    );
    refused(
      t,
      await req('PUT', `/directory/room/${enc(`#lab\u009b:${SERVER_NAME}`)}`, { room_id: roomId }),
      /alias/,
    );
    refused(t, await req('POST', `/join/${enc(`#lab\r:${SERVER_NAME}`)}`, {}), /alias/);
    const ok = await req('POST', '/createRoom', { room_alias_name: 'labor-café' });
    t.equal(ok.statusCode, 200, ok.body);
    t.equal(ok.json().room_alias, `#labor-café:${SERVER_NAME}`);
  });
});
