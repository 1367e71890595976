import { errors } from '../../errors.ts';
import { isValidRoomId, isValidUserId } from '../../protocol/identifiers.ts';
import type { JsonObject } from '../../protocol/json.ts';
import * as accountsRepo from '../../storage/accounts.repository.ts';
import * as repo from '../../storage/admin.repository.ts';
import type { Db } from '../../storage/connect.ts';
import type { ReportRow } from '../../storage/database.ts';
import type { Session } from '../accounts.service.ts';
import type { AuditLog } from '../audit-log.ts';
import type { RoomsService } from '../rooms.service.ts';
import type { AdminActor } from './actor.ts';
import type { ServerNoticesService } from './server-notices.service.ts';

/** Admins told of each new report in their server-notices room, at most. */
const MAX_NOTIFIED_ADMINS = 20;
export const MAX_REASON_LENGTH = 1000;

/**
 * Reports of events, rooms and users by clients (client-server API: Reporting content), and the
 * admin side of them. A report names its reporter to admins only: nothing is sent to the
 * reported user or to the room.
 */
export class ReportsService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly notices: ServerNoticesService,
    private readonly audit: AuditLog,
    private readonly now: () => number = Date.now,
  ) {}

  /** POST /rooms/{roomId}/report/{eventId}: the reporter must be in the room and able to see the event. */
  async reportEvent(session: Session, roomId: string, eventId: string, reason?: string, score?: number) {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    if ((await this.rooms.membership(roomId, session.userId)) !== 'join')
      throw errors.notFound('The event was not found or you are not joined to its room');
    await this.rooms.visibleEvent(session.userId, roomId, eventId);
    return this.file(session, {
      kind: 'event',
      room_id: roomId,
      event_id: eventId,
      target_user_id: null,
      reason,
      score,
    });
  }

  /** POST /rooms/{roomId}/report: the reporter must be joined or invited. */
  async reportRoom(session: Session, roomId: string, reason?: string) {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const m = await this.rooms.membership(roomId, session.userId);
    if (m !== 'join' && m !== 'invite') throw errors.notFound('The room was not found or you are not in it');
    return this.file(session, {
      kind: 'room',
      room_id: roomId,
      event_id: null,
      target_user_id: null,
      reason,
    });
  }

  /** POST /users/{userId}/report: a local user must exist; any well-formed remote one is taken. */
  async reportUser(session: Session, userId: string, reason?: string) {
    if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
    if (this.rooms.isLocalUser(userId) && !(await accountsRepo.userExists(this.db, userId)))
      throw errors.notFound('User not found');
    return this.file(session, {
      kind: 'user',
      room_id: null,
      event_id: null,
      target_user_id: userId,
      reason,
    });
  }

  private async file(
    session: Session,
    r: Pick<ReportRow, 'kind' | 'room_id' | 'event_id' | 'target_user_id'> & {
      reason?: string | undefined;
      score?: number | undefined;
    },
  ): Promise<Record<string, never>> {
    if (r.reason !== undefined && r.reason.length > MAX_REASON_LENGTH)
      throw errors.badJson(`reason is longer than ${MAX_REASON_LENGTH} characters`);
    const id = await this.db.transaction().execute(async (trx) => {
      const reportId = await repo.insertReport(trx, {
        kind: r.kind,
        received_ts: this.now(),
        reporter: session.userId,
        room_id: r.room_id,
        event_id: r.event_id,
        target_user_id: r.target_user_id,
        reason: r.reason ?? null,
        score: r.score ?? null,
      });
      // The reason is the reporter's words: it stays in the report, not in the audit log.
      await this.audit.record(
        {
          action: `report.${r.kind}`,
          actor: session.userId,
          target: r.event_id ?? r.target_user_id ?? r.room_id,
          details: { report_id: reportId, ...(r.room_id ? { room_id: r.room_id } : {}) },
        },
        trx,
      );
      return reportId;
    });
    await this.tellAdmins(id, session.userId, r);
    return {};
  }

  /** Each admin gets a server notice naming the report (best effort: a failure leaves the report). */
  private async tellAdmins(
    id: number,
    reporter: string,
    r: Pick<ReportRow, 'kind' | 'room_id' | 'event_id' | 'target_user_id'> & { reason?: string | undefined },
  ): Promise<void> {
    const admins = await this.db
      .selectFrom('users')
      .select('user_id')
      .where('is_admin', '=', true)
      .where('deactivated', '=', false)
      .orderBy('user_id')
      .limit(MAX_NOTIFIED_ADMINS)
      .execute();
    const what =
      r.kind === 'event'
        ? `event ${r.event_id} in ${r.room_id}`
        : r.kind === 'room'
          ? `room ${r.room_id}`
          : `user ${r.target_user_id}`;
    const body = `Report #${id}: ${what}, by ${reporter}${r.reason ? `: ${r.reason}` : ''}. See GET /_synapse/admin/v1/event_reports/${id} or npm run admin -- reports.`;
    for (const admin of admins) {
      try {
        await this.notices.send({ actor: 'policy:reports' }, admin.user_id, { msgtype: 'm.notice', body });
      } catch {
        // The report stands; the list (API and CLI) shows it.
      }
    }
  }

  async list(filter: repo.ReportFilter, page: { from: number; limit: number; dir: 'f' | 'b' }) {
    const { rows, total } = await repo.listReports(this.db, filter, page);
    const next = page.from + rows.length;
    return {
      event_reports: await Promise.all(rows.map((r) => this.reportJson(r))),
      total,
      ...(next < total ? { next_token: next } : {}),
    };
  }

  async get(id: number) {
    const row = await repo.findReport(this.db, id);
    if (!row) throw errors.notFound('Report not found');
    const report = await this.reportJson(row);
    const event =
      row.event_id !== null
        ? await this.db
            .selectFrom('pdus')
            .select('json')
            .where('event_id', '=', row.event_id)
            .executeTakeFirst()
        : undefined;
    return { ...report, event_json: (event?.json as JsonObject | undefined) ?? null };
  }

  /** DELETE /v1/event_reports/{id} */
  async dismiss(by: AdminActor, id: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      if (!(await repo.deleteReport(trx, id))) throw errors.notFound('Report not found');
      await this.audit.record(
        { action: 'admin.report.dismiss', actor: by.actor, target: String(id), address: by.address ?? null },
        trx,
      );
    });
  }

  private async reportJson(r: repo.ReportListRow) {
    const name = r.room_id ? await this.rooms.currentStateRow(r.room_id, 'm.room.name', '') : undefined;
    const alias = r.room_id
      ? await this.rooms.currentStateRow(r.room_id, 'm.room.canonical_alias', '')
      : undefined;
    const text = (row: typeof name, key: string) => {
      const v = (row?.json.content as JsonObject | undefined)?.[key];
      return typeof v === 'string' ? v : null;
    };
    return {
      id: r.id,
      kind: r.kind,
      received_ts: r.received_ts,
      room_id: r.room_id,
      name: text(name, 'name'),
      canonical_alias: text(alias, 'alias'),
      event_id: r.event_id,
      user_id: r.reporter,
      sender: r.sender,
      target_user_id: r.target_user_id,
      reason: r.reason,
      score: r.score,
    };
  }
}
