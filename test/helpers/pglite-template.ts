import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { migrateToLatest, openDatabase } from '../../src/storage/connect.ts';

/**
 * Starting an empty PGlite cluster runs initdb, which takes seconds; loading a dump of one takes
 * about a second. Tests start from a dump of a freshly migrated PGlite, made once per set of
 * migrations and kept in the OS temp directory (written atomically, so parallel test files can
 * race safely). startRuntime still runs the migrator on it, which must find nothing to do.
 * test/storage.test.ts migrates a truly empty PGlite, so the migrations are tested from scratch too.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function templateKey(): string {
  const hash = createHash('sha256');
  const dir = path.join(root, 'migrations');
  for (const file of readdirSync(dir).sort()) hash.update(file).update(readFileSync(path.join(dir, file)));
  const pglitePkg = readFileSync(path.join(root, 'node_modules/@electric-sql/pglite/package.json'));
  hash.update(JSON.parse(pglitePkg.toString()).version);
  return hash.digest('hex').slice(0, 16);
}

let cached: Promise<Blob> | undefined;

export function pgliteTemplate(): Promise<Blob> {
  cached ??= build();
  return cached;
}

async function build(): Promise<Blob> {
  const file = path.join(os.tmpdir(), `conclave-pglite-template-${templateKey()}.tar`);
  if (existsSync(file)) return new Blob([readFileSync(file)]);
  const handle = await openDatabase({ pgliteDir: null });
  try {
    await migrateToLatest(handle.db);
    if (!handle.pglite) throw new Error('openDatabase did not expose the PGlite instance');
    const dump = await handle.pglite.dumpDataDir('none');
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, Buffer.from(await dump.arrayBuffer()));
    renameSync(tmp, file);
    return dump;
  } finally {
    await handle.close();
  }
}
