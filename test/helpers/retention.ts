import { sql } from 'kysely';
import type { Db } from '../../src/storage/connect.ts';
import type { Login, TestServer } from './server.ts';

/** Shared steps of the retention tests (test/retention*.test.ts). */

const enc = encodeURIComponent;
let txn = 0;

/** Sends a text message; returns its event ID. */
export async function sendText(s: Pick<TestServer, 'request'>, who: Login, roomId: string, body: string) {
  const res = await s.request(
    'PUT',
    `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t${Date.now()}-${txn++}`,
    { token: who.access_token, body: { msgtype: 'm.text', body } },
  );
  if (res.statusCode !== 200) throw new Error(`send: ${res.statusCode} ${res.body}`);
  return (res.json() as { event_id: string }).event_id;
}

/**
 * A public room of `owner` whose events are kept `maxLifetime` ms, joined by `joiner`; its ID.
 */
export async function retentionRoom(
  s: Pick<TestServer, 'request'>,
  owner: Login,
  joiner: Login,
  maxLifetime: number,
): Promise<string> {
  const created = await s.request('POST', '/_matrix/client/v3/createRoom', {
    token: owner.access_token,
    body: {
      preset: 'public_chat',
      initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: maxLifetime } }],
    },
  });
  if (created.statusCode !== 200) throw new Error(`createRoom: ${created.statusCode} ${created.body}`);
  const roomId: string = created.json().room_id;
  const joined = await s.request('POST', `/_matrix/client/v3/join/${enc(roomId)}`, {
    token: joiner.access_token,
    body: {},
  });
  if (joined.statusCode !== 200) throw new Error(`join: ${joined.statusCode} ${joined.body}`);
  return roomId;
}

/** Waits until the clock has moved past `ts`, so events after it are strictly younger. */
export async function pastTs(ts: number): Promise<void> {
  while (Date.now() <= ts) await new Promise((r) => setImmediate(r));
}

/**
 * Every row of every table that holds one of `needles` as text (with the table's name). The
 * prev_events of a kept event may name a purged event (they are signed and cannot change), so
 * that one field of `pdus.json` is left out when `skipPrevEvents` is set.
 */
export async function tracesOf(
  db: Db,
  needles: readonly string[],
  opts: { skipPrevEvents: boolean },
): Promise<Array<{ table: string; count: number }>> {
  const tables = await sql<{ table_name: string }>`
    select table_name from information_schema.tables
    where table_schema = current_schema() and table_type = 'BASE TABLE' order by table_name`.execute(db);
  const out: Array<{ table: string; count: number }> = [];
  for (const { table_name: table } of tables.rows) {
    const expr =
      table === 'pdus' && opts.skipPrevEvents
        ? sql`(to_jsonb(t) #- '{json,prev_events}')::text`
        : sql`to_jsonb(t)::text`;
    const r = await sql<{ n: number }>`
      select count(*)::int as n from ${sql.table(table)} t
      where exists (select 1 from unnest(${[...needles]}::text[]) x where strpos(${expr}, x) > 0)`.execute(
      db,
    );
    const n = r.rows[0]?.n ?? 0;
    if (n > 0) out.push({ table, count: n });
  }
  return out;
}

/** How many tables the scan looked at (so a test can say it looked at them all). */
export async function tableCount(db: Db): Promise<number> {
  const r = await sql<{ n: number }>`
    select count(*)::int as n from information_schema.tables
    where table_schema = current_schema() and table_type = 'BASE TABLE'`.execute(db);
  return r.rows[0]?.n ?? 0;
}
