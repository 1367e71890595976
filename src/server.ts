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
    logger: {
      level: config.logLevel,
      // Defence in depth: even if a header were ever logged, its secret parts are not.
      redact: ['req.headers.authorization', 'headers.authorization', '*.password', '*.access_token'],
    },
  });
  if (config.registration === 'open') {
    app.log.warn('registration is open: anyone who can reach this server can create an account');
  }
  const shutdown = async (signal: string) => {
    app.log.info({ signal }, 'shutting down');
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
}

main().catch((err: unknown) => {
  process.stderr.write(`conclave: failed to start: ${(err as Error).message ?? err}\n`);
  process.exit(1);
});
