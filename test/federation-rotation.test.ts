// Key rotation through the admin command, against a real data directory and server process.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { formatSigningKey } from '../src/services/server-keys.service.ts';
import { runScript, startServerProcess } from './helpers/process.ts';

// Real processes start slowly on a busy machine (tsx compiles the server at each start).
t.setTimeout(300_000);

t.test('admin rotate-key: the old key stays published as old', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-rotate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { CONCLAVE_DATA_DIR: dir, CONCLAVE_SERVER_NAME: 'rotate.test' };
  const first = runScript('src/admin.ts', ['rotate-key'], env);
  t.equal(await first.exited, 0, first.stderr());
  const [, previous, current] =
    /retired (ed25519:\S+); the signing key is now (ed25519:\S+)/.exec(first.stdout()) ?? [];
  t.ok(previous && current && previous !== current, first.stdout());

  const { proc, base } = await startServerProcess({
    ...env,
    CONCLAVE_BIND_ADDRESS: '127.0.0.1',
    CONCLAVE_PORT: '0',
  });
  t.teardown(() => proc.stop());
  const keys = (await (await fetch(`${base}/_matrix/key/v2/server`)).json()) as {
    verify_keys: Record<string, unknown>;
    old_verify_keys: Record<string, { expired_ts: number }>;
  };
  t.same(Object.keys(keys.verify_keys), [current]);
  t.same(Object.keys(keys.old_verify_keys), [previous]);
  t.type(keys.old_verify_keys[previous!]!.expired_ts, 'number');
  await proc.stop();

  // With signing_key_path the file names the key, so the command refuses.
  const keyFile = path.join(dir, 'signing.key');
  writeFileSync(
    keyFile,
    formatSigningKey({
      keyId: 'ed25519:file',
      seed: new Uint8Array(32).fill(7),
      publicKey: new Uint8Array(),
    }),
  );
  const refused = runScript('src/admin.ts', ['rotate-key'], { ...env, CONCLAVE_SIGNING_KEY_PATH: keyFile });
  t.equal(await refused.exited, 1);
  t.match(refused.stderr(), /signing_key_path/);
});
