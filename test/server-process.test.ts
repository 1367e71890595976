import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import WebSocket from 'ws';
import { decodeKey, verifyJsonSignature } from '../src/protocol/signing.ts';
import { WS_SYNC_PATH } from '../src/routes/client/sync-ws.routes.ts';
import { testRedisUrl } from './helpers/backends.ts';
import { type RunningProcess, runScript } from './helpers/process.ts';

/**
 * The server as `npm start` runs it: a real process, configured by environment and YAML, with the
 * embedded database under a data directory that survives restarts.
 */
// Several server processes start one after the other (each loads TypeScript and PGlite), and
// on a loaded 2-core machine one start was measured at over 90 s: allow for that.
t.setTimeout(900_000);

const LISTENING = /listening on http:\/\/127\.0\.0\.1:(\d+)/;

function dataDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function start(
  env: Record<string, string>,
): Promise<{ proc: RunningProcess; base: string; line: string }> {
  const proc = runScript('src/server.ts', [], {
    CONCLAVE_BIND_ADDRESS: '127.0.0.1',
    CONCLAVE_PORT: '0',
    CONCLAVE_SERVER_NAME: 'process.test',
    CONCLAVE_PASSWORD_HASH_COST: '10',
    ...env,
  });
  const line = await proc.waitForLine(LISTENING, 240_000);
  const port = LISTENING.exec(line)![1];
  return { proc, base: `http://127.0.0.1:${port}`, line };
}

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

t.test('embedded default: starts, logs one line, keeps its key and data across restarts', async (t) => {
  const dir = dataDir(t);
  const first = await start({ CONCLAVE_DATA_DIR: dir, CONCLAVE_REGISTRATION: 'open' });
  t.teardown(() => first.proc.stop());
  t.match(first.line, /database: pglite .*pglite/, 'the line names the embedded database');
  t.match(first.line, /bus: in-process/, 'the line names the bus');
  const infoLines = first.proc
    .stdout()
    .split('\n')
    .filter((l) => l.includes('"level":30'));
  t.equal(infoLines.length, 1, 'one info line at start');
  t.match(first.proc.stdout(), /"level":40.*registration is open/, 'open registration logs a warning');

  const keys = await json(await fetch(`${first.base}/_matrix/key/v2/server`));
  t.equal(keys.server_name, 'process.test');
  const verifyKeys = keys.verify_keys as Record<string, { key: string }>;
  const [keyId] = Object.keys(verifyKeys);
  t.ok(keyId?.startsWith('ed25519:'), 'an ed25519 key');
  t.ok(
    verifyJsonSignature(keys, 'process.test', keyId!, decodeKey(verifyKeys[keyId!]!.key)),
    'the key response is self-signed',
  );
  t.ok((keys.valid_until_ts as number) > Date.now() + 86_400_000, 'valid_until_ts lies in the future');

  const reg = await fetch(`${first.base}/_matrix/client/v3/register`, {
    method: 'POST',
    body: JSON.stringify({
      username: 'alice',
      password: 'a long enough password',
      auth: { type: 'm.login.dummy' },
    }),
  });
  t.equal(reg.status, 200);
  const token = (await json(reg)).access_token as string;
  t.notOk(first.proc.stdout().includes(token), 'the access token is not logged');
  t.notOk(first.proc.stdout().includes('a long enough password'), 'the password is not logged');
  await fetch(`${first.base}/_matrix/client/v3/account/whoami?access_token=${token}`);
  t.notOk(first.proc.stdout().includes(token), 'a token in the query string is not logged');

  const busy = runScript('src/admin.ts', ['list-tokens'], { CONCLAVE_DATA_DIR: dir });
  t.equal(await busy.exited, 1, 'the admin command refuses a database in use');
  t.match(busy.stderr(), /in use by process/);

  t.equal(await first.proc.stop(), 0, 'SIGTERM stops the server cleanly');

  const admin = runScript('src/admin.ts', ['create-user', 'bob', '--password', 'bobs secret password'], {
    CONCLAVE_DATA_DIR: dir,
    CONCLAVE_SERVER_NAME: 'process.test',
    CONCLAVE_PASSWORD_HASH_COST: '10',
  });
  t.equal(await admin.exited, 0, admin.stderr());
  t.match(admin.stdout(), /created @bob:process\.test/);
  const token2 = runScript('src/admin.ts', ['create-token', '--uses', '2', '--expires', '7d'], {
    CONCLAVE_DATA_DIR: dir,
    CONCLAVE_SERVER_NAME: 'process.test',
  });
  t.equal(await token2.exited, 0, token2.stderr());
  const regToken = /token: (\S+)/.exec(token2.stdout())?.[1];
  t.ok(regToken, 'the admin command prints the token');
  const audit = runScript('src/admin.ts', ['audit-log', '--action', 'device.new'], {
    CONCLAVE_DATA_DIR: dir,
  });
  t.equal(await audit.exited, 0, audit.stderr());
  const auditLines = audit
    .stdout()
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { action: string; actor: string });
  t.same(
    auditLines.map((r) => [r.action, r.actor]),
    [['device.new', '@alice:process.test']],
    'the admin command prints the audit log as JSON lines',
  );
  t.notOk(audit.stdout().includes(token), 'and no token in it');

  const second = await start({ CONCLAVE_DATA_DIR: dir, CONCLAVE_REGISTRATION: 'token' });
  t.teardown(() => second.proc.stop());
  const keys2 = await json(await fetch(`${second.base}/_matrix/key/v2/server`));
  t.same(Object.keys(keys2.verify_keys as object), [keyId], 'the same signing key after a restart');
  const login = await fetch(`${second.base}/_matrix/client/v3/login`, {
    method: 'POST',
    body: JSON.stringify({ type: 'm.login.password', user: 'alice', password: 'a long enough password' }),
  });
  t.equal(login.status, 200, 'the account made before the restart still logs in');
  const bobLogin = await fetch(`${second.base}/_matrix/client/v3/login`, {
    method: 'POST',
    body: JSON.stringify({ type: 'm.login.password', user: 'bob', password: 'bobs secret password' }),
  });
  t.equal(bobLogin.status, 200, 'the user the admin command created logs in');
  const withToken = await fetch(`${second.base}/_matrix/client/v3/register`, {
    method: 'POST',
    body: JSON.stringify({
      username: 'carol',
      password: 'carols long password',
      auth: { type: 'm.login.registration_token', token: regToken },
    }),
  });
  t.equal(withToken.status, 200, 'the token the admin command made registers');
  t.equal(await second.proc.stop(), 0);
});

t.test('a bad configuration value stops the process with a message naming it', async (t) => {
  const dir = dataDir(t);
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ CONCLAVE_PORT: 'eighty' }, /CONCLAVE_PORT/],
    [{ CONCLAVE_PORT: '70000' }, /CONCLAVE_PORT/],
    [{ CONCLAVE_REGISTRATION: 'maybe' }, /CONCLAVE_REGISTRATION/],
    [{ CONCLAVE_DATABASE_URL: 'mysql://x' }, /CONCLAVE_DATABASE_URL/],
    [{ CONCLAVE_REDIS_URL: 'not a url' }, /CONCLAVE_REDIS_URL/],
    [{ CONCLAVE_SERVER_NAME: 'bad name!' }, /CONCLAVE_SERVER_NAME/],
  ];
  const yamlFile = path.join(dir, 'conclave.yaml');
  writeFileSync(yamlFile, 'server_name: ok.test\nno_such_key: 1\n');
  cases.push([{ CONCLAVE_CONFIG: yamlFile }, /no_such_key/]);
  const badYamlValue = path.join(dir, 'bad-value.yaml');
  writeFileSync(badYamlValue, 'port: [1, 2]\n');
  cases.push([{ CONCLAVE_CONFIG: badYamlValue }, /port/]);
  for (const [env, re] of cases) {
    const proc = runScript('src/server.ts', [], { CONCLAVE_DATA_DIR: dir, ...env });
    t.equal(await proc.exited, 2, `${JSON.stringify(env)} exits with 2`);
    t.match(proc.stderr(), re, `the message names ${re.source}`);
  }
});

t.test('YAML configuration, overridden by the environment', async (t) => {
  const dir = dataDir(t);
  const yamlFile = path.join(dir, 'conclave.yaml');
  writeFileSync(
    yamlFile,
    `server_name: from-yaml.test\nregistration: closed\ndata_dir: ${JSON.stringify(dir)}\n`,
  );
  const { proc, base } = await start({ CONCLAVE_CONFIG: yamlFile, CONCLAVE_SERVER_NAME: 'from-env.test' });
  t.teardown(() => proc.stop());
  const keys = await json(await fetch(`${base}/_matrix/key/v2/server`));
  t.equal(keys.server_name, 'from-env.test', 'the environment overrides the file');
  const reg = await fetch(`${base}/_matrix/client/v3/register`, { method: 'POST', body: '{}' });
  t.equal(reg.status, 403, 'registration: closed from the file holds');
  t.equal(await proc.stop(), 0);
});

const databaseUrl = process.env.TEST_DATABASE_URL;
const redisUrl = testRedisUrl();
t.test(
  'PostgreSQL and Redis from the environment',
  { skip: !databaseUrl || !redisUrl ? 'no TEST_DATABASE_URL / TEST_REDIS_URL' : false },
  async (t) => {
    const { databaseBackends } = await import('./helpers/backends.ts');
    const pgBackend = databaseBackends().find((b) => b.name === 'postgres')!;
    const db = await pgBackend.create();
    t.teardown(() => db.drop());
    const dir = dataDir(t);
    const { proc, line } = await start({
      CONCLAVE_DATA_DIR: dir,
      CONCLAVE_DATABASE_URL: db.url,
      CONCLAVE_REDIS_URL: redisUrl!,
    });
    t.teardown(() => proc.stop());
    t.match(line, /database: postgres postgres:\/\//);
    t.match(line, /bus: redis redis:\/\//);
    t.notOk(line.includes(':postgres@'), 'the database password is not logged');
    t.equal(await proc.stop(), 0);
  },
);

// A peer server keeps idle keep-alive connections open, clients hold long polls and WebSockets:
// none of them may keep the process from exiting on SIGTERM (it used to wait for them forever).
t.test(
  'SIGTERM stops the server despite idle keep-alive connections, a long poll and a WebSocket',
  async (t) => {
    const { proc, base } = await start({ CONCLAVE_DATA_DIR: dataDir(t), CONCLAVE_REGISTRATION: 'open' });
    t.teardown(() => {
      if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
    });
    const reg = await json(
      await fetch(`${base}/_matrix/client/v3/register`, {
        method: 'POST',
        body: JSON.stringify({
          username: 'sleeper',
          password: 'a long enough password',
          auth: { type: 'm.login.dummy' },
        }),
      }),
    );
    const token = reg.access_token as string;

    // An idle keep-alive connection, as a federating peer leaves one between transactions.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const status = await new Promise<number | undefined>((resolve, reject) => {
      http
        .get(`${base}/_matrix/client/versions`, { agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode));
        })
        .on('error', reject);
    });
    t.equal(status, 200);
    t.equal(Object.values(agent.freeSockets).flat().length, 1, 'the keep-alive connection is open and idle');

    // A long poll that would wait two minutes, and a WebSocket sync.
    const first = await json(await fetch(`${base}/_matrix/client/v3/sync?access_token=${token}`));
    const longPoll = fetch(
      `${base}/_matrix/client/v3/sync?timeout=120000&since=${first.next_batch as string}&access_token=${token}`,
    ).then(
      (r) => r.status,
      () => 'cut',
    );
    const ws = new WebSocket(`${base.replace('http', 'ws')}${WS_SYNC_PATH}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    t.teardown(() => ws.terminate());
    await new Promise((resolve, reject) => {
      ws.once('message', resolve);
      ws.once('error', reject);
    });
    const wsClosed = new Promise((resolve) => ws.once('close', resolve));

    const code = await Promise.race([
      proc.stop(),
      new Promise<string>((resolve) => setTimeout(() => resolve('still running after 90 s'), 90_000).unref()),
    ]);
    t.equal(code, 0, 'the process exits cleanly');
    if (code !== 0) return;
    await wsClosed;
    t.ok(['cut', 200].includes((await longPoll) as never), 'the long poll ended');
  },
);
