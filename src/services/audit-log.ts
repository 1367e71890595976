import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import * as repo from '../storage/audit.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { AuditLogRow } from '../storage/database.ts';

/**
 * The audit log: who did what to whom, when and from where. Every security-relevant action
 * records one entry (the action names are listed in spec/audit-log.md). An entry never holds a
 * secret (password, token, key) or message content: callers pass identifiers and counts only.
 */
export interface AuditEntry {
  /** A dotted name, for example `login.failed`, `admin.user.deactivate`, `retention.purge`. */
  action: string;
  /** The user ID that acted, `policy:<name>` or `detector:<name>` for the server itself; null when unknown. */
  actor?: string | null;
  /** What the action was about: a user, room or event ID, or a server name. */
  target?: string | null;
  /** The client's address, where a request caused the action. */
  address?: string | null;
  details?: JsonObject;
}

export type AuditRecord = AuditLogRow;

export class AuditLog {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Appends an entry. Pass the caller's transaction so the record commits (or not) with the
   * change it describes.
   */
  async record(entry: AuditEntry, trx?: Executor): Promise<number> {
    return repo.insertAuditRecord(trx ?? this.db, {
      ts: this.now(),
      action: entry.action,
      actor: entry.actor ?? null,
      target: entry.target ?? null,
      address: entry.address ?? null,
      details: entry.details ?? {},
    });
  }

  /** Entries in the order they were written, after `afterId`, at most `limit` (default 100, at most 1,000). */
  async list(filter: repo.AuditFilter & { limit?: number } = {}): Promise<AuditRecord[]> {
    const limit = Math.min(Math.max(filter.limit ?? 100, 1), 1000);
    return repo.listAuditRecords(this.db, { ...filter, limit });
  }
}
