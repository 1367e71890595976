import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import t from 'tap';
import type { Db } from '../src/storage/connect.ts';
import { databaseBackends } from './helpers/backends.ts';
import { pastTs } from './helpers/retention.ts';
import { startTestServer } from './helpers/server.ts';

/**
 * Retention frees the disk (spec/retention.md): 3,000 messages purged (10,000 for the figures), the database's size
 * measured before and after, and the database's files searched for their bodies.
 */
const V3 = '/_matrix/client/v3';
/**
 * 3,000 by default, enough for every check here and quick enough for CI; RETENTION_DISK_MESSAGES=10000
 * gives the figures of spec/retention.md.
 */
const MESSAGES = Number(process.env.RETENTION_DISK_MESSAGES ?? 3_000);
t.setTimeout(1_800_000);

/** Every regular file under `dir`. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) out.push(...filesUnder(p));
    else if (st.isFile()) out.push(p);
  }
  return out;
}

/** The bytes of every file under `dir`. */
function bytesUnder(dir: string): number {
  return filesUnder(dir).reduce((n, f) => n + statSync(f).size, 0);
}

/** Files (relative to `root`) whose bytes hold `needle`. */
function filesHolding(root: string, files: string[], needle: string): string[] {
  const n = Buffer.from(needle);
  return files.filter((f) => readFileSync(f).includes(n)).map((f) => path.relative(root, f));
}

async function sizes(db: Db) {
  const r = await sql<{ db: number; pdus: number; dead: number | null }>`
    select pg_database_size(current_database()) as db, pg_total_relation_size('pdus') as pdus,
           (select n_dead_tup from pg_stat_user_tables where relname = 'pdus') as dead`.execute(db);
  return r.rows[0]!;
}

for (const backend of databaseBackends()) {
  t.test(`purging ${MESSAGES} messages frees the disk on ${backend.name}`, async (t) => {
    t.setTimeout(900_000);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-retention-disk-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const s = await startTestServer(
      t,
      backend,
      { retentionAllowedMin: 1000, retentionPurgeIntervalMs: 0, retentionVacuum: 'plain' },
      backend.name === 'pglite' ? { pgliteDataDir: dir } : {},
    );
    const db = s.runtime.database.db;
    const { events } = s.runtime.services;
    const alice = await s.register('alice');
    const created = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { initial_state: [{ type: 'm.room.retention', state_key: '', content: { max_lifetime: 1000 } }] },
    });
    const roomId: string = created.json().room_id;
    const tag = randomBytes(6).toString('hex');
    const send = async (prefix: string, n: number) => {
      for (let i = 0; i < n; i += 500) {
        await events.transact(roomId, async (tx) => {
          for (let j = i; j < Math.min(i + 500, n); j++) {
            await tx.send({
              type: 'm.room.message',
              sender: alice.user_id,
              content: { msgtype: 'm.text', body: `${prefix}-${tag}-${j} ${'lorem ipsum '.repeat(8)}` },
            });
          }
        });
      }
    };
    const started = Date.now();
    await send('disk', MESSAGES);
    t.comment(`sent ${MESSAGES} messages in ${Date.now() - started} ms`);
    await pastTs(Date.now());
    const split = Date.now();
    await pastTs(split);

    // Where the data files are: PGlite's folder, or PostgreSQL's for this database.
    let root: string | undefined;
    if (backend.name === 'pglite') {
      const r = await sql<{ oid: number }>`
        select oid::int as oid from pg_database where datname = current_database()`.execute(db);
      root = path.join(dir, 'pglite', 'base', String(r.rows[0]!.oid));
    } else {
      const r = await sql<{ data: string; oid: number }>`
        select current_setting('data_directory') as data,
               (select oid from pg_database where datname = current_database())::int as oid`.execute(db);
      root = path.join(r.rows[0]!.data, 'base', String(r.rows[0]!.oid));
    }
    let readable = true;
    try {
      readdirSync(root);
    } catch (err) {
      readable = false;
      t.comment(`the data files at ${root} cannot be read as this user: ${(err as Error).message}`);
    }
    const scan = async () => {
      await sql`checkpoint`.execute(db);
      return readable ? filesHolding(root!, filesUnder(root!), `disk-${tag}-`) : undefined;
    };
    const inFilesBefore = await scan();
    if (inFilesBefore) t.ok(inFilesBefore.length > 0, `the bodies are in the files before: ${inFilesBefore}`);

    const before = await sizes(db);
    const job = await s.runtime.services.retention.runJob({ now: split + 1000 });
    // All but the last, the room's forward extremity, which stays with its content pruned.
    t.equal(job.purges[0]?.eventsDeleted, MESSAGES - 1, 'every message purged but the last, pruned');
    // The statistics are flushed a moment after the VACUUM (at most once a second per backend):
    // read them again for a while before concluding rows were left dead.
    let afterPlain = await sizes(db);
    for (let i = 0; i < 100 && (afterPlain.dead ?? 0) > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await sql`select pg_stat_clear_snapshot()`.execute(db);
      afterPlain = await sizes(db);
    }
    t.equal(afterPlain.dead ?? 0, 0, 'the plain VACUUM left no dead rows in pdus');
    t.comment(
      `pdus ${before.pdus} -> ${afterPlain.pdus} bytes, database ${before.db} -> ${afterPlain.db} after the job's plain VACUUM`,
    );
    const inFilesPlain = await scan();
    if (inFilesPlain)
      t.comment(
        `after plain VACUUM, files still holding bodies (freed space, not yet overwritten): ${inFilesPlain.length}`,
      );

    // The space a plain VACUUM freed is reused: as many new messages do not grow the table.
    await send('again', MESSAGES / 2);
    const reused = await sizes(db);
    // Without reuse they would add about half of what the first batch took.
    const unreused = (before.pdus * 0.5) | 0;
    t.ok(
      reused.pdus - afterPlain.pdus < unreused / 2,
      `${MESSAGES / 2} new messages mostly fit in the freed space: pdus ${afterPlain.pdus} -> ${reused.pdus} (about +${unreused} without reuse)`,
    );

    // Purge those too with the job's VACUUM set to FULL (as an operator sets retention_vacuum):
    // the files shrink and hold no body.
    s.config.retentionVacuum = 'full';
    await pastTs(Date.now());
    const split2 = Date.now();
    await pastTs(split2);
    const filesBefore = readable ? bytesUnder(root!) : undefined;
    const job2 = await s.runtime.services.retention.runJob({ now: split2 + 1000 });
    t.equal(job2.purges[0]?.eventsDeleted, MESSAGES / 2, 'the second batch purged (and the pruned last one)');
    const afterFull = await sizes(db);
    t.ok(
      afterFull.pdus < before.pdus / 4,
      `the job's VACUUM FULL shrinks pdus: ${before.pdus} -> ${afterFull.pdus}`,
    );
    t.ok(afterFull.db < before.db, `and the database (pg_database_size): ${before.db} -> ${afterFull.db}`);
    if (filesBefore !== undefined) {
      const filesAfter = bytesUnder(root!);
      t.ok(
        filesAfter < filesBefore,
        `and its data files on disk (before this purge, after): ${filesBefore} -> ${filesAfter} bytes`,
      );
    }
    const inFilesFull = await scan();
    if (inFilesFull) t.same(inFilesFull, [], 'after VACUUM FULL no data file holds a body');
    if (backend.name === 'pglite' && readable) {
      const wal = filesHolding(root!, filesUnder(path.join(dir, 'pglite', 'pg_wal')), `disk-${tag}-`);
      t.comment(`write-ahead log segments still holding bodies: ${wal.length}`);
    }
  });
}
