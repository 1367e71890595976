import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, Migrator, PostgresDialect } from 'kysely';
import pg from 'pg';
import { migrations } from '../../migrations/index.ts';
import type { Database } from './database.ts';
import { PgliteDialect } from './pglite-dialect.ts';
import { acquirePgliteLock } from './pglite-lock.ts';

export type Db = Kysely<Database>;

export interface DatabaseHandle {
  db: Db;
  /** 'pglite' (embedded) or 'postgres'. */
  kind: 'pglite' | 'postgres';
  /** Where the data lives, safe to log (no password). */
  description: string;
  /** The embedded instance, when kind is 'pglite' (tests dump it as a template). */
  pglite?: PGlite;
  close(): Promise<void>;
}

const INT8_OID = 20;

/** Opens PostgreSQL when a URL is given, else PGlite in `pgliteDir` (in memory when it is null). */
export async function openDatabase(opts: {
  databaseUrl?: string;
  pgliteDir?: string | null;
  /** A dump (PGlite dumpDataDir) to start from instead of an empty cluster. */
  pgliteTemplate?: Blob;
}): Promise<DatabaseHandle> {
  if (opts.databaseUrl) {
    const pool = new pg.Pool({
      connectionString: opts.databaseUrl,
      max: 10,
      types: {
        getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
          oid === INT8_OID
            ? (v: string) => Number(v)
            : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
      },
    });
    // An idle connection can be cut by the server (a restart, an administrator, a dropped
    // database): the pool has already discarded it and opens a new one when needed. Without a
    // listener, that error would end the process.
    pool.on('error', () => {});
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return {
      db,
      kind: 'postgres',
      description: `postgres ${redactUrl(opts.databaseUrl)}`,
      close: () => db.destroy(),
    };
  }
  const dir = opts.pgliteDir ?? null;
  let unlock = () => {};
  if (dir) {
    mkdirSync(dir, { recursive: true });
    unlock = acquirePgliteLock(dir);
  }
  let pglite: PGlite;
  try {
    pglite = await PGlite.create({
      ...(dir ? { dataDir: dir } : {}),
      ...(opts.pgliteTemplate ? { loadDataDir: opts.pgliteTemplate } : {}),
      parsers: { [INT8_OID]: (v: string) => Number(v) },
    });
  } catch (err) {
    unlock();
    throw err;
  }
  const db = new Kysely<Database>({ dialect: new PgliteDialect(pglite) });
  return {
    db,
    kind: 'pglite',
    description: `pglite ${dir ?? '(in memory)'}`,
    pglite,
    close: async () => {
      await db.destroy();
      unlock();
    },
  };
}

/** Applies every pending migration; throws when one fails. */
export async function migrateToLatest(db: Db): Promise<void> {
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`migration ${failed?.migrationName ?? '?'} failed: ${(error as Error).message ?? error}`);
  }
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable url)';
  }
}
