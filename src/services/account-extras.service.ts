import { createHmac } from 'node:crypto';
import type { Config } from '../config.ts';
import type { Db } from '../storage/connect.ts';
import type { AccountsService, Session } from './accounts.service.ts';
import type { RoomsService } from './rooms.service.ts';

/** Most rooms one deactivation leaves (the rest stay; spec/account.md says so). */
const MAX_ROOMS_LEFT = 10_000;

/**
 * The parts of the account API beyond passwords and devices: deactivation (which must leave
 * rooms, so it sits above both the accounts and the rooms services) and TURN credentials.
 */
export class AccountExtrasService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly accounts: AccountsService,
    private readonly rooms: RoomsService,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * POST /account/deactivate: after UIA with the password, closes the account (tokens, devices,
   * keys, backups, to-device messages; profile and account data too with `erase`), then leaves
   * every room it is joined to, invited to or knocking on, with a leave event in each.
   */
  async deactivate(
    session: Session,
    req: { auth: unknown; erase: boolean; address: string },
  ): Promise<{ id_server_unbind_result: 'no-support'; rooms_left: number; rooms_failed: number }> {
    return this.accounts.withPassword(session, 'deactivate', req.auth, req.address, async () => {
      await this.accounts.closeAccount(session.userId, { erase: req.erase, address: req.address });
      const memberships = await this.db
        .selectFrom('memberships')
        .select('room_id')
        .where('user_id', '=', session.userId)
        .where('membership', 'in', ['join', 'invite', 'knock'])
        .orderBy('room_id')
        .limit(MAX_ROOMS_LEFT)
        .execute();
      let left = 0;
      let failed = 0;
      for (const m of memberships) {
        try {
          await this.rooms.leave(session, m.room_id);
          left++;
        } catch {
          // A room that refuses the leave (or whose server cannot be reached) is not retried;
          // the count says so.
          failed++;
        }
      }
      return { id_server_unbind_result: 'no-support', rooms_left: left, rooms_failed: failed };
    });
  }

  /**
   * GET /voip/turnServer: coturn's shared-secret scheme (use-auth-secret): the user name is
   * `<expiry in seconds>:<user ID>`, the password the base64 HMAC-SHA1 of it under the secret.
   * Without configured URIs and secret: `{}`, which clients read as "no TURN server".
   */
  turnServer(userId: string): Record<string, unknown> {
    const { turnUris, turnSharedSecret, turnUserLifetimeMs } = this.config;
    if (turnUris.length === 0 || turnSharedSecret === '') return {};
    const expiry = Math.floor((this.now() + turnUserLifetimeMs) / 1000);
    const username = `${expiry}:${userId}`;
    const password = createHmac('sha1', turnSharedSecret).update(username).digest('base64');
    return { username, password, uris: turnUris, ttl: Math.floor(turnUserLifetimeMs / 1000) };
  }
}
