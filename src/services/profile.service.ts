import { errors, MatrixError } from '../errors.ts';
import type { EventsService } from '../events/events.service.ts';
import type { FederationClient } from '../federation/client/federation-client.ts';
import { FederationError } from '../federation/client/transport.ts';
import { parseUserId } from '../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../protocol/json.ts';
import * as repo from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import * as rooms from '../storage/rooms.repository.ts';
import type { Notifier } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import { isEncryptedSecret, SECRET_ACCOUNT_DATA_TYPES } from './secret-policy.ts';

/** How long a profile lookup on another server may take. */
const REMOTE_PROFILE_TIMEOUT_MS = 10_000;

/** Profiles (display name, avatar URL) and account data, global and per room. */
export class ProfileService {
  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly notifier: Notifier,
    private readonly events?: EventsService,
  ) {}

  private remote: Pick<FederationClient, 'request'> | undefined;

  /** Where profiles of other servers' users are asked for (GET /query/profile). */
  setRemote(client: Pick<FederationClient, 'request'>): void {
    this.remote = client;
  }

  /**
   * GET /profile/{userId}: ours from the database (404 for users we do not have), another
   * server's through GET /_matrix/federation/v1/query/profile on it (its 404 is ours; a server
   * that cannot be reached or answers nonsense is a 502).
   */
  async getProfile(userId: string): Promise<{ displayname?: string; avatar_url?: string }> {
    const server = parseUserId(userId)?.serverName;
    if (server !== undefined && server !== this.serverName) return this.remoteProfile(userId, server);
    const user = await repo.findUser(this.db, userId);
    if (!user || user.deactivated) throw errors.notFound('Profile not found');
    return {
      ...(user.display_name !== null ? { displayname: user.display_name } : {}),
      ...(user.avatar_url !== null ? { avatar_url: user.avatar_url } : {}),
    };
  }

  private async remoteProfile(
    userId: string,
    server: string,
  ): Promise<{ displayname?: string; avatar_url?: string }> {
    if (!this.remote) throw errors.notFound('Profile not found');
    let answer: Record<string, unknown>;
    try {
      answer = await this.remote.request({
        destination: server,
        method: 'GET',
        path: '/_matrix/federation/v1/query/profile',
        query: { user_id: userId },
        timeoutMs: REMOTE_PROFILE_TIMEOUT_MS,
        maxResponseBytes: 64 * 1024,
      });
    } catch (err) {
      if (err instanceof FederationError && err.status === 404) throw errors.notFound('Profile not found');
      throw new MatrixError(502, 'M_UNKNOWN', `The profile could not be fetched from ${server}`);
    }
    if (!isJsonObject(answer)) throw new MatrixError(502, 'M_UNKNOWN', `${server} answered no profile`);
    const text = (v: unknown) => (typeof v === 'string' && v.length <= 1000 ? v : undefined);
    const displayname = text(answer.displayname);
    const avatarUrl = text(answer.avatar_url);
    return {
      ...(displayname !== undefined ? { displayname } : {}),
      ...(avatarUrl !== undefined ? { avatar_url: avatarUrl } : {}),
    };
  }

  /** PUT /profile/{userId}/displayname and /avatar_url: only for one's own profile. */
  async setProfileField(
    session: Session,
    userId: string,
    field: 'displayname' | 'avatar_url',
    value: string | null,
  ): Promise<void> {
    this.assertSelf(session, userId, 'You cannot change the profile of another user');
    if (field === 'avatar_url' && value !== null && value !== '' && !/^mxc:\/\/[^/]+\/[^/]+$/.test(value)) {
      throw errors.invalidParam('avatar_url must be an mxc:// URI');
    }
    const stored = value === '' ? null : value;
    await repo.updateUser(
      this.db,
      userId,
      field === 'displayname' ? { display_name: stored } : { avatar_url: stored },
    );
    await this.updateMemberEvents(userId, field, stored);
  }

  /**
   * Carries a profile change into every room the user is joined to, as a new m.room.member
   * event (join to join) with the changed field, so the other members see the new name. A room
   * that refuses the event (the rules changed meanwhile) keeps the old one; the others still get it.
   */
  private async updateMemberEvents(
    userId: string,
    field: 'displayname' | 'avatar_url',
    value: string | null,
  ) {
    if (!this.events) return;
    const joined = await this.db
      .selectFrom('memberships')
      .select(['room_id', 'event_id'])
      .where('user_id', '=', userId)
      .where('membership', '=', 'join')
      .execute();
    const current = new Map(
      (
        await rooms.getEventRows(
          this.db,
          joined.map((m) => m.event_id),
        )
      ).map((r) => [r.event_id, r]),
    );
    for (const m of joined) {
      const content: JsonObject = {
        ...((current.get(m.event_id)?.json.content as JsonObject | undefined) ?? {}),
      };
      if (content[field] === (value ?? undefined)) continue;
      if (value === null) delete content[field];
      else content[field] = value;
      content.membership = 'join';
      try {
        await this.events.send({
          roomId: m.room_id,
          type: 'm.room.member',
          sender: userId,
          stateKey: userId,
          content,
        });
      } catch (err) {
        if (!(err instanceof MatrixError)) throw err;
      }
    }
  }

  /** PUT account data (global when roomId is ''). Server-managed types cannot be set here. */
  async setAccountData(session: Session, userId: string, roomId: string, type: string, content: JsonObject) {
    this.assertSelf(session, userId, 'You cannot set account data for another user');
    if (type === 'm.fully_read' || type === 'm.push_rules') {
      // The spec answers 405 with M_BAD_JSON: these types are set by their own endpoints.
      throw new MatrixError(405, 'M_BAD_JSON', `Cannot set ${type} through this API`);
    }
    if (SECRET_ACCOUNT_DATA_TYPES.has(type) && !isEncryptedSecret(content)) {
      throw errors.badJson(
        `${type} holds a private key: store it only encrypted for secret storage ({"encrypted": {...}})`,
      );
    }
    const position = await this.db.transaction().execute(async (trx) => {
      const p = await nextPosition(trx);
      await repo.putAccountData(trx, userId, roomId, type, content, p);
      return p;
    });
    // Wake the user's waiting syncs on every process.
    await this.notifier.notify({
      kind: 'account_data',
      position,
      userIds: [userId],
      ...(roomId ? { roomId } : {}),
    });
  }

  async getAccountData(session: Session, userId: string, roomId: string, type: string): Promise<JsonObject> {
    this.assertSelf(session, userId, 'You cannot read account data of another user');
    const content = await repo.getAccountData(this.db, userId, roomId, type);
    if (content === undefined) throw errors.notFound('No account data of that type');
    return content;
  }

  isLocalUser(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }

  private assertSelf(session: Session, userId: string, message: string): void {
    if (session.userId !== userId) throw errors.forbidden(message);
  }
}
