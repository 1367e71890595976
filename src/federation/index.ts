import type { Config } from '../config.ts';
import type { ServerKeysService } from '../services/server-keys.service.ts';
import type { Db } from '../storage/connect.ts';
import { FederationClient } from './client/federation-client.ts';
import { HttpsTransport } from './client/https-transport.ts';
import type { FederationTransport } from './client/transport.ts';
import { DirectKeyFetcher, type KeyFetcher, NotaryKeyFetcher } from './keys/fetchers.ts';
import { KeyRing } from './keys/key-ring.ts';

export { FederationClient, type FederationRequest } from './client/federation-client.ts';
export { FederationError, type FederationTransport } from './client/transport.ts';
export { type EventSignatureVerifier, KeyRing, type Verdict } from './keys/key-ring.ts';

/** The federation side of one server process: the signed client and the key ring. */
export interface Federation {
  client: FederationClient;
  keyRing: KeyRing;
  /** Direct fetching only: what this server uses when it acts as a notary for others. */
  directFetchers: KeyFetcher[];
  close(): void;
}

/**
 * Builds the outbound client (over `transport`, by default HTTPS with server discovery and
 * `federation_ca_file`) and the key ring with its chain store -> direct -> trusted_key_servers.
 */
export function createFederation(deps: {
  config: Config;
  db: Db;
  serverKeys: ServerKeysService;
  transport?: FederationTransport;
  now?: () => number;
}): Federation {
  const { config, db, serverKeys } = deps;
  const https = deps.transport
    ? undefined
    : new HttpsTransport({
        caFile: config.federationCaFile || undefined,
        hostsFile: config.federationHostsFile || undefined,
      });
  const client = new FederationClient(serverKeys, deps.transport ?? https!);
  const direct = new DirectKeyFetcher(client);
  const fetchers: KeyFetcher[] = [direct];
  // The ring is built after its fetchers, which need it to check notaries' signatures.
  let ring: KeyRing | undefined;
  for (const notary of config.trustedKeyServers) {
    fetchers.push(
      new NotaryKeyFetcher(client, notary, async (name, keyId) => {
        const key = await ring!.getKey(
          name,
          keyId,
          (deps.now ?? Date.now)(),
          { kind: 'request' },
          { fetchers: [direct] },
        );
        return key.ok ? key.publicKey : null;
      }),
    );
  }
  ring = new KeyRing(db, serverKeys, fetchers, deps.now);
  return {
    client,
    keyRing: ring,
    directFetchers: [direct],
    close: () => https?.close(),
  };
}
