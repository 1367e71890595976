import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_ROOM_VERSION, getRoomVersion } from './protocol/room-versions.ts';

/**
 * Conclave's configuration. Sources, later ones winning: defaults, the YAML file named by
 * CONCLAVE_CONFIG, then CONCLAVE_* environment variables. Every key is documented in README.md.
 */
export type RegistrationMode = 'open' | 'token' | 'closed';

/** A token bucket: it refills at `perSecond` and holds at most `burst` requests. */
export interface RateRule {
  perSecond: number;
  burst: number;
}

/**
 * Endpoint families with a rate limit of their own (spec/limits.md lists the endpoints of each).
 * Login failures and registrations keep their own settings below.
 */
export const RATE_LIMIT_FAMILIES = [
  'send',
  'join',
  'invite',
  'create_room',
  'keys_upload',
  'keys_claim',
  'to_device',
  'media',
  'admin',
  'client',
] as const;
export type RateLimitFamily = (typeof RATE_LIMIT_FAMILIES)[number];

/** Per device: requests a second and burst. A user gets rateLimitUserFactor times, an address rateLimitAddressFactor times. */
const DEFAULT_RATES: Record<RateLimitFamily, RateRule> = {
  send: { perSecond: 10, burst: 50 },
  join: { perSecond: 2, burst: 20 },
  invite: { perSecond: 2, burst: 20 },
  create_room: { perSecond: 0.5, burst: 10 },
  keys_upload: { perSecond: 2, burst: 20 },
  keys_claim: { perSecond: 10, burst: 50 },
  to_device: { perSecond: 10, burst: 100 },
  media: { perSecond: 5, burst: 50 },
  admin: { perSecond: 5, burst: 50 },
  client: { perSecond: 20, burst: 200 },
};

/**
 * Detectors of suspicious activity (spec/detection.md). Each counts something per subject (a
 * user, an account or an address) over a window; the baselines compare a user's current rate
 * with their own usual one.
 */
export const DETECTORS = [
  'failed_logins_account',
  'failed_logins_address',
  'registrations_address',
  'message_flood',
  'invite_flood',
  'join_flood',
  'room_creation_flood',
  'stranger_invites',
  'key_flood',
  'to_device_flood',
  'login_addresses',
  'message_baseline',
  'invite_baseline',
] as const;
export type DetectorName = (typeof DETECTORS)[number];
export const DETECTOR_RESPONSES = ['throttle', 'lock', 'suspend', 'notify'] as const;
export type DetectorResponse = (typeof DETECTOR_RESPONSES)[number];

/**
 * `count` events in `windowMs` trigger a detector. For the baselines: `count` is the factor over
 * the user's usual rate and `windowMs` the length of one measured period.
 */
export interface DetectorRule {
  count: number;
  windowMs: number;
}

const MIN = 60_000;
const HOUR = 60 * MIN;
const DEFAULT_DETECTORS: Record<DetectorName, DetectorRule & { responses: DetectorResponse[] }> = {
  failed_logins_account: { count: 20, windowMs: HOUR, responses: ['notify'] },
  failed_logins_address: { count: 30, windowMs: HOUR, responses: ['notify'] },
  registrations_address: { count: 10, windowMs: HOUR, responses: ['notify'] },
  message_flood: { count: 300, windowMs: MIN, responses: ['throttle', 'notify'] },
  invite_flood: { count: 50, windowMs: 10 * MIN, responses: ['throttle', 'notify'] },
  join_flood: { count: 50, windowMs: 10 * MIN, responses: ['throttle', 'notify'] },
  room_creation_flood: { count: 20, windowMs: 10 * MIN, responses: ['throttle', 'notify'] },
  stranger_invites: { count: 20, windowMs: HOUR, responses: ['throttle', 'notify'] },
  key_flood: { count: 200, windowMs: MIN, responses: ['throttle', 'notify'] },
  to_device_flood: { count: 600, windowMs: MIN, responses: ['throttle', 'notify'] },
  login_addresses: { count: 5, windowMs: 10 * MIN, responses: ['notify'] },
  message_baseline: { count: 10, windowMs: MIN, responses: ['notify'] },
  invite_baseline: { count: 10, windowMs: 10 * MIN, responses: ['notify'] },
};

export interface Config {
  serverName: string;
  bindAddress: string;
  port: number;
  dataDir: string;
  /** postgres:// URL; empty means the embedded PGlite database under dataDir. */
  databaseUrl: string;
  /** redis:// URL; empty means the in-process bus. */
  redisUrl: string;
  registration: RegistrationMode;
  /** Largest request body accepted, in bytes. */
  maxRequestBytes: number;
  /** log2 of the scrypt cost parameter N for password hashes (N = 2^passwordHashCost). */
  passwordHashCost: number;
  /** Failed logins allowed per account and per address in a window before 429. */
  loginFailuresPerWindow: number;
  loginFailureWindowMs: number;
  /** Registrations allowed per address in a window before 429. */
  registrationsPerWindow: number;
  registrationWindowMs: number;
  /** Whether the per-family request rate limits apply (login and registration limits always do). */
  rateLimits: boolean;
  /** Per family: requests a second and burst, per device. */
  rateLimitRules: Record<RateLimitFamily, RateRule>;
  /** A user's bucket holds and refills this many times a device's. */
  rateLimitUserFactor: number;
  /** An address's bucket (many users behind one NAT) holds and refills this many times a device's. */
  rateLimitAddressFactor: number;
  /** Users never rate-limited (server admins never are either). */
  rateLimitExemptUsers: string[];
  /** Whether the detectors run (spec/detection.md). */
  detection: boolean;
  /** Per detector: `count` in `windowMs` (baselines: factor and period). */
  detectorRules: Record<DetectorName, DetectorRule>;
  /** Per detector: what happens when it fires (an audit record always does). */
  detectorResponses: Record<DetectorName, DetectorResponse[]>;
  /** A baseline judges a user only after this many periods of activity... */
  detectionBaselineMinPeriods: number;
  /** ...and only a current period holding at least this many events. */
  detectionBaselineMinCount: number;
  /** The stricter limit of a throttled user or address, and for how long it holds. */
  detectionThrottleRule: RateRule;
  detectionThrottleMs: number;
  /** One alert per detector and subject in this time; later hits are counted, not re-announced. */
  detectionAlertCooldownMs: number;
  /** Alerts are also POSTed as JSON to this URL; empty: no webhook. */
  detectionWebhookUrl: string;
  /** Policy rooms (IDs or aliases) whose m.policy.rule.* bans this server enforces. */
  policyRooms: string[];
  /** GET /metrics: '' off, 'main' on the main port, or `host:port` of a listener of its own. */
  metricsListen: string;
  /** A WebSocket sync client further behind than this many unsent bytes is disconnected (code 4008). */
  wsMaxBufferedBytes: number;
  /** How often the room expiry job looks for memberships and roles that have expired (spec/admin.md). */
  roomExpiryIntervalMs: number;
  /** Lifetime of access tokens given to clients that asked for a refresh token (spec/account.md). */
  accessTokenLifetimeMs: number;
  /** Lifetime of each refresh token (a refresh gives a new one); 0: they do not expire. */
  refreshTokenLifetimeMs: number;
  /** Devices unused this long are signed out and their keys removed; 0: never (spec/account.md). */
  deviceInactivityExpiryMs: number;
  /** How often the device expiry job runs, when the expiry is on. */
  deviceExpiryIntervalMs: number;
  /**
   * Whether m.room.encrypted to-device messages (room keys) are delivered only to devices
   * cross-signed by their user's self-signing key; others' are dropped (spec/e2ee.md).
   */
  toDeviceEncryptedRequiresCrossSigning: boolean;
  /**
   * Whether GET /profile/{userId} (and its fields) needs an access token: on by default, so that
   * no one can list an institution's users anonymously (spec/divergences.md).
   */
  requireAuthForProfileRequests: boolean;
  /** Public base URL clients use, for .well-known; derived from the server name when empty. */
  publicBaseUrl: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** A file with this server's signing key (`ed25519 <version> <base64 seed>`); empty: generated. */
  signingKeyPath: string;
  /** Notary servers asked for keys that a server does not serve itself. Empty: none. */
  trustedKeyServers: TrustedKeyServer[];
  /** A PEM bundle of CAs trusted for outbound federation in addition to the system's. */
  federationCaFile: string;
  /**
   * A file of fixed addresses for server names (`<server name> <host>:<port>` per line),
   * consulted before server discovery and read again when it changes; empty: none.
   */
  federationHostsFile: string;
  /** Certificate and key (PEM) of the federation TLS listener; both empty: no TLS listener. */
  federationTlsCertificate: string;
  federationTlsKey: string;
  /** Address of the federation TLS listener; empty means bind_address. */
  federationBindAddress: string;
  federationPort: number;
  /** URL path the web client is served under ('/' or '/chat/', always ending in '/'); empty: not served. */
  webClient: string;
  /** The room version of rooms created without one (one the server supports). */
  defaultRoomVersion: string;
  /** Whether presence is kept and shared (spec/presence.md). */
  presence: boolean;
  /** An online user idle this long becomes unavailable, and offline after presenceOfflineMs. */
  presenceIdleMs: number;
  presenceOfflineMs: number;
  /** TURN servers for /voip/turnServer, with coturn's shared secret (use-auth-secret). */
  turnUris: string[];
  turnSharedSecret: string;
  turnUserLifetimeMs: number;
  /** Addresses (IPs or CIDR ranges) push gateways may be at though they are not public (spec/push.md). */
  pushGatewayAllowAddresses: string[];
  /** Retention (spec/retention.md), all in ms: the default max_lifetime (0: none). */
  retentionDefaultMaxLifetime: number;
  /** The shortest and longest max_lifetime a room may ask for (0 as the longest: no bound). */
  retentionAllowedMin: number;
  retentionAllowedMax: number;
  /** How often the purge job runs (0: never). */
  retentionPurgeIntervalMs: number;
  /** What the purge job runs after deleting: plain VACUUM, VACUUM FULL, or nothing. */
  retentionVacuum: 'plain' | 'full' | 'off';
  /** Media settings (spec/media.md). */
  media: MediaConfig;
}

export interface MediaConfig {
  /** Where media files live; empty: `<data_dir>/media` (a temporary folder when data_dir is empty). */
  dir: string;
  /** Largest upload, in bytes (413 M_TOO_LARGE beyond). */
  maxUploadBytes: number;
  /** Bytes of uploads a user may have; 0: no quota. */
  quotaBytes: number;
  /** Media IDs created with /create and not yet uploaded that a user may hold at once. */
  maxPendingPerUser: number;
  /** How long a media ID from /create waits for its upload, in ms. */
  unusedExpiryMs: number;
  /**
   * Media whose last referencing event was purged or deleted are deleted once they were
   * uploaded at least this many ms ago (spec/media.md).
   */
  unreferencedGraceMs: number;
  /** Media created before this time (ms) are served by the unauthenticated v3 endpoints; 0: none. */
  legacyFreezeTs: number;
  /** Whether GET /media/preview_url fetches pages. */
  urlPreviews: boolean;
  /** Addresses (or CIDR ranges) a preview may reach although they are private or loopback. */
  urlPreviewAllowAddresses: string[];
  urlPreviewMaxBytes: number;
  urlPreviewTimeoutMs: number;
  /** How long fetching a remote media may take once its server starts answering, in ms (on top of timeout_ms). */
  remoteMediaTimeoutMs: number;
  /** Addresses (or CIDR ranges) a remote server's `Location` redirect may lead to although not public. */
  remoteMediaRedirectAllow: string[];
}

export interface TrustedKeyServer {
  serverName: string;
  /** Key ID -> unpadded base64 public key; when given, the notary's answers must be signed by one. */
  verifyKeys: Record<string, string>;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Field = {
  key: keyof Config;
  env: string;
  yaml: string;
  parse: (raw: unknown, source: string) => unknown;
  /** Set one entry of an object-valued setting instead of the whole setting. */
  entry?: string;
};

/** `<requests a second>,<burst>`, e.g. `10,50` or `0.5,10`. */
function rateRule(raw: unknown, source: string): RateRule {
  const m = /^\s*(\d+(?:\.\d+)?)\s*,\s*(\d+)\s*$/.exec(str(raw, source));
  const perSecond = Number(m?.[1]);
  const burst = Number(m?.[2]);
  if (!m || !(perSecond > 0) || perSecond > 1_000_000 || burst < 1 || burst > 1_000_000) {
    throw new ConfigError(
      `${source} must be "<requests a second>,<burst>" (e.g. "10,50"), got ${JSON.stringify(raw)}`,
    );
  }
  return { perSecond, burst };
}

function onOff(raw: unknown, source: string): boolean {
  const s = typeof raw === 'boolean' ? (raw ? 'on' : 'off') : str(raw, source).trim().toLowerCase();
  if (s === 'on' || s === 'true') return true;
  if (s === 'off' || s === 'false') return false;
  throw new ConfigError(`${source} must be on or off, got ${JSON.stringify(raw)}`);
}

function userList(raw: unknown, source: string): string[] {
  const items = Array.isArray(raw) ? raw.map((v) => str(v, source)) : str(raw, source).split(',');
  const users = items.map((u) => u.trim()).filter((u) => u !== '');
  for (const u of users) {
    if (!/^@[^:]+:.+$/.test(u)) throw new ConfigError(`${source}: not a user ID: ${JSON.stringify(u)}`);
  }
  return users;
}

/** `<count>,<window ms>`, e.g. `300,60000`. */
function detectorRule(raw: unknown, source: string): DetectorRule {
  const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(str(raw, source));
  const count = Number(m?.[1]);
  const windowMs = Number(m?.[2]);
  if (!m || count < 1 || count > 1_000_000 || windowMs < 1 || windowMs > 7 * 86_400_000) {
    throw new ConfigError(
      `${source} must be "<count>,<window ms>" (e.g. "300,60000"), got ${JSON.stringify(raw)}`,
    );
  }
  return { count, windowMs };
}

/** A comma-separated list (or YAML list) of throttle, lock, suspend, notify; `none` for nothing. */
function responseList(raw: unknown, source: string): DetectorResponse[] {
  const items = Array.isArray(raw) ? raw.map((v) => str(v, source)) : str(raw, source).split(',');
  const names = items.map((s) => s.trim()).filter((s) => s !== '' && s !== 'none');
  for (const n of names) {
    if (!DETECTOR_RESPONSES.includes(n as DetectorResponse)) {
      throw new ConfigError(
        `${source}: ${JSON.stringify(n)} is not one of ${DETECTOR_RESPONSES.join(', ')}, none`,
      );
    }
  }
  return [...new Set(names)] as DetectorResponse[];
}

function roomList(raw: unknown, source: string): string[] {
  const items = Array.isArray(raw) ? raw.map((v) => str(v, source)) : str(raw, source).split(',');
  const rooms = items.map((r) => r.trim()).filter((r) => r !== '');
  for (const r of rooms) {
    if (!/^[!#][^:]+:.+$/.test(r))
      throw new ConfigError(`${source}: not a room ID or alias: ${JSON.stringify(r)}`);
  }
  return rooms;
}

function metricsListen(raw: unknown, source: string): string {
  const s = str(raw, source).trim();
  if (s === '' || s === 'off') return '';
  if (s === 'main') return s;
  const m = /^(.+):(\d{1,5})$/.exec(s);
  if (!m || Number(m[2]) > 65535) {
    throw new ConfigError(`${source} must be off, main or <host>:<port>, got ${JSON.stringify(s)}`);
  }
  return s;
}

const SERVER_NAME_RE = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

function str(raw: unknown, source: string): string {
  if (typeof raw !== 'string' && typeof raw !== 'number') throw new ConfigError(`${source} must be a string`);
  return String(raw);
}

function int(min: number, max: number) {
  return (raw: unknown, source: string): number => {
    const s = typeof raw === 'number' ? String(raw) : str(raw, source).trim();
    if (!/^\d+$/.test(s))
      throw new ConfigError(`${source} must be a whole number, got ${JSON.stringify(raw)}`);
    const n = Number(s);
    if (n < min || n > max) throw new ConfigError(`${source} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: unknown, source: string): T => {
    const s = str(raw, source);
    if (!values.includes(s as T)) {
      throw new ConfigError(`${source} must be one of ${values.join(', ')}, got ${JSON.stringify(s)}`);
    }
    return s as T;
  };
}

function roomVersion(raw: unknown, source: string): string {
  const s = str(raw, source).trim();
  if (!getRoomVersion(s))
    throw new ConfigError(`${source} is not a supported room version: ${JSON.stringify(s)}`);
  return s;
}

function urlWithScheme(schemes: string[]) {
  return (raw: unknown, source: string): string => {
    const s = str(raw, source).trim();
    if (s === '') return '';
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new ConfigError(`${source} is not a valid URL`);
    }
    if (!schemes.includes(url.protocol)) {
      throw new ConfigError(`${source} must use ${schemes.join(' or ')}, got ${url.protocol}`);
    }
    return s;
  };
}

/** A setting whose value is any text (paths, addresses). */
function textField(key: keyof Config, env: string, yaml: string): Field {
  return { key, env, yaml, parse: (raw, source) => str(raw, source) };
}

const FIELDS: Field[] = [
  {
    key: 'serverName',
    env: 'CONCLAVE_SERVER_NAME',
    yaml: 'server_name',
    parse: (raw, source) => serverName(raw, source),
  },
  {
    key: 'bindAddress',
    env: 'CONCLAVE_BIND_ADDRESS',
    yaml: 'bind_address',
    parse: (raw, source) => str(raw, source),
  },
  { key: 'port', env: 'CONCLAVE_PORT', yaml: 'port', parse: int(0, 65535) },
  { key: 'dataDir', env: 'CONCLAVE_DATA_DIR', yaml: 'data_dir', parse: (raw, source) => str(raw, source) },
  {
    key: 'databaseUrl',
    env: 'CONCLAVE_DATABASE_URL',
    yaml: 'database_url',
    parse: urlWithScheme(['postgres:', 'postgresql:']),
  },
  {
    key: 'redisUrl',
    env: 'CONCLAVE_REDIS_URL',
    yaml: 'redis_url',
    parse: urlWithScheme(['redis:', 'rediss:']),
  },
  {
    key: 'registration',
    env: 'CONCLAVE_REGISTRATION',
    yaml: 'registration',
    parse: oneOf(['open', 'token', 'closed'] as const),
  },
  {
    key: 'maxRequestBytes',
    env: 'CONCLAVE_MAX_REQUEST_BYTES',
    yaml: 'max_request_bytes',
    parse: int(1024, 1024 * 1024 * 1024),
  },
  {
    key: 'passwordHashCost',
    env: 'CONCLAVE_PASSWORD_HASH_COST',
    yaml: 'password_hash_cost',
    parse: int(10, 20),
  },
  {
    key: 'loginFailuresPerWindow',
    env: 'CONCLAVE_LOGIN_FAILURES_PER_WINDOW',
    yaml: 'login_failures_per_window',
    parse: int(1, 1_000_000),
  },
  {
    key: 'loginFailureWindowMs',
    env: 'CONCLAVE_LOGIN_FAILURE_WINDOW_MS',
    yaml: 'login_failure_window_ms',
    parse: int(1, 86_400_000),
  },
  {
    key: 'registrationsPerWindow',
    env: 'CONCLAVE_REGISTRATIONS_PER_WINDOW',
    yaml: 'registrations_per_window',
    parse: int(1, 1_000_000),
  },
  {
    key: 'registrationWindowMs',
    env: 'CONCLAVE_REGISTRATION_WINDOW_MS',
    yaml: 'registration_window_ms',
    parse: int(1, 86_400_000),
  },
  { key: 'rateLimits', env: 'CONCLAVE_RATE_LIMITS', yaml: 'rate_limits', parse: onOff },
  ...RATE_LIMIT_FAMILIES.map(
    (family): Field => ({
      key: 'rateLimitRules',
      entry: family,
      env: `CONCLAVE_RATE_LIMIT_${family.toUpperCase()}`,
      yaml: `rate_limit_${family}`,
      parse: rateRule,
    }),
  ),
  {
    key: 'rateLimitUserFactor',
    env: 'CONCLAVE_RATE_LIMIT_USER_FACTOR',
    yaml: 'rate_limit_user_factor',
    parse: int(1, 1000),
  },
  {
    key: 'rateLimitAddressFactor',
    env: 'CONCLAVE_RATE_LIMIT_ADDRESS_FACTOR',
    yaml: 'rate_limit_address_factor',
    parse: int(1, 100_000),
  },
  {
    key: 'rateLimitExemptUsers',
    env: 'CONCLAVE_RATE_LIMIT_EXEMPT_USERS',
    yaml: 'rate_limit_exempt_users',
    parse: userList,
  },
  { key: 'detection', env: 'CONCLAVE_DETECTION', yaml: 'detection', parse: onOff },
  ...DETECTORS.flatMap((name): Field[] => [
    {
      key: 'detectorRules',
      entry: name,
      env: `CONCLAVE_DETECT_${name.toUpperCase()}`,
      yaml: `detect_${name}`,
      parse: detectorRule,
    },
    {
      key: 'detectorResponses',
      entry: name,
      env: `CONCLAVE_DETECT_${name.toUpperCase()}_RESPONSES`,
      yaml: `detect_${name}_responses`,
      parse: responseList,
    },
  ]),
  {
    key: 'detectionBaselineMinPeriods',
    env: 'CONCLAVE_DETECTION_BASELINE_MIN_PERIODS',
    yaml: 'detection_baseline_min_periods',
    parse: int(1, 10_000),
  },
  {
    key: 'detectionBaselineMinCount',
    env: 'CONCLAVE_DETECTION_BASELINE_MIN_COUNT',
    yaml: 'detection_baseline_min_count',
    parse: int(1, 1_000_000),
  },
  {
    key: 'detectionThrottleRule',
    env: 'CONCLAVE_DETECTION_THROTTLE_RATE',
    yaml: 'detection_throttle_rate',
    parse: rateRule,
  },
  {
    key: 'detectionThrottleMs',
    env: 'CONCLAVE_DETECTION_THROTTLE_MS',
    yaml: 'detection_throttle_ms',
    parse: int(1, 7 * 86_400_000),
  },
  {
    key: 'detectionAlertCooldownMs',
    env: 'CONCLAVE_DETECTION_ALERT_COOLDOWN_MS',
    yaml: 'detection_alert_cooldown_ms',
    parse: int(1, 7 * 86_400_000),
  },
  {
    key: 'detectionWebhookUrl',
    env: 'CONCLAVE_DETECTION_WEBHOOK_URL',
    yaml: 'detection_webhook_url',
    parse: urlWithScheme(['http:', 'https:']),
  },
  { key: 'policyRooms', env: 'CONCLAVE_POLICY_ROOMS', yaml: 'policy_rooms', parse: roomList },
  { key: 'metricsListen', env: 'CONCLAVE_METRICS_LISTEN', yaml: 'metrics_listen', parse: metricsListen },
  {
    key: 'roomExpiryIntervalMs',
    env: 'CONCLAVE_ROOM_EXPIRY_INTERVAL_MS',
    yaml: 'room_expiry_interval_ms',
    parse: int(100, 86_400_000),
  },
  {
    key: 'wsMaxBufferedBytes',
    env: 'CONCLAVE_WS_MAX_BUFFERED_BYTES',
    yaml: 'ws_max_buffered_bytes',
    parse: int(1024, 1024 * 1024 * 1024),
  },
  {
    key: 'accessTokenLifetimeMs',
    env: 'CONCLAVE_ACCESS_TOKEN_LIFETIME_MS',
    yaml: 'access_token_lifetime_ms',
    parse: int(1000, 30 * 86_400_000),
  },
  {
    key: 'refreshTokenLifetimeMs',
    env: 'CONCLAVE_REFRESH_TOKEN_LIFETIME_MS',
    yaml: 'refresh_token_lifetime_ms',
    parse: int(0, 10 * 365 * 86_400_000),
  },
  {
    key: 'deviceInactivityExpiryMs',
    env: 'CONCLAVE_DEVICE_INACTIVITY_EXPIRY_MS',
    yaml: 'device_inactivity_expiry_ms',
    parse: int(0, 100 * 365 * 86_400_000),
  },
  {
    key: 'deviceExpiryIntervalMs',
    env: 'CONCLAVE_DEVICE_EXPIRY_INTERVAL_MS',
    yaml: 'device_expiry_interval_ms',
    parse: int(100, 7 * 86_400_000),
  },
  {
    key: 'toDeviceEncryptedRequiresCrossSigning',
    env: 'CONCLAVE_TO_DEVICE_ENCRYPTED_REQUIRES_CROSS_SIGNING',
    yaml: 'to_device_encrypted_requires_cross_signing',
    parse: onOff,
  },
  {
    key: 'requireAuthForProfileRequests',
    env: 'CONCLAVE_REQUIRE_AUTH_FOR_PROFILE_REQUESTS',
    yaml: 'require_auth_for_profile_requests',
    parse: onOff,
  },
  {
    key: 'publicBaseUrl',
    env: 'CONCLAVE_PUBLIC_BASE_URL',
    yaml: 'public_base_url',
    parse: urlWithScheme(['http:', 'https:']),
  },
  {
    key: 'logLevel',
    env: 'CONCLAVE_LOG_LEVEL',
    yaml: 'log_level',
    parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
  },
  textField('signingKeyPath', 'CONCLAVE_SIGNING_KEY_PATH', 'signing_key_path'),
  {
    key: 'trustedKeyServers',
    env: 'CONCLAVE_TRUSTED_KEY_SERVERS',
    yaml: 'trusted_key_servers',
    parse: trustedKeyServers,
  },
  textField('federationCaFile', 'CONCLAVE_FEDERATION_CA_FILE', 'federation_ca_file'),
  textField('federationHostsFile', 'CONCLAVE_FEDERATION_HOSTS_FILE', 'federation_hosts_file'),
  textField('federationTlsCertificate', 'CONCLAVE_FEDERATION_TLS_CERTIFICATE', 'federation_tls_certificate'),
  textField('federationTlsKey', 'CONCLAVE_FEDERATION_TLS_KEY', 'federation_tls_key'),
  textField('federationBindAddress', 'CONCLAVE_FEDERATION_BIND_ADDRESS', 'federation_bind_address'),
  { key: 'federationPort', env: 'CONCLAVE_FEDERATION_PORT', yaml: 'federation_port', parse: int(0, 65535) },
  {
    key: 'webClient',
    env: 'CONCLAVE_WEB_CLIENT',
    yaml: 'web_client',
    parse: (raw, source) => {
      if (raw === false) return '';
      const s = str(raw, source).trim();
      if (s === 'off') return '';
      if (!/^\/(?:[A-Za-z0-9._~-]+\/?)*$/.test(s) || /(?:^|\/)\.\.?(?:\/|$)/.test(s)) {
        throw new ConfigError(
          `${source} must be off or a URL path such as / or /chat/, got ${JSON.stringify(s)}`,
        );
      }
      const base = s.endsWith('/') ? s : `${s}/`;
      if (/^\/(?:_matrix|_conclave|\.well-known)\//.test(base)) {
        throw new ConfigError(`${source} may not lie under the API's paths, got ${JSON.stringify(s)}`);
      }
      return base;
    },
  },
  {
    key: 'defaultRoomVersion',
    env: 'CONCLAVE_DEFAULT_ROOM_VERSION',
    yaml: 'default_room_version',
    parse: roomVersion,
  },
  mediaField('dir', 'CONCLAVE_MEDIA_DIR', 'media_dir', (raw, source) => str(raw, source)),
  mediaField('maxUploadBytes', 'CONCLAVE_MAX_UPLOAD_BYTES', 'max_upload_bytes', int(1, 2 ** 40)),
  mediaField('quotaBytes', 'CONCLAVE_MEDIA_QUOTA_BYTES', 'media_quota_bytes', int(0, 2 ** 50)),
  mediaField('maxPendingPerUser', 'CONCLAVE_MEDIA_MAX_PENDING', 'media_max_pending', int(1, 10_000)),
  mediaField(
    'unusedExpiryMs',
    'CONCLAVE_MEDIA_UNUSED_EXPIRY_MS',
    'media_unused_expiry_ms',
    int(1000, 2 ** 40),
  ),
  mediaField(
    'unreferencedGraceMs',
    'CONCLAVE_MEDIA_UNREFERENCED_GRACE_MS',
    'media_unreferenced_grace_ms',
    int(0, 2 ** 40),
  ),
  mediaField('legacyFreezeTs', 'CONCLAVE_MEDIA_LEGACY_FREEZE', 'media_legacy_freeze', freezeDate),
  mediaField('urlPreviews', 'CONCLAVE_URL_PREVIEWS', 'url_previews', onOff),
  mediaField('urlPreviewAllowAddresses', 'CONCLAVE_URL_PREVIEW_ALLOW', 'url_preview_allow', addressList),
  mediaField(
    'urlPreviewMaxBytes',
    'CONCLAVE_URL_PREVIEW_MAX_BYTES',
    'url_preview_max_bytes',
    int(1024, 2 ** 30),
  ),
  mediaField(
    'urlPreviewTimeoutMs',
    'CONCLAVE_URL_PREVIEW_TIMEOUT_MS',
    'url_preview_timeout_ms',
    int(100, 120_000),
  ),
  mediaField(
    'remoteMediaTimeoutMs',
    'CONCLAVE_REMOTE_MEDIA_TIMEOUT_MS',
    'remote_media_timeout_ms',
    int(100, 600_000),
  ),
  mediaField(
    'remoteMediaRedirectAllow',
    'CONCLAVE_REMOTE_MEDIA_REDIRECT_ALLOW',
    'remote_media_redirect_allow',
    addressList,
  ),
  {
    key: 'retentionDefaultMaxLifetime',
    env: 'CONCLAVE_RETENTION_DEFAULT_MAX_LIFETIME',
    yaml: 'retention_default_max_lifetime',
    parse: int(0, 100 * 365 * 86_400_000),
  },
  {
    key: 'retentionAllowedMin',
    env: 'CONCLAVE_RETENTION_ALLOWED_MIN',
    yaml: 'retention_allowed_min',
    parse: int(1, 100 * 365 * 86_400_000),
  },
  {
    key: 'retentionAllowedMax',
    env: 'CONCLAVE_RETENTION_ALLOWED_MAX',
    yaml: 'retention_allowed_max',
    parse: int(0, 100 * 365 * 86_400_000),
  },
  {
    key: 'retentionPurgeIntervalMs',
    env: 'CONCLAVE_RETENTION_PURGE_INTERVAL_MS',
    yaml: 'retention_purge_interval_ms',
    parse: int(0, 7 * 86_400_000),
  },
  {
    key: 'retentionVacuum',
    env: 'CONCLAVE_RETENTION_VACUUM',
    yaml: 'retention_vacuum',
    parse: oneOf(['plain', 'full', 'off'] as const),
  },
  { key: 'presence', env: 'CONCLAVE_PRESENCE', yaml: 'presence', parse: onOff },
  {
    key: 'presenceIdleMs',
    env: 'CONCLAVE_PRESENCE_IDLE_MS',
    yaml: 'presence_idle_ms',
    parse: int(1000, 7 * 86_400_000),
  },
  {
    key: 'presenceOfflineMs',
    env: 'CONCLAVE_PRESENCE_OFFLINE_MS',
    yaml: 'presence_offline_ms',
    parse: int(1000, 30 * 86_400_000),
  },
  {
    key: 'turnUris',
    env: 'CONCLAVE_TURN_URIS',
    yaml: 'turn_uris',
    parse: (raw, source) => {
      const items = Array.isArray(raw) ? raw.map((v) => str(v, source)) : str(raw, source).split(',');
      const uris = items.map((u) => u.trim()).filter((u) => u !== '');
      for (const u of uris) {
        if (!/^turns?:[^\s]+$/.test(u) || u.length > 512)
          throw new ConfigError(`${source}: not a turn: or turns: URI: ${JSON.stringify(u)}`);
      }
      return uris;
    },
  },
  textField('turnSharedSecret', 'CONCLAVE_TURN_SHARED_SECRET', 'turn_shared_secret'),
  {
    key: 'turnUserLifetimeMs',
    env: 'CONCLAVE_TURN_USER_LIFETIME_MS',
    yaml: 'turn_user_lifetime_ms',
    parse: int(60_000, 30 * 86_400_000),
  },
  {
    key: 'pushGatewayAllowAddresses',
    env: 'CONCLAVE_PUSH_GATEWAY_ALLOW',
    yaml: 'push_gateway_allow',
    parse: addressList,
  },
];

function mediaField(
  entry: keyof MediaConfig,
  env: string,
  yaml: string,
  parse: (raw: unknown, source: string) => unknown,
): Field {
  return { key: 'media', entry, env, yaml, parse };
}

/** `off`, or the date (ISO 8601) before which media stay served without authentication. */
function freezeDate(raw: unknown, source: string): number {
  if (raw === false) return 0;
  if (raw instanceof Date) return raw.getTime();
  const s = str(raw, source).trim();
  if (s === 'off' || s === '') return 0;
  const ts = Date.parse(s);
  if (!Number.isFinite(ts) || ts <= 0)
    throw new ConfigError(`${source} must be off or an ISO date, got ${JSON.stringify(s)}`);
  return ts;
}

/** IP addresses or CIDR ranges, comma-separated or a YAML list. */
function addressList(raw: unknown, source: string): string[] {
  const items = Array.isArray(raw) ? raw.map((v) => str(v, source)) : str(raw, source).split(',');
  const out = items.map((a) => a.trim()).filter((a) => a !== '');
  for (const a of out) {
    const [ip, bits, extra] = a.split('/');
    const family = isIP(ip ?? '');
    const max = family === 6 ? 128 : 32;
    if (
      family === 0 ||
      extra !== undefined ||
      (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= max))
    ) {
      throw new ConfigError(`${source}: not an IP address or CIDR range: ${JSON.stringify(a)}`);
    }
  }
  return out;
}

const KEY_ID_RE = /^ed25519:[A-Za-z0-9_]+$/;

function serverName(raw: unknown, source: string): string {
  const s = str(raw, source);
  if (!SERVER_NAME_RE.test(s) || s.length > 255) {
    throw new ConfigError(`${source} is not a valid Matrix server name: ${JSON.stringify(s)}`);
  }
  return s;
}

/**
 * `trusted_key_servers`: in YAML a list of server names or of `{server_name, verify_keys}`
 * mappings; in the environment a comma-separated list of server names.
 */
function trustedKeyServers(raw: unknown, source: string): TrustedKeyServer[] {
  const items =
    typeof raw === 'string'
      ? raw
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '')
      : raw;
  if (!Array.isArray(items)) throw new ConfigError(`${source} must be a list of server names`);
  return items.map((item, i) => {
    if (typeof item === 'string') return { serverName: serverName(item, `${source}[${i}]`), verifyKeys: {} };
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new ConfigError(`${source}[${i}] must be a server name or a mapping with server_name`);
    }
    const entry = item as Record<string, unknown>;
    for (const k of Object.keys(entry)) {
      if (k !== 'server_name' && k !== 'verify_keys')
        throw new ConfigError(`${source}[${i}]: unknown key ${k}`);
    }
    const verifyKeys: Record<string, string> = {};
    const given = entry.verify_keys ?? {};
    if (typeof given !== 'object' || given === null || Array.isArray(given)) {
      throw new ConfigError(`${source}[${i}].verify_keys must map key IDs to base64 public keys`);
    }
    for (const [keyId, key] of Object.entries(given)) {
      if (!KEY_ID_RE.test(keyId) || typeof key !== 'string' || !/^[A-Za-z0-9+/]{43}=?$/.test(key)) {
        throw new ConfigError(`${source}[${i}].verify_keys: ${keyId} must map to a base64 ed25519 key`);
      }
      verifyKeys[keyId] = key;
    }
    return { serverName: serverName(entry.server_name, `${source}[${i}].server_name`), verifyKeys };
  });
}

export function defaultConfig(): Config {
  return {
    serverName: 'localhost',
    bindAddress: '0.0.0.0',
    port: 8008,
    dataDir: './data',
    databaseUrl: '',
    redisUrl: '',
    registration: 'closed',
    maxRequestBytes: 1024 * 1024,
    passwordHashCost: 16,
    loginFailuresPerWindow: 5,
    loginFailureWindowMs: 60_000,
    registrationsPerWindow: 20,
    registrationWindowMs: 60_000,
    rateLimits: true,
    rateLimitRules: { ...DEFAULT_RATES },
    rateLimitUserFactor: 2,
    rateLimitAddressFactor: 10,
    rateLimitExemptUsers: [],
    detection: true,
    detectorRules: Object.fromEntries(
      DETECTORS.map((d) => [
        d,
        { count: DEFAULT_DETECTORS[d].count, windowMs: DEFAULT_DETECTORS[d].windowMs },
      ]),
    ) as Record<DetectorName, DetectorRule>,
    detectorResponses: Object.fromEntries(
      DETECTORS.map((d) => [d, [...DEFAULT_DETECTORS[d].responses]]),
    ) as Record<DetectorName, DetectorResponse[]>,
    detectionBaselineMinPeriods: 5,
    detectionBaselineMinCount: 30,
    detectionThrottleRule: { perSecond: 0.2, burst: 5 },
    detectionThrottleMs: 10 * MIN,
    detectionAlertCooldownMs: 10 * MIN,
    detectionWebhookUrl: '',
    policyRooms: [],
    metricsListen: '',
    wsMaxBufferedBytes: 1024 * 1024,
    roomExpiryIntervalMs: 30_000,
    accessTokenLifetimeMs: 5 * MIN,
    refreshTokenLifetimeMs: 0,
    deviceInactivityExpiryMs: 0,
    deviceExpiryIntervalMs: HOUR,
    toDeviceEncryptedRequiresCrossSigning: false,
    requireAuthForProfileRequests: true,
    publicBaseUrl: '',
    logLevel: 'info',
    signingKeyPath: '',
    trustedKeyServers: [],
    federationCaFile: '',
    federationHostsFile: '',
    federationTlsCertificate: '',
    federationTlsKey: '',
    federationBindAddress: '',
    federationPort: 8448,
    webClient: '/',
    defaultRoomVersion: DEFAULT_ROOM_VERSION,
    media: {
      dir: '',
      maxUploadBytes: 50 * 1024 * 1024,
      quotaBytes: 0,
      maxPendingPerUser: 5,
      unusedExpiryMs: 24 * 60 * 60 * 1000,
      unreferencedGraceMs: 60 * 60 * 1000,
      legacyFreezeTs: 0,
      urlPreviews: false,
      urlPreviewAllowAddresses: [],
      urlPreviewMaxBytes: 1024 * 1024,
      urlPreviewTimeoutMs: 10_000,
      remoteMediaTimeoutMs: 30_000,
      remoteMediaRedirectAllow: [],
    },
    retentionDefaultMaxLifetime: 0,
    retentionAllowedMin: 86_400_000,
    retentionAllowedMax: 0,
    retentionPurgeIntervalMs: 3_600_000,
    retentionVacuum: 'plain',
    presence: true,
    presenceIdleMs: 300_000,
    presenceOfflineMs: 1_800_000,
    turnUris: [],
    turnSharedSecret: '',
    turnUserLifetimeMs: 86_400_000,
    pushGatewayAllowAddresses: [],
  };
}

/**
 * Builds the configuration from the environment (and the YAML file it names). Throws ConfigError
 * naming the offending key when a value is bad.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const config = defaultConfig();
  const file = env.CONCLAVE_CONFIG;
  if (file) {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(`CONCLAVE_CONFIG: cannot read ${file}: ${(err as Error).message}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) {
        throw new ConfigError(`CONCLAVE_CONFIG: ${file} must hold a YAML mapping`);
      }
      const known = new Set(FIELDS.map((f) => f.yaml));
      for (const [k, v] of Object.entries(doc)) {
        if (!known.has(k)) throw new ConfigError(`${file}: unknown key ${JSON.stringify(k)}`);
        const field = FIELDS.find((f) => f.yaml === k)!;
        assign(config, field, field.parse(v, `${file}: ${k}`));
      }
    }
  }
  for (const field of FIELDS) {
    const raw = env[field.env];
    if (raw !== undefined && raw !== '') assign(config, field, field.parse(raw, field.env));
  }
  Object.assign(config, overrides);
  if (config.databaseUrl === '' && config.dataDir === '')
    throw new ConfigError('CONCLAVE_DATA_DIR must not be empty');
  if ((config.federationTlsCertificate === '') !== (config.federationTlsKey === '')) {
    throw new ConfigError('federation_tls_certificate and federation_tls_key must be given together');
  }
  if (config.retentionAllowedMax > 0 && config.retentionAllowedMax < config.retentionAllowedMin) {
    throw new ConfigError('retention_allowed_max must not be below retention_allowed_min');
  }
  return config;
}

function assign(config: Config, field: Field, value: unknown): void {
  const target = config as unknown as Record<string, unknown>;
  if (field.entry !== undefined) {
    target[field.key] = { ...(target[field.key] as object), [field.entry]: value };
  } else {
    target[field.key] = value;
  }
}

export function pgliteDirectory(config: Config): string {
  return path.join(config.dataDir, 'pglite');
}

/** Documentation table used by the README test to keep the two in step. */
export const CONFIG_KEYS = FIELDS.map((f) => ({ env: f.env, yaml: f.yaml }));
