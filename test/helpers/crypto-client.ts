/**
 * Real end-to-end encryption clients for tests: unmodified matrix-js-sdk with its Rust crypto
 * (@matrix-org/matrix-sdk-crypto-wasm, a dependency of the SDK), talking to a Conclave server over
 * HTTP on 127.0.0.1.
 *
 * In Node the Rust crypto needs no browser: `initRustCrypto({ useIndexedDB: false })` keeps the
 * crypto store in memory (no IndexedDB, so no fake-indexeddb), and the wasm module loads from the
 * package's Node entry point. A device's keys therefore live as long as its MatrixClient: a "new
 * device" is a new login with a new client.
 *
 * The SDK does the protocol work by itself once started: it uploads device and one-time keys
 * (POST /keys/upload) after its first sync, tracks members' devices (/keys/query, driven by
 * device_lists in /sync), claims one-time keys (/keys/claim) and shares Megolm room keys by
 * to-device messages (/sendToDevice, received through to_device in /sync) before it encrypts.
 *
 * Nothing here logs an access token, a key or a message body.
 */

import './sdk-node.ts';
import type { AddressInfo } from 'node:net';
import {
  ClientEvent,
  ClientPrefix,
  createClient,
  EventType,
  Filter,
  type ICreateRoomOpts,
  type MatrixClient,
  MatrixError,
  MatrixEvent,
  MatrixEventEvent,
  Method,
  Preset,
  RoomEvent,
  SyncState,
  type UIAuthCallback,
} from 'matrix-js-sdk';
import {
  type CryptoApi,
  CryptoEvent,
  decodeRecoveryKey,
  type KeyBackupRestoreResult,
  type ShowSasCallbacks,
  VerificationPhase,
  type VerificationRequest,
  VerificationRequestEvent,
  type Verifier,
  VerifierEvent,
} from 'matrix-js-sdk/lib/crypto-api/index.js';
import { type Logger, logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import { VerificationMethod } from 'matrix-js-sdk/lib/types.js';
import type { Config } from '../../src/config.ts';
import type { DatabaseBackend } from './backends.ts';
import { recordingLogger } from './sdk-node.ts';
import { type Login, PASSWORD, startTestServer, type TestServer } from './server.ts';

/** CRYPTO_CLIENT_VERBOSE=1 prints every request (method, path, status) and the SDK's own log. */
const VERBOSE = process.env.CRYPTO_CLIENT_VERBOSE === '1';

// The SDK's global logger (used by MatrixEvent and MatrixRTC, not by the clients, which get a
// recording logger each) prints expected undecryptable events as warnings, and its child loggers
// print debug lines whatever the level. Unless verbose, let only its errors through: children copy
// this method factory when made.
if (!VERBOSE) {
  type LogMethodFactory = (
    method: string,
    level: number,
    name: string | symbol,
  ) => (...args: unknown[]) => void;
  const root = sdkGlobalLogger as unknown as { methodFactory: LogMethodFactory; rebuild(): void };
  const print = root.methodFactory;
  root.methodFactory = (method, level, name) => (method === 'error' ? print(method, level, name) : () => {});
  root.rebuild();
}

export const MEGOLM = 'm.megolm.v1.aes-sha2';

/** Just what the harness needs of a tap test. */
interface Teardownable {
  teardown(fn: () => unknown): void;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` every 20 ms; resolves with the ms it took, or undefined after `ms`. */
export async function within(
  ms: number,
  check: () => boolean | Promise<boolean>,
): Promise<number | undefined> {
  const started = performance.now();
  while (!(await check())) {
    if (performance.now() - started > ms) return undefined;
    await sleep(20);
  }
  return performance.now() - started;
}

/** Resolves with `promise`, or rejects naming `what` after `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A conclave test server listening on an ephemeral port of 127.0.0.1. */
export async function startHttpTestServer(
  t: Teardownable,
  backend: DatabaseBackend,
  overrides: Partial<Config> = {},
): Promise<{ server: TestServer; baseUrl: string; logs: string[] }> {
  // Everything the server logs, at every level, so tests can show no secret ever reaches it.
  const logs: string[] = [];
  const server = await startTestServer(t, backend, overrides, {
    logStream: { write: (line) => logs.push(line) },
  });
  await server.app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = server.app.server.address() as AddressInfo;
  return { server, baseUrl: `http://127.0.0.1:${port}`, logs };
}

/** One HTTP exchange of an SDK client with the server. */
export interface Exchange {
  who: string;
  method: string;
  path: string;
  status: number;
  /** The error code of a failed request. */
  errcode?: string;
  /** The response body of a failed request (an error object: no secrets). */
  errorBody?: string;
  /** The request body, kept only for paths matching the harness's `keepRequestBodies`. */
  requestBody?: string;
}

/**
 * Password UIA for POST /keys/device_signing/upload: first without auth (a server may accept a
 * first upload without it), then, on a 401 challenge, with m.login.password in the given session.
 */
export function passwordUia(userId: string, password: string): UIAuthCallback<void> {
  return async (makeRequest) => {
    try {
      await makeRequest(null);
    } catch (err) {
      const session = err instanceof MatrixError ? err.data.session : undefined;
      if (!(err instanceof MatrixError) || err.httpStatus !== 401 || typeof session !== 'string') throw err;
      await makeRequest({
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: userId },
        password,
        session,
      });
    }
  };
}

/** Where an event stands in one client's room. */
export type DecryptionState =
  | { state: 'absent' }
  | { state: 'pending' }
  | { state: 'failed'; reason: string }
  /** Not encrypted on the wire (in an encrypted room, a fault of the sender). */
  | { state: 'clear'; type: string }
  | { state: 'decrypted'; type: string; body: unknown };

/** A room key received by to-device message (type, room and session: never the key itself). */
export interface ReceivedRoomKey {
  type: string;
  roomId: string;
  sessionId: string;
  sender: string;
  /** Whether it came Olm-encrypted, as a room key must. */
  encrypted: boolean;
}

/**
 * Creates and tracks the SDK clients of one test: records every exchange with the server and the
 * SDK's warnings and errors, and stops every client on teardown.
 */
export class CryptoHarness {
  readonly exchanges: Exchange[] = [];
  readonly sdkLog: { level: string; line: string }[] = [];
  private readonly clients: CryptoClient[] = [];
  private readonly anonymous: MatrixClient;

  constructor(
    t: Teardownable,
    readonly baseUrl: string,
    private readonly opts: { keepRequestBodies?: RegExp } = {},
  ) {
    this.anonymous = createClient({
      baseUrl,
      fetchFn: this.recordingFetch('anonymous'),
      logger: recordingLogger('anonymous', this.sdkLog, VERBOSE),
    });
    // The clients stop before the server closes: tap runs teardowns last-registered first.
    t.teardown(() => this.stopAll());
  }

  /** The access tokens of every client made so far (to show they never reach a log). */
  accessTokens(): string[] {
    return this.clients.map((c) => c.client.getAccessToken()).filter((tok): tok is string => !!tok);
  }

  /** The exchanges that failed. */
  get failures(): Exchange[] {
    return this.exchanges.filter((e) => e.status >= 400);
  }

  /** fetch that records every exchange (and, verbose, prints method, path and status). */
  recordingFetch(who: string): typeof fetch {
    return async (input, init) => {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
      const method = init?.method ?? 'GET';
      const res = await fetch(input, init);
      const exchange: Exchange = { who, method, path: url.pathname, status: res.status };
      if (this.opts.keepRequestBodies?.test(url.pathname) && typeof init?.body === 'string') {
        exchange.requestBody = init.body;
      }
      if (!res.ok) {
        exchange.errorBody = await res.clone().text();
        try {
          const errcode = (JSON.parse(exchange.errorBody) as { errcode?: unknown }).errcode;
          if (typeof errcode === 'string') exchange.errcode = errcode;
        } catch {
          // not JSON
        }
      }
      this.exchanges.push(exchange);
      if (VERBOSE) console.error(`${who} ${res.status} ${method} ${url.pathname}`);
      return res;
    };
  }

  /** Registers a user with m.login.dummy and the test password; returns its first login. */
  async register(localpart: string): Promise<Login> {
    const res = await this.anonymous.registerRequest({
      username: localpart,
      password: PASSWORD,
      auth: { type: 'm.login.dummy' },
    });
    if (!res.access_token || !res.device_id) throw new Error(`registering ${localpart} gave no session`);
    return { user_id: res.user_id, access_token: res.access_token, device_id: res.device_id };
  }

  /** Registers a user without logging in (no device): for a client that logs in by itself. */
  async registerOnly(localpart: string): Promise<string> {
    const res = await this.anonymous.registerRequest({
      username: localpart,
      password: PASSWORD,
      auth: { type: 'm.login.dummy' },
      inhibit_login: true,
    });
    return res.user_id;
  }

  /** Logs in with the test password: a new device of the user. */
  async login(userId: string): Promise<Login> {
    const res = await this.anonymous.loginWithPassword(userId, PASSWORD);
    return { user_id: res.user_id, access_token: res.access_token, device_id: res.device_id };
  }

  /**
   * A client of `login`'s device with Rust crypto initialised (in-memory store). `recoveryKey`
   * (the encoded form shown to users) lets it open secret storage, as a user typing it would.
   */
  async client(who: string, login: Login, opts: { recoveryKey?: string } = {}): Promise<CryptoClient> {
    const c = await CryptoClient.create({
      who,
      baseUrl: this.baseUrl,
      login,
      password: PASSWORD,
      fetchFn: this.recordingFetch(who),
      logger: recordingLogger(who, this.sdkLog, VERBOSE),
      ...(opts.recoveryKey !== undefined ? { recoveryKey: opts.recoveryKey } : {}),
    });
    this.clients.push(c);
    return c;
  }

  stopAll(): void {
    for (const c of this.clients) c.stop();
    this.anonymous.stopClient();
  }
}

/** One device: a MatrixClient with Rust crypto, and what the tests ask of it. */
export class CryptoClient {
  readonly userId: string;
  readonly deviceId: string;
  /** Room keys this device received by to-device message, in order of arrival. */
  readonly roomKeys: ReceivedRoomKey[] = [];
  /** The type of every to-device message this device received (decrypted where it could be). */
  readonly toDeviceTypes: string[] = [];
  /** Secret storage keys this client knows, by key ID (set when it creates one). */
  private readonly secretStorageKeys = new Map<string, Uint8Array<ArrayBuffer>>();
  private recoveryKey: Uint8Array<ArrayBuffer> | undefined;
  private stopped = false;

  private constructor(
    readonly who: string,
    readonly client: MatrixClient,
    private readonly password: string,
  ) {
    const userId = client.getUserId();
    const deviceId = client.getDeviceId();
    if (!userId || !deviceId) throw new Error('a crypto client needs a user ID and a device ID');
    this.userId = userId;
    this.deviceId = deviceId;
    client.on(ClientEvent.ReceivedToDeviceMessage, ({ message, encryptionInfo }) => {
      this.toDeviceTypes.push(message.type);
      if (message.type === EventType.RoomKey || message.type === EventType.ForwardedRoomKey) {
        const content = message.content as { room_id?: unknown; session_id?: unknown };
        this.roomKeys.push({
          type: message.type,
          roomId: String(content.room_id),
          sessionId: String(content.session_id),
          sender: message.sender,
          encrypted: encryptionInfo !== null,
        });
      }
    });
  }

  static async create(opts: {
    who: string;
    baseUrl: string;
    login: Login;
    password: string;
    fetchFn: typeof fetch;
    logger: Logger;
    recoveryKey?: string;
  }): Promise<CryptoClient> {
    let self: CryptoClient | undefined;
    const client = createClient({
      baseUrl: opts.baseUrl,
      fetchFn: opts.fetchFn,
      logger: opts.logger,
      timelineSupport: true,
      userId: opts.login.user_id,
      accessToken: opts.login.access_token,
      deviceId: opts.login.device_id,
      // Emoji SAS only: no QR codes between two headless clients.
      verificationMethods: [VerificationMethod.Sas],
      cryptoCallbacks: {
        getSecretStorageKey: async ({ keys }) => self?.secretStorageKeyFor(Object.keys(keys)) ?? null,
        cacheSecretStorageKey: (keyId, _info, key) => {
          self?.secretStorageKeys.set(keyId, key);
        },
      },
    });
    self = new CryptoClient(opts.who, client, opts.password);
    if (opts.recoveryKey !== undefined) self.recoveryKey = decodeRecoveryKey(opts.recoveryKey);
    // In-memory crypto store: Node has no IndexedDB.
    await client.initRustCrypto({ useIndexedDB: false });
    return self;
  }

  private secretStorageKeyFor(keyIds: string[]): [string, Uint8Array<ArrayBuffer>] | null {
    for (const id of keyIds) {
      const key = this.secretStorageKeys.get(id);
      if (key) return [id, key];
    }
    // The recovery key the user typed: offered for the (single) key asked for.
    const [first] = keyIds;
    if (this.recoveryKey && first !== undefined) return [first, this.recoveryKey];
    return null;
  }

  get crypto(): CryptoApi {
    const crypto = this.client.getCrypto();
    if (!crypto) throw new Error(`${this.who}: crypto is not initialised`);
    return crypto;
  }

  /**
   * Starts syncing and resolves after the first sync. The timeline limit is large enough that no
   * incremental sync of these tests is gappy.
   */
  async start(opts: { initialSyncLimit?: number; pollTimeout?: number } = {}): Promise<void> {
    const filter = new Filter(this.userId);
    filter.setDefinition({ room: { timeline: { limit: 100 } } });
    const prepared = new Promise<void>((resolve, reject) => {
      const onSync = (state: SyncState) => {
        if (state === SyncState.Prepared || state === SyncState.Error) {
          this.client.off(ClientEvent.Sync, onSync);
          if (state === SyncState.Prepared) resolve();
          else reject(new Error(`${this.who}: the first sync failed`));
        }
      };
      this.client.on(ClientEvent.Sync, onSync);
    });
    await this.client.startClient({
      initialSyncLimit: opts.initialSyncLimit ?? 50,
      filter,
      pollTimeout: opts.pollTimeout ?? 10_000,
    });
    await withTimeout(prepared, 30_000, `${this.who}'s first sync`);
  }

  /** Whether this device's keys are published: the server answered a POST /keys/upload with 200. */
  keysUploaded(harness: CryptoHarness): boolean {
    return harness.exchanges.some(
      (e) => e.who === this.who && e.method === 'POST' && e.path.endsWith('/keys/upload') && e.status === 200,
    );
  }

  /** Creates a private room with m.room.encryption (Megolm) in its initial state. */
  async createEncryptedRoom(opts: { name: string; invite?: string[] }): Promise<string> {
    const options: ICreateRoomOpts = {
      preset: Preset.PrivateChat,
      name: opts.name,
      initial_state: [{ type: EventType.RoomEncryption, state_key: '', content: { algorithm: MEGOLM } }],
      ...(opts.invite ? { invite: opts.invite } : {}),
    };
    const { room_id } = await this.client.createRoom(options);
    return room_id;
  }

  /** Waits until this client's sync shows its user with `membership` in the room. */
  waitForMembership(roomId: string, membership: string, ms = 10_000): Promise<number | undefined> {
    return within(ms, () => this.client.getRoom(roomId)?.getMyMembership() === membership);
  }

  /** Waits until this client's room shows `userId` with `membership`. */
  waitForMember(
    roomId: string,
    userId: string,
    membership: string,
    ms = 10_000,
  ): Promise<number | undefined> {
    return within(ms, () => this.client.getRoom(roomId)?.getMember(userId)?.membership === membership);
  }

  /** Waits until the crypto layer knows the room is encrypted (from its m.room.encryption state). */
  waitForEncryptedRoom(roomId: string, ms = 10_000): Promise<number | undefined> {
    return within(ms, () => this.crypto.isEncryptionEnabledInRoom(roomId));
  }

  /** Sends an m.text message; in an encrypted room the SDK encrypts it first. Returns its event ID. */
  async send(roomId: string, body: string): Promise<string> {
    const { event_id } = await this.client.sendTextMessage(roomId, body);
    return event_id;
  }

  /** The event as the server serves it (GET /rooms/{roomId}/event/{eventId}): the wire form. */
  async serverEvent(
    roomId: string,
    eventId: string,
  ): Promise<{ type?: string; content?: Record<string, unknown> }> {
    return (await this.client.fetchRoomEvent(roomId, eventId)) as {
      type?: string;
      content?: Record<string, unknown>;
    };
  }

  /** The Megolm session ID of an encrypted event, read from its content as the server has it. */
  async sessionIdOf(roomId: string, eventId: string): Promise<string | undefined> {
    const content = (await this.serverEvent(roomId, eventId)).content;
    return typeof content?.session_id === 'string' ? content.session_id : undefined;
  }

  /** Where an event stands in this client's copy of the room. */
  decryption(roomId: string, eventId: string): DecryptionState {
    const event = this.client.getRoom(roomId)?.findEventById(eventId);
    if (!event) return { state: 'absent' };
    if (event.isBeingDecrypted() || event.shouldAttemptDecryption()) return { state: 'pending' };
    if (event.isDecryptionFailure())
      return { state: 'failed', reason: String(event.decryptionFailureReason) };
    if (!event.isEncrypted()) return { state: 'clear', type: event.getType() };
    return { state: 'decrypted', type: event.getType(), body: event.getContent().body };
  }

  /**
   * Waits until every event is in this client's room and decrypted, woken by each decryption
   * (MatrixEventEvent.Decrypted) and timeline event; returns each event's state when all are
   * decrypted or `ms` has passed. An event that failed to decrypt may still decrypt when its key
   * arrives later, so failures are waited on too.
   */
  async waitForDecrypted(
    roomId: string,
    eventIds: string[],
    ms = 15_000,
  ): Promise<Map<string, DecryptionState>> {
    const states = () => new Map(eventIds.map((id) => [id, this.decryption(roomId, id)] as const));
    const done = () => [...states().values()].every((s) => s.state === 'decrypted');
    if (!done()) {
      await new Promise<void>((resolve) => {
        const check = () => {
          if (done()) finish();
        };
        const timer = setTimeout(() => finish(), ms);
        const poll = setInterval(check, 250);
        const finish = () => {
          clearTimeout(timer);
          clearInterval(poll);
          this.client.off(MatrixEventEvent.Decrypted, check);
          this.client.off(RoomEvent.Timeline, check);
          resolve();
        };
        this.client.on(MatrixEventEvent.Decrypted, check);
        this.client.on(RoomEvent.Timeline, check);
      });
    }
    return states();
  }

  /**
   * Asks this device's crypto to decrypt an event it got some other way (say, fetched by another
   * member): tells whether this device holds the key.
   */
  async tryDecrypt(raw: Record<string, unknown>): Promise<DecryptionState> {
    const event = new MatrixEvent(raw);
    await this.client.decryptEventIfNeeded(event);
    if (event.isDecryptionFailure())
      return { state: 'failed', reason: String(event.decryptionFailureReason) };
    if (!event.isEncrypted()) return { state: 'clear', type: event.getType() };
    return { state: 'decrypted', type: event.getType(), body: event.getContent().body };
  }

  /** Fetches (or refetches) a user's devices through /keys/query; resolves with their IDs. */
  async devicesOf(userId: string): Promise<string[]> {
    const map = await this.crypto.getUserDeviceInfo([userId], true);
    return [...(map.get(userId)?.keys() ?? [])];
  }

  /**
   * Creates cross-signing keys, uploads them (POST /keys/device_signing/upload, with password UIA
   * if the server asks) and signs this device with them (POST /keys/signatures/upload).
   */
  async bootstrapCrossSigning(): Promise<void> {
    await this.crypto.bootstrapCrossSigning({
      authUploadDeviceSigningKeys: passwordUia(this.userId, this.password),
    });
  }

  /**
   * Sets up secret storage with a new random recovery key, stores the cross-signing keys in it
   * (if this device has them) and creates a key backup whose decryption key is stored there too.
   * Returns the recovery key, encoded as shown to users (the caller must not log it), and the
   * backup version.
   */
  async setupKeyBackup(): Promise<{ recoveryKey: string; version: string }> {
    const key = await this.crypto.createRecoveryKeyFromPassphrase();
    if (!key.encodedPrivateKey) throw new Error('the SDK made a recovery key without its encoded form');
    await this.crypto.bootstrapSecretStorage({
      createSecretStorageKey: async () => key,
      setupNewSecretStorage: true,
      setupNewKeyBackup: true,
    });
    const version = await this.crypto.getActiveSessionBackupVersion();
    if (!version) throw new Error(`${this.who}: key backup is not active after setting it up`);
    return { recoveryKey: key.encodedPrivateKey, version };
  }

  /** The session IDs the server holds in backup `version` for the room (GET /room_keys/keys). */
  async backedUpSessions(version: string, roomId: string): Promise<string[]> {
    const res = await this.client.http.authedRequest<{
      rooms?: Record<string, { sessions?: Record<string, unknown> }>;
    }>(Method.Get, '/room_keys/keys', { version }, undefined, { prefix: ClientPrefix.V3 });
    return Object.keys(res.rooms?.[roomId]?.sessions ?? {});
  }

  /**
   * Waits until the SDK's backup loop (which starts up to 10 s after a new key, by design) has
   * uploaded each of `sessionIds` to the backup.
   */
  waitForBackup(
    version: string,
    roomId: string,
    sessionIds: string[],
    ms = 30_000,
  ): Promise<number | undefined> {
    return within(ms, async () => {
      const held = await this.backedUpSessions(version, roomId);
      return sessionIds.every((id) => held.includes(id));
    });
  }

  /**
   * On a new device: fetches the backup decryption key from secret storage (opened with the
   * recovery key given at creation), then downloads and imports every key in the backup.
   */
  async restoreKeyBackup(): Promise<KeyBackupRestoreResult> {
    await this.crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    return this.crypto.restoreKeyBackup();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.client.stopClient();
    this.client.removeAllListeners();
  }
}

/** Resolves when `request` reaches `phase` (or rejects if it is cancelled first). */
function phaseReached(request: VerificationRequest, phase: VerificationPhase): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (request.phase === phase || (phase !== VerificationPhase.Done && request.phase > phase)) {
        request.off(VerificationRequestEvent.Change, check);
        resolve();
      } else if (request.phase === VerificationPhase.Cancelled) {
        request.off(VerificationRequestEvent.Change, check);
        reject(new Error(`verification cancelled (${request.cancellationCode ?? 'no code'})`));
      }
    };
    request.on(VerificationRequestEvent.Change, check);
    check();
  });
}

/** Resolves with the SAS a verifier shows (its emoji), as soon as it has one. */
function sasShown(verifier: Verifier): Promise<ShowSasCallbacks> {
  const shown = verifier.getShowSasCallbacks();
  if (shown) return Promise.resolve(shown);
  return new Promise((resolve) => verifier.once(VerifierEvent.ShowSas, resolve));
}

/**
 * Interactive emoji (SAS) verification of `b`'s device by `a`'s device, through to-device
 * messages: a requests, b accepts, a starts SAS, both compare the emoji they are shown and, when
 * they match, both confirm. Resolves with the emoji names each side showed.
 */
export async function verifyBySas(
  a: CryptoClient,
  b: CryptoClient,
  ms = 30_000,
): Promise<{ aEmoji: string[]; bEmoji: string[] }> {
  // Each must know the other's device keys (the SDK asks /keys/query).
  await a.devicesOf(b.userId);
  await b.devicesOf(a.userId);

  const received = new Promise<VerificationRequest>((resolve) => {
    const onRequest = (request: VerificationRequest) => {
      if (request.otherUserId === a.userId && request.otherDeviceId === a.deviceId) {
        b.client.off(CryptoEvent.VerificationRequestReceived, onRequest);
        resolve(request);
      }
    };
    b.client.on(CryptoEvent.VerificationRequestReceived, onRequest);
  });
  const requestA = await a.crypto.requestDeviceVerification(b.userId, b.deviceId);
  const requestB = await withTimeout(received, ms, `${b.who} receives the verification request`);
  await requestB.accept();
  await withTimeout(
    phaseReached(requestA, VerificationPhase.Ready),
    ms,
    `${a.who} sees the request accepted`,
  );

  const verifierA = await requestA.startVerification(VerificationMethod.Sas);
  await withTimeout(phaseReached(requestB, VerificationPhase.Started), ms, `${b.who} sees SAS started`);
  const verifierB = requestB.verifier;
  if (!verifierB) throw new Error(`${b.who} has no verifier after SAS started`);

  const shownA = sasShown(verifierA);
  const shownB = sasShown(verifierB);
  const doneA = verifierA.verify();
  const doneB = verifierB.verify();
  // A failure of one side shows up here, not only as a timeout.
  doneA.catch(() => {});
  doneB.catch(() => {});
  const [sasA, sasB] = await withTimeout(Promise.all([shownA, shownB]), ms, 'both sides show the SAS');
  const names = (sas: ShowSasCallbacks) => (sas.sas.emoji ?? []).map(([, name]) => name);
  const aEmoji = names(sasA);
  const bEmoji = names(sasB);
  if (aEmoji.length !== 7 || aEmoji.join() !== bEmoji.join()) {
    sasA.mismatch();
    sasB.mismatch();
    throw new Error('the two devices show different emoji');
  }
  await Promise.all([sasA.confirm(), sasB.confirm()]);
  await withTimeout(Promise.all([doneA, doneB]), ms, 'both verifiers finish');
  await withTimeout(
    Promise.all([
      phaseReached(requestA, VerificationPhase.Done),
      phaseReached(requestB, VerificationPhase.Done),
    ]),
    ms,
    'both requests are done',
  );
  return { aEmoji, bEmoji };
}
