import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import { parseServerName } from '../../protocol/identifiers.ts';

/** Where to connect for a server name, and what to say and expect there (Resolving server names). */
export interface ResolvedDestination {
  /** The host to connect to: an IP literal, or a host name that `lookup` resolves. */
  connectHost: string;
  port: number;
  /** The Host header to send. */
  hostHeader: string;
  /** The name (DNS name or IP address, no brackets) the certificate must be valid for. */
  tlsName: string;
  /** The TLS SNI to send: the DNS name, or undefined for IP addresses (SNI cannot carry them). */
  sni?: string;
}

export interface SrvTarget {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/**
 * The lookups discovery needs. The default uses the system's DNS; tests answer them on loopback
 * (and point well-known requests at a loopback port) without real DNS.
 */
export interface DiscoveryResolver {
  /** SRV records for `name`, or [] when there are none. */
  resolveSrv(name: string): Promise<SrvTarget[]>;
  /** One IP address for a host name (CNAME, AAAA or A). */
  lookup(hostname: string): Promise<string>;
}

export const systemResolver: DiscoveryResolver = {
  async resolveSrv(name) {
    try {
      return await dns.resolveSrv(name);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA' || code === 'ESERVFAIL' || code === 'ENONAME') return [];
      throw err;
    }
  },
  async lookup(hostname) {
    return (await dns.lookup(hostname)).address;
  },
};

/** What a `/.well-known/matrix/server` request yielded, and for how long to believe it. */
export interface WellKnownAnswer {
  /** The delegated server name, or null when the answer was an error or invalid. */
  server: string | null;
  cacheMs: number;
}

export const DEFAULT_FEDERATION_PORT = 8448;
export const WELL_KNOWN_DEFAULT_CACHE_MS = 24 * 60 * 60 * 1000;
export const WELL_KNOWN_MAX_CACHE_MS = 48 * 60 * 60 * 1000;
export const WELL_KNOWN_ERROR_CACHE_MS = 60 * 60 * 1000;

/** The cache lifetime a response's Cache-Control asks for, within the spec's bounds. */
export function wellKnownCacheMs(cacheControl: string | undefined, ok: boolean): number {
  if (!ok) return WELL_KNOWN_ERROR_CACHE_MS;
  const directives = (cacheControl ?? '').toLowerCase();
  if (/(^|[,\s])(no-store|no-cache)([,\s=]|$)/.test(directives)) return 0;
  const maxAge = /(?:^|[,\s])max-age=(\d+)/.exec(directives);
  if (!maxAge) return WELL_KNOWN_DEFAULT_CACHE_MS;
  return Math.min(Number(maxAge[1]) * 1000, WELL_KNOWN_MAX_CACHE_MS);
}

/** Reads the `m.server` of a well-known body; null when the body is not a valid answer. */
export function parseWellKnownBody(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return null;
  const server = (body as Record<string, unknown>)['m.server'];
  return typeof server === 'string' && parseServerName(server) !== null ? server : null;
}

/**
 * Server discovery exactly as the spec's steps lay out: IP literals, explicit ports,
 * `/.well-known/matrix/server` (cached), SRV `_matrix-fed._tcp` then the deprecated
 * `_matrix._tcp`, and port 8448.
 */
export class ServerDiscovery {
  private readonly wellKnownCache = new Map<string, { server: string | null; expiresAt: number }>();

  constructor(
    private readonly resolver: DiscoveryResolver,
    private readonly fetchWellKnown: (hostname: string) => Promise<WellKnownAnswer>,
    private readonly now: () => number = Date.now,
    /** Fixed addresses (`federation_hosts_file`), consulted before the spec's steps. */
    private readonly fixed?: (serverName: string) => Promise<{ host: string; port: number } | undefined>,
  ) {}

  async resolve(serverName: string): Promise<ResolvedDestination> {
    const parsed = parseServerName(serverName);
    if (!parsed) throw new Error(`not a valid server name: ${JSON.stringify(serverName)}`);
    const fixed = await this.fixed?.(serverName);
    if (fixed) {
      // Only where to connect is fixed: Host and the certificate's name are the server name's.
      const name = unbracket(parsed.host);
      return {
        connectHost: fixed.host,
        port: fixed.port,
        hostHeader: serverName,
        tlsName: name,
        ...(parsed.kind === 'dns' ? { sni: name } : {}),
      };
    }
    // Step 1: an IP literal, with its port or 8448; Host is the server name as given.
    if (parsed.kind !== 'dns') return ipDestination(parsed.host, parsed.port, serverName);
    // Step 2: a host name with an explicit port.
    if (parsed.port !== undefined) {
      return {
        connectHost: parsed.host,
        port: parsed.port,
        hostHeader: serverName,
        tlsName: parsed.host,
        sni: parsed.host,
      };
    }
    // Step 3: .well-known delegation.
    const delegated = await this.wellKnown(parsed.host);
    if (delegated !== null) {
      const d = parseServerName(delegated)!;
      // 3.1: an IP literal, Host with the port if one was given.
      if (d.kind !== 'dns') return ipDestination(d.host, d.port, delegated);
      // 3.2: a host name with a port.
      if (d.port !== undefined) {
        return { connectHost: d.host, port: d.port, hostHeader: delegated, tlsName: d.host, sni: d.host };
      }
      // 3.3 and 3.4: SRV records of the delegated name; 3.5: its address and port 8448.
      return this.bySrv(d.host);
    }
    // Steps 4 to 6: SRV records of the host name, then its address and port 8448.
    return this.bySrv(parsed.host);
  }

  /** SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then port 8448; Host and certificate are `name`. */
  private async bySrv(name: string): Promise<ResolvedDestination> {
    for (const service of ['_matrix-fed._tcp', '_matrix._tcp']) {
      const records = await this.resolver.resolveSrv(`${service}.${name}`);
      const target = pickSrv(records);
      if (target)
        return { connectHost: target.name, port: target.port, hostHeader: name, tlsName: name, sni: name };
    }
    return { connectHost: name, port: DEFAULT_FEDERATION_PORT, hostHeader: name, tlsName: name, sni: name };
  }

  private async wellKnown(hostname: string): Promise<string | null> {
    const cached = this.wellKnownCache.get(hostname);
    if (cached && cached.expiresAt > this.now()) return cached.server;
    let answer: WellKnownAnswer;
    try {
      answer = await this.fetchWellKnown(hostname);
    } catch {
      answer = { server: null, cacheMs: WELL_KNOWN_ERROR_CACHE_MS };
    }
    this.wellKnownCache.set(hostname, { server: answer.server, expiresAt: this.now() + answer.cacheMs });
    return answer.server;
  }
}

/** An IPv6 literal without its brackets; other hosts as they are. */
export function unbracket(host: string): string {
  return host.startsWith('[') ? host.slice(1, -1) : host;
}

function ipDestination(host: string, port: number | undefined, hostHeader: string): ResolvedDestination {
  const address = unbracket(host);
  return { connectHost: address, port: port ?? DEFAULT_FEDERATION_PORT, hostHeader, tlsName: address };
}

/** The lowest priority wins; among equals, the heaviest (a "." target means no service). */
function pickSrv(records: SrvTarget[]): SrvTarget | undefined {
  const usable = records.filter((r) => r.name !== '' && r.name !== '.');
  usable.sort((a, b) => a.priority - b.priority || b.weight - a.weight);
  return usable[0];
}

export function isIpLiteral(host: string): boolean {
  return isIP(host) !== 0;
}
