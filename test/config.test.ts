import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CONFIG_KEYS, ConfigError, defaultConfig, loadConfig } from '../src/config.ts';
import { ROOT } from './helpers/process.ts';

t.test('defaults: embedded database, in-process bus, registration closed, port 8008', async (t) => {
  const c = loadConfig({});
  t.equal(c.port, 8008);
  t.equal(c.databaseUrl, '');
  t.equal(c.redisUrl, '');
  t.equal(c.registration, 'closed');
  t.equal(c.dataDir, './data');
  t.equal(c.defaultRoomVersion, '12');
});

t.test('environment variables', async (t) => {
  const c = loadConfig({
    CONCLAVE_SERVER_NAME: 'example.org:8448',
    CONCLAVE_PORT: '9000',
    CONCLAVE_DATABASE_URL: 'postgres://u:p@127.0.0.1/db',
    CONCLAVE_REDIS_URL: 'redis://127.0.0.1:6379',
    CONCLAVE_REGISTRATION: 'token',
    CONCLAVE_DATA_DIR: '/var/lib/conclave',
    CONCLAVE_DEFAULT_ROOM_VERSION: '10',
  });
  t.equal(c.defaultRoomVersion, '10');
  t.equal(c.serverName, 'example.org:8448');
  t.equal(c.port, 9000);
  t.equal(c.databaseUrl, 'postgres://u:p@127.0.0.1/db');
  t.equal(c.redisUrl, 'redis://127.0.0.1:6379');
  t.equal(c.registration, 'token');
  t.equal(c.dataDir, '/var/lib/conclave');
});

t.test('bad values name the key', async (t) => {
  const bad: Record<string, string> = {
    CONCLAVE_PORT: '-1',
    CONCLAVE_REGISTRATION: 'OPEN',
    CONCLAVE_DATABASE_URL: 'sqlite://x',
    CONCLAVE_SERVER_NAME: 'has space',
    CONCLAVE_MAX_REQUEST_BYTES: '10',
    CONCLAVE_PASSWORD_HASH_COST: '4',
    CONCLAVE_LOG_LEVEL: 'loud',
    CONCLAVE_DEFAULT_ROOM_VERSION: '99',
  };
  for (const [key, value] of Object.entries(bad)) {
    t.throws(
      () => loadConfig({ [key]: value }),
      { name: 'ConfigError', message: new RegExp(key) },
      `${key}=${value}`,
    );
  }
});

t.test('YAML file, overridden by the environment; unknown keys refused', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'c.yaml');
  writeFileSync(file, 'server_name: yaml.test\nport: 8100\nregistration: open\n');
  const c = loadConfig({ CONCLAVE_CONFIG: file, CONCLAVE_PORT: '8200' });
  t.equal(c.serverName, 'yaml.test');
  t.equal(c.port, 8200, 'the environment wins');
  t.equal(c.registration, 'open');
  writeFileSync(file, 'servername: typo.test\n');
  t.throws(() => loadConfig({ CONCLAVE_CONFIG: file }), /unknown key "servername"/);
  writeFileSync(file, '- a list\n');
  t.throws(() => loadConfig({ CONCLAVE_CONFIG: file }), ConfigError);
  t.throws(() => loadConfig({ CONCLAVE_CONFIG: path.join(dir, 'missing.yaml') }), /cannot read/);
});

t.test('README documents every configuration key', async (t) => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  for (const { env, yaml } of CONFIG_KEYS) {
    t.ok(readme.includes(env), `README names ${env}`);
    t.ok(readme.includes(yaml), `README names ${yaml}`);
  }
  t.ok(readme.includes('CONCLAVE_CONFIG'));
  t.ok(readme.includes(String(defaultConfig().port)));
});
