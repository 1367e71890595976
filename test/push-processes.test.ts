import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { startServerProcess } from './helpers/process.ts';
import { until } from './helpers/wait.ts';

/**
 * Two server processes of one homeserver on one PostgreSQL: both run the push worker, and each
 * notification still reaches the gateway once (one evaluates at a time, deliveries are claimed).
 */
const postgres = databaseBackends().find((b) => b.name === 'postgres');
const redisUrl = testRedisUrl();
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely
type Json = Record<string, any>;

t.test(
  'two processes push each notification once',
  { skip: !postgres ? 'needs TEST_DATABASE_URL' : false },
  async (t) => {
    t.setTimeout(180_000);
    const db = await postgres!.create();
    t.teardown(() => db.drop());
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-push-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));

    const received: string[] = [];
    const gateway = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')).notification.event_id);
        res.setHeader('content-type', 'application/json');
        res.end('{"rejected":[]}');
      });
    });
    await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise((resolve) => gateway.close(resolve)));
    const url = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/_matrix/push/v1/notify`;

    const env = {
      CONCLAVE_BIND_ADDRESS: '127.0.0.1',
      CONCLAVE_PORT: '0',
      CONCLAVE_SERVER_NAME: 'push.test',
      CONCLAVE_DATABASE_URL: db.url,
      ...(redisUrl ? { CONCLAVE_REDIS_URL: redisUrl } : {}),
      CONCLAVE_REGISTRATION: 'open',
      CONCLAVE_PASSWORD_HASH_COST: '10',
      CONCLAVE_RATE_LIMITS: 'off',
      CONCLAVE_DATA_DIR: dataDir,
      CONCLAVE_LOG_LEVEL: 'info',
      CONCLAVE_WEB_CLIENT: 'off',
      CONCLAVE_PUSH_GATEWAY_ALLOW: '127.0.0.1',
    };
    const start = async () => {
      const started = await startServerProcess(env);
      t.teardown(() => started.proc.stop());
      return started.base;
    };
    // One first, so the migrations run once.
    const p1 = await start();
    const p2 = await start();
    const api = async (base: string, method: string, route: string, token?: string, body?: unknown) => {
      const res = await fetch(`${base}${route}`, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          'content-type': 'application/json',
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const json = (await res.json()) as Json;
      if (res.status !== 200) throw new Error(`${method} ${route}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    const register = (base: string, username: string) =>
      api(base, 'POST', `${V3}/register`, undefined, {
        username,
        password: 'correct horse battery',
        auth: { type: 'm.login.dummy' },
      });
    const alice = await register(p1, 'alice');
    const bob = await register(p2, 'bob');
    const room = (await api(p1, 'POST', `${V3}/createRoom`, alice.access_token, { preset: 'public_chat' }))
      .room_id as string;
    await api(p2, 'POST', `${V3}/join/${enc(room)}`, bob.access_token, {});
    await api(p2, 'POST', `${V3}/pushers/set`, bob.access_token, {
      kind: 'http',
      app_id: 'org.example.app',
      pushkey: 'bob-phone',
      app_display_name: 'Example',
      device_display_name: 'phone',
      lang: 'en',
      data: { url },
    });

    const sent: string[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const base = i % 2 === 0 ? p1 : p2;
        const r = await api(
          base,
          'PUT',
          `${V3}/rooms/${enc(room)}/send/m.room.message/t${i}`,
          alice.access_token,
          {
            msgtype: 'm.text',
            body: `message ${i}`,
          },
        );
        sent.push(r.event_id as string);
      }),
    );
    await until('every message pushed', async () => sent.every((id) => received.includes(id)), 30_000);
    // A last message: evaluated after all of the others, pushed after they were claimed.
    const last = (
      await api(p2, 'PUT', `${V3}/rooms/${enc(room)}/send/m.room.message/last`, alice.access_token, {
        msgtype: 'm.text',
        body: 'last',
      })
    ).event_id as string;
    await until('the last message pushed', async () => received.includes(last), 30_000);
    const counts = new Map<string, number>();
    for (const id of received) counts.set(id, (counts.get(id) ?? 0) + 1);
    t.same(
      [...counts.values()].filter((n) => n !== 1),
      [],
      'no notification was pushed twice',
    );
    t.equal(counts.size, 21, 'each of the 21 messages once');
    const notes = await api(p1, 'GET', `${V3}/notifications?limit=100`, bob.access_token);
    t.equal(notes.notifications.length, 21, 'and stored once, whichever process evaluated it');
  },
);
