import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgliteTemplate } from './pglite-template.ts';

/**
 * The databases every storage and API test runs on: PGlite always, PostgreSQL when
 * TEST_DATABASE_URL is set. Under CI=true a missing or unreachable PostgreSQL is a failure, not a
 * skip. Each test gets a database of its own, so test files run in parallel.
 */
export interface DatabaseBackend {
  name: 'pglite' | 'postgres';
  /**
   * Creates a fresh database; returns its URL ('' for in-memory PGlite), for PGlite the migrated
   * template to load, and how to drop it.
   */
  create(): Promise<{ url: string; pgliteTemplate?: Blob; drop(): Promise<void> }>;
}

const pglite: DatabaseBackend = {
  name: 'pglite',
  async create() {
    return { url: '', pgliteTemplate: await pgliteTemplate(), drop: async () => {} };
  },
};

function postgres(adminUrl: string): DatabaseBackend {
  return {
    name: 'postgres',
    async create() {
      const name = `conclave_test_${process.pid}_${randomBytes(4).toString('hex')}`;
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      try {
        await admin.query(`create database ${name}`);
      } finally {
        await admin.end();
      }
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return {
        url: url.toString(),
        async drop() {
          const c = new pg.Client({ connectionString: adminUrl });
          await c.connect();
          try {
            await c.query(`drop database if exists ${name} with (force)`);
          } finally {
            await c.end();
          }
        },
      };
    },
  };
}

export function databaseBackends(): DatabaseBackend[] {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) {
    if (process.env.CI === 'true') {
      throw new Error('CI=true but TEST_DATABASE_URL is not set: the PostgreSQL suites must run in CI');
    }
    return [pglite];
  }
  return [pglite, postgres(url)];
}

/** Redis for bus tests: the URL, or undefined outside CI when TEST_REDIS_URL is not set. */
export function testRedisUrl(): string | undefined {
  const url = process.env.TEST_REDIS_URL;
  if (!url && process.env.CI === 'true') {
    throw new Error('CI=true but TEST_REDIS_URL is not set: the Redis suites must run in CI');
  }
  return url || undefined;
}
