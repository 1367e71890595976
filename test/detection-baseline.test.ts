// The detection store (memory and Redis, shared between processes), the per-user baselines on a
// real server, and the alert webhook against a real HTTP server on 127.0.0.1.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import t from 'tap';
import {
  type DetectionStore,
  MemoryDetectionStore,
  RedisDetectionStore,
} from '../src/bus/detection-store.ts';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { account, alertsFor, detecting, until } from './helpers/detection.ts';
import { type Login, startTestServer, type TestServer } from './helpers/server.ts';

t.setTimeout(600_000);
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
const redisUrl = testRedisUrl();

function storeSuite(make: (now: () => number) => Promise<DetectionStore[]>, name: string) {
  t.test(`${name}: windows, distinct members, periods, flags`, async (t) => {
    let now = 10_000_000;
    const [a, b] = await make(() => now);
    t.teardown(async () => {
      await a!.close();
      if (b !== a) await b!.close();
    });
    const k = `test.${randomBytes(4).toString('hex')}`;
    for (let i = 1; i <= 3; i++) t.equal(await a!.count(`${k}.w`, 1000, 100), i);
    t.equal(await b!.count(`${k}.w`, 1000, 100), 4, 'the other store (process) counts on');
    now += 600;
    t.equal(await a!.count(`${k}.w`, 1000, 100), 5);
    now += 500;
    t.equal(await a!.count(`${k}.w`, 1000, 100), 2, 'events older than the window are gone');
    t.equal(await a!.count(`${k}.d`, 1000, 100, 'x'), 1);
    t.equal(await b!.count(`${k}.d`, 1000, 100, 'x'), 1, 'the same member again is not counted twice');
    t.equal(await a!.count(`${k}.d`, 1000, 100, 'y'), 2);
    for (let i = 0; i < 10; i++) await a!.count(`${k}.c`, 1000, 4);
    t.equal(await a!.count(`${k}.c`, 1000, 4), 4, 'capped');
    // Periods: 2, 4 and 3 events in three periods, then the fourth period.
    now = 20_000_000;
    for (const n of [2, 4, 3]) {
      for (let i = 0; i < n; i++) await (i % 2 ? b! : a!).period(`${k}.p`, 1000);
      now += 1000;
    }
    const p = await a!.period(`${k}.p`, 1000);
    t.equal(p.current, 1);
    t.equal(p.periods, 3);
    t.equal(Math.round(p.usual * 100) / 100, Math.round(((2 * 0.8 + 4 * 0.2) * 0.8 + 3 * 0.2) * 100) / 100);
    t.ok(await a!.mark(`${k}.f`, 10_000));
    t.notOk(await b!.mark(`${k}.f`, 10_000), 'marked once across processes');
    t.ok(await b!.anySet([`${k}.none`, `${k}.f`]));
    t.notOk(await b!.anySet([`${k}.none`]));
    await b!.set(`${k}.g`, 10_000);
    t.ok(await a!.anySet([`${k}.g`]));
  });
}

storeSuite(async (now) => {
  const m = new MemoryDetectionStore(now);
  return [m, m];
}, 'memory');
if (redisUrl) {
  // Redis keeps real time for flags; the windows and periods follow the callers' clock.
  storeSuite(
    async (now) => [
      await RedisDetectionStore.connect(redisUrl, now),
      await RedisDetectionStore.connect(redisUrl, now),
    ],
    'redis (two processes)',
  );
}

for (const backend of databaseBackends()) {
  t.test(`per-user baselines on ${backend.name}`, async (t) => {
    // The detectors' clock is the test's: periods pass when the test says, however slow the
    // machine (everything else is real: the server, the requests, the store, Redis).
    const PERIOD = 60_000;
    let clock = Math.floor(Date.now() / PERIOD) * PERIOD;
    const detectionStore = redisUrl
      ? await RedisDetectionStore.connect(redisUrl, () => clock)
      : new MemoryDetectionStore(() => clock);
    const s = await startTestServer(
      t,
      backend,
      detecting(
        { message_baseline: [3, PERIOD], invite_baseline: [3, PERIOD] },
        {},
        { detectionBaselineMinPeriods: 3, detectionBaselineMinCount: 8, ...(redisUrl ? { redisUrl } : {}) },
      ),
      { detectionStore },
    );
    const host = await account(s, 'host');
    const made = await s.request('POST', `${V3}/createRoom`, {
      token: host.access_token,
      body: { preset: 'public_chat' },
    });
    const room = made.json().room_id as string;
    const steady = await account(s, 'steady');
    const burster = await account(s, 'burster');
    for (const u of [steady, burster])
      await s.request('POST', `${V3}/join/${enc(room)}`, { token: u.access_token });
    let txn = 0;
    const send = async (who: Login) => {
      const res = await s.request('PUT', `${V3}/rooms/${enc(room)}/send/m.room.message/${txn++}`, {
        token: who.access_token,
        body: { msgtype: 'm.text', body: 'hi' },
      });
      t.equal(res.statusCode, 200);
    };
    const inviteRooms = new Map<string, string>();
    let invitees = 0;
    const invite = async (who: Login) => {
      let r = inviteRooms.get(who.user_id);
      if (!r) {
        const own = await s.request('POST', `${V3}/createRoom`, { token: who.access_token, body: {} });
        r = own.json().room_id as string;
        inviteRooms.set(who.user_id, r);
      }
      const target = await s.runtime.services.accounts.createAccount({
        localpart: `guest${invitees++}`,
        login: false,
      });
      const res = await s.request('POST', `${V3}/rooms/${enc(r)}/invite`, {
        token: who.access_token,
        body: { user_id: target.user_id },
      });
      t.equal(res.statusCode, 200);
    };
    /** Waits until the detectors have counted what was sent (they count after the answer). */
    const settled = () => s.runtime.services.detection.idle();
    // Both users' usual level: two messages and one invite a period, for three periods.
    for (let p = 0; p < 3; p++) {
      for (const u of [steady, burster]) {
        for (let i = 0; i < 2; i++) await send(u);
        await invite(u);
      }
      await settled();
      clock += PERIOD;
    }
    // Then steady keeps to its level (a little more); burster sends and invites far more.
    for (let i = 0; i < 3; i++) await send(steady);
    await invite(steady);
    for (let i = 0; i < 9; i++) await send(burster);
    const alert = await until('the message baseline alert', async () =>
      (await alertsFor(s, burster.user_id)).find((a) => a.actor === 'detector:message_baseline'),
    );
    t.match(alert.details, { factor: 3, period_ms: PERIOD, usual: 2 });
    t.ok(Number(alert.details.seen) >= 8, 'seen at least the minimum');
    for (let i = 0; i < 8; i++) await invite(burster);
    const invites = await until('the invite baseline alert', async () =>
      (await alertsFor(s, burster.user_id)).find((a) => a.actor === 'detector:invite_baseline'),
    );
    t.match(invites.details, { seen: 8, usual: 1, factor: 3 });
    // Seven messages in a period are over three times the usual two, but under the minimum count.
    clock += PERIOD;
    for (let i = 0; i < 7; i++) await send(steady);
    await settled();
    t.same(await alertsFor(s, steady.user_id), [], 'a user near their usual level is not flagged');
  });

  t.test(`the alert webhook on ${backend.name}`, async (t) => {
    const received: Array<{ headers: http.IncomingHttpHeaders; body: Record<string, unknown> }> = [];
    const hook = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c) => (data += c));
      req.on('end', () => {
        received.push({ headers: req.headers, body: JSON.parse(data) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    t.teardown(() => new Promise((r) => hook.close(r)));
    const port = (hook.address() as { port: number }).port;
    const s: TestServer = await startTestServer(
      t,
      backend,
      detecting(
        { message_flood: [5, 60_000] },
        {},
        { detectionWebhookUrl: `http://127.0.0.1:${port}/alerts` },
      ),
    );
    const mallory = await account(s, 'mallory');
    const room = (
      await s.request('POST', `${V3}/createRoom`, { token: mallory.access_token, body: {} })
    ).json().room_id as string;
    for (let i = 0; i < 5; i++) {
      await s.request('PUT', `${V3}/rooms/${enc(room)}/send/m.room.message/${i}`, {
        token: mallory.access_token,
        body: { msgtype: 'm.text', body: 'PRIVATE WORDS' },
      });
    }
    const got = await until('the webhook POST', async () => received[0]);
    t.equal(got.headers['content-type'], 'application/json');
    t.match(got.body, {
      server: 'conclave.test',
      detector: 'message_flood',
      subject: { kind: 'user', id: mallory.user_id },
      counts: { seen: 5, threshold: 5, window_ms: 60_000 },
      responses: ['throttle', 'notify'],
    });
    t.notOk(JSON.stringify(got.body).includes('PRIVATE'), 'no message content');
    // One alert per cool-down: more messages do not post again.
    await s.request('PUT', `${V3}/rooms/${enc(room)}/send/m.room.message/x`, {
      token: mallory.access_token,
      body: { msgtype: 'm.text', body: 'x' },
    });
    t.equal((await alertsFor(s, mallory.user_id)).length, 1);
  });
}
