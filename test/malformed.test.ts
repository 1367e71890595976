import t, { type Test } from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, SERVER_NAME, startTestServer } from './helpers/server.ts';

/**
 * Sends malformed input to every route the app serves and asserts a Matrix error, never a 500,
 * and that nothing stored before is lost. The route list comes from the app itself, so a new
 * route is covered without editing this file.
 */
const MAX_BYTES = 64 * 1024;
/** Routes whose body is a file of any type (media uploads), not JSON. */
const RAW_BODY_ROUTES = new Set([
  'POST /_matrix/media/v3/upload',
  'PUT /_matrix/media/v3/upload/:serverName/:mediaId',
]);

type Schema = { type?: string; properties?: Record<string, Schema>; required?: string[]; maxLength?: number };

function wrongTypeFor(schema: Schema): unknown {
  switch (schema.type) {
    case 'string':
      return 12345;
    case 'boolean':
      return 'true';
    case 'integer':
    case 'number':
      return '7';
    case 'array':
      return { not: 'an array' };
    case 'object':
      return ['not', 'an', 'object'];
    default:
      return undefined;
  }
}

function deepNesting(levels: number): string {
  return `{"a":${'['.repeat(levels)}1${']'.repeat(levels)}}`;
}

for (const backend of databaseBackends()) {
  t.test(`malformed input on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, { maxRequestBytes: MAX_BYTES });
    const alice = await s.register('alice', { deviceId: 'ALICEDEV' });
    await s.request('PUT', `/_matrix/client/v3/user/${alice.user_id}/account_data/m.test`, {
      token: alice.access_token,
      body: { kept: true },
    });

    const fill = (url: string, bad = false) =>
      url
        .replace(':userId', encodeURIComponent(bad ? 'not-a-user-id' : alice.user_id))
        .replace(':deviceId', bad ? encodeURIComponent('bad device id') : 'ALICEDEV')
        .replace(':roomId', encodeURIComponent(bad ? 'no-sigil' : `!room:${SERVER_NAME}`))
        .replace(':type', bad ? '' : 'm.test');

    const assertMatrixError = (
      t: Test,
      res: { statusCode: number; json(): { errcode?: unknown } },
      what: string,
      status?: number,
      errcode?: string,
    ) => {
      t.not(res.statusCode, 500, `${what}: no 500`);
      t.ok(res.statusCode >= 400 && res.statusCode < 500, `${what}: a client error (${res.statusCode})`);
      const body = res.json();
      t.match(body.errcode, /^M_[A-Z_]+$/, `${what}: a Matrix errcode`);
      if (status !== undefined) t.equal(res.statusCode, status, `${what}: status ${status}`);
      if (errcode !== undefined) t.equal(body.errcode, errcode, `${what}: ${errcode}`);
    };

    const routes = s.app.routeTable.filter((r) => r.url.startsWith('/_matrix'));
    t.ok(routes.length >= 20, `the app serves ${routes.length} Matrix routes`);

    for (const route of routes) {
      const url = fill(route.url);
      const label = `${route.method} ${route.url}`;
      const bodySchema = route.schema?.body as Schema | undefined;
      const send = (payload: string | Buffer, contentType = 'application/json') =>
        s.app.inject({
          method: route.method,
          url,
          payload,
          headers: { authorization: `Bearer ${alice.access_token}`, 'content-type': contentType },
        });

      if (RAW_BODY_ROUTES.has(label)) {
        // Uploads take any bytes as the file: JSON rules do not apply, but nothing may break.
        t.test(`${label}: any bytes`, async (t) => {
          for (const payload of [
            '{"unterminated": ',
            Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
            deepNesting(200),
          ]) {
            const res = await send(payload, 'application/octet-stream');
            t.ok(res.statusCode < 500, `no 500 (${res.statusCode})`);
            t.type(res.json(), 'object', 'a JSON answer');
          }
        });
      } else if (route.method === 'POST' || route.method === 'PUT' || route.method === 'DELETE') {
        t.test(`${label}: bad bodies`, async (t) => {
          assertMatrixError(t, await send('{"unterminated": '), 'not JSON', 400, 'M_NOT_JSON');
          assertMatrixError(
            t,
            await send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])),
            'invalid UTF-8',
            400,
            'M_NOT_JSON',
          );
          assertMatrixError(t, await send(deepNesting(200)), 'deep nesting', 400, 'M_BAD_JSON');
          assertMatrixError(
            t,
            await send('{"n": 9007199254740993}'),
            'integer beyond 2^53',
            400,
            'M_BAD_JSON',
          );
          assertMatrixError(
            t,
            await send('{"n": -9007199254740993}'),
            'integer below -2^53',
            400,
            'M_BAD_JSON',
          );
          assertMatrixError(t, await send('{"n": 1e400}'), 'infinite number', 400, 'M_BAD_JSON');
          // Neither text nor jsonb in PostgreSQL can hold these: refused before anything is stored.
          assertMatrixError(t, await send('{"s": "a\\u0000b"}'), 'U+0000 in a string', 400, 'M_BAD_JSON');
          assertMatrixError(t, await send('{"a\\u0000": 1}'), 'U+0000 in a key', 400, 'M_BAD_JSON');
          assertMatrixError(t, await send('{"s": "a\\ud800b"}'), 'an unpaired surrogate', 400, 'M_BAD_JSON');
          assertMatrixError(
            t,
            await send('{"s": {"t": ["\\udc00"]}}'),
            'a deep unpaired surrogate',
            400,
            'M_BAD_JSON',
          );
          const huge = JSON.stringify({ s: 'x'.repeat(MAX_BYTES * 2) });
          assertMatrixError(t, await send(huge), 'body over the limit', 413, 'M_TOO_LARGE');
          // Federation routes check the X-Matrix signature before the body's shape (an unsigned
          // request is 401 whatever it carries); their malformed bodies are probed signed, in
          // test/federation-hostile.test.ts.
          if (bodySchema?.type === 'object' && !route.url.startsWith('/_matrix/federation/')) {
            assertMatrixError(t, await send('[1, 2, 3]'), 'an array for an object', 400, 'M_BAD_JSON');
            assertMatrixError(t, await send('"a string"'), 'a string for an object', 400, 'M_BAD_JSON');
            for (const [name, prop] of Object.entries(bodySchema.properties ?? {})) {
              const wrong = wrongTypeFor(prop);
              if (wrong === undefined) continue;
              const res = await send(JSON.stringify({ [name]: wrong }));
              assertMatrixError(t, res, `${name} of the wrong type`, 400);
              if (prop.type === 'string' && prop.maxLength !== undefined && prop.maxLength < MAX_BYTES / 2) {
                const long = await send(JSON.stringify({ [name]: 'y'.repeat(prop.maxLength + 1) }));
                assertMatrixError(t, long, `${name} over its maximum length`, 400);
              }
              if (prop.type === 'string') {
                const float = await send(JSON.stringify({ [name]: 1.5 }));
                assertMatrixError(t, float, `${name} as a float`, 400);
              }
            }
            if ((bodySchema.required ?? []).length > 0) {
              assertMatrixError(t, await send('{}'), 'required fields missing', 400);
            }
          }
        });
      }

      if (/:(userId|deviceId|roomId|type)/.test(route.url)) {
        t.test(`${label}: invalid identifiers in the path`, async (t) => {
          const res = await s.app.inject({
            method: route.method,
            url: fill(route.url, true),
            payload: '{}',
            headers: { authorization: `Bearer ${alice.access_token}`, 'content-type': 'application/json' },
          });
          assertMatrixError(t, res, 'invalid identifier');
        });
      }
    }

    t.test('U+0000 in any path parameter is refused, never a 500', async (t) => {
      for (const route of routes.filter((r) => r.url.includes(':'))) {
        const url = route.url.replace(/:[A-Za-z]+/g, 'x%00y');
        const res = await s.app.inject({
          method: route.method,
          url,
          ...(route.method === 'GET' || route.method === 'DELETE' ? {} : { payload: '{}' }),
          headers: { authorization: `Bearer ${alice.access_token}`, 'content-type': 'application/json' },
        });
        assertMatrixError(t, res, `${route.method} ${route.url}`, 400, 'M_INVALID_PARAM');
      }
    });

    t.test('bad URLs', async (t) => {
      const bad = await s.request('GET', '/_matrix/client/v3/devices/%zz', { token: alice.access_token });
      assertMatrixError(t, bad, 'bad percent-encoding', 400, 'M_INVALID_PARAM');
      t.equal(bad.headers['access-control-allow-origin'], '*');
      const long = await s.request('GET', `/_matrix/client/v3/devices/${'D'.repeat(5000)}`, {
        token: alice.access_token,
      });
      assertMatrixError(t, long, 'over-long path parameter', 414);
      t.notOk(long.body.includes('DDDD'), 'the error does not echo the path');
      const missing = await s.request('GET', '/_matrix/client/v3/register/available');
      assertMatrixError(t, missing, 'missing query parameter', 400, 'M_MISSING_PARAM');
    });

    t.test('unknown endpoints and wrong methods', async (t) => {
      assertMatrixError(
        t,
        await s.request('GET', '/_matrix/client/v3/no/such/thing'),
        'unknown',
        404,
        'M_UNRECOGNIZED',
      );
      assertMatrixError(t, await s.request('GET', '/'), 'root', 404, 'M_UNRECOGNIZED');
      assertMatrixError(
        t,
        await s.request('DELETE', '/_matrix/client/versions'),
        'wrong method',
        405,
        'M_UNRECOGNIZED',
      );
      assertMatrixError(
        t,
        await s.request('PATCH', '/_matrix/client/v3/login'),
        'PATCH on login',
        405,
        'M_UNRECOGNIZED',
      );
      const preflight = await s.request('OPTIONS', '/_matrix/client/v3/login');
      t.equal(preflight.statusCode, 204, 'CORS preflight');
      t.equal(preflight.headers['access-control-allow-origin'], '*');
    });

    t.test('nothing stored before is lost', async (t) => {
      const who = await s.request('GET', '/_matrix/client/v3/account/whoami', { token: alice.access_token });
      t.equal(who.statusCode, 200);
      const data = await s.request('GET', `/_matrix/client/v3/user/${alice.user_id}/account_data/m.test`, {
        token: alice.access_token,
      });
      t.same(data.json(), { kept: true });
      const login = await s.request('POST', '/_matrix/client/v3/login', {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'alice' },
          password: PASSWORD,
        },
      });
      t.equal(login.statusCode, 200, 'the password still works');
    });
  });
}
