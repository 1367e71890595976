import { readFileSync } from 'node:fs';
import https from 'node:https';
import { isIP } from 'node:net';
import tls from 'node:tls';
import {
  type DiscoveryResolver,
  parseWellKnownBody,
  ServerDiscovery,
  systemResolver,
  type WellKnownAnswer,
  wellKnownCacheMs,
} from './discovery.ts';
import { StaticHosts } from './static-hosts.ts';
import {
  FederationError,
  type FederationTransport,
  type TransportRequest,
  type TransportResponse,
} from './transport.ts';

export interface HttpsTransportOptions {
  /** A PEM bundle of CAs trusted in addition to the system's (`federation_ca_file`). */
  caFile?: string;
  /** DNS for discovery; the system's by default. */
  resolver?: DiscoveryResolver;
  /** `federation_hosts_file`: fixed addresses for some server names. */
  hostsFile?: string;
  /** Port of `https://<hostname>/.well-known/matrix/server`: 443, except in tests. */
  wellKnownPort?: number;
  now?: () => number;
}

const WELL_KNOWN_TIMEOUT_MS = 10_000;
const WELL_KNOWN_MAX_BYTES = 64 * 1024;
const MAX_REDIRECTS = 5;

interface RawRequest {
  host: string;
  port: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  tlsName: string;
  sni?: string;
  timeoutMs: number;
  maxResponseBytes: number;
}

/**
 * The production transport: server discovery, then HTTPS to the discovered address with the
 * certificate checked against the system CAs (plus the configured bundle) for the name the spec
 * says it must carry, SNI for DNS names only, and the spec's Host header.
 */
export class HttpsTransport implements FederationTransport {
  readonly discovery: ServerDiscovery;
  private readonly agent: https.Agent;
  private readonly resolver: DiscoveryResolver;
  private readonly wellKnownPort: number;

  constructor(opts: HttpsTransportOptions = {}) {
    const ca = [...tls.rootCertificates];
    if (opts.caFile) ca.push(readFileSync(opts.caFile, 'utf8'));
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 16, ca });
    this.resolver = opts.resolver ?? systemResolver;
    this.wellKnownPort = opts.wellKnownPort ?? 443;
    const fixed = opts.hostsFile ? new StaticHosts(opts.hostsFile) : undefined;
    this.discovery = new ServerDiscovery(
      this.resolver,
      (hostname) => this.fetchWellKnown(hostname),
      opts.now,
      fixed ? (name) => fixed.lookup(name) : undefined,
    );
  }

  async send(req: TransportRequest): Promise<TransportResponse> {
    let target: Awaited<ReturnType<ServerDiscovery['resolve']>>;
    try {
      target = await this.discovery.resolve(req.destination);
    } catch (err) {
      throw new FederationError(
        'unreachable',
        req.destination,
        `discovery failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    return this.raw(req.destination, {
      host: target.connectHost,
      port: target.port,
      method: req.method,
      path: req.uri,
      headers: { ...req.headers, host: target.hostHeader },
      ...(req.body ? { body: req.body } : {}),
      tlsName: target.tlsName,
      ...(target.sni !== undefined ? { sni: target.sni } : {}),
      timeoutMs: req.timeoutMs,
      maxResponseBytes: req.maxResponseBytes,
    });
  }

  close(): void {
    this.agent.destroy();
  }

  /** GET https://<hostname>/.well-known/matrix/server, following redirects but never in a loop. */
  private async fetchWellKnown(hostname: string): Promise<WellKnownAnswer> {
    let url = new URL(`https://${hostname}/.well-known/matrix/server`);
    const seen = new Set<string>();
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      seen.add(url.href);
      const host = url.hostname.replace(/^\[|\]$/g, '');
      const res = await this.raw(hostname, {
        host,
        port: url.port !== '' ? Number(url.port) : this.wellKnownPort,
        method: 'GET',
        path: url.pathname + url.search,
        headers: { host: url.host, accept: 'application/json' },
        tlsName: host,
        ...(isIP(host) === 0 ? { sni: host } : {}),
        timeoutMs: WELL_KNOWN_TIMEOUT_MS,
        maxResponseBytes: WELL_KNOWN_MAX_BYTES,
      });
      const location = res.headers.location;
      if (res.status >= 300 && res.status < 400 && typeof location === 'string') {
        const next = new URL(location, url);
        if (next.protocol !== 'https:' || seen.has(next.href)) break;
        url = next;
        continue;
      }
      const cacheControl = res.headers['cache-control'];
      const ok = res.status === 200;
      let server: string | null = null;
      if (ok) {
        try {
          server = parseWellKnownBody(JSON.parse(Buffer.from(res.body).toString('utf8')));
        } catch {
          server = null;
        }
      }
      return {
        server,
        cacheMs: wellKnownCacheMs(
          typeof cacheControl === 'string' ? cacheControl : undefined,
          server !== null,
        ),
      };
    }
    return { server: null, cacheMs: wellKnownCacheMs(undefined, false) };
  }

  private async raw(destination: string, r: RawRequest): Promise<TransportResponse> {
    let address = r.host;
    if (isIP(address) === 0) {
      try {
        address = await this.resolver.lookup(r.host);
      } catch (err) {
        throw new FederationError('unreachable', destination, `cannot resolve ${r.host}`, { cause: err });
      }
    }
    return new Promise<TransportResponse>((resolve, reject) => {
      let settled = false;
      const fail = (err: FederationError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(err);
      };
      const req = https.request(
        {
          agent: this.agent,
          host: address,
          port: r.port,
          method: r.method,
          path: r.path,
          headers: r.headers,
          // SNI only for DNS names; an IP certificate is checked against the address itself.
          servername: r.sni ?? '',
          checkServerIdentity: (_host, cert) => tls.checkServerIdentity(r.tlsName, cert),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > r.maxResponseBytes) {
              fail(
                new FederationError(
                  'too-large',
                  destination,
                  `response larger than ${r.maxResponseBytes} bytes`,
                ),
              );
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', (err) =>
            fail(new FederationError('unreachable', destination, err.message, { cause: err })),
          );
          res.on('end', () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
          });
        },
      );
      const timer = setTimeout(
        () => fail(new FederationError('timeout', destination, `no answer within ${r.timeoutMs} ms`)),
        r.timeoutMs,
      );
      req.on('error', (err) =>
        fail(
          new FederationError('unreachable', destination, `${r.host}:${r.port}: ${err.message}`, {
            cause: err,
          }),
        ),
      );
      if (r.body) req.end(r.body);
      else req.end();
    });
  }
}
