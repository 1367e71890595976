import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../../src/config.ts';
import type { TransportRequest, TransportResponse } from '../../src/federation/client/transport.ts';
import { FederationError, type FederationTransport } from '../../src/federation/index.ts';
import { encodeBase64 } from '../../src/protocol/base64.ts';
import { generateSigningKey, type SigningKey, signJson } from '../../src/protocol/signing.ts';
import { formatXMatrixHeader, requestSigningObject } from '../../src/protocol/x-matrix.ts';
import { formatSigningKey } from '../../src/services/server-keys.service.ts';
import type { DatabaseBackend } from './backends.ts';
import { type RunningProcess, runScript } from './process.ts';
import { startTestServer, type TestServer } from './server.ts';

interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** What the in-process transport needs of a server: fastify's inject. */
interface Injectable {
  inject(opts: {
    method: string;
    url: string;
    headers: Record<string, string>;
    payload?: Buffer;
  }): Promise<{ statusCode: number; headers: Record<string, unknown>; rawPayload: Buffer }>;
}

/**
 * Loopback federation without sockets: each server's transport hands a request to the
 * in-process server registered under its destination, through fastify's inject, with every
 * byte of the request (headers, signature) as sent. A destination that is not registered, or a
 * link the test has cut, is unreachable.
 */
export class InProcessNetwork {
  readonly servers = new Map<string, Injectable>();
  /** Every request sent, with the server that sent it. */
  readonly sent: Array<TransportRequest & { from: string }> = [];
  private readonly cuts = new Set<string>();

  /** The transport of server `from`. */
  transportFor(from: string): FederationTransport {
    return { send: (req) => this.deliver(from, req) };
  }

  /** Makes `a` and `b` unable to reach each other (both directions). */
  cut(a: string, b: string): void {
    this.cuts.add(`${a}\u0000${b}`).add(`${b}\u0000${a}`);
  }

  heal(a: string, b: string): void {
    this.cuts.delete(`${a}\u0000${b}`);
    this.cuts.delete(`${b}\u0000${a}`);
  }

  private async deliver(from: string, req: TransportRequest): Promise<TransportResponse> {
    this.sent.push({ ...req, from });
    const app = this.servers.get(req.destination);
    if (!app || this.cuts.has(`${from}\u0000${req.destination}`)) {
      throw new FederationError('unreachable', req.destination, 'no route to this in-process server');
    }
    const res = await app.inject({
      method: req.method,
      url: req.uri,
      headers: req.headers,
      ...(req.body ? { payload: Buffer.from(req.body) } : {}),
    });
    if (res.rawPayload.length > req.maxResponseBytes) {
      throw new FederationError('too-large', req.destination, 'response too large');
    }
    return {
      status: res.statusCode,
      headers: res.headers as TransportResponse['headers'],
      body: res.rawPayload,
    };
  }
}

/**
 * Starts one in-process homeserver per name, each with its own database, whose federation
 * clients reach one another through one InProcessNetwork.
 */
export async function startHomeservers(
  t: Teardownable,
  backend: DatabaseBackend,
  names: string[],
  overrides: (name: string) => Partial<Config> = () => ({}),
): Promise<{ servers: TestServer[]; network: InProcessNetwork }> {
  const network = new InProcessNetwork();
  const servers: TestServer[] = [];
  for (const name of names) {
    const s = await startTestServer(
      t,
      backend,
      { serverName: name, ...overrides(name) },
      { federationTransport: network.transportFor(name) },
    );
    network.servers.set(name, s.app);
    servers.push(s);
  }
  return { servers, network };
}

/** A signing identity the test controls (eve's server), to send raw signed requests with. */
export interface RawServer {
  serverName: string;
  key: SigningKey;
}

export function rawServer(serverName: string, keyVersion = 'eve1'): RawServer {
  return { serverName, key: generateSigningKey(`ed25519:${keyVersion}`) };
}

/** The X-Matrix header `from` would send for this request. */
export function xMatrixHeader(
  from: RawServer,
  req: { method: string; uri: string; destination: string; content?: unknown },
  opts: { headerDestination?: string | null } = {},
): string {
  const signed = signJson(
    requestSigningObject({
      method: req.method,
      uri: req.uri,
      origin: from.serverName,
      destination: req.destination,
      ...(req.content !== undefined ? { content: req.content as never } : {}),
    }),
    from.serverName,
    from.key.keyId,
    from.key.seed,
  );
  const sig = signed.signatures[from.serverName]![from.key.keyId]!;
  const destination = opts.headerDestination === undefined ? req.destination : opts.headerDestination;
  if (destination === null)
    return `X-Matrix origin="${from.serverName}",key="${from.key.keyId}",sig="${sig}"`;
  return formatXMatrixHeader({ origin: from.serverName, destination, key: from.key.keyId, sig });
}

/** The self-signed key response a raw server publishes at GET /_matrix/key/v2/server. */
export function rawServerKeys(
  from: RawServer,
  opts: { validUntilTs?: number; old?: Record<string, { key: string; expired_ts: number }> } = {},
) {
  return signJson(
    {
      server_name: from.serverName,
      valid_until_ts: opts.validUntilTs ?? Date.now() + 86_400_000,
      verify_keys: { [from.key.keyId]: { key: encodeBase64(from.key.publicKey) } },
      old_verify_keys: opts.old ?? {},
    },
    from.serverName,
    from.key.keyId,
    from.key.seed,
  );
}

// ---------------------------------------------------------------------------------------------
// Real processes over TLS on loopback

/** A CA made with openssl for one test, and certificates it issues for loopback addresses. */
export interface TestCa {
  dir: string;
  caFile: string;
  /** Issues a certificate for IP addresses or DNS names; returns the PEM file paths. */
  issue(name: string, ...more: string[]): { certFile: string; keyFile: string };
}

export function makeTestCa(t: Teardownable): TestCa {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const caFile = path.join(dir, 'ca.crt');
  /** A new P-256 key, unencrypted. */
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl([
    'req',
    '-x509',
    ...newKey,
    '-keyout',
    'ca.key',
    '-out',
    caFile,
    '-days',
    '2',
    '-subj',
    '/CN=Conclave test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  let serial = 0;
  return {
    dir,
    caFile,
    issue(name, ...more) {
      serial++;
      const base = `leaf${serial}`;
      const san = [name, ...more].map((n) => (net.isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
      writeFileSync(
        path.join(dir, `${base}.ext`),
        `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
      );
      ssl(['req', ...newKey, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${name}`]);
      ssl([
        'x509',
        '-req',
        '-in',
        `${base}.csr`,
        '-CA',
        caFile,
        '-CAkey',
        'ca.key',
        '-set_serial',
        String(1000 + serial),
        '-out',
        `${base}.crt`,
        '-days',
        '2',
        '-extfile',
        `${base}.ext`,
      ]);
      return { certFile: path.join(dir, `${base}.crt`), keyFile: path.join(dir, `${base}.key`) };
    },
  };
}

/** A free TCP port on `host` (a loopback address), found by binding port 0. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export interface HomeserverProcess {
  /** `127.0.0.N:<port>`: an IP literal with the federation TLS port, needing no DNS. */
  serverName: string;
  /** The plain HTTP client API, on 127.0.0.1. */
  base: string;
  proc: RunningProcess;
  /** The server's signing key, written to its signing_key_path by the test. */
  key: SigningKey;
  /** Stops the process (SIGTERM); its data directory stays. */
  stop(): Promise<void>;
  /** Starts it again on the same data directory and federation port (`base` and `proc` change). */
  start(): Promise<void>;
}

const CLIENT_LISTENING = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
const FEDERATION_LISTENING = /federation listening on https:\/\/[^ "]+/;

/**
 * Starts `count` homeservers as real processes, the i-th named `127.0.0.<i+2>:<port>` with a TLS
 * federation listener on that address and a certificate from `ca`, each trusting the CA through
 * federation_ca_file and with its own embedded database. Stopped with the test.
 */
export async function startHomeserverProcesses(
  t: Teardownable,
  ca: TestCa,
  count: number,
  env: (i: number) => Record<string, string> = () => ({}),
): Promise<HomeserverProcess[]> {
  // Started side by side: on a busy machine each start takes seconds.
  return Promise.all(
    Array.from({ length: count }, async (_, i): Promise<HomeserverProcess> => {
      const ip = `127.0.0.${i + 2}`;
      const port = await freePort(ip);
      const serverName = `${ip}:${port}`;
      const { certFile, keyFile } = ca.issue(ip);
      const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-hs-'));
      t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
      const key = generateSigningKey(`ed25519:p${i}`);
      const signingKeyPath = path.join(dataDir, 'signing.key');
      writeFileSync(signingKeyPath, formatSigningKey(key), { mode: 0o600 });
      const launch = async () => {
        const proc = runScript('src/server.ts', [], {
          CONCLAVE_SERVER_NAME: serverName,
          CONCLAVE_BIND_ADDRESS: '127.0.0.1',
          CONCLAVE_PORT: '0',
          CONCLAVE_DATA_DIR: dataDir,
          CONCLAVE_REGISTRATION: 'open',
          CONCLAVE_PASSWORD_HASH_COST: '10',
          CONCLAVE_LOG_LEVEL: 'info',
          CONCLAVE_DETECTION: 'off',
          CONCLAVE_SIGNING_KEY_PATH: signingKeyPath,
          CONCLAVE_FEDERATION_TLS_CERTIFICATE: certFile,
          CONCLAVE_FEDERATION_TLS_KEY: keyFile,
          CONCLAVE_FEDERATION_BIND_ADDRESS: ip,
          CONCLAVE_FEDERATION_PORT: String(port),
          CONCLAVE_FEDERATION_CA_FILE: ca.caFile,
          ...env(i),
        });
        t.teardown(() => proc.stop());
        // Generous: tsx compiles the server at each start, which takes long on a loaded machine.
        const line = await proc.waitForLine(CLIENT_LISTENING, 240_000);
        await proc.waitForLine(FEDERATION_LISTENING, 60_000);
        return { proc, base: `http://127.0.0.1:${CLIENT_LISTENING.exec(line)![1]}` };
      };
      const hs: HomeserverProcess = {
        serverName,
        ...(await launch()),
        key,
        async stop() {
          await hs.proc.stop();
        },
        async start() {
          Object.assign(hs, await launch());
        },
      };
      return hs;
    }),
  );
}

/**
 * A stand-in for a hostile or scripted server on the in-process network: it serves `keys()` at
 * GET /_matrix/key/v2/server and 404 elsewhere.
 */
export function rawServerEndpoint(keys: () => object): Injectable {
  return {
    async inject(opts) {
      const ok = opts.method === 'GET' && opts.url === '/_matrix/key/v2/server';
      const body = ok ? keys() : { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' };
      return {
        statusCode: ok ? 200 : 404,
        headers: { 'content-type': 'application/json' },
        rawPayload: Buffer.from(JSON.stringify(body)),
      };
    },
  };
}

/**
 * A hostile server the test scripts (eve's): a signing key, published to `network` under
 * `serverName` so that the homeservers can check its requests, and a way to send them a signed
 * transaction of EDUs.
 */
export function hostileServer(network: InProcessNetwork, serverName: string) {
  const raw = rawServer(serverName);
  network.servers.set(
    serverName,
    rawServerEndpoint(() => rawServerKeys(raw)),
  );
  return {
    raw,
    /** PUT /send/{txnId} from this server to `to`, carrying `edus` and no PDU. */
    sendEdus(to: TestServer, txnId: string, edus: unknown[]) {
      const destination = to.runtime.config.serverName;
      const content = { origin: serverName, origin_server_ts: Date.now(), pdus: [], edus };
      const uri = `/_matrix/federation/v1/send/${txnId}`;
      return to.app.inject({
        method: 'PUT',
        url: uri,
        headers: {
          authorization: xMatrixHeader(raw, { method: 'PUT', uri, destination, content }),
          'content-type': 'application/json',
        },
        payload: JSON.stringify(content),
      });
    },
  };
}
