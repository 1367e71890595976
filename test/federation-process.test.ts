// Federation between real server processes over TLS on loopback: server names are IP literals
// with ports (127.0.0.2:<port>, 127.0.0.3:<port>), certificates come from a CA the test makes
// with openssl, and each server trusts it through federation_ca_file.
import t from 'tap';
import { FederationClient, type RequestSigner } from '../src/federation/client/federation-client.ts';
import { HttpsTransport } from '../src/federation/client/https-transport.ts';
import { FederationError } from '../src/federation/index.ts';
import { encodeBase64 } from '../src/protocol/base64.ts';
import { type SigningKey, signJson, verifyJsonSignature } from '../src/protocol/signing.ts';
import { type HomeserverProcess, makeTestCa, startHomeserverProcesses } from './helpers/federation.ts';

// Real processes start slowly on a busy machine (tsx compiles the server at each start).
t.setTimeout(300_000);

/** Signs as `serverName` with `key`: the test speaks for a server whose key file it wrote. */
function signerFor(serverName: string, key: SigningKey): RequestSigner {
  return { serverName, key, sign: (object) => signJson(object, serverName, key.keyId, key.seed) };
}

async function register(hs: HomeserverProcess, localpart: string) {
  const res = await fetch(`${hs.base}/_matrix/client/v3/register`, {
    method: 'POST',
    body: JSON.stringify({
      username: localpart,
      password: 'a long password',
      auth: { type: 'm.login.dummy' },
    }),
  });
  if (res.status !== 200) throw new Error(`register: ${res.status} ${await res.text()}`);
  return (await res.json()) as { user_id: string; access_token: string };
}

t.test('two server processes federate over TLS', async (t) => {
  const ca = makeTestCa(t);
  const [hs1, hs2] = (await startHomeserverProcesses(t, ca, 2)) as [HomeserverProcess, HomeserverProcess];
  const transport = new HttpsTransport({ caFile: ca.caFile });
  t.teardown(() => transport.close());
  const asHs2 = new FederationClient(signerFor(hs2.serverName, hs2.key), transport);

  const alice = await register(hs1, 'alice');
  const put = await fetch(
    `${hs1.base}/_matrix/client/v3/profile/${encodeURIComponent(alice.user_id)}/displayname`,
    {
      method: 'PUT',
      headers: { authorization: `Bearer ${alice.access_token}` },
      body: JSON.stringify({ displayname: 'Alice of hs1' }),
    },
  );
  t.equal(put.status, 200);

  t.test('each publishes the key from its key file on its TLS listener', async (t) => {
    for (const hs of [hs1, hs2]) {
      const keys = await asHs2.request<{ server_name: string; verify_keys: Record<string, { key: string }> }>(
        {
          destination: hs.serverName,
          method: 'GET',
          path: '/_matrix/key/v2/server',
        },
      );
      t.equal(keys.server_name, hs.serverName);
      t.same(keys.verify_keys, { [hs.key.keyId]: { key: encodeBase64(hs.key.publicKey) } });
    }
  });

  t.test('hs1 as notary fetches hs2 keys from hs2 over TLS', async (t) => {
    const answer = await asHs2.request<{ server_keys: Array<Record<string, unknown>> }>({
      destination: hs1.serverName,
      method: 'POST',
      path: '/_matrix/key/v2/query',
      body: { server_keys: { [hs2.serverName]: {} } },
    });
    t.equal(answer.server_keys.length, 1);
    const response = answer.server_keys[0]!;
    t.ok(verifyJsonSignature(response, hs2.serverName, hs2.key.keyId, hs2.key.publicKey), 'signed by hs2');
    t.ok(verifyJsonSignature(response, hs1.serverName, hs1.key.keyId, hs1.key.publicKey), 'and by hs1');
  });

  t.test('query/profile signed as hs2 is served by hs1, which verifies it with hs2 key', async (t) => {
    const profile = await asHs2.request({
      destination: hs1.serverName,
      method: 'GET',
      path: '/_matrix/federation/v1/query/profile',
      query: { user_id: alice.user_id },
    });
    t.same(profile, { displayname: 'Alice of hs1' });

    // Signed with a key hs2 does not have: hs1 asks hs2 and refuses.
    const forged = new FederationClient(
      signerFor(hs2.serverName, { ...hs1.key, keyId: 'ed25519:forged' }),
      transport,
    );
    const refused = await forged
      .request({
        destination: hs1.serverName,
        method: 'GET',
        path: '/_matrix/federation/v1/query/profile',
        query: { user_id: alice.user_id },
      })
      .catch((e: unknown) => e);
    t.ok(refused instanceof FederationError);
    t.equal((refused as FederationError).status, 401);
    t.equal((refused as FederationError).errcode, 'M_UNAUTHORIZED');
  });

  t.test('the TLS listener serves only the server-server API', async (t) => {
    const res = await transport.send({
      destination: hs1.serverName,
      method: 'GET',
      uri: '/_matrix/client/versions',
      headers: {},
      timeoutMs: 5000,
      maxResponseBytes: 65536,
    });
    t.equal(res.status, 404);
    t.equal(JSON.parse(Buffer.from(res.body).toString()).errcode, 'M_UNRECOGNIZED');
  });
});
