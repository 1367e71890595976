import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { type RunningProcess, startServerProcess } from './helpers/process.ts';

/**
 * Two server processes on one PostgreSQL run the retention job every 300 ms each: every purge is
 * done by one of them (one audit record per purge, the events counted once), and an event sent
 * through either is gone from both.
 */
const postgres = databaseBackends().find((b) => b.name === 'postgres');
const redisUrl = testRedisUrl();
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely
type Json = Record<string, any>;

t.setTimeout(300_000);

t.test(
  'two processes: the retention job runs in one at a time',
  { skip: !postgres || !redisUrl ? 'needs TEST_DATABASE_URL and TEST_REDIS_URL' : false },
  async (t) => {
    const db = await postgres!.create();
    t.teardown(() => db.drop());
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-rt-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const env = {
      CONCLAVE_BIND_ADDRESS: '127.0.0.1',
      CONCLAVE_PORT: '0',
      CONCLAVE_SERVER_NAME: 'retention.test',
      CONCLAVE_DATABASE_URL: db.url,
      CONCLAVE_REDIS_URL: redisUrl!,
      CONCLAVE_REGISTRATION: 'open',
      CONCLAVE_PASSWORD_HASH_COST: '10',
      CONCLAVE_DATA_DIR: dataDir,
      CONCLAVE_RATE_LIMITS: 'off',
      CONCLAVE_RETENTION_ALLOWED_MIN: '1000',
      CONCLAVE_RETENTION_PURGE_INTERVAL_MS: '300',
    };
    const procs: RunningProcess[] = [];
    const start = async () => {
      const started = await startServerProcess(env);
      procs.push(started.proc);
      t.teardown(() => started.proc.stop());
      return started.base;
    };
    const p1 = await start();
    const p2 = await start();
    const api = async (base: string, method: string, url: string, token?: string, body?: unknown) => {
      const res = await fetch(`${base}${url}`, {
        method,
        headers: token ? { authorization: `Bearer ${token}` } : {},
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const json = (await res.json()) as Json;
      if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    const alice = await api(p1, 'POST', `${V3}/register`, undefined, {
      username: 'alice',
      password: 'a long enough password',
      auth: { type: 'm.login.dummy' },
    });
    const room = await api(p1, 'POST', `${V3}/createRoom`, alice.access_token, {
      initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: 1000 } }],
    });
    const roomId: string = room.room_id;
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) {
      const base = i % 2 ? p2 : p1;
      const r = await api(
        base,
        'PUT',
        `${V3}/rooms/${enc(roomId)}/send/m.room.message/m${i}`,
        alice.access_token,
        {
          msgtype: 'm.text',
          body: `two-process-${i}`,
        },
      );
      sent.push(r.event_id);
    }
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    t.teardown(() => client.end());
    // Wait until every message but the last (the forward extremity, kept pruned) is purged, and
    // the last one too is old enough to have been pruned (a run may come while it is still young).
    const deadline = Date.now() + 120_000;
    let left = sent.length;
    let lastContent: unknown;
    while (Date.now() < deadline) {
      const r = await client.query('select count(*)::int as n from pdus where event_id = any($1)', [sent]);
      left = r.rows[0].n;
      const last = await client.query("select json->'content' as content from pdus where event_id = $1", [
        sent[9],
      ]);
      lastContent = last.rows[0]?.content;
      if (left === 1 && JSON.stringify(lastContent) === '{}') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(left, 1, 'only the last message is left');
    t.same(lastContent, {}, 'its content pruned');
    const records = await client.query(
      "select details from audit_log where action = 'retention.purge' and target = $1 order by id",
      [roomId],
    );
    const total = records.rows.reduce((n: number, r: Json) => n + r.details.events_deleted, 0);
    t.equal(
      total,
      sent.length - 1,
      `each purged event counted once over ${records.rows.length} purge records`,
    );
    // A run's log line may reach us a moment after its audit record is written: wait for it
    // (more lines than records would fail below just the same).
    const count = (re: RegExp) => procs.map((p) => (p.stdout().match(re) ?? []).length);
    const logDeadline = Date.now() + 30_000;
    while (Date.now() < logDeadline) {
      const n = count(/retention: job ran/g);
      if (n[0]! + n[1]! >= records.rows.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const ran = count(/retention: job ran/g);
    const skipped = count(/retention: job skipped/g);
    t.equal(
      ran[0]! + ran[1]!,
      records.rows.length,
      `the runs that purged (${ran}) match the records; runs skipped for the other process: ${skipped}`,
    );
    // Both processes answer without the purged events.
    for (const base of [p1, p2]) {
      const msgs = await api(
        base,
        'GET',
        `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`,
        alice.access_token,
      );
      t.notOk(JSON.stringify(msgs).includes('two-process-'), 'no purged body served');
      for (const id of sent.slice(0, 2)) {
        const res = await fetch(`${base}${V3}/rooms/${enc(roomId)}/event/${enc(id)}`, {
          headers: { authorization: `Bearer ${alice.access_token}` },
        });
        t.equal(res.status, 404);
      }
    }
  },
);
