/**
 * Synapse, the reference homeserver, as a real federation peer in tests: installed from PyPI into
 * a virtual environment the test makes (test/synapse/requirements.txt pins the version), run as a
 * process with a configuration written here (SQLite, rate limits lifted), its server name an IP
 * literal on loopback (127.0.0.N:port) whose federation listener serves TLS with a certificate
 * from the test's CA, and whose outbound federation trusts that CA and nothing else.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateSigningKey, type SigningKey } from '../../src/protocol/signing.ts';
import { formatSigningKey } from '../../src/services/server-keys.service.ts';
import { freePort, type TestCa } from './federation.ts';
import { pythonVenv } from './python-venv.ts';

export { pythonUnavailable } from './python-venv.ts';

const REQUIREMENTS = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'synapse',
  'requirements.txt',
);

/** The Python of the Synapse environment, and how long making it took (0 if it existed). */
export function synapsePython(): Promise<{ python: string; installMs: number }> {
  return pythonVenv('synapse', REQUIREMENTS);
}

interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface SynapseServer {
  /** `127.0.0.N:<port>`: the federation TLS listener, by IP literal (no DNS, no well-known). */
  serverName: string;
  /** The plain HTTP client API (and the admin API) on 127.0.0.1. */
  base: string;
  /** Its signing key, written by the test (so the test knows what it signs with). */
  key: SigningKey;
  dataDir: string;
  /** Stops the process (SIGTERM) and waits for its exit; the database stays. */
  stop(): Promise<void>;
  /** Starts it again on the same data and ports; resolves once both listeners answer. */
  start(): Promise<void>;
  /** The last `chars` characters of its log (for a failure's diagnostics). */
  logTail(chars?: number): string;
  /** Registers a user through the shared-secret admin API. */
  register(localpart: string, password?: string): Promise<{ user_id: string; access_token: string }>;
}

/** Every rate limit out of the way: tests send in bursts. */
const LIFTED = '{per_second: 100000, burst_count: 100000}';

function homeserverYaml(o: {
  serverName: string;
  ip: string;
  fedPort: number;
  clientPort: number;
  dir: string;
  certFile: string;
  keyFile: string;
  caFile: string;
  sharedSecret: string;
}): string {
  const q = (s: string) => JSON.stringify(s);
  return `server_name: ${q(o.serverName)}
pid_file: ${q(path.join(o.dir, 'homeserver.pid'))}
public_baseurl: "http://127.0.0.1:${o.clientPort}/"
listeners:
  - port: ${o.fedPort}
    bind_addresses: [${q(o.ip)}]
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [federation, keys]
        compress: false
  - port: ${o.clientPort}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
tls_certificate_path: ${q(o.certFile)}
tls_private_key_path: ${q(o.keyFile)}
federation_verify_certificates: true
federation_custom_ca_list: [${q(o.caFile)}]
# Synapse refuses outbound requests to loopback by default (and refuses IP-literal server names
# in its blocklist whatever the allowlist says); the peers of a test live on loopback, so the
# blocklist is the usual private ranges without 127.0.0.0/8.
ip_range_blacklist: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "192.0.0.0/24", "198.18.0.0/15", "fe80::/10", "fc00::/7"]
ip_range_whitelist: ["127.0.0.0/8"]
database:
  name: sqlite3
  args:
    database: ${q(path.join(o.dir, 'homeserver.db'))}
media_store_path: ${q(path.join(o.dir, 'media_store'))}
signing_key_path: ${q(path.join(o.dir, 'signing.key'))}
log_config: ${q(path.join(o.dir, 'log.yaml'))}
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: ${q(randomBytes(24).toString('hex'))}
form_secret: ${q(randomBytes(24).toString('hex'))}
enable_registration: false
registration_shared_secret: ${q(o.sharedSecret)}
bcrypt_rounds: 4
url_preview_enabled: false
caches:
  sync_response_cache_duration: 0
federation:
  # A destination that failed is retried after seconds (Synapse's default waits 10 minutes).
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 2
  destination_max_retry_interval: 8s
rc_message: ${LIFTED}
rc_room_creation: ${LIFTED}
rc_registration: ${LIFTED}
rc_login: {address: ${LIFTED}, account: ${LIFTED}, failed_attempts: ${LIFTED}}
rc_admin_redaction: ${LIFTED}
rc_joins: {local: ${LIFTED}, remote: ${LIFTED}}
rc_joins_per_room: ${LIFTED}
rc_invites: {per_room: ${LIFTED}, per_user: ${LIFTED}, per_issuer: ${LIFTED}}
rc_presence: {per_user: ${LIFTED}}
rc_federation: {window_size: 1000, sleep_limit: 1000, sleep_delay: 1, reject_limit: 100000, concurrent: 100}
federation_rr_transactions_per_room_per_second: 100000
`;
}

function logYaml(file: string): string {
  return `version: 1
formatters:
  precise: {format: '%(asctime)s %(name)s %(levelname)s %(request)s %(message)s'}
filters:
  context: {(): synapse.logging.context.LoggingContextFilter, request: ""}
handlers:
  file: {class: logging.FileHandler, filename: ${JSON.stringify(file)}, formatter: precise, filters: [context]}
loggers:
  synapse.storage.SQL: {level: WARNING}
  synapse.access.http: {level: WARNING}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
`;
}

/** Resolves when `check` resolves true, polling every 200 ms; rejects after `ms` or when `abort` says why. */
async function until(
  what: string,
  check: () => Promise<boolean>,
  ms: number,
  abort: () => string | undefined,
) {
  const deadline = Date.now() + ms;
  for (;;) {
    const reason = abort();
    if (reason) throw new Error(`${what}: ${reason}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Starts Synapse with its own server name `<ip>:<free port>`, a certificate for `ip` from `ca`, a
 * client listener on 127.0.0.1 and a fresh data directory; stopped and removed with the test.
 * Resolves once its client API and its TLS federation listener (serving its keys) answer.
 */
export async function startSynapse(
  t: Teardownable,
  opts: { python: string; ca: TestCa; ip?: string; startTimeoutMs?: number },
): Promise<SynapseServer> {
  const ip = opts.ip ?? '127.0.0.3';
  const startTimeoutMs = opts.startTimeoutMs ?? 180_000;
  const [fedPort, clientPort] = [await freePort(ip), await freePort('127.0.0.1')];
  const serverName = `${ip}:${fedPort}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-synapse-hs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'media_store'));
  const { certFile, keyFile } = opts.ca.issue(ip);
  const sharedSecret = randomBytes(24).toString('hex');
  // Synapse's key file has the format ours has: "ed25519 <version> <base64 seed>".
  const key = generateSigningKey(`ed25519:syn${randomBytes(2).toString('hex')}`);
  writeFileSync(path.join(dir, 'signing.key'), formatSigningKey(key), { mode: 0o600 });
  const logFile = path.join(dir, 'homeserver.log');
  writeFileSync(path.join(dir, 'log.yaml'), logYaml(logFile));
  const config = path.join(dir, 'homeserver.yaml');
  writeFileSync(
    config,
    homeserverYaml({
      serverName,
      ip,
      fedPort,
      clientPort,
      dir,
      certFile,
      keyFile,
      caFile: opts.ca.caFile,
      sharedSecret,
    }),
  );
  const base = `http://127.0.0.1:${clientPort}`;
  const ca = readFileSync(opts.ca.caFile);
  /** Synapse's keys over its TLS listener, the certificate checked against the test CA. */
  const federationAnswers = () =>
    new Promise<boolean>((resolve) => {
      const req = https.get(
        { host: ip, port: fedPort, path: '/_matrix/key/v2/server', ca, timeout: 5000 },
        (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        },
      );
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
    });

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let exitReason: string | undefined;
  const server: SynapseServer = {
    serverName,
    base,
    key,
    dataDir: dir,
    logTail(chars = 6000) {
      try {
        return readFileSync(logFile, 'utf8').slice(-chars);
      } catch {
        return '';
      }
    },
    async start() {
      if (child) throw new Error('Synapse is already running');
      // Its stdout and stderr (tracebacks before logging is set up) go to a file, not a pipe.
      const out = openSync(path.join(dir, 'stdout.log'), 'a');
      exitReason = undefined;
      const proc = spawn(opts.python, ['-m', 'synapse.app.homeserver', '-c', config], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LANG: 'C.UTF-8' },
        stdio: ['ignore', out, out],
      });
      closeSync(out);
      child = proc;
      exited = new Promise((resolve) =>
        proc.on('exit', (code, signal) => {
          exitReason = `Synapse exited (${code ?? signal}); ${readFileSync(path.join(dir, 'stdout.log'), 'utf8').slice(-3000)}`;
          if (child === proc) child = undefined;
          resolve();
        }),
      );
      try {
        await until(
          'Synapse to answer on its client and federation listeners',
          async () =>
            (await fetch(`${base}/_matrix/client/versions`)).status === 200 && (await federationAnswers()),
          startTimeoutMs,
          () => exitReason,
        );
      } catch (err) {
        await server.stop();
        throw new Error(`${(err as Error).message}\nlog tail:\n${server.logTail(3000)}`);
      }
    },
    async stop() {
      const proc = child;
      if (!proc) return;
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(killer);
      child = undefined;
    },
    async register(localpart, password = 'a long password') {
      const url = `${base}/_synapse/admin/v1/register`;
      const { nonce } = (await (await fetch(url)).json()) as { nonce: string };
      // The shared-secret registration's MAC: HMAC-SHA1 over nonce, user, password and "notadmin".
      const mac = createHmac('sha1', sharedSecret)
        .update([nonce, localpart, password, 'notadmin'].join('\u0000'))
        .digest('hex');
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ nonce, username: localpart, password, admin: false, mac }),
      });
      if (res.status !== 200)
        throw new Error(`Synapse register ${localpart}: ${res.status} ${await res.text()}`);
      return (await res.json()) as { user_id: string; access_token: string };
    },
  };
  t.teardown(() => server.stop());
  await server.start();
  return server;
}
