import { randomBytes } from 'node:crypto';
import { errors } from '../errors.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { RegistrationTokenRow } from '../storage/database.ts';

const TOKEN_RE = /^[A-Za-z0-9._~-]{1,64}$/;

/** Registration tokens (client-server API, m.login.registration_token): uses allowed and expiry. */
export class RegistrationTokensService {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  /** Creates a token; a random one when none is given. */
  async create(opts: {
    token?: string;
    usesAllowed?: number | null;
    expiryTime?: number | null;
  }): Promise<RegistrationTokenRow> {
    const token = opts.token ?? randomBytes(12).toString('base64url');
    if (!TOKEN_RE.test(token)) throw errors.invalidParam('Tokens are 1-64 characters of A-Z a-z 0-9 . _ ~ -');
    if (opts.usesAllowed != null && (!Number.isSafeInteger(opts.usesAllowed) || opts.usesAllowed < 0)) {
      throw errors.invalidParam('uses_allowed must be a non-negative integer');
    }
    const row = await this.db
      .insertInto('registration_tokens')
      .values({
        token,
        uses_allowed: opts.usesAllowed ?? null,
        expiry_time: opts.expiryTime ?? null,
        created_ts: this.now(),
      })
      .onConflict((c) => c.doNothing())
      .returningAll()
      .executeTakeFirst();
    if (!row) throw errors.invalidParam('That token exists already');
    return row;
  }

  list(): Promise<RegistrationTokenRow[]> {
    return this.db.selectFrom('registration_tokens').selectAll().orderBy('created_ts').execute();
  }

  get(token: string): Promise<RegistrationTokenRow | undefined> {
    return this.db
      .selectFrom('registration_tokens')
      .selectAll()
      .where('token', '=', token)
      .executeTakeFirst();
  }

  /** Changes uses allowed and expiry (null: unlimited, never); undefined fields stay. */
  async update(
    token: string,
    changes: { usesAllowed?: number | null; expiryTime?: number | null },
    trx: Executor = this.db,
  ): Promise<RegistrationTokenRow | undefined> {
    if (
      changes.usesAllowed != null &&
      (!Number.isSafeInteger(changes.usesAllowed) || changes.usesAllowed < 0)
    ) {
      throw errors.invalidParam('uses_allowed must be a non-negative integer');
    }
    const set = {
      ...(changes.usesAllowed !== undefined ? { uses_allowed: changes.usesAllowed } : {}),
      ...(changes.expiryTime !== undefined ? { expiry_time: changes.expiryTime } : {}),
    };
    if (Object.keys(set).length === 0) return this.get(token);
    return trx
      .updateTable('registration_tokens')
      .set(set)
      .where('token', '=', token)
      .returningAll()
      .executeTakeFirst();
  }

  async delete(token: string, trx: Executor = this.db): Promise<boolean> {
    const r = await trx.deleteFrom('registration_tokens').where('token', '=', token).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Whether a token can be used now (exists, not expired, uses left). */
  isUsable(row: RegistrationTokenRow): boolean {
    return this.usable(row);
  }

  /** True when the token exists, has not expired, and has uses left. */
  async isValid(token: string): Promise<boolean> {
    if (!TOKEN_RE.test(token)) return false;
    const row = await this.db
      .selectFrom('registration_tokens')
      .selectAll()
      .where('token', '=', token)
      .executeTakeFirst();
    return row !== undefined && this.usable(row);
  }

  /** Spends one use of the token inside the caller's transaction; false when none is left. */
  async spend(trx: Executor, token: string): Promise<boolean> {
    const now = this.now();
    const result = await trx
      .updateTable('registration_tokens')
      .set((eb) => ({ completed: eb('completed', '+', 1) }))
      .where('token', '=', token)
      .where((eb) => eb.or([eb('uses_allowed', 'is', null), eb('completed', '<', eb.ref('uses_allowed'))]))
      .where((eb) => eb.or([eb('expiry_time', 'is', null), eb('expiry_time', '>', now)]))
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  private usable(row: RegistrationTokenRow): boolean {
    if (row.expiry_time !== null && row.expiry_time <= this.now()) return false;
    return row.uses_allowed === null || row.completed < row.uses_allowed;
  }
}
