import type { EventSignatureVerifier } from '../../src/events/pipeline.ts';
import { verifyEventSignature } from '../../src/protocol/event-signing.ts';
import type { RoomVersion } from '../../src/protocol/room-versions.ts';

/**
 * Verifies event signatures of the servers whose keys it was given, for feeding the event
 * pipeline events of made-up servers without a key ring.
 */
export class StaticVerifier implements EventSignatureVerifier {
  constructor(private readonly keys: Map<string, { keyId: string; publicKey: Uint8Array }>) {}
  async verifyEvent(pdu: object, rv: RoomVersion, servers: string[]) {
    for (const server of servers) {
      const key = this.keys.get(server);
      if (!key) return { ok: false as const, reason: `no key for ${server}` };
      if (!verifyEventSignature(pdu, rv, server, key.keyId, key.publicKey))
        return { ok: false as const, reason: `bad signature by ${server}` };
    }
    return { ok: true as const };
  }
}
