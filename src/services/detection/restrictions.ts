import type { Db } from '../../storage/connect.ts';
import type { AdminUsersService } from '../admin/users.admin.ts';

/**
 * Locking and suspending accounts, as the detectors need it. A lock or suspension is an account
 * state the admin API keeps on the user (AdminUsersService.lockUser / suspendUser: audited, the
 * user's cached sessions dropped on every process) and src/http/auth.ts enforces; this is the
 * detectors' door to it, so there is one mechanism and one list of refused routes.
 */
export interface AccountRestrictions {
  /** MSC3939: every request with the account's tokens answers 401 M_USER_LOCKED (soft logout). */
  lock(userId: string, detector: string): Promise<void>;
  /** MSC3823: the account may read but not write (403 M_USER_SUSPENDED). */
  suspend(userId: string, detector: string): Promise<void>;
}

export interface Restriction {
  locked: boolean;
  suspended: boolean;
}

export class UserStateRestrictions implements AccountRestrictions {
  constructor(
    private readonly db: Db,
    /** The admin service, built after the detectors (they only act once requests flow). */
    private readonly users: () => AdminUsersService,
  ) {}

  lock(userId: string, detector: string): Promise<void> {
    return this.users().lockUser(userId, true, { actor: `detector:${detector}` });
  }

  suspend(userId: string, detector: string): Promise<void> {
    return this.users().suspendUser(userId, true, { actor: `detector:${detector}` });
  }

  /** Lifts both (for tests; admins use the admin API or CLI). */
  async clear(userId: string, actor = 'detector:cleared'): Promise<void> {
    await this.users().lockUser(userId, false, { actor });
    await this.users().suspendUser(userId, false, { actor });
  }

  async get(userId: string): Promise<Restriction> {
    const row = await this.db
      .selectFrom('users')
      .select(['locked', 'suspended'])
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return { locked: row?.locked ?? false, suspended: row?.suspended ?? false };
  }
}
