import { verifyEventSignature } from '../protocol/event-signing.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import type { ServerKeysService } from '../services/server-keys.service.ts';
import type { EventSignatureVerifier } from './pipeline.ts';

/**
 * Verifies events signed by this server with its own key; any other server's signature fails,
 * for want of its keys. The federation key ring replaces it where other servers' keys are known.
 */
export class OwnKeyVerifier implements EventSignatureVerifier {
  constructor(private readonly serverKeys: ServerKeysService) {}

  async verifyEvent(pdu: object, rv: RoomVersion, servers: string[]) {
    const key = this.serverKeys.key;
    for (const server of servers) {
      if (server !== this.serverKeys.serverName)
        return { ok: false as const, reason: `no keys for ${server}` };
      if (!verifyEventSignature(pdu, rv, server, key.keyId, key.publicKey)) {
        return { ok: false as const, reason: `bad signature by ${server}` };
      }
    }
    return { ok: true as const };
  }
}
