import { readFileSync } from 'node:fs';
import https from 'node:https';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';
import { startRuntime } from './runtime.ts';

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
  const shutdown = async (signal: string) => {
    app.log.info({ signal }, 'shutting down');
    if (federationServer) await new Promise((resolve) => federationServer.close(resolve));
    await new Promise((resolve) => app.server.close(resolve));
    await app.close();
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
