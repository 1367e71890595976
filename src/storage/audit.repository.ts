import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type { AuditLogRow } from './database.ts';

/** The audit log table: appended to, read in id order, never updated. */

export async function insertAuditRecord(
  db: Executor,
  row: {
    ts: number;
    action: string;
    actor: string | null;
    target: string | null;
    address: string | null;
    details: JsonObject;
  },
): Promise<number> {
  const inserted = await db
    .insertInto('audit_log')
    .values({ ...row, details: JSON.stringify(row.details) })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(inserted.id);
}

/** Which entries to list: each field narrows the result. */
export interface AuditFilter {
  afterId?: number;
  sinceTs?: number;
  action?: string;
  actor?: string;
  target?: string;
}

export async function listAuditRecords(
  db: Executor,
  filter: AuditFilter & { limit: number },
): Promise<AuditLogRow[]> {
  let query = db.selectFrom('audit_log').selectAll();
  if (filter.afterId !== undefined) query = query.where('id', '>', filter.afterId);
  if (filter.sinceTs !== undefined) query = query.where('ts', '>=', filter.sinceTs);
  if (filter.action !== undefined) query = query.where('action', '=', filter.action);
  if (filter.actor !== undefined) query = query.where('actor', '=', filter.actor);
  if (filter.target !== undefined) query = query.where('target', '=', filter.target);
  const rows = await query.orderBy('id').limit(filter.limit).execute();
  return rows.map((r) => ({ ...r, id: Number(r.id), ts: Number(r.ts) }));
}
