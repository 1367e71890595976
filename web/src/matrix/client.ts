import {
  ClientEvent,
  createClient,
  EventType,
  type ICreateRoomOpts,
  type MatrixClient,
  MatrixEventEvent,
  Preset,
  type Room,
  RoomEvent,
  RoomMemberEvent,
  RoomStateEvent,
  SyncState,
  Visibility,
} from 'matrix-js-sdk';
import { CryptoEvent, decodeRecoveryKey, EventShieldColour } from 'matrix-js-sdk/lib/crypto-api/index.js';
import { messageContent } from './markdown.ts';
import { Media } from './media.ts';
import type { Session } from './session.ts';
import { Verifications } from './verification.ts';
import { type Transport, WebSocketSync } from './ws-sync.ts';

/** The state of this device's end-to-end encryption, as the UI shows it. */
export type SecurityState =
  | { kind: 'starting' }
  | { kind: 'ready' }
  /** Cross-signing and key backup were just set up: the user must save this key. */
  | { kind: 'created'; recoveryKey: string }
  /** The account has cross-signing already, and this new device is not yet part of it. */
  | { kind: 'needs-recovery' }
  | { kind: 'unavailable'; reason: string };

type UiaRequest = (auth: Record<string, unknown> | null) => Promise<unknown>;

/** Answers a 401 of user-interactive auth with the account's password. */
function passwordAuth(userId: string, password: string) {
  return async <T>(makeRequest: (auth: Record<string, unknown> | null) => Promise<T>): Promise<T> => {
    try {
      return await makeRequest(null);
    } catch (err) {
      const data = (err as { data?: { session?: string; flows?: unknown } }).data;
      if (!data?.flows) throw err;
      return makeRequest({
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: userId },
        password,
        session: data.session,
      });
    }
  };
}

/**
 * Conclave Web's one door to Matrix: a matrix-js-sdk client with Rust crypto, synced over
 * Conclave's WebSocket (long-poll when that fails), and the actions the UI offers. Components
 * read through `version` (bumped on every change the SDK reports) and call these methods; they
 * never talk to the SDK's HTTP API themselves.
 */
export class ConclaveClient {
  readonly matrix: MatrixClient;
  readonly session: Session;
  private readonly sync: WebSocketSync;
  private listeners = new Set<() => void>();
  private scheduled = false;
  private secretKeys = new Map<string, Uint8Array<ArrayBuffer>>();
  private offeredKey: Uint8Array<ArrayBuffer> | null = null;
  version = 0;
  transport: Transport | null = null;
  syncState: SyncState | null = null;
  security: SecurityState = { kind: 'starting' };
  readonly verifications: Verifications;
  /** Uploads (with their progress) and authenticated downloads. */
  readonly media: Media;

  constructor(session: Session) {
    this.session = session;
    this.media = new Media({
      baseUrl: session.baseUrl,
      accessToken: () => session.accessToken,
      isEncrypted: (roomId) => this.matrix.getRoom(roomId)?.hasEncryptionStateEvent() ?? false,
      sendMessage: async (roomId, content) => {
        // biome-ignore lint/suspicious/noExplicitAny: an m.image / m.file content built by fileMessageContent
        await this.matrix.sendMessage(roomId, content as any);
      },
      changed: () => this.changed(),
    });
    this.sync = new WebSocketSync({
      baseUrl: session.baseUrl,
      accessToken: () => session.accessToken,
      fetch: (input, init) => globalThis.fetch(input, init),
      onTransport: (t) => {
        this.transport = t;
        this.changed();
      },
    });
    this.matrix = createClient({
      baseUrl: session.baseUrl,
      userId: session.userId,
      deviceId: session.deviceId,
      accessToken: session.accessToken,
      fetchFn: this.sync.fetchFn,
      timelineSupport: true,
      cryptoCallbacks: {
        getSecretStorageKey: async ({ keys }) => {
          for (const id of Object.keys(keys)) {
            const known = this.secretKeys.get(id);
            if (known) return [id, known];
          }
          const first = Object.keys(keys)[0];
          return first && this.offeredKey ? [first, this.offeredKey] : null;
        },
        cacheSecretStorageKey: (keyId, _info, key) => {
          this.secretKeys.set(keyId, key);
        },
      },
    });
    const bump = () => this.changed();
    const m = this.matrix;
    m.on(ClientEvent.Sync, (state) => {
      this.syncState = state;
      bump();
    });
    m.on(ClientEvent.Room, bump);
    m.on(ClientEvent.DeleteRoom, bump);
    m.on(RoomEvent.Timeline, bump);
    m.on(RoomEvent.TimelineReset, bump);
    m.on(RoomEvent.Name, bump);
    m.on(RoomEvent.MyMembership, bump);
    m.on(RoomEvent.Receipt, bump);
    m.on(RoomEvent.LocalEchoUpdated, bump);
    m.on(RoomStateEvent.Events, bump);
    m.on(RoomMemberEvent.Typing, bump);
    m.on(RoomMemberEvent.PowerLevel, bump);
    m.on(MatrixEventEvent.Decrypted, bump);
    m.on(CryptoEvent.UserTrustStatusChanged, bump);
    m.on(CryptoEvent.DevicesUpdated, bump);
    m.on(CryptoEvent.KeyBackupStatus, bump);
    this.verifications = new Verifications(m, bump);
    this.verifications.onDone = (self) => {
      if (self && this.security.kind === 'needs-recovery') void this.afterSelfVerification();
    };
  }

  /**
   * Once another of the account's devices has verified this one, it sends this one the secrets
   * (cross-signing keys, the backup key): when the backup key is here, restore from the backup.
   */
  private async afterSelfVerification(): Promise<void> {
    const crypto = this.matrix.getCrypto();
    if (!crypto) return;
    for (let i = 0; i < 50; i++) {
      const status = await crypto.getDeviceVerificationStatus(this.userId, this.session.deviceId);
      if (status?.crossSigningVerified) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    this.setSecurity({ kind: 'ready' });
    for (let i = 0; i < 50; i++) {
      if (await crypto.getSessionBackupPrivateKey()) {
        await crypto.checkKeyBackupAndEnable();
        await crypto.restoreKeyBackup().catch(() => undefined);
        return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  // Change notification, for React's useSyncExternalStore.

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getVersion = (): number => this.version;

  /** Coalesces the SDK's many events into one render per task. */
  changed(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.version++;
      for (const l of [...this.listeners]) l();
    });
  }

  get userId(): string {
    return this.session.userId;
  }

  // Lifecycle

  /** Starts crypto (IndexedDB) and the sync loop; resolves when the first sync is in. */
  async start(): Promise<void> {
    try {
      await this.matrix.initRustCrypto({ useIndexedDB: true, cryptoDatabasePrefix: 'conclave' });
    } catch (err) {
      this.security = { kind: 'unavailable', reason: (err as Error).message };
    }
    const prepared = new Promise<void>((resolve) => {
      const onSync = (state: SyncState) => {
        if (state === SyncState.Prepared || state === SyncState.Syncing) {
          this.matrix.off(ClientEvent.Sync, onSync);
          resolve();
        }
      };
      this.matrix.on(ClientEvent.Sync, onSync);
    });
    await this.matrix.startClient({ initialSyncLimit: 30, lazyLoadMembers: false });
    await prepared;
    this.changed();
  }

  stop(): void {
    this.sync.stop();
    this.matrix.stopClient();
    this.matrix.removeAllListeners();
  }

  /** Signs this device out and forgets everything it stored. */
  async signOut(): Promise<void> {
    try {
      await this.matrix.logout(true);
    } finally {
      this.stop();
      await this.matrix.clearStores().catch(() => undefined);
    }
  }

  // End-to-end encryption

  /**
   * Called after sign-in. On the account's first device (no cross-signing keys yet) it sets up
   * cross-signing, secret storage and key backup, and returns the recovery key to show once.
   * On a later device it says that the recovery key is needed; on a known device, ready.
   */
  async setUpEncryption(password: string | null): Promise<SecurityState> {
    const crypto = this.matrix.getCrypto();
    if (!crypto) return this.setSecurity({ kind: 'unavailable', reason: 'no crypto' });
    try {
      const hasKeys = await crypto.userHasCrossSigningKeys(this.userId, true);
      if (!hasKeys) {
        if (password === null) return this.setSecurity({ kind: 'ready' });
        await crypto.bootstrapCrossSigning({
          authUploadDeviceSigningKeys: passwordAuth(this.userId, password),
        });
        let recoveryKey = '';
        await crypto.bootstrapSecretStorage({
          createSecretStorageKey: async () => {
            const key = await crypto.createRecoveryKeyFromPassphrase();
            recoveryKey = key.encodedPrivateKey ?? '';
            return key;
          },
          setupNewSecretStorage: true,
          setupNewKeyBackup: true,
        });
        return this.setSecurity({ kind: 'created', recoveryKey });
      }
      const status = await crypto.getDeviceVerificationStatus(this.userId, this.session.deviceId);
      if (status?.crossSigningVerified) {
        await crypto.checkKeyBackupAndEnable();
        return this.setSecurity({ kind: 'ready' });
      }
      return this.setSecurity({ kind: 'needs-recovery' });
    } catch (err) {
      return this.setSecurity({ kind: 'unavailable', reason: (err as Error).message });
    }
  }

  private setSecurity(state: SecurityState): SecurityState {
    this.security = state;
    this.changed();
    return state;
  }

  acknowledgeRecoveryKey(): void {
    this.setSecurity({ kind: 'ready' });
  }

  /**
   * With the recovery key: this device takes the account's cross-signing keys from secret
   * storage (and so is verified), then restores the room keys from the backup. Returns how many
   * room keys were imported; throws 'bad-key' when the key does not open secret storage.
   */
  async restoreWithRecoveryKey(text: string): Promise<number> {
    const crypto = this.matrix.getCrypto();
    if (!crypto) throw new Error('no crypto');
    let key: Uint8Array<ArrayBuffer>;
    try {
      key = decodeRecoveryKey(text.trim());
    } catch {
      throw new Error('bad-key');
    }
    const keyId = await this.matrix.secretStorage.getDefaultKeyId();
    const described = keyId ? await this.matrix.secretStorage.getKey(keyId) : null;
    if (!keyId || !described || !(await this.matrix.secretStorage.checkKey(key, described[1]))) {
      throw new Error('bad-key');
    }
    this.secretKeys.set(keyId, key);
    this.offeredKey = key;
    await crypto.bootstrapCrossSigning({});
    await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    await crypto.checkKeyBackupAndEnable();
    const result = await crypto.restoreKeyBackup();
    this.setSecurity({ kind: 'ready' });
    return result.imported;
  }

  /** True when the event's sender or sending device is not verified, or its keys are in doubt. */
  async senderWarning(roomId: string, eventId: string): Promise<boolean> {
    const event = this.matrix.getRoom(roomId)?.findEventById(eventId);
    const crypto = this.matrix.getCrypto();
    if (!event || !crypto || !event.isEncrypted()) return false;
    const info = await crypto.getEncryptionInfoForEvent(event);
    return info !== null && info.shieldColour !== EventShieldColour.NONE;
  }

  /** Whether we have verified this user (cross-signing). */
  async isUserVerified(userId: string): Promise<boolean> {
    const status = await this.matrix.getCrypto()?.getUserVerificationStatus(userId);
    return status?.isVerified() ?? false;
  }

  // Rooms

  rooms(): Room[] {
    return this.matrix.getRooms();
  }

  room(roomId: string): Room | null {
    return this.matrix.getRoom(roomId);
  }

  /** Private rooms are invite-only and end-to-end encrypted; public ones are listed and open. */
  async createRoom(opts: { name: string; topic: string; alias: string; visibility: 'private' | 'public' }) {
    const request: ICreateRoomOpts = {
      name: opts.name,
      ...(opts.topic ? { topic: opts.topic } : {}),
      ...(opts.alias ? { room_alias_name: opts.alias } : {}),
    };
    if (opts.visibility === 'public') {
      request.preset = Preset.PublicChat;
      request.visibility = Visibility.Public;
    } else {
      request.preset = Preset.PrivateChat;
      request.visibility = Visibility.Private;
      request.initial_state = [
        { type: EventType.RoomEncryption, state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } },
      ];
    }
    const { room_id } = await this.matrix.createRoom(request);
    return room_id;
  }

  async join(roomIdOrAlias: string): Promise<string> {
    const room = await this.matrix.joinRoom(roomIdOrAlias.trim());
    return room.roomId;
  }

  /** Asks to join a room whose join rule is knock; its members see the request and answer it. */
  async knock(roomIdOrAlias: string): Promise<string> {
    const { room_id } = await this.matrix.knockRoom(roomIdOrAlias.trim());
    return room_id;
  }

  async invite(roomId: string, userId: string): Promise<void> {
    await this.matrix.invite(roomId, userId.trim());
  }

  async leave(roomId: string): Promise<void> {
    await this.matrix.leave(roomId);
  }

  async publicRooms() {
    const res = await this.matrix.publicRooms({ limit: 50 });
    return res.chunk;
  }

  async sendMessage(roomId: string, text: string): Promise<void> {
    // biome-ignore lint/suspicious/noExplicitAny: a plain m.text content; the SDK's union type wants a relation form
    await this.matrix.sendMessage(roomId, messageContent(text) as any);
  }

  /** Loads older events into the live timeline; false once the start of the room is reached. */
  async loadOlder(roomId: string, limit = 40): Promise<boolean> {
    const room = this.matrix.getRoom(roomId);
    if (!room) return false;
    const timeline = room.getLiveTimeline();
    return this.matrix.paginateEventTimeline(timeline, { backwards: true, limit });
  }

  setTyping(roomId: string, typing: boolean): void {
    void this.matrix.sendTyping(roomId, typing, typing ? 20_000 : 0).catch(() => undefined);
  }

  /** Sends a read receipt for the newest event of the room, when it is not ours already. */
  markRead(roomId: string): void {
    const room = this.matrix.getRoom(roomId);
    const events = room?.getLiveTimeline().getEvents() ?? [];
    const last = [...events].reverse().find((e) => e.getId()?.startsWith('$'));
    if (!room || !last) return;
    if (room.hasUserReadEvent(this.userId, last.getId()!)) return;
    void this.matrix.sendReadReceipt(last).catch(() => undefined);
  }

  // Moderation and settings

  async kick(roomId: string, userId: string, reason?: string) {
    await this.matrix.kick(roomId, userId, reason);
  }
  async ban(roomId: string, userId: string, reason?: string) {
    await this.matrix.ban(roomId, userId, reason);
  }
  async unban(roomId: string, userId: string) {
    await this.matrix.unban(roomId, userId);
  }
  async setPowerLevel(roomId: string, userId: string, level: number) {
    await this.matrix.setPowerLevel(roomId, userId, level);
  }
  async setRoomState(roomId: string, type: string, content: Record<string, unknown>) {
    // biome-ignore lint/suspicious/noExplicitAny: the SDK types state content per event type
    await this.matrix.sendStateEvent(roomId, type as any, content as any, '');
  }

  // Devices

  async devices() {
    return (await this.matrix.getDevices()).devices;
  }
  async renameDevice(deviceId: string, name: string) {
    await this.matrix.setDeviceDetails(deviceId, { display_name: name });
  }
  async deleteDevice(deviceId: string, password: string) {
    const auth = passwordAuth(this.userId, password);
    await auth((a: Record<string, unknown> | null) =>
      this.matrix.deleteMultipleDevices([deviceId], a as never),
    );
  }
}

export type { UiaRequest };
