// Server discovery (server-server API: Resolving server names) and the HTTPS transport, on
// loopback: a test CA, HTTPS servers on 127.0.0.1, and a resolver seam answering SRV and
// address lookups without real DNS.
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import {
  type DiscoveryResolver,
  ServerDiscovery,
  type SrvTarget,
  type WellKnownAnswer,
  wellKnownCacheMs,
} from '../src/federation/client/discovery.ts';
import { HttpsTransport } from '../src/federation/client/https-transport.ts';
import { parseStaticHosts } from '../src/federation/client/static-hosts.ts';
import { FederationError } from '../src/federation/index.ts';
import { makeTestCa, type TestCa } from './helpers/federation.ts';

const H = 3_600_000;

/** A resolver answering from tables; every name resolves to 127.0.0.1 unless listed as missing. */
function tableResolver(
  srv: Record<string, SrvTarget[]>,
  missing: string[] = [],
): DiscoveryResolver & {
  asked: string[];
} {
  const asked: string[] = [];
  return {
    asked,
    async resolveSrv(name) {
      asked.push(name);
      return srv[name] ?? [];
    },
    async lookup(hostname) {
      if (missing.includes(hostname)) throw new Error(`ENOTFOUND ${hostname}`);
      return '127.0.0.1';
    },
  };
}

const srv = (name: string, port: number, priority = 10, weight = 5): SrvTarget => ({
  name,
  port,
  priority,
  weight,
});

t.test('the resolution steps, with well-known and SRV answered by tables', async (t) => {
  const wellKnown: Record<string, string | null> = {
    'delegated-ip.test': '10.0.0.9:1234',
    'delegated-ip6.test': '[::1]',
    'delegated-port.test': 'target.test:9000',
    'delegated-srv.test': 'srvtarget.test',
    'delegated-plain.test': 'plain.test',
  };
  const resolver = tableResolver({
    '_matrix-fed._tcp.srvtarget.test': [
      srv('low.test', 1, 20),
      srv('best.test', 2222, 10, 1),
      srv('.', 0, 0),
    ],
    '_matrix._tcp.legacy.test': [srv('old.test', 3333)],
    '_matrix-fed._tcp.direct-srv.test': [srv('fed.test', 4444)],
  });
  const fetched: string[] = [];
  const discovery = new ServerDiscovery(resolver, async (host): Promise<WellKnownAnswer> => {
    fetched.push(host);
    return { server: wellKnown[host] ?? null, cacheMs: H };
  });
  const cases: Array<[string, object]> = [
    // 1. IP literals: the address and port (or 8448); Host is the server name; no SNI.
    ['127.0.0.2', { connectHost: '127.0.0.2', port: 8448, hostHeader: '127.0.0.2', tlsName: '127.0.0.2' }],
    [
      '127.0.0.2:8555',
      { connectHost: '127.0.0.2', port: 8555, hostHeader: '127.0.0.2:8555', tlsName: '127.0.0.2' },
    ],
    ['[::1]:8448', { connectHost: '::1', port: 8448, hostHeader: '[::1]:8448', tlsName: '::1' }],
    // 2. A host name with a port: no well-known.
    [
      'hs.test:8008',
      { connectHost: 'hs.test', port: 8008, hostHeader: 'hs.test:8008', tlsName: 'hs.test', sni: 'hs.test' },
    ],
    // 3.1 delegated to an IP literal: Host is the delegated IP (with its port).
    [
      'delegated-ip.test',
      { connectHost: '10.0.0.9', port: 1234, hostHeader: '10.0.0.9:1234', tlsName: '10.0.0.9' },
    ],
    ['delegated-ip6.test', { connectHost: '::1', port: 8448, hostHeader: '[::1]', tlsName: '::1' }],
    // 3.2 delegated with a port.
    [
      'delegated-port.test',
      {
        connectHost: 'target.test',
        port: 9000,
        hostHeader: 'target.test:9000',
        tlsName: 'target.test',
        sni: 'target.test',
      },
    ],
    // 3.3 delegated without a port: SRV of the delegated name, lowest priority; certificate for the delegated name.
    [
      'delegated-srv.test',
      {
        connectHost: 'best.test',
        port: 2222,
        hostHeader: 'srvtarget.test',
        tlsName: 'srvtarget.test',
        sni: 'srvtarget.test',
      },
    ],
    // 3.5 delegated, no SRV: port 8448.
    [
      'delegated-plain.test',
      {
        connectHost: 'plain.test',
        port: 8448,
        hostHeader: 'plain.test',
        tlsName: 'plain.test',
        sni: 'plain.test',
      },
    ],
    // 4. no well-known: SRV _matrix-fed._tcp of the name.
    [
      'direct-srv.test',
      {
        connectHost: 'fed.test',
        port: 4444,
        hostHeader: 'direct-srv.test',
        tlsName: 'direct-srv.test',
        sni: 'direct-srv.test',
      },
    ],
    // 5. the deprecated _matrix._tcp.
    [
      'legacy.test',
      {
        connectHost: 'old.test',
        port: 3333,
        hostHeader: 'legacy.test',
        tlsName: 'legacy.test',
        sni: 'legacy.test',
      },
    ],
    // 6. nothing: the name and 8448.
    [
      'bare.test',
      {
        connectHost: 'bare.test',
        port: 8448,
        hostHeader: 'bare.test',
        tlsName: 'bare.test',
        sni: 'bare.test',
      },
    ],
  ];
  for (const [name, expected] of cases) t.same(await discovery.resolve(name), expected, name);
  t.notOk(fetched.includes('hs.test'), 'no well-known for a name with a port');
  t.notOk(
    fetched.some((h) => h.startsWith('127.')),
    'no well-known for IP literals',
  );
  t.ok(resolver.asked.includes('_matrix-fed._tcp.legacy.test'), 'the new SRV name is tried first');

  // Cached: a second resolution asks nothing.
  const before = fetched.length;
  await discovery.resolve('delegated-port.test');
  await discovery.resolve('bare.test');
  t.equal(fetched.length, before, 'answers and errors are cached');
  await t.rejects(discovery.resolve('not a name'), /not a valid server name/);
});

t.test('well-known cache lifetimes', async (t) => {
  t.equal(wellKnownCacheMs(undefined, true), 24 * H, '24 hours by default');
  t.equal(wellKnownCacheMs('public, max-age=600', true), 600_000);
  t.equal(wellKnownCacheMs('max-age=999999999', true), 48 * H, 'at most 48 hours');
  t.equal(wellKnownCacheMs('no-store', true), 0);
  t.equal(wellKnownCacheMs('max-age=600', false), H, 'errors for an hour');

  let now = 0;
  let calls = 0;
  const discovery = new ServerDiscovery(
    tableResolver({}),
    async () => {
      calls++;
      return { server: 'x.test:1', cacheMs: 1000 };
    },
    () => now,
  );
  await discovery.resolve('a.test');
  await discovery.resolve('a.test');
  t.equal(calls, 1);
  now = 1001;
  await discovery.resolve('a.test');
  t.equal(calls, 2, 'fetched again once the cache expires');
});

interface Seen {
  host: string | undefined;
  sni: string | false | null;
  url: string;
}

/** An HTTPS server on 127.0.0.1 with a certificate from `ca` for `name`. */
async function httpsServer(
  t: { teardown(fn: () => unknown): void },
  ca: TestCa,
  names: string[],
  handler: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void,
): Promise<{ port: number; seen: Seen[] }> {
  const { certFile, keyFile } = ca.issue(names[0]!, ...names.slice(1));
  const seen: Seen[] = [];
  const server = https.createServer(
    { cert: readFileSync(certFile), key: readFileSync(keyFile) },
    (req, res) => {
      seen.push({ host: req.headers.host, sni: (req.socket as TLSSocket).servername, url: req.url ?? '' });
      handler(req, res);
    },
  );
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  return { port: (server.address() as AddressInfo).port, seen };
}

const json = (res: import('node:http').ServerResponse, status: number, body: unknown, headers = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};

const request = (destination: string, uri = '/_matrix/federation/v1/version', extra = {}) => ({
  destination,
  method: 'GET' as const,
  uri,
  headers: {},
  timeoutMs: 5000,
  maxResponseBytes: 1024 * 1024,
  ...extra,
});

t.test('the HTTPS transport over loopback', async (t) => {
  const ca = makeTestCa(t);
  // The federation endpoint of hs.test, delegated by well-known to fed.test via SRV.
  const fed = await httpsServer(t, ca, ['hs.test'], (req, res) => {
    if (req.url === '/big') return json(res, 200, { x: 'y'.repeat(4096) });
    if (req.url === '/slow') return; // never answers
    json(res, 200, { server: { name: 'loopback' } });
  });
  // https://<name>/.well-known/matrix/server for every name, on one port.
  const wellKnown = await httpsServer(t, ca, ['hs.test', 'redirect.test', 'loop.test'], (req, res) => {
    if (req.headers.host?.split(':')[0] === 'hs.test') return json(res, 200, { 'm.server': 'hs.test' });
    if (req.headers.host === 'redirect.test') {
      res.writeHead(302, { location: `https://hs.test:${wellKnownPort()}/.well-known/matrix/server` });
      return res.end();
    }
    if (req.headers.host === 'loop.test') {
      res.writeHead(301, { location: '/.well-known/matrix/server' });
      return res.end();
    }
    json(res, 404, { errcode: 'M_NOT_FOUND' });
  });
  const wellKnownPort = () => wellKnown.port;
  const resolver = tableResolver({ '_matrix-fed._tcp.hs.test': [srv('fed.test', fed.port)] }, ['gone.test']);
  const transport = new HttpsTransport({ caFile: ca.caFile, resolver, wellKnownPort: wellKnown.port });
  t.teardown(() => transport.close());

  t.test('well-known, then SRV, with Host and SNI for the server name', async (t) => {
    const res = await transport.send(request('hs.test'));
    t.equal(res.status, 200);
    t.same(JSON.parse(Buffer.from(res.body).toString()), { server: { name: 'loopback' } });
    const last = fed.seen.at(-1)!;
    t.equal(last.host, 'hs.test', 'Host is the delegated name');
    t.equal(last.sni, 'hs.test', 'SNI is the delegated name');
    t.equal(wellKnown.seen[0]!.sni, 'hs.test', 'the well-known request sends SNI too');
  });

  t.test('an IP literal: no SNI, certificate for the address', async (t) => {
    const ipServer = await httpsServer(t, ca, ['127.0.0.1'], (_req, res) => json(res, 200, {}));
    const res = await transport.send(request(`127.0.0.1:${ipServer.port}`));
    t.equal(res.status, 200);
    t.equal(ipServer.seen[0]!.host, `127.0.0.1:${ipServer.port}`);
    t.equal(ipServer.seen[0]!.sni, false, 'no SNI for an IP address');
  });

  t.test('a certificate for another name, or from an untrusted CA, is refused', async (t) => {
    const err = await transport.send(request(`other.test:${fed.port}`)).catch((e: unknown) => e);
    t.ok(err instanceof FederationError);
    t.equal((err as FederationError).kind, 'unreachable');
    t.match((err as FederationError).message, /altnames|Hostname/i);
    const untrusting = new HttpsTransport({ resolver, wellKnownPort: wellKnown.port });
    t.teardown(() => untrusting.close());
    const err2 = await untrusting.send(request(`hs.test:${fed.port}`)).catch((e: unknown) => e);
    t.equal((err2 as FederationError).kind, 'unreachable');
    t.match(
      (err2 as FederationError).message,
      /certificate/i,
      'the system CAs alone do not trust the test CA',
    );
  });

  t.test('redirects are followed, loops are not', async (t) => {
    const discovery = transport.discovery;
    t.same((await discovery.resolve('redirect.test')).tlsName, 'hs.test', 'the redirect target delegates');
    const loop = await discovery.resolve('loop.test');
    t.equal(loop.port, 8448, 'a redirect loop counts as no well-known');
  });

  t.test('timeouts, size limits and unknown hosts are typed errors', async (t) => {
    const slow = await transport
      .send(request(`hs.test:${fed.port}`, '/slow', { timeoutMs: 200 }))
      .catch((e: unknown) => e);
    t.equal((slow as FederationError).kind, 'timeout');
    const big = await transport
      .send(request(`hs.test:${fed.port}`, '/big', { maxResponseBytes: 1000 }))
      .catch((e: unknown) => e);
    t.equal((big as FederationError).kind, 'too-large');
    const gone = await transport.send(request('gone.test:1')).catch((e: unknown) => e);
    t.equal((gone as FederationError).kind, 'unreachable');
    t.match((gone as FederationError).message, /cannot resolve gone\.test/);
  });
});

t.test('federation_hosts_file: fixed addresses before discovery, read again when changed', async (t) => {
  t.same(
    [
      ...parseStaticHosts(
        [
          '# comment',
          'hs1 127.0.0.1:21100',
          'hs2   127.0.0.1:21101  # trailing comment',
          'no-port 127.0.0.1',
          'bad!name 127.0.0.1:1',
          'too many 127.0.0.1:2 x',
          'six.test [::1]:21102',
          'hs1 127.0.0.1:21103',
        ].join('\n'),
      ),
    ],
    [
      ['hs1', { host: '127.0.0.1', port: 21103 }],
      ['hs2', { host: '127.0.0.1', port: 21101 }],
      ['six.test', { host: '::1', port: 21102 }],
    ],
    'well-formed lines only; the last line for a name wins',
  );
  const ca = makeTestCa(t);
  const fixed = await httpsServer(t, ca, ['hsone', 'hstwo'], (_req, res) => json(res, 200, { ok: true }));
  const other = await httpsServer(t, ca, ['elsewhere.test'], (_req, res) => json(res, 200, {}));
  const file = path.join(ca.dir, 'fed.hosts');
  writeFileSync(file, `hsone 127.0.0.1:${fixed.port}\nwrongcert 127.0.0.1:${other.port}\n`);
  // No DNS answers at all: a name reached at all was reached through the file.
  const resolver = tableResolver({}, ['hsone', 'hstwo', 'wrongcert', 'unlisted']);
  const transport = new HttpsTransport({ caFile: ca.caFile, resolver, hostsFile: file, wellKnownPort: 1 });
  t.teardown(() => transport.close());

  const res = await transport.send(request('hsone'));
  t.equal(res.status, 200);
  t.equal(fixed.seen.at(-1)!.host, 'hsone', 'Host is the server name');
  t.equal(fixed.seen.at(-1)!.sni, 'hsone', 'SNI is the server name');
  t.same(resolver.asked, [], 'neither well-known nor SRV was asked');

  const unlisted = await transport.send(request('hstwo')).catch((e: unknown) => e);
  t.equal((unlisted as FederationError).kind, 'unreachable', 'a name not in the file goes through discovery');

  // Lines added while the server runs are seen (the file is read again when it changes).
  appendFileSync(file, `hstwo 127.0.0.1:${fixed.port}\n`);
  t.equal((await transport.send(request('hstwo'))).status, 200);

  const wrong = await transport.send(request('wrongcert')).catch((e: unknown) => e);
  t.equal((wrong as FederationError).kind, 'unreachable');
  t.match(
    (wrong as FederationError).message,
    /altnames|Hostname/i,
    'the certificate must be for the server name',
  );

  rmSync(file);
  const removed = await transport.send(request('hsone')).catch((e: unknown) => e);
  t.equal((removed as FederationError).kind, 'unreachable', 'a removed file fixes nothing any more');
});
