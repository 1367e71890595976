import { verifyEventSignature } from '../protocol/event-signing.ts';
import { computeEventId } from '../protocol/hashes.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import { signingKeyIds } from '../protocol/signing.ts';
import type { ServerKeysService } from '../services/server-keys.service.ts';
import type { EventSignatureVerifier } from './pipeline.ts';

/** How many verified remote event IDs are remembered (enough for a large join). */
const MEMO_LIMIT = 200_000;

/**
 * The verifier the pipeline uses inside room transactions, where no query of another connection
 * and no network request may wait (the embedded database has one connection, and a room lock
 * must not be held across the network). Our own signatures are checked with our keys in memory;
 * other servers' signatures must have been checked before the lock was taken (`preverify`, which
 * asks the key ring, fetching keys as needed) and are looked up by event ID.
 */
export class PreverifiedSignatures implements EventSignatureVerifier {
  private readonly verified = new Map<string, ReadonlySet<string>>();

  constructor(
    private readonly serverKeys: ServerKeysService,
    private readonly keyRing: EventSignatureVerifier,
  ) {}

  /** Checks the events' signatures through the key ring, outside any room lock; remembers successes. */
  async preverify(events: ReadonlyArray<object>, rv: RoomVersion, serversOf: (pdu: object) => string[]) {
    for (const pdu of events) {
      const servers = serversOf(pdu).filter((s) => s !== this.serverKeys.serverName);
      if (servers.length === 0) continue;
      const id = computeEventId(pdu, rv);
      if (this.covered(id, servers)) continue;
      const verdict = await this.keyRing.verifyEvent(
        pdu,
        rv,
        servers,
        (pdu as { origin_server_ts?: number }).origin_server_ts ?? 0,
      );
      if (!verdict.ok) continue;
      if (this.verified.size >= MEMO_LIMIT) this.verified.delete(this.verified.keys().next().value as string);
      this.verified.set(id, new Set([...(this.verified.get(id) ?? []), ...servers]));
    }
  }

  async verifyEvent(pdu: object, rv: RoomVersion, servers: string[]) {
    const own = this.serverKeys.serverName;
    const remote = servers.filter((s) => s !== own);
    if (remote.length > 0 && !this.covered(computeEventId(pdu, rv), remote)) {
      return { ok: false as const, reason: `signatures of ${remote.join(', ')} not verified` };
    }
    if (servers.includes(own)) {
      const ids = signingKeyIds(pdu, own);
      const keys = this.serverKeys.cachedVerifyKeys.filter((k) => ids.includes(k.keyId));
      if (!keys.some((k) => verifyEventSignature(pdu, rv, own, k.keyId, k.publicKey))) {
        return { ok: false as const, reason: `no valid signature by ${own}` };
      }
    }
    return { ok: true as const };
  }

  private covered(eventId: string, servers: readonly string[]): boolean {
    const known = this.verified.get(eventId);
    return known !== undefined && servers.every((s) => known.has(s));
  }
}
