import { type DetectionStore, openDetectionStore } from './bus/detection-store.ts';
import { type Bus, openBus } from './bus/index.ts';
import { openRateLimitStore, type RateLimitStore } from './bus/rate-limit-store.ts';
import { type Config, pgliteDirectory } from './config.ts';
import type { Federation, FederationTransport } from './federation/index.ts';
import { createServices, type Services } from './services/index.ts';
import { type DatabaseHandle, migrateToLatest, openDatabase } from './storage/connect.ts';

export interface Runtime {
  config: Config;
  database: DatabaseHandle;
  bus: Bus;
  services: Services;
  /** The outbound federation client and the key ring; hand it to buildApp. */
  federation: Federation;
  close(): Promise<void>;
}

/** Opens the database (migrating it), the bus and the services a process needs. */
export async function startRuntime(
  config: Config,
  opts: {
    pgliteInMemory?: boolean;
    /** Where outbound federation requests go; HTTPS with server discovery by default. */
    federationTransport?: FederationTransport;
    /** Where the detectors count (tests hand one with a clock of their own); closed with the runtime. */
    detectionStore?: DetectionStore;
  } = {},
): Promise<Runtime> {
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    pgliteDir: opts.pgliteInMemory ? null : pgliteDirectory(config),
  });
  let bus: Bus | undefined;
  let rateLimitStore: RateLimitStore | undefined;
  let detectionStore: DetectionStore | undefined;
  try {
    await migrateToLatest(database.db);
    bus = await openBus(config.redisUrl);
    rateLimitStore = await openRateLimitStore(config.redisUrl);
    detectionStore = opts.detectionStore ?? (await openDetectionStore(config.redisUrl));
    const services = await createServices({
      config,
      db: database.db,
      bus,
      rateLimitStore,
      detectionStore,
      ...(opts.federationTransport ? { federationTransport: opts.federationTransport } : {}),
    });
    const federation = services.federation;
    const openedBus = bus;
    const openedStore = rateLimitStore;
    const openedDetection = detectionStore;
    return {
      config,
      database,
      bus: openedBus,
      services,
      federation,
      async close() {
        await services.stop();
        await openedStore.close();
        await openedDetection.close();
        await openedBus.close();
        await database.close();
      },
    };
  } catch (err) {
    await rateLimitStore?.close();
    await detectionStore?.close();
    await bus?.close();
    await database.close();
    throw err;
  }
}
