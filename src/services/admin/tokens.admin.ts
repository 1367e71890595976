import { randomBytes } from 'node:crypto';
import { errors } from '../../errors.ts';
import type { RegistrationTokenRow } from '../../storage/database.ts';
import type { AuditLog } from '../audit-log.ts';
import type { RegistrationTokensService } from '../registration-tokens.service.ts';
import type { AdminActor } from './actor.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-';

function tokenJson(row: RegistrationTokenRow) {
  return {
    token: row.token,
    uses_allowed: row.uses_allowed,
    pending: row.pending,
    completed: row.completed,
    expiry_time: row.expiry_time,
  };
}

/** Registration tokens as an admin manages them (Synapse's /v1/registration_tokens), audited. */
export class AdminTokensService {
  constructor(
    private readonly tokens: RegistrationTokensService,
    private readonly audit: AuditLog,
  ) {}

  async list(valid?: boolean) {
    const rows = await this.tokens.list();
    const picked = valid === undefined ? rows : rows.filter((r) => this.tokens.isUsable(r) === valid);
    return { registration_tokens: picked.map(tokenJson) };
  }

  async get(token: string) {
    const row = await this.tokens.get(token);
    if (!row) throw errors.notFound('No such registration token');
    return tokenJson(row);
  }

  async create(
    by: AdminActor,
    opts: { token?: string; usesAllowed?: number | null; expiryTime?: number | null; length?: number },
  ) {
    let token = opts.token;
    if (token === undefined && opts.length !== undefined) {
      const bytes = randomBytes(opts.length);
      token = [...bytes].map((b) => ALPHABET[b % ALPHABET.length]).join('');
    }
    const row = await this.tokens.create({
      ...(token !== undefined ? { token } : {}),
      usesAllowed: opts.usesAllowed ?? null,
      expiryTime: opts.expiryTime ?? null,
    });
    await this.audit.record({
      action: 'admin.registration_token.create',
      actor: by.actor,
      address: by.address ?? null,
      // The token is a secret of sorts: the log names that one was made, with its limits.
      details: { uses_allowed: row.uses_allowed, expiry_time: row.expiry_time },
    });
    return tokenJson(row);
  }

  async update(
    by: AdminActor,
    token: string,
    changes: { usesAllowed?: number | null; expiryTime?: number | null },
  ) {
    const row = await this.tokens.update(token, changes);
    if (!row) throw errors.notFound('No such registration token');
    await this.audit.record({
      action: 'admin.registration_token.update',
      actor: by.actor,
      address: by.address ?? null,
      details: { uses_allowed: row.uses_allowed, expiry_time: row.expiry_time },
    });
    return tokenJson(row);
  }

  async delete(by: AdminActor, token: string): Promise<void> {
    if (!(await this.tokens.delete(token))) throw errors.notFound('No such registration token');
    await this.audit.record({
      action: 'admin.registration_token.delete',
      actor: by.actor,
      address: by.address ?? null,
    });
  }
}
