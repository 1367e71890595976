import type { TrustedKeyServer } from '../../config.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { isJsonObject } from '../../protocol/json.ts';
import { decodeKey, verifyJsonSignature } from '../../protocol/signing.ts';
import type { FederationClient } from '../client/federation-client.ts';

/**
 * A source of other servers' key responses. The key ring asks its fetchers in order (after its
 * own store) and checks every response it gets, so a fetcher only has to vouch for where the
 * response came from.
 */
export interface KeyFetcher {
  /** For logs and `fetched_from`: the server the responses come from. */
  readonly source: (serverName: string) => string;
  /** Key responses for `serverName`, valid until at least `minimumValidUntilTs` if possible. */
  fetch(serverName: string, keyIds: string[], minimumValidUntilTs: number): Promise<JsonObject[]>;
}

/** Asks the server itself: GET /_matrix/key/v2/server. */
export class DirectKeyFetcher implements KeyFetcher {
  readonly source = (serverName: string) => serverName;

  constructor(private readonly client: FederationClient) {}

  async fetch(serverName: string): Promise<JsonObject[]> {
    const response = await this.client.request<JsonObject>({
      destination: serverName,
      method: 'GET',
      path: '/_matrix/key/v2/server',
      timeoutMs: 10_000,
      maxResponseBytes: 256 * 1024,
    });
    return [response];
  }
}

/** Resolves the notary's own keys (store and direct only, never another notary). */
export type NotaryKeyLookup = (notary: string, keyId: string) => Promise<Uint8Array | null>;

/**
 * Asks a configured notary: POST /_matrix/key/v2/query with `minimum_valid_until_ts`. Every
 * response must carry the notary's signature, by one of its configured `verify_keys` when the
 * configuration names some, else by a key of the notary that the key ring fetched from it.
 */
export class NotaryKeyFetcher implements KeyFetcher {
  readonly source = () => this.notary.serverName;

  constructor(
    private readonly client: FederationClient,
    private readonly notary: TrustedKeyServer,
    private readonly lookupNotaryKey: NotaryKeyLookup,
  ) {}

  async fetch(serverName: string, keyIds: string[], minimumValidUntilTs: number): Promise<JsonObject[]> {
    const criteria: JsonObject = {};
    for (const keyId of keyIds) criteria[keyId] = { minimum_valid_until_ts: minimumValidUntilTs };
    const answer = await this.client.request<JsonObject>({
      destination: this.notary.serverName,
      method: 'POST',
      path: '/_matrix/key/v2/query',
      body: { server_keys: { [serverName]: criteria } },
      timeoutMs: 15_000,
      maxResponseBytes: 1024 * 1024,
    });
    const list = Array.isArray(answer.server_keys) ? answer.server_keys : [];
    const accepted: JsonObject[] = [];
    for (const response of list) {
      if (!isJsonObject(response) || response.server_name !== serverName) continue;
      if (await this.signedByNotary(response)) accepted.push(response);
    }
    return accepted;
  }

  private async signedByNotary(response: JsonObject): Promise<boolean> {
    const name = this.notary.serverName;
    const signatures = isJsonObject(response.signatures) ? response.signatures[name] : undefined;
    if (!isJsonObject(signatures)) return false;
    const configured = Object.entries(this.notary.verifyKeys);
    for (const keyId of Object.keys(signatures)) {
      let key: Uint8Array | null;
      if (configured.length > 0) {
        const text = this.notary.verifyKeys[keyId];
        key = text !== undefined ? decodeKey(text) : null;
      } else {
        key = await this.lookupNotaryKey(name, keyId);
      }
      if (key && verifyJsonSignature(response, name, keyId, key)) return true;
    }
    return false;
  }
}
