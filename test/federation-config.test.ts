// The federation settings and the signing key file format.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.ts';
import { encodeBase64 } from '../src/protocol/base64.ts';
import { generateSigningKey } from '../src/protocol/signing.ts';
import { formatSigningKey, parseSigningKey } from '../src/services/server-keys.service.ts';

const KEY = encodeBase64(generateSigningKey('ed25519:n').publicKey);

t.test('defaults: no notary, no extra CA, no TLS listener, port 8448', async (t) => {
  const c = loadConfig({});
  t.same(c.trustedKeyServers, []);
  t.equal(c.federationCaFile, '');
  t.equal(c.federationTlsCertificate, '');
  t.equal(c.federationPort, 8448);
  t.equal(c.signingKeyPath, '');
});

t.test('trusted_key_servers from the environment and from YAML', async (t) => {
  t.same(
    loadConfig({ CONCLAVE_TRUSTED_KEY_SERVERS: 'notary.example, other.example:8448' }).trustedKeyServers,
    [
      { serverName: 'notary.example', verifyKeys: {} },
      { serverName: 'other.example:8448', verifyKeys: {} },
    ],
  );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.yaml');
  writeFileSync(
    file,
    `trusted_key_servers:\n  - plain.example\n  - server_name: keyed.example\n    verify_keys:\n      "ed25519:a1": ${KEY}\nfederation_port: 8449\n`,
  );
  const c = loadConfig({ CONCLAVE_CONFIG: file });
  t.same(c.trustedKeyServers, [
    { serverName: 'plain.example', verifyKeys: {} },
    { serverName: 'keyed.example', verifyKeys: { 'ed25519:a1': KEY } },
  ]);
  t.equal(c.federationPort, 8449);

  const bad: Array<[string, RegExp]> = [
    ['trusted_key_servers: 42\n', /must be a list/],
    ['trusted_key_servers:\n  - "not a name"\n', /not a valid Matrix server name/],
    ['trusted_key_servers:\n  - server_name: a.example\n    extra: 1\n', /unknown key extra/],
    [
      'trusted_key_servers:\n  - server_name: a.example\n    verify_keys:\n      "rsa:x": abc\n',
      /base64 ed25519 key/,
    ],
    ['trusted_key_servers:\n  - verify_keys: {}\n', /server_name/],
  ];
  for (const [yaml, reason] of bad) {
    writeFileSync(file, yaml);
    t.throws(() => loadConfig({ CONCLAVE_CONFIG: file }), reason, yaml);
  }
});

t.test('the TLS certificate and key come together', async (t) => {
  t.throws(() => loadConfig({ CONCLAVE_FEDERATION_TLS_CERTIFICATE: '/c.pem' }), ConfigError);
  t.throws(() => loadConfig({ CONCLAVE_FEDERATION_TLS_KEY: '/k.pem' }), /must be given together/);
  const c = loadConfig({
    CONCLAVE_FEDERATION_TLS_CERTIFICATE: '/c.pem',
    CONCLAVE_FEDERATION_TLS_KEY: '/k.pem',
  });
  t.equal(c.federationTlsKey, '/k.pem');
  t.throws(() => loadConfig({ CONCLAVE_FEDERATION_PORT: '70000' }), /between 0 and 65535/);
});

t.test('signing key files: ed25519 <version> <base64 seed>', async (t) => {
  const key = generateSigningKey('ed25519:a_1');
  const text = formatSigningKey(key);
  t.match(text, /^ed25519 a_1 [A-Za-z0-9+/]{43}\n$/);
  const back = parseSigningKey(text);
  t.equal(back.keyId, 'ed25519:a_1');
  t.same(Buffer.from(back.publicKey), Buffer.from(key.publicKey), 'the same key');
  for (const bad of ['', 'ed25519 a_1', 'ed25519 a-1 AAAA', 'rsa a AAAA', `ed25519 a_1 ${'A'.repeat(10)}`]) {
    t.throws(() => parseSigningKey(bad), JSON.stringify(bad));
  }
});
