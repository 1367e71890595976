import t from 'tap';
import WebSocket from 'ws';
import { WS_CLOSE, WS_SYNC_PATH } from '../src/routes/client/sync-ws.routes.ts';
import { databaseBackends } from './helpers/backends.ts';
import { type Login, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: frames are read loosely
type Json = Record<string, any>;

/** A WebSocket client that queues frames so a test can await them in order. */
function connect(base: string, query: string, token?: string) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}${WS_SYNC_PATH}${query}`, {
    ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
  const frames: Json[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (d) => {
    frames.push(JSON.parse(String(d)));
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
  );
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  return {
    ws,
    frames,
    opened,
    closed,
    async next(timeoutMs = 5000): Promise<Json> {
      const deadline = Date.now() + timeoutMs;
      while (frames.length === 0) {
        if (Date.now() > deadline) throw new Error('no frame in time');
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 100);
        });
      }
      return frames.shift()!;
    },
  };
}

const bodiesIn = (frame: Json, roomId: string) =>
  (frame.rooms?.join?.[roomId]?.timeline?.events ?? [])
    .filter((e: Json) => e.type === 'm.room.message')
    .map((e: Json) => e.content.body);

for (const backend of databaseBackends()) {
  t.test(`WebSocket sync on ${backend.name}`, async (t) => {
    // Presence off: a poll's presence change would add frames of its own between the ones compared.
    const s = await startTestServer(t, backend, { wsMaxBufferedBytes: 2048, presence: false });
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const address = s.app.server.address();
    const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const created = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat', name: 'WS room' },
    });
    const roomId: string = created.json().room_id;
    await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} });
    const send = (who: Login, body: string, txn: string) =>
      s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${txn}`, {
        token: who.access_token,
        body: { msgtype: 'm.text', body },
      });

    t.test('refuses a missing or unknown token', async (t) => {
      const none = connect(base, '');
      await t.rejects(none.opened, /HTTP 401/);
      const bad = connect(base, '?access_token=cv_nope');
      await t.rejects(bad.opened, /HTTP 401/);
    });

    t.test('a plain GET (no upgrade) gets a Matrix error', async (t) => {
      const res = await s.request('GET', '/_conclave/client/v1/sync', { token: alice.access_token });
      t.equal(res.statusCode, 426);
      t.equal(res.headers.upgrade, 'websocket');
      t.equal(res.json().errcode, 'M_UNRECOGNIZED');
      const anonymous = await s.request('GET', '/_conclave/client/v1/sync');
      t.equal(anonymous.statusCode, 401, 'the token is checked first');
    });

    t.test('pushes the same payloads as /sync, and a client can switch transports', async (t) => {
      const c = connect(base, '', bob.access_token);
      await c.opened;
      t.teardown(() => c.ws.close());
      const initial = await c.next();
      t.equal(initial.type, 'sync');
      t.match(initial.next_batch, /^s\d+_\d+$/);
      t.ok(initial.rooms.join[roomId], 'the initial frame holds the joined room');

      await send(alice, 'over the socket', 'ws1');
      const frame = await c.next();
      t.same(bodiesIn(frame, roomId), ['over the socket'], 'a new message arrives as a frame');

      // Move to /sync from the frame's next_batch: nothing missed, nothing repeated.
      await send(alice, 'after the switch', 'ws2');
      const polled = await s.request('GET', `${V3}/sync?since=${frame.next_batch}&timeout=2000`, {
        token: bob.access_token,
      });
      t.same(bodiesIn(polled.json(), roomId), ['after the switch']);
      const wsFrame = await c.next();
      t.same(bodiesIn(wsFrame, roomId), ['after the switch'], 'the socket saw the same event');
      t.equal(
        wsFrame.next_batch.split('_')[0],
        polled.json().next_batch.split('_')[0],
        'and the same position',
      );

      c.ws.send(JSON.stringify({ type: 'ping' }));
      t.same(await c.next(), { type: 'pong' });
    });

    t.test('to-device messages arrive as frames too', async (t) => {
      const c = connect(base, '', bob.access_token);
      await c.opened;
      t.teardown(() => c.ws.close());
      await c.next(); // the initial frame
      const sent = await s.request('PUT', `${V3}/sendToDevice/org.example.ping/ws-td1`, {
        token: alice.access_token,
        body: { messages: { [bob.user_id]: { [bob.device_id]: { over: 'the socket' } } } },
      });
      t.equal(sent.statusCode, 200);
      const frame = await c.next();
      t.same(frame.to_device.events, [
        { sender: alice.user_id, type: 'org.example.ping', content: { over: 'the socket' } },
      ]);
    });

    t.test('a slow reader is closed with 4008 and resumes without losing anything', async (t) => {
      const c = connect(base, '', bob.access_token);
      await c.opened;
      const initial = await c.next();
      let lastBatch: string = initial.next_batch;
      // Stop reading from the socket: frames pile up in the server's send buffer.
      (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      const sent: string[] = [];
      let closed: { code: number; reason: string } | undefined;
      void c.closed.then((x) => {
        closed = x;
      });
      // Loopback socket buffers hold megabytes before the server's own buffer grows: send big
      // events until the server starts closing the socket (its slow-reader counter says so). Resuming at
      // once matters on a loaded machine: ws ends a close handshake not answered in 30 s with 1006.
      const slowCloses = async () =>
        (await s.runtime.services.metrics.slowReaderCloses.get()).values[0]?.value ?? 0;
      const closesBefore = await slowCloses();
      for (let i = 0; i < 600 && !closed && (await slowCloses()) === closesBefore; i++) {
        const body = `flood ${i} ${'x'.repeat(40_000)}`;
        await send(alice, body, `flood${i}`);
        sent.push(body);
      }
      (c.ws as unknown as { _socket: { resume(): void } })._socket.resume();
      const result = await Promise.race([
        c.closed,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000)),
      ]);
      t.equal(result?.code, WS_CLOSE.SLOW_READER, 'closed with the slow-reader code');
      const received: string[] = [];
      for (const f of c.frames) {
        if (f.type !== 'sync') continue;
        received.push(...bodiesIn(f, roomId));
        lastBatch = f.next_batch;
      }
      // Resume from the last next_batch received, over a new socket.
      const resumed = connect(
        base,
        `?since=${enc(lastBatch)}&filter=${enc(JSON.stringify({ room: { timeline: { limit: 1000 } } }))}`,
        bob.access_token,
      );
      await resumed.opened;
      t.teardown(() => resumed.ws.close());
      while (received.length < sent.length) {
        const f = await resumed.next(10_000);
        received.push(...bodiesIn(f, roomId));
      }
      t.same(received, sent, 'every message exactly once, in order, across the reconnect');
    });

    t.test('logging out ends the socket', async (t) => {
      const login = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'bob' },
          password: 'correct horse battery',
        },
      });
      const token = login.json().access_token;
      const c = connect(base, '', token);
      await c.opened;
      await c.next();
      await s.request('POST', `${V3}/logout`, { token });
      await send(alice, 'wake the loop', 'lo1');
      const result = await Promise.race([
        c.closed,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000)),
      ]);
      t.equal(result?.code, WS_CLOSE.UNAUTHORIZED);
    });
  });
}
