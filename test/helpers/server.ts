import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/app.ts';
import type { DetectionStore } from '../../src/bus/detection-store.ts';
import { type Config, defaultConfig } from '../../src/config.ts';
import type { FederationTransport } from '../../src/federation/index.ts';
import { type Runtime, startRuntime } from '../../src/runtime.ts';
import type { DatabaseBackend } from './backends.ts';

export const SERVER_NAME = 'conclave.test';
export const PASSWORD = 'correct horse battery';

/** Just what the harness needs of a tap test. */
interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface TestServer {
  app: FastifyInstance;
  runtime: Runtime;
  config: Config;
  backend: DatabaseBackend['name'];
  /** Sends a request through fastify's inject (no network). */
  request(
    method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'OPTIONS' | 'PATCH',
    url: string,
    opts?: { token?: string; body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string> },
  ): Promise<LightMyRequestResponse>;
  /** Registers a user (open registration) and returns its login. */
  register(localpart: string, opts?: { password?: string; deviceId?: string }): Promise<Login>;
  /** Logs an existing user in with PASSWORD, as the given device (a new one by default). */
  login(localpart: string, opts?: { deviceId?: string }): Promise<Login>;
  /** Creates a server admin (as `--admin` does) and logs them in. */
  registerAdmin(localpart: string): Promise<Login>;
}

export interface Login {
  user_id: string;
  device_id: string;
  access_token: string;
}

/**
 * Starts services and the app on a fresh database of the given backend, torn down with the test.
 * Defaults suit tests: open registration, a cheap (but still scrypt) password hash.
 */
export async function startTestServer(
  t: Teardownable,
  backend: DatabaseBackend,
  overrides: Partial<Config> = {},
  opts: {
    /** Receives every log line the app writes, at every level (trace and up). */
    logStream?: { write(line: string): void };
    /** Where the server's outbound federation requests go (test/helpers/federation.ts). */
    federationTransport?: FederationTransport;
    /** The built web client's folder, when the config serves it (web/dist by default). */
    webClientRoot?: string;
    /** Where the detectors count, for a test that sets their clock. */
    detectionStore?: DetectionStore;
    /** For PGlite: keep the database on disk under this folder (`<dir>/pglite`), not in memory. */
    pgliteDataDir?: string;
  } = {},
): Promise<TestServer> {
  const database = await backend.create();
  const config: Config = {
    ...defaultConfig(),
    serverName: SERVER_NAME,
    registration: 'open',
    passwordHashCost: 10,
    // Tests of the limits set their own; the rest must not trip over them.
    loginFailuresPerWindow: 1000,
    rateLimits: false,
    // The detectors are tested on their own (test/detection*.test.ts).
    detection: false,
    databaseUrl: database.url,
    dataDir: opts.pgliteDataDir ?? '',
    logLevel: 'silent',
    // The web client's files are not part of the API: only the tests of serving it turn it on.
    webClient: '',
    ...overrides,
  };
  const runtime = await startRuntime(config, {
    pgliteInMemory: opts.pgliteDataDir === undefined,
    ...(database.pgliteTemplate ? { pgliteTemplate: database.pgliteTemplate } : {}),
    ...(opts.federationTransport ? { federationTransport: opts.federationTransport } : {}),
    ...(opts.detectionStore ? { detectionStore: opts.detectionStore } : {}),
  });
  const app = await buildApp(runtime.services, {
    federation: runtime.federation,
    ...(opts.logStream ? { logger: { level: 'trace', stream: opts.logStream } } : {}),
    ...(opts.webClientRoot ? { webClientRoot: opts.webClientRoot } : {}),
  });
  t.teardown(async () => {
    await app.close();
    await runtime.close();
    await database.drop();
  });

  const request: TestServer['request'] = (method, url, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    let payload: string | Buffer | undefined;
    if (opts.rawBody !== undefined) payload = opts.rawBody;
    else if (opts.body !== undefined) {
      payload = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    return app.inject({ method, url, headers, ...(payload !== undefined ? { payload } : {}) });
  };

  const register: TestServer['register'] = async (localpart, opts = {}) => {
    const res = await request('POST', '/_matrix/client/v3/register', {
      body: {
        username: localpart,
        password: opts.password ?? PASSWORD,
        ...(opts.deviceId ? { device_id: opts.deviceId } : {}),
        auth: { type: 'm.login.dummy' },
      },
    });
    if (res.statusCode !== 200) throw new Error(`register ${localpart}: ${res.statusCode} ${res.body}`);
    return res.json() as Login;
  };

  const login: TestServer['login'] = async (localpart, opts = {}) => {
    const res = await request('POST', '/_matrix/client/v3/login', {
      body: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: localpart },
        password: PASSWORD,
        ...(opts.deviceId ? { device_id: opts.deviceId } : {}),
      },
    });
    if (res.statusCode !== 200) throw new Error(`login ${localpart}: ${res.statusCode} ${res.body}`);
    return res.json() as Login;
  };

  const registerAdmin: TestServer['registerAdmin'] = async (localpart) => {
    await runtime.services.accounts.createAccount({
      localpart,
      password: PASSWORD,
      admin: true,
      login: false,
    });
    return login(localpart);
  };

  return { app, runtime, config, backend: backend.name, request, register, login, registerAdmin };
}

/** GET /sync for `who` with the given query parameters; throws on anything but 200. */
export async function syncOnce(
  s: Pick<TestServer, 'request'>,
  who: Pick<Login, 'access_token'>,
  params: Record<string, string | number> = {},
  // biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
): Promise<Record<string, any>> {
  const qs = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
  const res = await s.request('GET', `/_matrix/client/v3/sync${qs ? `?${qs}` : ''}`, {
    token: who.access_token,
  });
  if (res.statusCode !== 200) throw new Error(`sync ${res.statusCode} ${res.body}`);
  return res.json();
}

/** A request as `who` that must answer 200; returns the body. */
export function okCaller(s: Pick<TestServer, 'request'>) {
  return async (
    method: 'GET' | 'POST' | 'PUT' | 'DELETE',
    url: string,
    who: Pick<Login, 'access_token'>,
    body?: unknown,
    // biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely in tests
  ): Promise<Record<string, any>> => {
    const res = await s.request(method, url, {
      token: who.access_token,
      ...(body !== undefined ? { body } : {}),
    });
    if (res.statusCode !== 200) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
    return res.json();
  };
}
