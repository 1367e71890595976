// GET /metrics (spec/detection.md): off by default, on the main port with metrics_listen: main,
// or on a listener of its own; requests by route and status, latencies, rate-limit refusals,
// detector alerts, sync connections and federation queues.
import t from 'tap';
import WebSocket from 'ws';
import { defaultConfig } from '../src/config.ts';
import { WS_SYNC_PATH } from '../src/routes/client/sync-ws.routes.ts';
import { databaseBackends } from './helpers/backends.ts';
import { account, detecting, until } from './helpers/detection.ts';
import { startTestServer, syncOnce } from './helpers/server.ts';

t.setTimeout(300_000);
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

/** The value of one sample line of an exposition, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.split(' ').at(-1));
  }
  return undefined;
}

for (const backend of databaseBackends()) {
  t.test(`metrics on the main port on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, {
      ...detecting({ message_flood: [3, 60_000] }, { message_flood: ['notify'] }),
      metricsListen: 'main',
      rateLimits: true,
      rateLimitRules: { ...defaultConfig().rateLimitRules, send: { perSecond: 0.01, burst: 4 } },
      rateLimitUserFactor: 1,
    });
    const alice = await account(s, 'alice');
    const room = (await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })).json()
      .room_id as string;
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await s.request('PUT', `${V3}/rooms/${enc(room)}/send/m.room.message/${i}`, {
        token: alice.access_token,
        body: { msgtype: 'm.text', body: 'hi' },
      });
      codes.push(res.statusCode);
    }
    t.same(codes, [200, 200, 200, 200, 429, 429]);
    t.equal((await s.request('GET', `${V3}/account/whoami`)).statusCode, 401);
    await until(
      'the alert',
      async () => (await s.runtime.services.audit.list({ action: 'detector.alert' }))[0],
    );

    // Sync connections: a long-poll in flight and an open WebSocket.
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = s.app.server.address() as { port: number };
    const since = (await syncOnce(s, alice)).next_batch as string;
    const poll = s.request('GET', `${V3}/sync?since=${since}&timeout=20000`, { token: alice.access_token });
    const ws = new WebSocket(`ws://127.0.0.1:${port}${WS_SYNC_PATH}`, {
      headers: { authorization: `Bearer ${alice.access_token}` },
    });
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const scrape = async () => {
      const res = await s.request('GET', '/metrics');
      t.equal(res.statusCode, 200);
      t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);
      return res.body;
    };
    const text = await until('both sync connections counted', async () => {
      const body = await scrape();
      return sample(body, 'conclave_sync_connections', { transport: 'long_poll' }) === 1 &&
        sample(body, 'conclave_sync_connections', { transport: 'websocket' }) === 1
        ? body
        : undefined;
    });
    const sendRoute = '/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId';
    t.equal(
      sample(text, 'conclave_http_requests_total', { method: 'PUT', route: sendRoute, status: '200' }),
      4,
    );
    t.equal(
      sample(text, 'conclave_http_requests_total', { method: 'PUT', route: sendRoute, status: '429' }),
      2,
    );
    t.equal(
      sample(text, 'conclave_http_requests_total', {
        route: '/_matrix/client/v3/account/whoami',
        status: '401',
      }),
      1,
    );
    t.notOk(text.includes(room), 'no room IDs (raw URLs) as labels');
    t.equal(
      sample(text, 'conclave_http_request_duration_seconds_count', { method: 'PUT', route: sendRoute }),
      6,
    );
    t.ok(
      sample(text, 'conclave_http_request_duration_seconds_bucket', {
        method: 'PUT',
        route: sendRoute,
        le: '30',
      }) === 6,
    );
    t.equal(sample(text, 'conclave_rate_limit_refusals_total', { family: 'send' }), 2);
    t.equal(sample(text, 'conclave_detector_alerts_total', { detector: 'message_flood' }), 1);
    t.equal(sample(text, 'conclave_federation_queue_destinations'), 0);
    t.equal(sample(text, 'conclave_federation_queue_sending'), 0);
    ws.close();
    await s.request('PUT', `${V3}/rooms/${enc(room)}/typing/${enc(alice.user_id)}`, {
      token: alice.access_token,
      body: { typing: true, timeout: 1000 },
    });
    await poll;
    await until('the connections closed', async () => {
      const body = await scrape();
      return (
        sample(body, 'conclave_sync_connections', { transport: 'long_poll' }) === 0 &&
        sample(body, 'conclave_sync_connections', { transport: 'websocket' }) === 0
      );
    });
    t.equal((await s.request('POST', '/metrics')).statusCode, 404, 'only GET');
  });
}

t.test('metrics are off by default, or on a listener of their own', async (t) => {
  const [backend] = databaseBackends();
  const off = await startTestServer(t, backend!);
  const res = await off.request('GET', '/metrics');
  t.equal(res.statusCode, 404);
  t.equal(res.json().errcode, 'M_UNRECOGNIZED');

  const apart = await startTestServer(t, backend!, { metricsListen: '127.0.0.1:0' });
  await apart.app.ready();
  const addr = apart.app.metricsAddress()!;
  t.equal(addr.host, '127.0.0.1');
  const base = `http://127.0.0.1:${addr.port}`;
  await apart.request('GET', '/_matrix/client/versions');
  const scraped = await fetch(`${base}/metrics`);
  t.equal(scraped.status, 200);
  const body = await scraped.text();
  t.equal(
    sample(body, 'conclave_http_requests_total', { route: '/_matrix/client/versions', status: '200' }),
    1,
  );
  t.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 404);
  const other = await fetch(`${base}/_matrix/client/versions`);
  t.equal(other.status, 404);
  t.equal(((await other.json()) as { errcode: string }).errcode, 'M_UNRECOGNIZED');
  t.equal((await apart.request('GET', '/metrics')).statusCode, 404, 'not on the main port');
});
