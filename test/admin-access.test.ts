import type { HTTPMethods } from 'fastify';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

/**
 * Every admin route, enumerated from the app's own route table (so a new one cannot be missed):
 * without a token 401 M_MISSING_TOKEN, with a non-admin's token 403 M_FORBIDDEN, with a bad
 * token 401 M_UNKNOWN_TOKEN; with an admin's token and malformed parameters or bodies, a 4xx
 * Matrix error and never a 500. server_version is the one route open to anyone, as in Synapse.
 */
const OPEN = new Set(['GET /_synapse/admin/v1/server_version']);
const GOOD: Record<string, string> = {
  userId: `@probe:${SERVER_NAME}`,
  roomId: `!probe:${SERVER_NAME}`,
  deviceId: 'PROBE',
  reportId: '1',
  token: 'probe',
};
const BAD: Record<string, string> = {
  userId: 'not a user',
  roomId: 'not a room',
  deviceId: 'x'.repeat(300),
  reportId: 'one',
  token: 'x'.repeat(65),
};

for (const backend of databaseBackends()) {
  t.test(`admin routes refuse non-admins on ${backend.name}`, async (t) => {
    t.setTimeout(180_000);
    const s = await startTestServer(t, backend);
    const root = await s.registerAdmin('root');
    const bob = await s.register('bob');
    const routes = s.app.routeTable.filter((r) => r.url.startsWith('/_synapse/admin/'));
    const guarded = routes.filter((r) => !OPEN.has(`${r.method} ${r.url}`));
    t.ok(guarded.length >= 35, `found ${guarded.length} guarded admin routes`);
    const fill = (url: string, values: Record<string, string>) =>
      url.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => encodeURIComponent(values[name] ?? 'probe'));

    for (const route of guarded) {
      const url = fill(route.url, GOOD);
      const method = route.method as HTTPMethods;
      const body = method === 'GET' ? undefined : JSON.stringify({});
      const headers = body ? { 'content-type': 'application/json' } : {};
      const none = await s.app.inject({ method, url, headers, ...(body ? { payload: body } : {}) });
      t.equal(none.statusCode, 401, `${route.method} ${route.url} without a token`);
      t.equal(none.json().errcode, 'M_MISSING_TOKEN');
      const unknown = await s.app.inject({
        method,
        url,
        headers: { ...headers, authorization: 'Bearer nope' },
      });
      t.equal(
        unknown.json().errcode,
        'M_UNKNOWN_TOKEN',
        `${route.method} ${route.url} with an unknown token`,
      );
      const user = await s.app.inject({
        method,
        url,
        headers: { ...headers, authorization: `Bearer ${bob.access_token}` },
        ...(body ? { payload: body } : {}),
      });
      t.equal(user.statusCode, 403, `${route.method} ${route.url} as a non-admin`);
      t.equal(user.json().errcode, 'M_FORBIDDEN');
    }

    for (const route of guarded) {
      const method = route.method as HTTPMethods;
      const auth = { authorization: `Bearer ${root.access_token}` };
      const hasParams = route.url.includes(':');
      if (hasParams) {
        const res = await s.app.inject({
          method,
          url: fill(route.url, BAD),
          headers: { ...auth, 'content-type': 'application/json' },
          payload: '{}',
        });
        t.ok(
          res.statusCode >= 400 && res.statusCode < 500,
          `${route.method} ${route.url} with malformed parameters: ${res.statusCode}`,
        );
        t.match(res.json().errcode, /^M_/);
      }
      if (method !== 'GET') {
        const res = await s.app.inject({
          method,
          url: fill(route.url, GOOD),
          headers: { ...auth, 'content-type': 'application/json' },
          payload: '[1,2]',
        });
        t.ok(
          res.statusCode >= 400 && res.statusCode < 500,
          `${route.method} ${route.url} with a body that is not an object: ${res.statusCode}`,
        );
        t.match(res.json().errcode, /^M_/);
        const notJson = await s.app.inject({
          method,
          url: fill(route.url, GOOD),
          headers: { ...auth, 'content-type': 'application/json' },
          payload: '{"a":',
        });
        t.equal(notJson.json().errcode, 'M_NOT_JSON', `${route.method} ${route.url} with broken JSON`);
      }
    }

    const open = await s.request('GET', '/_synapse/admin/v1/server_version');
    t.equal(open.statusCode, 200);
  });
}
