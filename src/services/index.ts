import { createHash } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import { type DetectionStore, MemoryDetectionStore } from '../bus/detection-store.ts';
import { NamespacedBus } from '../bus/namespaced-bus.ts';
import { MemoryRateLimitStore, type RateLimitStore } from '../bus/rate-limit-store.ts';
import type { Config } from '../config.ts';
import { EventsService } from '../events/events.service.ts';
import { PreverifiedSignatures } from '../events/preverified.ts';
import { type E2eeEduCounts, registerE2eeEdus } from '../federation/inbound/e2ee-edus.ts';
import { FederationRoomsService } from '../federation/inbound/federation-rooms.service.ts';
import { OutOfBandMemberships } from '../federation/inbound/invites.ts';
import { registerRoomEdus } from '../federation/inbound/room-edus.ts';
import { createFederation, type Federation, type FederationTransport } from '../federation/index.ts';
import { Backfiller } from '../federation/outbound/backfill.ts';
import { RemoteJoins } from '../federation/outbound/remote-join.ts';
import { OutboundE2eeEdus } from '../federation/sender/e2ee-edus.ts';
import { FederationSender } from '../federation/sender/federation-sender.ts';
import { OutboundEdus } from '../federation/sender/room-edus.ts';
import { MediaService } from '../media/media.service.ts';
import { allowList } from '../media/url-preview.ts';
import { resolveState } from '../protocol/state-res/index.ts';
import type { Db } from '../storage/connect.ts';
import { destinationsWithBacklog } from '../storage/federation.repository.ts';
import { Notifier } from '../streams/notifier.ts';
import { currentPosition } from '../streams/positions.ts';
import { AccountExtrasService } from './account-extras.service.ts';
import { AccountsService } from './accounts.service.ts';
import { ReportsService } from './admin/reports.service.ts';
import { AdminRoomsService } from './admin/rooms.admin.ts';
import { ServerNoticesService } from './admin/server-notices.service.ts';
import { AdminTokensService } from './admin/tokens.admin.ts';
import { AdminUsersService } from './admin/users.admin.ts';
import { AuditLog } from './audit-log.ts';
import { Detection, WebhookSink } from './detection/detection.service.ts';
import { alertSinkOf, ServerNotices } from './detection/notices.ts';
import { PolicyLists } from './detection/policy-lists.ts';
import { UserStateRestrictions } from './detection/restrictions.ts';
import { DeviceExpiryService } from './device-expiry.service.ts';
import { DeviceLists } from './device-lists.ts';
import { DirectoryService } from './directory.service.ts';
import { FiltersService } from './filters.service.ts';
import { HistoryService } from './history.service.ts';
import { KeyBackupService } from './key-backup.service.ts';
import { KeysService } from './keys.service.ts';
import { Metrics } from './metrics.ts';
import { PresenceService } from './presence.service.ts';
import { ProfileService } from './profile.service.ts';
import { PushService } from './push.service.ts';
import { PushRulesService } from './push-rules.service.ts';
import { RateLimits } from './rate-limits.ts';
import { ReceiptsService } from './receipts.service.ts';
import { RegistrationTokensService } from './registration-tokens.service.ts';
import { RelationsService } from './relations.service.ts';
import { RemoteKeys } from './remote-keys.service.ts';
import { RetentionService } from './retention/retention.service.ts';
import { RoomReader } from './room-reads.ts';
import { RoomRolesService } from './room-roles.service.ts';
import { RoomUpgradesService } from './room-upgrades.service.ts';
import { RoomsService } from './rooms.service.ts';
import { SearchService } from './search.service.ts';
import { ServerKeysService } from './server-keys.service.ts';
import { SessionCache } from './session-cache.ts';
import { SpacesService } from './spaces.service.ts';
import { SyncService } from './sync.service.ts';
import { ToDeviceService } from './to-device.service.ts';
import { TypingService } from './typing.service.ts';
import { UiaService } from './uia.service.ts';
import { UserDirectoryService } from './user-directory.service.ts';

/** Every service of one server process, built once and shared by routes, the admin command and tests. */
export interface Services {
  config: Config;
  db: Db;
  bus: Bus;
  uia: UiaService;
  accounts: AccountsService;
  profile: ProfileService;
  filters: FiltersService;
  pushRules: PushRulesService;
  /** Pushers, notifications and their delivery to push gateways (spec/push.md). */
  push: PushService;
  registrationTokens: RegistrationTokensService;
  serverKeys: ServerKeysService;
  notifier: Notifier;
  reader: RoomReader;
  events: EventsService;
  rooms: RoomsService;
  directory: DirectoryService;
  history: HistoryService;
  /** POST /rooms/{roomId}/upgrade (src/services/room-upgrades.service.ts). */
  roomUpgrades: RoomUpgradesService;
  typing: TypingService;
  receipts: ReceiptsService;
  sync: SyncService;
  keyBackup: KeyBackupService;
  keys: KeysService;
  /** Keys of users of other servers: the cache and the queries (m.device_list_update and m.signing_key_update go to it). */
  remoteKeys: RemoteKeys;
  toDevice: ToDeviceService;
  presence: PresenceService;
  userDirectory: UserDirectoryService;
  relations: RelationsService;
  /** Server-side search (spec/search.md). */
  search: SearchService;
  /** Room summaries and the space hierarchy (spec/spaces.md). */
  spaces: SpacesService;
  accountExtras: AccountExtrasService;
  /** The outbound client and the key ring (src/federation). */
  federation: Federation;
  /** The room side of the server-server API as this server answers it. */
  federationRooms: FederationRoomsService;
  /** Membership events of rooms this server is not in: remote invites, rejections, knocks. */
  outOfBand: OutOfBandMemberships;
  /** Outbound PDUs and EDUs, one queue per destination (EDUs: sender.queueEdu). */
  sender: FederationSender;
  /** Typing, receipts and presence of our users, handed to the sender for other servers. */
  outboundEdus: OutboundEdus;
  outboundE2eeEdus: OutboundE2eeEdus;
  /** What the inbound m.device_list_update, m.signing_key_update and m.direct_to_device handlers did. */
  e2eeEdus: E2eeEduCounts;
  rateLimits: RateLimits;
  /** Security-relevant actions, for admins (spec/audit-log.md). */
  audit: AuditLog;
  /** The media repository (src/media, spec/media.md); its quarantineMedia, deleteMedia and listUserMedia are for admins. */
  media: MediaService;
  /** What server admins do (spec/admin.md): the admin API and the admin command call these. */
  admin: {
    users: AdminUsersService;
    rooms: AdminRoomsService;
    reports: ReportsService;
    notices: ServerNoticesService;
    tokens: AdminTokensService;
  };
  /** Roles, permissions and expiries of room members (spec/admin.md). */
  roomRoles: RoomRolesService;
  /** Detectors of suspicious activity and their responses (spec/detection.md). */
  detection: Detection;
  /** Locked and suspended accounts. */
  restrictions: UserStateRestrictions;
  /** The admins' server-notices room, where detector alerts go. */
  alertNotices: ServerNotices;
  /** Shared ban lists (policy rooms). */
  policy: PolicyLists;
  metrics: Metrics;
  /** Device inactivity expiry (spec/account.md). */
  deviceExpiry: DeviceExpiryService;
  /** Retention policies, the purge job and admin purges (spec/retention.md). */
  retention: RetentionService;
  /** Stops background work (bus subscriptions, timers). */
  stop(): Promise<void>;
}

export async function createServices(deps: {
  config: Config;
  db: Db;
  bus: Bus;
  /** Where outbound federation requests go; HTTPS with server discovery by default. */
  federationTransport?: FederationTransport;
  /** Where rate limit buckets live: Redis for several processes; process memory by default. */
  rateLimitStore?: RateLimitStore;
  /** Where the detectors count: Redis for several processes; process memory by default. */
  detectionStore?: DetectionStore;
}): Promise<Services> {
  const { config, db } = deps;
  const uia = new UiaService(db);
  const registrationTokens = new RegistrationTokensService(db);
  const serverKeys = new ServerKeysService(db, config.serverName, Date.now, config.signingKeyPath);
  await serverKeys.init();
  // Every process of this homeserver shares the signing keys (they live in the database), and no
  // other homeserver has them: the first key's fingerprint, which rotation keeps, keeps our bus
  // channels apart from theirs.
  const namespace = `conclave.${createHash('sha256').update(serverKeys.firstPublicKey).digest('hex').slice(0, 16)}`;
  const bus = new NamespacedBus(deps.bus, namespace);
  const rateLimits = new RateLimits(deps.rateLimitStore ?? new MemoryRateLimitStore(), config, namespace);
  const sessions = new SessionCache(bus);
  await sessions.start();
  const notifier = new Notifier(bus);
  await notifier.start(() => currentPosition(db));
  notifier.watchBus(() => currentPosition(db));
  const typing = new TypingService(bus, notifier);
  await typing.start();
  const reader = new RoomReader();
  const federation = createFederation({
    config,
    db,
    serverKeys,
    ...(deps.federationTransport ? { transport: deps.federationTransport } : {}),
  });
  // Remote signatures are checked through the key ring before a room's lock is taken; ours with
  // our keys in memory (see PreverifiedSignatures).
  const signatures = new PreverifiedSignatures(serverKeys, federation.keyRing);
  const events = new EventsService(db, config, serverKeys, notifier, reader, resolveState, signatures);
  const sender = new FederationSender(db, config.serverName, federation.client);
  events.setOutbox(sender);
  const federationRooms = new FederationRoomsService(
    db,
    config.serverName,
    events,
    reader,
    signatures,
    federation.client,
    serverKeys,
  );
  const outOfBand = new OutOfBandMemberships(db, config.serverName, serverKeys, events, signatures);
  federationRooms.setOutOfBand(outOfBand);
  const remoteJoins = new RemoteJoins(
    config.serverName,
    serverKeys,
    events,
    signatures,
    federation.client,
    outOfBand,
    reader,
  );
  const rooms = new RoomsService(db, config, events, reader);
  rooms.setRemoteJoins(remoteJoins);
  const history = new HistoryService(db, rooms, reader);
  const backfiller = new Backfiller(db, config.serverName, events, signatures, federation.client, reader);
  history.setBackfill((roomId, limit) => backfiller.backfill(roomId, limit));
  await sender.start();
  const deviceLists = new DeviceLists(db, notifier);
  const audit = new AuditLog(db);
  const accounts = new AccountsService(
    db,
    config,
    uia,
    registrationTokens,
    deviceLists,
    rateLimits,
    audit,
    sessions,
  );
  const metrics = new Metrics();
  metrics.watchFederationQueues(async () => ({
    destinations: (await destinationsWithBacklog(db)).length,
    sending: sender.sending,
  }));
  const restrictions = new UserStateRestrictions(db, () => admin.users);
  const policy = new PolicyLists(db, config.policyRooms);
  rooms.setPolicy(policy);
  const detection = new Detection(
    db,
    config,
    deps.detectionStore ?? new MemoryDetectionStore(),
    rateLimits,
    audit,
    restrictions,
    metrics,
    namespace,
  );
  const alertNotices = new ServerNotices(db, accounts, rooms);
  detection.addSink(alertSinkOf(alertNotices));
  if (config.detectionWebhookUrl !== '') {
    detection.addSink(new WebhookSink(config.detectionWebhookUrl, config.serverName));
  }
  accounts.setDetection(detection);
  const keys = new KeysService(db, config, accounts, deviceLists, notifier);
  const directory = new DirectoryService(db, config, rooms);
  directory.setRemote((alias) => remoteJoins.resolveAlias(alias));
  const profile = new ProfileService(db, config.serverName, notifier, events);
  profile.setRemote(federation.client);
  const remoteKeys = new RemoteKeys(db, config.serverName, federation.client, deviceLists);
  keys.setRemote(remoteKeys);
  const toDevice = new ToDeviceService(db, config, notifier);
  if (config.toDeviceEncryptedRequiresCrossSigning) {
    toDevice.requireCrossSigned(
      (userIds) => keys.crossSignedDevices(userIds),
      (count) => metrics.toDeviceDroppedUnverified.inc(count),
    );
  }
  const media = new MediaService({
    db,
    config: config.media,
    serverName: config.serverName,
    dataDir: config.dataDir,
    bus,
    audit,
    remote: federation.client,
  });
  await media.start();
  const roomRoles = new RoomRolesService(db, rooms, events, reader, audit);
  roomRoles.start(config.roomExpiryIntervalMs);
  const sync = new SyncService(db, rooms, reader, notifier, typing, { keys, toDevice });
  const retention = new RetentionService({
    config,
    db,
    bus,
    events,
    rooms,
    reader,
    audit,
    // What the processes cache of events goes with them.
    forgetCaches: () => {
      reader.clear();
      sync.forgetCachedRows();
    },
  });
  // Media whose last referencing event a purge or room deletion removed go after it.
  retention.setMediaHook(() => media.deleteUnreferenced('policy:retention'));
  await retention.start();
  const notices = new ServerNoticesService(db, config, rooms, events, audit);
  const admin = {
    users: new AdminUsersService(db, config, accounts, rooms, audit),
    rooms: new AdminRoomsService(db, config, rooms, events, reader, audit, retention),
    reports: new ReportsService(db, rooms, notices, audit),
    notices,
    tokens: new AdminTokensService(registrationTokens, audit),
  };
  const deviceExpiry = new DeviceExpiryService(db, config, accounts, audit);
  deviceExpiry.start();
  const presence = new PresenceService(db, config, notifier);
  sync.setPresence(presence);
  presence.start();
  const receipts = new ReceiptsService(db, rooms, notifier);
  // EDUs (server-server API): ours go out through the sender's queues; others' come in through
  // the dispatcher of inbound transactions (src/federation/inbound/edus.ts).
  const outboundEdus = new OutboundEdus(db, config.serverName, sender, typing);
  typing.setListener((roomId, userId, isTyping, until) => {
    outboundEdus.typingChanged(roomId, userId, isTyping, until).catch(() => {});
  });
  receipts.setListener((r) => {
    outboundEdus.receiptSent(r).catch(() => {});
  });
  presence.setListener((u) => {
    outboundEdus.presenceChanged(u).catch(() => {});
  });
  registerRoomEdus(federationRooms.edus, {
    db,
    serverName: config.serverName,
    typing,
    receipts,
    presence,
    serverAllowed: (roomId, server) => federationRooms.serverAllowed(roomId, server),
  });
  const outboundE2eeEdus = new OutboundE2eeEdus(db, config.serverName, sender, keys);
  deviceLists.setLocalDevicesChanged((userId, position, deviceIds) =>
    outboundE2eeEdus.devicesChanged(userId, position, deviceIds),
  );
  // Called after commit: a failure to queue is not the client's (its change is made).
  keys.setSigningKeyUpdates((userId, update) =>
    outboundE2eeEdus.signingKeysChanged(userId, update).catch(() => {}),
  );
  toDevice.setRemoteDelivery((m) => outboundE2eeEdus.toDevice(m).catch(() => {}));
  const e2eeEdus = registerE2eeEdus(federationRooms.edus, {
    serverName: config.serverName,
    remoteKeys,
    toDevice,
  });
  const pushRules = new PushRulesService(db, notifier);
  rooms.setUpgradeCarryOver((userId, oldRoomId, newRoomId) =>
    pushRules.copyRoomRules(userId, oldRoomId, newRoomId),
  );
  const push = new PushService(
    db,
    config.serverName,
    pushRules,
    reader,
    notifier,
    allowList(config.pushGatewayAllowAddresses),
  );
  push.start();
  return {
    config,
    db,
    bus,
    uia,
    registrationTokens,
    serverKeys,
    accounts,
    profile,
    filters: new FiltersService(db),
    pushRules,
    push,
    notifier,
    reader,
    events,
    rooms,
    directory,
    history,
    roomUpgrades: new RoomUpgradesService(db, rooms, events, reader),
    typing,
    receipts,
    sync,
    presence,
    userDirectory: new UserDirectoryService(db),
    relations: new RelationsService(db, rooms, reader),
    search: new SearchService(db, rooms, reader, history),
    spaces: new SpacesService(db, rooms, reader),
    accountExtras: new AccountExtrasService(db, config, accounts, rooms),
    keyBackup: new KeyBackupService(db),
    keys,
    remoteKeys,
    toDevice,
    federation,
    federationRooms,
    outOfBand,
    sender,
    outboundEdus,
    outboundE2eeEdus,
    e2eeEdus,
    rateLimits,
    audit,
    media,
    admin,
    roomRoles,
    detection,
    restrictions,
    alertNotices,
    policy,
    metrics,
    retention,
    deviceExpiry,
    async stop() {
      await push.stop();
      await deviceExpiry.stop();
      await media.stop();
      await roomRoles.stop();
      await retention.stop();
      sender.stop();
      outboundEdus.stop();
      await remoteKeys.settled();
      federation.close();
      await typing.stop();
      await presence.stop();
      await sessions.stop();
      await notifier.stop();
    },
  };
}
