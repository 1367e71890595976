import { readFileSync } from 'node:fs';
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
  /** A WebSocket sync client further behind than this many unsent bytes is disconnected (code 4008). */
  wsMaxBufferedBytes: number;
  /** Public base URL clients use, for .well-known; derived from the server name when empty. */
  publicBaseUrl: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** A file with this server's signing key (`ed25519 <version> <base64 seed>`); empty: generated. */
  signingKeyPath: string;
  /** Notary servers asked for keys that a server does not serve itself. Empty: none. */
  trustedKeyServers: TrustedKeyServer[];
  /** A PEM bundle of CAs trusted for outbound federation in addition to the system's. */
  federationCaFile: string;
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
  {
    key: 'wsMaxBufferedBytes',
    env: 'CONCLAVE_WS_MAX_BUFFERED_BYTES',
    yaml: 'ws_max_buffered_bytes',
    parse: int(1024, 1024 * 1024 * 1024),
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
];

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
    wsMaxBufferedBytes: 1024 * 1024,
    publicBaseUrl: '',
    logLevel: 'info',
    signingKeyPath: '',
    trustedKeyServers: [],
    federationCaFile: '',
    federationTlsCertificate: '',
    federationTlsKey: '',
    federationBindAddress: '',
    federationPort: 8448,
    webClient: '/',
    defaultRoomVersion: DEFAULT_ROOM_VERSION,
    presence: true,
    presenceIdleMs: 300_000,
    presenceOfflineMs: 1_800_000,
    turnUris: [],
    turnSharedSecret: '',
    turnUserLifetimeMs: 86_400_000,
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
