import { readFileSync } from 'node:fs';
import https from 'node:https';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';
import { startRuntime } from './runtime.ts';

/** How long requests in flight may run on after SIGTERM before their connections are cut. */
const SHUTDOWN_GRACE_MS = 5000;

/** Entry point of `npm start`: configure, open storage and bus, listen. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`conclave: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const runtime = await startRuntime(config);
  const app = await buildApp(runtime.services, {
    federation: runtime.federation,
    logger: {
      level: config.logLevel,
      // Defence in depth: even if a header were ever logged, its secret parts are not.
      redact: ['req.headers.authorization', 'headers.authorization', '*.password', '*.access_token'],
    },
  });
  runtime.services.retention.setLog((msg) => app.log.info(msg));
  if (config.registration === 'open') {
    app.log.warn('registration is open: anyone who can reach this server can create an account');
  }
  // The optional TLS listener for federation: the same application, but only the server-server
  // paths; everything else is 404 there.
  let federationServer: https.Server | undefined;
  if (config.federationTlsCertificate !== '') {
    federationServer = https.createServer(
      { cert: readFileSync(config.federationTlsCertificate), key: readFileSync(config.federationTlsKey) },
      (req, res) => {
        if (/^\/_matrix\/(federation|key)\//.test(req.url ?? '')) return app.routing(req, res);
        res.writeHead(404, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
        res.end(
          JSON.stringify({ errcode: 'M_UNRECOGNIZED', error: 'Not served on the federation listener' }),
        );
      },
    );
  }
  // Shutting down: stop accepting connections, drop the idle keep-alive ones at once (peers such
  // as Synapse keep them open, and close() would wait for them forever), let requests in flight
  // finish for a short grace period, then cut what is left (long polls, WebSockets).
  const shutdown = async (signal: string) => {
    app.log.info({ signal }, 'shutting down');
    const servers = [app.server, ...(federationServer ? [federationServer] : [])];
    const closed = servers.map((server) => new Promise((resolve) => server.close(resolve)));
    for (const server of servers) server.closeIdleConnections();
    const grace = setTimeout(() => {
      for (const server of servers) server.closeAllConnections();
    }, SHUTDOWN_GRACE_MS);
    await app.close();
    await Promise.all(closed);
    clearTimeout(grace);
    await runtime.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));

  // Listen on the node server directly so that the start is logged in the one line below.
  await app.ready();
  await new Promise<void>((resolve, reject) => {
    app.server.once('error', reject);
    app.server.listen({ host: config.bindAddress, port: config.port }, resolve);
  });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  app.log.info(
    `Conclave ${config.serverName} listening on http://${config.bindAddress === '0.0.0.0' ? 'localhost' : config.bindAddress}:${port}` +
      ` | database: ${runtime.database.description} | bus: ${runtime.bus.description}`,
  );
  if (federationServer) {
    const host = config.federationBindAddress || config.bindAddress;
    await new Promise<void>((resolve, reject) => {
      federationServer.once('error', reject);
      federationServer.listen({ host, port: config.federationPort }, resolve);
    });
    const fed = federationServer.address();
    const fedPort = typeof fed === 'object' && fed ? fed.port : config.federationPort;
    app.log.info(`federation listening on https://${host.includes(':') ? `[${host}]` : host}:${fedPort}`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`conclave: failed to start: ${(err as Error).message ?? err}\n`);
  process.exit(1);
});
