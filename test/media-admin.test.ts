/**
 * `npm run admin -- media-list | media-quarantine | media-delete`: the admin command goes through
 * the same MediaService functions as everything else, and its actions are audited.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { ADMIN_CLI_ACTOR } from '../src/admin.ts';
import { type Config, defaultConfig } from '../src/config.ts';
import { startRuntime } from '../src/runtime.ts';
import { databaseBackends } from './helpers/backends.ts';
import { runScript } from './helpers/process.ts';

t.setTimeout(400_000);

const SERVER = 'admin-media.test';
const ALICE = `@alice:${SERVER}`;

for (const backend of databaseBackends()) {
  t.test(`media admin commands on ${backend.name}`, async (t) => {
    const database = await backend.create();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-media-admin-'));
    t.teardown(async () => {
      await database.drop();
      rmSync(dir, { recursive: true, force: true });
    });
    const config: Config = {
      ...defaultConfig(),
      serverName: SERVER,
      dataDir: dir,
      databaseUrl: database.url,
      logLevel: 'silent',
    };
    const env = {
      CONCLAVE_DATA_DIR: dir,
      CONCLAVE_SERVER_NAME: SERVER,
      ...(database.url ? { CONCLAVE_DATABASE_URL: database.url } : {}),
    };
    const admin = async (...args: string[]) => {
      const run = runScript('src/admin.ts', args, env);
      return { code: await run.exited, out: run.stdout(), err: run.stderr() };
    };

    // alice uploads two files (one of them twice) while the server runs.
    let runtime = await startRuntime(config);
    const put = (text: string) =>
      runtime.services.media.upload(ALICE, {
        body: Readable.from([Buffer.from(text)]),
        contentType: 'text/plain',
        contentLength: undefined,
        fileName: `${text}.txt`,
      });
    const kept = (await put('kept')).content_uri;
    const doomed = (await put('doomed')).content_uri;
    const [doomedInfo] = (await runtime.services.media.listUserMedia(ALICE)).filter((m) => m.mxc === doomed);
    await runtime.close();
    const doomedFile = path.join(
      dir,
      'media',
      doomedInfo!.sha256!.slice(0, 2),
      doomedInfo!.sha256!.slice(2, 4),
      doomedInfo!.sha256!,
    );
    t.ok(existsSync(doomedFile), 'files live under <data_dir>/media, named by their SHA-256');

    const list = await admin('media-list', ALICE);
    t.equal(list.code, 0, list.err);
    const listed = list.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { mxc: string; size: number });
    t.same(listed.map((m) => m.mxc).sort(), [kept, doomed].sort(), 'media-list prints both as JSON lines');

    const quarantine = await admin('media-quarantine', kept);
    t.equal(quarantine.code, 0, quarantine.err);
    t.match(quarantine.out, `quarantined ${kept}`);
    const del = await admin('media-delete', doomed);
    t.equal(del.code, 0, del.err);
    t.match(del.out, /1 file removed/);
    t.notOk(existsSync(doomedFile), 'the file is gone');
    const bad = await admin('media-delete', 'https://example.org/not-mxc');
    t.equal(bad.code, 1, 'a malformed mxc URI fails');
    t.match(bad.err, /M_INVALID_PARAM/);

    runtime = await startRuntime(config);
    t.teardown(() => runtime.close());
    const { media, audit } = runtime.services;
    const served = await media.download(SERVER, kept.split('/').pop()!, {}).then(
      () => 'served',
      (e: { errcode: string }) => e.errcode,
    );
    t.equal(served, 'M_NOT_FOUND', 'the quarantined media is no longer served');
    const records = (await audit.list({})).filter((r) => r.action.startsWith('media.'));
    t.same(
      records.map((r) => [r.action, r.actor, r.target]),
      [
        ['media.quarantine', ADMIN_CLI_ACTOR, kept],
        ['media.delete', ADMIN_CLI_ACTOR, doomed],
      ],
      'both actions are in the audit log',
    );
  });
}
