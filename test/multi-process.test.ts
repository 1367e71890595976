import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import WebSocket from 'ws';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { testDevice } from './helpers/e2ee.ts';
import { type RunningProcess, startServerProcess } from './helpers/process.ts';
import type { Login } from './helpers/server.ts';

/**
 * Two real server processes of one homeserver, sharing one PostgreSQL and one Redis: what is
 * sent through one reaches clients of the other, and concurrent writers neither skip nor repeat.
 */
const postgres = databaseBackends().find((b) => b.name === 'postgres');
const redisUrl = testRedisUrl();
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely
type Json = Record<string, any>;

t.test(
  'two processes, one homeserver',
  { skip: !postgres || !redisUrl ? 'needs TEST_DATABASE_URL and TEST_REDIS_URL' : false },
  async (t) => {
    const db = await postgres!.create();
    t.teardown(() => db.drop());
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-mp-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const env = {
      CONCLAVE_BIND_ADDRESS: '127.0.0.1',
      CONCLAVE_PORT: '0',
      CONCLAVE_SERVER_NAME: 'multi.test',
      CONCLAVE_DATABASE_URL: db.url,
      CONCLAVE_REDIS_URL: redisUrl!,
      CONCLAVE_REGISTRATION: 'open',
      CONCLAVE_PASSWORD_HASH_COST: '10',
      CONCLAVE_DATA_DIR: dataDir,
      CONCLAVE_LOG_LEVEL: 'warn',
    };
    const start = async (): Promise<{ proc: RunningProcess; base: string }> => {
      const started = await startServerProcess({ ...env, CONCLAVE_LOG_LEVEL: 'info' });
      t.teardown(() => started.proc.stop());
      return started;
    };
    // Start one first so the migrations run once, then the second.
    const p1 = await start();
    const p2 = await start();

    const api = async (
      base: string,
      method: string,
      url: string,
      token?: string,
      body?: unknown,
    ): Promise<Json> => {
      const res = await fetch(`${base}${url}`, {
        method,
        headers: token ? { authorization: `Bearer ${token}` } : {},
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const json = (await res.json()) as Json;
      if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    const register = (base: string, username: string) =>
      api(base, 'POST', `${V3}/register`, undefined, {
        username,
        password: 'a long enough password',
        auth: { type: 'm.login.dummy' },
      });

    const alice = await register(p1.base, 'alice');
    const bob = await register(p2.base, 'bob');
    const carol = await register(p2.base, 'carol');
    const room = await api(p1.base, 'POST', `${V3}/createRoom`, alice.access_token, {
      preset: 'public_chat',
      invite: [bob.user_id],
    });
    const roomId: string = room.room_id;
    await api(p2.base, 'POST', `${V3}/join/${enc(roomId)}`, bob.access_token, {});
    await api(p2.base, 'POST', `${V3}/join/${enc(roomId)}`, carol.access_token, {});

    /** alice, through process 1, starts typing for 5 s. */
    const aliceTypes = () =>
      api(p1.base, 'PUT', `${V3}/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`, alice.access_token, {
        typing: true,
        timeout: 5000,
      });

    let bobSince: string = (await api(p2.base, 'GET', `${V3}/sync`, bob.access_token)).next_batch;

    t.test('a message sent on one process wakes a long-poll on the other within a second', async (t) => {
      const started = performance.now();
      const poll = api(p2.base, 'GET', `${V3}/sync?since=${bobSince}&timeout=10000`, bob.access_token);
      await new Promise((r) => setTimeout(r, 200));
      const sentAt = performance.now();
      await api(p1.base, 'PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/x1`, alice.access_token, {
        msgtype: 'm.text',
        body: 'across processes',
      });
      const r = await poll;
      const delay = performance.now() - sentAt;
      const bodies = r.rooms.join[roomId].timeline.events.map((e: Json) => e.content.body);
      t.same(bodies, ['across processes']);
      t.ok(
        delay < 1000,
        `delivered ${Math.round(delay)} ms after the send (${Math.round(performance.now() - started)} ms in all)`,
      );
      bobSince = r.next_batch;
    });

    t.test(
      'a message, typing and a receipt sent on one process reach a WebSocket on the other',
      async (t) => {
        const frames: Json[] = [];
        const since = (await api(p2.base, 'GET', `${V3}/sync`, bob.access_token)).next_batch;
        const socket = new WebSocket(
          `${p2.base.replace('http', 'ws')}/_conclave/client/v1/sync?since=${since}`,
          {
            headers: { authorization: `Bearer ${bob.access_token}` },
          },
        );
        t.teardown(() => socket.close());
        socket.on('message', (d) => frames.push(JSON.parse(String(d))));
        await new Promise<void>((resolve, reject) => {
          socket.once('open', () => resolve());
          socket.once('error', reject);
        });
        const arrival = async (what: (f: Json) => boolean) => {
          const started = performance.now();
          while (performance.now() - started < 5000) {
            if (frames.some(what)) return performance.now() - started;
            await new Promise((r) => setTimeout(r, 5));
          }
          return undefined;
        };
        const room = (f: Json) => f.rooms?.join?.[roomId];

        const sent = api(
          p1.base,
          'PUT',
          `${V3}/rooms/${enc(roomId)}/send/m.room.message/ws1`,
          alice.access_token,
          {
            msgtype: 'm.text',
            body: 'to a socket on the other process',
          },
        );
        const message = await arrival((f) =>
          (room(f)?.timeline.events ?? []).some(
            (e: Json) => e.content?.body === 'to a socket on the other process',
          ),
        );
        await sent;
        t.ok(
          message !== undefined && message < 1000,
          `the message arrives as a frame (${Math.round(message ?? -1)} ms)`,
        );

        await aliceTypes();
        const typing = await arrival((f) =>
          (room(f)?.ephemeral?.events ?? []).some(
            (e: Json) => e.type === 'm.typing' && e.content.user_ids.includes(alice.user_id),
          ),
        );
        t.ok(
          typing !== undefined && typing < 1000,
          `typing arrives as a frame (${Math.round(typing ?? -1)} ms)`,
        );

        const last = frames
          .flatMap((f) => room(f)?.timeline.events ?? [])
          .filter((e: Json) => e.type === 'm.room.message')
          .at(-1).event_id;
        await api(
          p1.base,
          'POST',
          `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(last)}`,
          alice.access_token,
          {},
        );
        const receipt = await arrival((f) =>
          (room(f)?.ephemeral?.events ?? []).some(
            (e: Json) => e.type === 'm.receipt' && e.content[last]?.['m.read']?.[alice.user_id],
          ),
        );
        t.ok(
          receipt !== undefined && receipt < 1000,
          `the receipt arrives as a frame (${Math.round(receipt ?? -1)} ms)`,
        );
      },
    );

    t.test('typing and receipts cross processes', async (t) => {
      const poll = api(p2.base, 'GET', `${V3}/sync?since=${bobSince}&timeout=10000`, bob.access_token);
      await new Promise((r) => setTimeout(r, 200));
      const sentAt = performance.now();
      await aliceTypes();
      const r = await poll;
      const typing = r.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === 'm.typing');
      t.same(typing?.content.user_ids, [alice.user_id]);
      t.ok(performance.now() - sentAt < 1000, 'typing within a second');
      bobSince = r.next_batch;

      const aliceSync = await api(p1.base, 'GET', `${V3}/sync`, alice.access_token);
      const poll2 = api(
        p1.base,
        'GET',
        `${V3}/sync?since=${aliceSync.next_batch}&timeout=10000`,
        alice.access_token,
      );
      await new Promise((r) => setTimeout(r, 200));
      const last = aliceSync.rooms.join[roomId].timeline.events.at(-1).event_id;
      const receiptAt = performance.now();
      await api(
        p2.base,
        'POST',
        `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(last)}`,
        bob.access_token,
        {},
      );
      const r2 = await poll2;
      const receipt = r2.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === 'm.receipt');
      t.ok(
        receipt?.content[last]?.['m.read']?.[bob.user_id],
        "bob's receipt reaches alice on the other process",
      );
      t.ok(performance.now() - receiptAt < 1000, 'receipt within a second');
    });

    t.test('concurrent writers on both processes: every event once, none skipped', async (t) => {
      let since: string = (await api(p2.base, 'GET', `${V3}/sync`, carol.access_token)).next_batch;
      const sent: string[] = [];
      const writers = [
        { base: p1.base, who: alice },
        { base: p2.base, who: bob },
      ].map(async ({ base, who }, w) => {
        for (let i = 0; i < 30; i++) {
          const body = `w${w}-${i}`;
          sent.push(body);
          await api(
            base,
            'PUT',
            `${V3}/rooms/${enc(roomId)}/send/m.room.message/c${w}-${i}`,
            who.access_token,
            {
              msgtype: 'm.text',
              body,
            },
          );
        }
      });
      const received: string[] = [];
      const filter = enc(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
      const reader = (async () => {
        const deadline = Date.now() + 30_000;
        while (received.length < 60 && Date.now() < deadline) {
          const r = await api(
            p1.base,
            'GET',
            `${V3}/sync?since=${since}&timeout=2000&filter=${filter}`,
            carol.access_token,
          );
          const events = r.rooms.join[roomId]?.timeline.events ?? [];
          t.notOk(r.rooms.join[roomId]?.timeline.limited, 'no gap in the timeline');
          for (const e of events)
            if (e.type === 'm.room.message' && /^w\d-/.test(e.content.body)) received.push(e.content.body);
          since = r.next_batch;
        }
      })();
      await Promise.all(writers);
      await reader;
      t.equal(received.length, 60, 'all 60 events received');
      t.equal(new Set(received).size, 60, 'none twice');
      t.same([...received].sort(), [...sent].sort(), 'exactly the events sent');
      for (const w of [0, 1]) {
        const own = received.filter((b) => b.startsWith(`w${w}-`));
        t.same(
          own,
          Array.from({ length: 30 }, (_, i) => `w${w}-${i}`),
          `writer ${w}'s events in its order`,
        );
      }
    });

    t.test('a logout on one process ends the token on the other at once', async (t) => {
      const login = await api(p1.base, 'POST', `${V3}/login`, undefined, {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'carol' },
        password: 'a long enough password',
      });
      // Used on p2 first, so p2 has the session cached.
      await api(p2.base, 'GET', `${V3}/account/whoami`, login.access_token);
      await api(p1.base, 'POST', `${V3}/logout`, login.access_token, {});
      const started = performance.now();
      let status = 200;
      while (status === 200 && performance.now() - started < 2000) {
        const res = await fetch(`${p2.base}${V3}/account/whoami`, {
          headers: { authorization: `Bearer ${login.access_token}` },
        });
        status = res.status;
        await res.body?.cancel();
      }
      const ms = performance.now() - started;
      t.equal(status, 401, 'refused by the other process');
      t.ok(ms < 1000, `refused ${Math.round(ms)} ms after the logout answered`);
    });

    t.test('to-device messages and device list changes cross processes, and survive a restart', async (t) => {
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      // bob publishes his device keys on p2; alice, long-polling on p1, is told.
      const aliceSince = (await api(p1.base, 'GET', `${V3}/sync`, alice.access_token)).next_batch;
      const poll = api(p1.base, 'GET', `${V3}/sync?since=${aliceSince}&timeout=10000`, alice.access_token);
      await sleep(200);
      const uploadedAt = performance.now();
      await api(p2.base, 'POST', `${V3}/keys/upload`, bob.access_token, {
        device_keys: testDevice(bob as Login).deviceKeys,
      });
      const changed = await poll;
      t.ok(changed.device_lists.changed.includes(bob.user_id), "alice's sync on p1 lists bob's new device");
      t.ok(performance.now() - uploadedAt < 1000, 'within a second');

      // alice sends to bob's device through p1; bob, long-polling on p2, gets it.
      const bobFirst = (await api(p2.base, 'GET', `${V3}/sync`, bob.access_token)).next_batch;
      const poll2 = api(p2.base, 'GET', `${V3}/sync?since=${bobFirst}&timeout=10000`, bob.access_token);
      await sleep(200);
      const sentAt = performance.now();
      await api(p1.base, 'PUT', `${V3}/sendToDevice/org.example.test/td1`, alice.access_token, {
        messages: { [bob.user_id]: { [bob.device_id]: { n: 1 } } },
      });
      const got = await poll2;
      t.same(
        got.to_device.events.map((e: Json) => e.content),
        [{ n: 1 }],
        'the to-device message reaches bob on the other process',
      );
      t.ok(performance.now() - sentAt < 1000, 'within a second');

      // p2 stops; a message sent meanwhile waits in the database; a new process delivers it once.
      await p2.proc.stop();
      await api(p1.base, 'PUT', `${V3}/sendToDevice/org.example.test/td2`, alice.access_token, {
        messages: { [bob.user_id]: { [bob.device_id]: { n: 2 } } },
      });
      const p3 = await start();
      const after = await api(p3.base, 'GET', `${V3}/sync?since=${got.next_batch}`, bob.access_token);
      t.same(
        after.to_device.events.map((e: Json) => e.content),
        [{ n: 2 }],
        'after the restart: the waiting message, and not the one already received',
      );
      const again = await api(p3.base, 'GET', `${V3}/sync?since=${after.next_batch}`, bob.access_token);
      t.same(again.to_device.events, [], 'and nothing twice');
    });
  },
);
