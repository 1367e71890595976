import { errors, MatrixError } from '../../errors.ts';
import type { Db } from '../../storage/connect.ts';
import type { AccountsService, Session } from '../accounts.service.ts';
import type { RoomsService } from '../rooms.service.ts';
import { randomToken } from '../secrets.ts';
import { type AlertSink, alertText } from './detection.service.ts';

export const NOTICES_LOCALPART = 'conclave-notices';

/**
 * The server-notices room: a room of the system user @conclave-notices:<server> to which every
 * server admin is invited. Alerts are posted there as m.notice messages. The room is made on the
 * first notice and its ID kept in `detection_notice_rooms`; admins made later are invited with
 * the next notice. Two processes posting their first notice at once may each make a room: the
 * first recorded is used, the other stays empty.
 */
export class ServerNotices {
  private pending: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly accounts: AccountsService,
    private readonly rooms: RoomsService,
  ) {}

  get userId(): string {
    return this.accounts.userIdFor(NOTICES_LOCALPART);
  }

  private get session(): Session {
    return { userId: this.userId, deviceId: 'CONCLAVE', tokenHash: '', isAdmin: true };
  }

  /** Posts `text` to the admins' notices room (one post at a time in this process). */
  post(text: string): Promise<void> {
    const run = this.pending.then(() => this.postNow(text));
    this.pending = run.catch(() => {});
    return run;
  }

  /** The room's ID, made when there is none yet. */
  async roomId(): Promise<string> {
    const known = await this.knownRoom();
    if (known) return known;
    try {
      await this.accounts.createAccount({ localpart: NOTICES_LOCALPART, login: false });
    } catch (err) {
      if (!(err instanceof MatrixError && err.errcode === errors.userInUse().errcode)) throw err;
    }
    const { room_id } = await this.rooms.createRoom(this.session, {
      preset: 'private_chat',
      name: 'Server notices',
    });
    await this.db
      .insertInto('detection_notice_rooms')
      .values({ name: 'admins', room_id })
      .onConflict((c) => c.column('name').doNothing())
      .execute();
    return (await this.knownRoom())!;
  }

  private async knownRoom(): Promise<string | undefined> {
    const row = await this.db
      .selectFrom('detection_notice_rooms')
      .select('room_id')
      .where('name', '=', 'admins')
      .executeTakeFirst();
    return row?.room_id;
  }

  private async postNow(text: string): Promise<void> {
    const roomId = await this.roomId();
    const admins = await this.db
      .selectFrom('users')
      .select('user_id')
      .where('is_admin', '=', true)
      .where('deactivated', '=', false)
      .where('user_id', '!=', this.userId)
      .execute();
    for (const { user_id } of admins) {
      const m = await this.rooms.membership(roomId, user_id);
      if (m === undefined || m === 'leave') await this.rooms.invite(this.session, roomId, user_id);
    }
    await this.rooms.sendMessage(this.session, roomId, 'm.room.message', randomToken('notice_'), {
      msgtype: 'm.notice',
      body: text,
    });
  }
}

/** Alerts as notices in the admins' room. */
export function alertSinkOf(notices: ServerNotices): AlertSink {
  return { notify: (alert) => notices.post(alertText(alert)) };
}
