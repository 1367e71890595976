import { randomBytes } from 'node:crypto';
import type { Config } from '../config.ts';
import { errors, MatrixError } from '../errors.ts';
import type { EventsService, NewEvent, PersistedEvent } from '../events/events.service.ts';
import { type AuthoriserVerdict, authoriserFor } from '../events/restricted-joins.ts';
import type { RemoteJoins } from '../federation/outbound/remote-join.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { stateTuple, stateTuple as tuple } from '../protocol/event.ts';
import { isValidRoomAlias, isValidRoomId, isValidUserId } from '../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../protocol/json.ts';
import { namedLevel, roomCreators, userPowerLevel } from '../protocol/power-levels.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import { isRoomBlocked } from '../storage/admin.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow } from '../storage/database.ts';
import * as txns from '../storage/event-txns.repository.ts';
import * as eventStore from '../storage/events.repository.ts';
import * as federationStore from '../storage/federation.repository.ts';
import * as rooms from '../storage/rooms.repository.ts';
import type { Session } from './accounts.service.ts';
import type { PolicyLists } from './detection/policy-lists.ts';
import { refuseControlCharacters } from './input-checks.ts';
import { RETENTION_EVENT_TYPE, retentionContentProblem } from './retention/policy.ts';
import { additionalCreators, powerLevelsProblem } from './room-content.ts';
import { encryptionChangeRefusal } from './room-encryption.ts';
import type { RoomReader } from './room-reads.ts';

export interface CreateRoomRequest {
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  visibility?: 'public' | 'private';
  name?: string;
  topic?: string;
  room_alias_name?: string;
  invite?: string[];
  is_direct?: boolean;
  initial_state?: Array<{ type: string; state_key?: string; content: JsonObject }>;
  power_level_content_override?: JsonObject;
  creation_content?: JsonObject;
  room_version?: string;
}

const PRESETS = {
  private_chat: { join_rule: 'invite', history_visibility: 'shared', guest_access: 'can_join' },
  trusted_private_chat: { join_rule: 'invite', history_visibility: 'shared', guest_access: 'can_join' },
  public_chat: { join_rule: 'public', history_visibility: 'shared', guest_access: 'forbidden' },
} as const;

/**
 * Rooms: creation, membership, state and messages. Every change is an event through the one
 * pipeline (EventsService), so the authorization rules decide; this service adds the checks the
 * client-server API asks for on top (aliases, redaction power, what a user may read).
 */
export class RoomsService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly events: EventsService,
    private readonly reader: RoomReader,
    private readonly now: () => number = Date.now,
  ) {}

  /** POST /createRoom */
  async createRoom(
    session: Session,
    req: CreateRoomRequest,
  ): Promise<{ room_id: string; room_alias?: string }> {
    const creator = session.userId;
    const version = req.room_version ?? this.config.defaultRoomVersion;
    const rv = getRoomVersion(version);
    if (!rv)
      throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${version} is not supported`);
    const invites = req.invite ?? [];
    for (const u of invites) {
      refuseControlCharacters(u, 'An invited user ID');
      if (!isValidUserId(u)) throw errors.invalidParam(`Not a valid user ID: ${u}`);
      await this.policy?.checkInvite(creator, u);
    }
    for (const s of req.initial_state ?? []) {
      refuseControlCharacters(s.type, 'An initial_state event type');
      refuseControlCharacters(s.state_key ?? '', 'An initial_state state key');
    }
    let alias: string | undefined;
    if (req.room_alias_name !== undefined) {
      refuseControlCharacters(req.room_alias_name, 'room_alias_name');
      alias = `#${req.room_alias_name}:${this.config.serverName}`;
      if (req.room_alias_name.includes(':') || !isValidRoomAlias(alias)) {
        throw errors.invalidParam('room_alias_name is not a valid alias localpart');
      }
      if (
        await this.db.selectFrom('room_aliases').select('alias').where('alias', '=', alias).executeTakeFirst()
      ) {
        throw new MatrixError(400, 'M_ROOM_IN_USE', 'That room alias is taken');
      }
    }
    // The initial state goes through the same rule as later events; checked up front so that a
    // request refused for it creates no room.
    let encryption: JsonObject | undefined;
    for (const s of req.initial_state ?? []) {
      if (s.type === RETENTION_EVENT_TYPE && (s.state_key ?? '') === '') {
        const problem = retentionContentProblem(s.content);
        if (problem !== undefined) throw errors.badJson(`initial_state: ${problem}`);
      }
      if (s.type !== 'm.room.encryption' || (s.state_key ?? '') !== '') continue;
      const refusal = encryptionChangeRefusal(encryption, s.content);
      if (refusal !== undefined) throw errors.forbidden(`initial_state: ${refusal}`);
      encryption = s.content;
    }
    const preset = PRESETS[req.preset ?? (req.visibility === 'public' ? 'public_chat' : 'private_chat')];
    const trusted = req.preset === 'trusted_private_chat';

    const creationContent: JsonObject = { ...(req.creation_content ?? {}) };
    delete creationContent.room_version;
    delete creationContent.creator;
    const named = additionalCreators(creationContent, rv);
    if ('problem' in named) throw errors.badJson(`creation_content: ${named.problem}`);
    const creators = [creator, ...named.creators];
    if (trusted && rv.creatorsHaveInfinitePower) {
      // Invitees of a trusted private chat are its creators too, beside any the request names.
      for (const u of invites) if (!creators.includes(u)) creators.push(u);
      if (creators.length > 1) creationContent.additional_creators = creators.slice(1);
    }
    const profile = await this.profileContent(creator);
    // The whole room is made in one transaction: a refused event (say, a power level override
    // the rules do not allow, or an alias taken meanwhile) leaves no half-made room behind.
    const created = await this.events.createRoom(
      creator,
      rv.id,
      creationContent,
      async ({ roomId, lock, send: sendEvent }) => {
        const { trx } = lock;
        const send = (type: string, content: JsonObject, stateKey?: string) =>
          sendEvent({ type, sender: creator, content, ...(stateKey !== undefined ? { stateKey } : {}) });

        await send('m.room.member', { membership: 'join', ...profile }, creator);
        const users: JsonObject = {};
        if (!rv.creatorsHaveInfinitePower) users[creator] = 100;
        if (trusted && !rv.creatorsHaveInfinitePower) for (const u of invites) users[u] = 100;
        const powerLevels: JsonObject = {
          users,
          users_default: 0,
          events: {
            'm.room.name': 50,
            'm.room.power_levels': 100,
            'm.room.history_visibility': 100,
            'm.room.canonical_alias': 50,
            'm.room.avatar': 50,
            // v12 creators have infinite power, so upgrading takes more than an admin's 100
            // (MSC4289 suggests 150).
            'm.room.tombstone': rv.creatorsHaveInfinitePower ? 150 : 100,
            'm.room.server_acl': 100,
            'm.room.encryption': 100,
          },
          events_default: 0,
          state_default: 50,
          ban: 50,
          kick: 50,
          redact: 50,
          invite: req.preset === 'public_chat' || (!req.preset && req.visibility === 'public') ? 50 : 0,
          notifications: { room: 50 },
          ...(req.power_level_content_override ?? {}),
        };
        const problem = powerLevelsProblem(powerLevels, rv, creators);
        if (problem !== undefined) throw errors.badJson(`power_level_content_override: ${problem}`);
        await send('m.room.power_levels', powerLevels, '');
        if (alias) {
          await trx
            .insertInto('room_aliases')
            .values({ alias, room_id: roomId, creator, created_ts: this.now() })
            .onConflict((c) => c.column('alias').doNothing())
            .returning('alias')
            .executeTakeFirst()
            .then((inserted) => {
              if (!inserted) throw new MatrixError(400, 'M_ROOM_IN_USE', 'That room alias is taken');
            });
          await send('m.room.canonical_alias', { alias }, '');
        }
        await send('m.room.join_rules', { join_rule: preset.join_rule }, '');
        await send('m.room.history_visibility', { history_visibility: preset.history_visibility }, '');
        // Guests are forbidden when no m.room.guest_access says otherwise: as Synapse does, the
        // event is sent only when a preset lets them join.
        if (preset.guest_access !== 'forbidden')
          await send('m.room.guest_access', { guest_access: preset.guest_access }, '');
        for (const s of req.initial_state ?? []) {
          if (s.type === 'm.room.create' || s.type === 'm.room.member') continue;
          const bad =
            s.type === 'm.room.power_levels' && (s.state_key ?? '') === ''
              ? powerLevelsProblem(s.content, rv, creators)
              : undefined;
          if (bad !== undefined) throw errors.badJson(`initial_state: ${bad}`);
          await send(s.type, s.content, s.state_key ?? '');
        }
        if (req.name !== undefined) await send('m.room.name', { name: req.name }, '');
        if (req.topic !== undefined) {
          // The plain topic and its rich form (spec v1.15, m.topic), which newer clients read.
          await send(
            'm.room.topic',
            { topic: req.topic, 'm.topic': { 'm.text': [{ body: req.topic }] } },
            '',
          );
        }
        for (const target of invites.filter((u) => !this.isRemoteUser(u))) {
          await send(
            'm.room.member',
            { membership: 'invite', ...(req.is_direct ? { is_direct: true } : {}) },
            target,
          );
        }
        if (req.visibility === 'public') {
          await trx.updateTable('rooms').set({ published: true }).where('room_id', '=', roomId).execute();
        }
      },
    );
    const roomId = created.event.room_id ?? (await this.roomIdOfCreate(created));
    // Users of other servers are invited once the room exists: their servers must co-sign.
    for (const target of invites.filter((u) => this.isRemoteUser(u))) {
      await this.inviteUser(creator, roomId, target, req.is_direct ? { is_direct: true } : {});
    }
    await this.joined(creator, roomId);
    return { room_id: roomId, ...(alias ? { room_alias: alias } : {}) };
  }

  private async roomIdOfCreate(created: PersistedEvent): Promise<string> {
    const row = await rooms.getEventRow(this.db, created.event.event_id);
    return row!.room_id;
  }

  private async profileContent(userId: string): Promise<JsonObject> {
    const user = await this.db
      .selectFrom('users')
      .select(['display_name', 'avatar_url'])
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return {
      ...(user?.display_name ? { displayname: user.display_name } : {}),
      ...(user?.avatar_url ? { avatar_url: user.avatar_url } : {}),
    };
  }

  /** Resolves a room ID or alias; 404 when there is no such room here. */
  async resolveRoom(roomIdOrAlias: string): Promise<string> {
    if (roomIdOrAlias.startsWith('#')) {
      if (!isValidRoomAlias(roomIdOrAlias)) throw errors.invalidParam('Not a valid room alias');
      const row = await this.db
        .selectFrom('room_aliases')
        .select('room_id')
        .where('alias', '=', roomIdOrAlias)
        .executeTakeFirst();
      if (!row) throw errors.notFound('No room has that alias');
      return row.room_id;
    }
    if (!isValidRoomId(roomIdOrAlias)) throw errors.invalidParam('Not a valid room ID or alias');
    if (!(await rooms.findRoom(this.db, roomIdOrAlias))) throw errors.notFound('Unknown room');
    return roomIdOrAlias;
  }

  async membership(roomId: string, userId: string): Promise<string | undefined> {
    return (await rooms.membershipOf(this.db, roomId, userId))?.membership;
  }

  /** Joining rooms held by other servers (set once federation is built). */
  setRemoteJoins(remote: RemoteJoins): void {
    this.remote = remote;
  }

  private remote: RemoteJoins | undefined;

  /** The shared ban lists joins and invites are checked against (set once, at start). */
  setPolicy(policy: PolicyLists): void {
    this.policy = policy;
  }

  private policy: PolicyLists | undefined;

  /** What a user of ours carries over when they join a room that replaces another (set at start). */
  setUpgradeCarryOver(carry: (userId: string, oldRoomId: string, newRoomId: string) => Promise<void>): void {
    this.carryOver = carry;
  }

  private carryOver: ((userId: string, oldRoomId: string, newRoomId: string) => Promise<void>) | undefined;

  /**
   * After a user of ours joined a room (or created it): if the room replaces another (its create
   * event's `predecessor`), what they set for the old room follows them (their push rules).
   * Best effort: the join stands whatever happens here.
   */
  private async joined(userId: string, roomId: string): Promise<void> {
    if (!this.carryOver) return;
    try {
      const group = await eventStore.roomCurrentStateGroup(this.db, roomId);
      if (group === undefined) return;
      const create = await this.reader.stateEventAt(this.db, group, 'm.room.create', '');
      const predecessor = (create?.json.content as JsonObject | undefined)?.predecessor;
      const oldRoomId = isJsonObject(predecessor) ? predecessor.room_id : undefined;
      if (typeof oldRoomId === 'string' && oldRoomId !== roomId)
        await this.carryOver(userId, oldRoomId, roomId);
    } catch {
      // Nothing to undo: the rules simply stay with the old room.
    }
  }

  /**
   * POST /join/{roomIdOrAlias} and /rooms/{roomId}/join. A room this server is in is joined
   * through the pipeline here; any other (an alias of another server, a room ID we do not hold,
   * or a room our users all left) through a resident server: `via`, the alias's server, the
   * `content` is what the request body adds to the member event (a reason, custom fields); the
   * profile fills displayname and avatar_url.
   */
  async join(
    session: Session,
    roomIdOrAlias: string,
    content: JsonObject = {},
    via: readonly string[] = [],
  ): Promise<{ room_id: string }> {
    const { roomId, servers } = await this.locate(roomIdOrAlias, via);
    if ((await this.membership(roomId, session.userId)) === 'join') return { room_id: roomId };
    await this.policy?.checkJoin(session.userId, roomId);
    const profile = await this.profileContent(session.userId);
    if (this.remote && !(await this.weAreIn(roomId))) {
      // The servers the request names (or the alias's server gave) are the ones to go through,
      // as in Synapse: a join the user routed through one server must not quietly go through
      // another. Only when it names none, the room ID's server and those we last knew.
      if (servers.length === 0) servers.push(...(await this.remoteCandidates(roomId)));
      servers.push(...(await this.inviterServers(roomId, session.userId)));
      if (servers.length === 0 && !(await rooms.findRoom(this.db, roomId)))
        throw errors.notFound('Unknown room');
      if (servers.length > 0) {
        const { membership: _m, ...extra } = content;
        await this.remote.join(session.userId, roomId, servers, { ...profile, ...extra });
        await this.joined(session.userId, roomId);
        return { room_id: roomId };
      }
    }
    const { reason, ...extra } = content;
    // A restricted room: one of our members with the invite level vouches for the join, or,
    // when none may, a server of the room's other members (a remote join through them).
    let authorised: AuthoriserVerdict;
    try {
      authorised = await this.restrictedJoinAuthoriser(roomId, session.userId);
    } catch (err) {
      const others = this.remote ? await this.knownServers(roomId) : [];
      if (!(err instanceof MatrixError && err.errcode === 'M_UNABLE_TO_GRANT_JOIN' && others.length > 0))
        throw err;
      const { membership: _m, ...rest } = extra;
      await this.remote!.join(session.userId, roomId, others, { ...profile, ...rest });
      await this.joined(session.userId, roomId);
      return { room_id: roomId };
    }
    await this.sendMembership(
      session.userId,
      roomId,
      session.userId,
      'join',
      typeof reason === 'string' ? reason : undefined,
      {
        ...profile,
        ...extra,
        ...(authorised.needed ? { join_authorised_via_users_server: authorised.authoriser } : {}),
      },
    );
    await this.joined(session.userId, roomId);
    return { room_id: roomId };
  }

  /** Who of ours vouches for a join to a restricted room (src/events/restricted-joins.ts). */
  private async restrictedJoinAuthoriser(roomId: string, userId: string): Promise<AuthoriserVerdict> {
    const version = await this.reader.roomVersionOf(this.db, roomId);
    const rv = version !== undefined ? getRoomVersion(version) : undefined;
    const group = await eventStore.roomCurrentStateGroup(this.db, roomId);
    if (!rv || group === undefined) return { needed: false };
    const state = await this.reader.stateIdsAt(this.db, group);
    return authoriserFor(this.db, this.reader, rv, state, userId, this.config.serverName);
  }

  /**
   * The room a join or knock names, and the servers to go through when it is another server's:
   * `via`, and for an alias of another server the servers its directory gave.
   */
  private async locate(
    roomIdOrAlias: string,
    via: readonly string[],
  ): Promise<{ roomId: string; servers: string[] }> {
    const servers = [...via];
    const aliasServer = roomIdOrAlias.startsWith('#')
      ? roomIdOrAlias.slice(roomIdOrAlias.indexOf(':') + 1)
      : undefined;
    if (aliasServer !== undefined && aliasServer !== this.config.serverName && this.remote) {
      const local = await this.db
        .selectFrom('room_aliases')
        .select('room_id')
        .where('alias', '=', roomIdOrAlias)
        .executeTakeFirst();
      if (local) return { roomId: local.room_id, servers };
      if (!isValidRoomAlias(roomIdOrAlias)) throw errors.invalidParam('Not a valid room alias');
      const resolved = await this.remote.resolveAlias(roomIdOrAlias);
      return { roomId: resolved.roomId, servers: [...servers, ...resolved.servers] };
    }
    if (!roomIdOrAlias.startsWith('#') && this.remote && isValidRoomId(roomIdOrAlias))
      return { roomId: roomIdOrAlias, servers };
    return { roomId: await this.resolveRoom(roomIdOrAlias), servers };
  }

  /** Servers that may hold a room we are not in: the room ID's (before v12) and its last known members'. */
  private async remoteCandidates(roomId: string): Promise<string[]> {
    const out: string[] = [];
    const idServer = roomId.includes(':') ? roomId.slice(roomId.indexOf(':') + 1) : undefined;
    if (idServer && idServer !== this.config.serverName) out.push(idServer);
    out.push(...(await this.knownServers(roomId)));
    return out;
  }

  /** Whether a user of this server is joined to the room (then our copy of it is live). */
  private async weAreIn(roomId: string): Promise<boolean> {
    return federationStore.serverHasJoinedMember(this.db, roomId, this.config.serverName);
  }

  /** Servers of the room's joined members as we last knew them, but ours. */
  private async knownServers(roomId: string): Promise<string[]> {
    return federationStore.joinedServers(this.db, roomId, this.config.serverName);
  }

  /** The server of whoever invited the user to a room we are not in: it can let them join. */
  private async inviterServers(roomId: string, userId: string): Promise<string[]> {
    const current = await rooms.membershipOf(this.db, roomId, userId);
    if (current?.membership !== 'invite') return [];
    const [held] = await eventStore.getPdus(this.db, [current.event_id]);
    return held ? [held.sender.slice(held.sender.indexOf(':') + 1)] : [];
  }

  /** POST /knock/{roomIdOrAlias} */
  async knock(
    session: Session,
    roomIdOrAlias: string,
    reason?: string,
    via: readonly string[] = [],
  ): Promise<{ room_id: string }> {
    const { roomId, servers } = await this.locate(roomIdOrAlias, via);
    await this.policy?.checkJoin(session.userId, roomId);
    if (this.remote && !(await this.weAreIn(roomId))) {
      // A room of other servers: make_knock and send_knock through one of them (those the
      // request names, or when it names none the room ID's server and those we last knew).
      if (servers.length === 0) servers.push(...(await this.remoteCandidates(roomId)));
      if (servers.length === 0) throw errors.notFound('Unknown room');
      const current = await this.membership(roomId, session.userId);
      if (current === 'ban') throw errors.forbidden('You are banned from this room');
      if (current === 'invite' || current === 'join')
        throw errors.forbidden(
          current === 'join' ? 'You are already in this room' : 'You are already invited',
        );
      await this.remote.knock(session.userId, roomId, servers, {
        ...(await this.profileContent(session.userId)),
        ...(reason !== undefined ? { reason } : {}),
      });
      return { room_id: roomId };
    }
    await this.sendMembership(
      session.userId,
      roomId,
      session.userId,
      'knock',
      reason,
      await this.profileContent(session.userId),
    );
    return { room_id: roomId };
  }

  /** POST /rooms/{roomId}/invite */
  async invite(session: Session, roomId: string, target: string, reason?: string): Promise<void> {
    await this.requireRoom(roomId);
    refuseControlCharacters(target, 'The user ID');
    if (!isValidUserId(target)) throw errors.invalidParam('Not a valid user ID');
    // A shadow-banned user's invite seems to succeed and reaches no one (spec/admin.md).
    if (session.shadowBanned) return;
    await this.policy?.checkInvite(session.userId, target, roomId);
    await this.inviteUser(session.userId, roomId, target, reason !== undefined ? { reason } : {});
  }

  /** An invite by `sender` (a room upgrade's members), through the same path as POST /invite. */
  async inviteFor(sender: string, roomId: string, target: string): Promise<void> {
    await this.policy?.checkInvite(sender, target, roomId);
    await this.inviteUser(sender, roomId, target, {});
  }

  private isRemoteUser(userId: string): boolean {
    return this.remote !== undefined && userId.slice(userId.indexOf(':') + 1) !== this.config.serverName;
  }

  /** An invite of a user here, or of another server's user through their server. */
  private async inviteUser(
    sender: string,
    roomId: string,
    target: string,
    content: JsonObject,
  ): Promise<void> {
    if (this.remote && this.isRemoteUser(target)) {
      const current = await this.membership(roomId, target);
      if (current === 'join' || current === 'ban') {
        throw errors.forbidden(
          current === 'ban' ? 'That user is banned' : 'That user is already in the room',
        );
      }
      await this.remote.invite(sender, roomId, target, content);
      return;
    }
    await this.events.send({
      roomId,
      type: 'm.room.member',
      sender,
      stateKey: target,
      content: { ...content, membership: 'invite' },
    });
  }

  /** POST /rooms/{roomId}/leave (also rejects an invite or withdraws a knock) */
  async leave(session: Session, roomId: string, reason?: string): Promise<void> {
    await this.requireRoom(roomId);
    const current = await rooms.membershipOf(this.db, roomId, session.userId);
    if (current === undefined || current.membership === 'leave') {
      throw errors.forbidden('You are not a member of this room');
    }
    // An invite or knock held only out of band (received before, or instead of, the room's own
    // copy of it: even when another of our users is in the room, the event may not have come
    // through the graph yet) is answered through the room's servers too.
    const outOfBand =
      current.membership !== 'join' &&
      (await eventStore.getPdus(this.db, [current.event_id]))[0]?.outlier === true;
    // An invite held in our copy of the room, with no server of ours or any other joined, has
    // nobody to ask: it is rejected with an event of the room here (the inviter left the room
    // they made here; Complement's "Invited user can reject invite for empty room").
    const nobodyToAsk = !outOfBand && (await this.knownServers(roomId)).length === 0;
    if (
      this.remote &&
      current.membership !== 'join' &&
      (outOfBand || (!(await this.weAreIn(roomId)) && !nobodyToAsk))
    ) {
      // An invite or knock of a room we are not in: rejected through the room's servers.
      const [held] = await eventStore.getPdus(this.db, [current.event_id]);
      if (held) {
        await this.remote.leaveRemote(session.userId, roomId, eventStore.toEvent(held), reason);
        return;
      }
    }
    await this.sendMembership(session.userId, roomId, session.userId, 'leave', reason);
  }

  /** POST /rooms/{roomId}/kick, /ban, /unban */
  async moderate(
    session: Session,
    roomId: string,
    action: 'kick' | 'ban' | 'unban',
    target: string,
    reason?: string,
  ): Promise<void> {
    await this.requireRoom(roomId);
    refuseControlCharacters(target, 'The user ID');
    if (!isValidUserId(target)) throw errors.invalidParam('Not a valid user ID');
    const current = await this.membership(roomId, target);
    if (action === 'kick' && (current === undefined || current === 'leave' || current === 'ban')) {
      throw errors.forbidden('That user is not in the room');
    }
    if (action === 'unban' && current !== 'ban') throw errors.forbidden('That user is not banned');
    await this.sendMembership(session.userId, roomId, target, action === 'ban' ? 'ban' : 'leave', reason);
  }

  /** POST /rooms/{roomId}/forget */
  async forget(session: Session, roomId: string): Promise<void> {
    const current = await this.membership(roomId, session.userId);
    if (current === 'join' || current === 'invite' || current === 'knock') {
      // The spec's example errcode for this 400 (and what Complement expects).
      throw new MatrixError(400, 'M_UNKNOWN', 'Leave the room before forgetting it');
    }
    if (current === undefined) throw errors.notFound('You were never in this room');
    await this.db
      .updateTable('memberships')
      .set({ forgotten: true })
      .where('room_id', '=', roomId)
      .where('user_id', '=', session.userId)
      .execute();
    // No stream position (nothing new to deliver), but caches of the user's memberships must drop.
    await this.events.announce({ kind: 'event', userIds: [session.userId] });
  }

  private async sendMembership(
    sender: string,
    roomId: string,
    target: string,
    membership: string,
    reason?: string,
    extra: JsonObject = {},
  ): Promise<PersistedEvent> {
    if (
      (membership === 'join' || membership === 'invite' || membership === 'knock') &&
      (await isRoomBlocked(this.db, roomId))
    ) {
      throw errors.forbidden('This room has been blocked on this server');
    }
    return this.events.send({
      roomId,
      type: 'm.room.member',
      sender,
      stateKey: target,
      content: { ...extra, membership, ...(reason !== undefined ? { reason } : {}) },
    });
  }

  private async requireRoom(roomId: string): Promise<void> {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    if ((await this.reader.roomVersionOf(this.db, roomId)) === undefined)
      throw errors.notFound('Unknown room');
  }

  /** PUT /rooms/{roomId}/send/{eventType}/{txnId} */
  async sendMessage(session: Session, roomId: string, type: string, txnId: string, content: JsonObject) {
    await this.requireRoom(roomId);
    if (type === 'm.room.redaction') throw errors.badJson('Use the /redact endpoint to redact');
    if (session.shadowBanned) return { event_id: shadowEventId() };
    const result = await this.sendOnce(session, roomId, txnId, {
      type,
      sender: session.userId,
      content,
    });
    return { event_id: result.event.event_id };
  }

  /**
   * Sends a client's event once per (device, transaction ID): a retry returns the first event
   * (client-server API: Transaction identifiers). Checked and recorded under the room's lock.
   */
  private sendOnce(
    session: Session,
    roomId: string,
    txnId: string,
    input: Omit<NewEvent, 'roomId'>,
  ): Promise<PersistedEvent> {
    return this.events.transact(roomId, async ({ lock, send }) => {
      const key = { user_id: session.userId, device_id: session.deviceId, room_id: roomId, txn_id: txnId };
      const earlier = await txns.findEvent(lock.trx, key);
      if (earlier) {
        return {
          event: rooms.toRoomEvent(earlier),
          streamOrdering: earlier.stream_ordering,
          deduplicated: true,
        };
      }
      const sent = await send(input);
      await txns.record(lock.trx, { ...key, event_id: sent.event.event_id, created_ts: this.now() });
      return sent;
    });
  }

  /** PUT /rooms/{roomId}/state/{eventType}/{stateKey} */
  async sendState(session: Session, roomId: string, type: string, stateKey: string, content: JsonObject) {
    await this.requireRoom(roomId);
    // A room has one create event, made with it: a second is a malformed request (400, as
    // Complement's MSC4291 test expects), whoever sends it.
    if (type === 'm.room.create') throw errors.badJson('The create event cannot be replaced');
    if (session.shadowBanned) return { event_id: shadowEventId() };
    if (type === 'm.room.member') {
      const membership = content.membership;
      if (typeof membership !== 'string') throw errors.badJson('membership must be a string');
      // Who vouches for a restricted join is this server's to say, never the client's: the auth
      // rules trust the authoriser's server to have checked the allowed rooms, and that is us.
      // A member re-joining (to change their profile) or an invited user needs none (Synapse
      // drops it too); a join from outside gets the one the join endpoint would choose.
      if (membership === 'join') {
        const { join_authorised_via_users_server: _claimed, ...rest } = content;
        const verdict = await this.restrictedJoinAuthoriser(roomId, stateKey);
        content = verdict.needed ? { ...rest, join_authorised_via_users_server: verdict.authoriser } : rest;
      }
    }
    if (type === 'm.room.canonical_alias') await this.checkCanonicalAlias(roomId, content);
    if (type === RETENTION_EVENT_TYPE && stateKey === '') {
      const problem = retentionContentProblem(content);
      if (problem !== undefined) throw errors.badJson(problem);
    }
    if (type === 'm.room.power_levels' && stateKey === '') {
      await this.checkPowerLevels(session.userId, roomId, content);
    }
    // Setting the same state again is idempotent: the sender's current event, unchanged, stands
    // (no new event for a client that retries or re-saves a setting).
    const current = await this.currentStateRow(roomId, type, stateKey);
    if (
      current &&
      current.sender === session.userId &&
      canonicalJson(current.json.content) === canonicalJson(content) &&
      (await this.membership(roomId, session.userId)) === 'join'
    ) {
      return { event_id: current.event_id };
    }
    const input = { roomId, type, sender: session.userId, content, stateKey };
    const result =
      type === 'm.room.encryption' && stateKey === ''
        ? await this.events.send(input, (built, lock) =>
            this.keepEncryption(lock.trx, built.stateBefore, content),
          )
        : await this.events.send(input);
    return { event_id: result.event.event_id };
  }

  /** Malformed power levels from a member get 400; anyone else learns nothing from the content. */
  private async checkPowerLevels(userId: string, roomId: string, content: JsonObject): Promise<void> {
    if ((await this.membership(roomId, userId)) !== 'join') return;
    const [room, create] = await Promise.all([
      rooms.findRoom(this.db, roomId),
      this.currentStateRow(roomId, 'm.room.create', ''),
    ]);
    const rv = room && getRoomVersion(room.room_version);
    if (!rv || !create) return;
    const creators = roomCreators({ sender: create.sender, content: create.json.content as JsonObject }, rv);
    const problem = powerLevelsProblem(content, rv, creators);
    if (problem !== undefined) throw errors.badJson(problem);
  }

  /**
   * An encrypted room stays encrypted with its algorithm (room-encryption.ts). Checked under the
   * room's lock, so two concurrent changes cannot both pass, and after the auth rules, so a
   * sender who may not send it at all learns nothing about the room.
   */
  private async keepEncryption(trx: Executor, state: rooms.StateIds, content: JsonObject): Promise<void> {
    const currentId = state.get(tuple('m.room.encryption', ''));
    // The stored JSON is the original content even after a redaction: the room stays encrypted
    // with the algorithm it had.
    const current =
      currentId === undefined
        ? undefined
        : (await this.reader.eventRows(trx, [currentId], true)).get(currentId);
    const refusal = encryptionChangeRefusal(current?.json.content as JsonObject | undefined, content);
    if (refusal !== undefined) throw errors.forbidden(refusal);
  }

  private async checkCanonicalAlias(roomId: string, content: JsonObject): Promise<void> {
    const aliases = [
      content.alias,
      ...(Array.isArray(content.alt_aliases) ? content.alt_aliases : []),
    ].filter((a) => a !== undefined && a !== null);
    for (const alias of aliases) {
      if (typeof alias !== 'string' || !isValidRoomAlias(alias))
        throw errors.invalidParam('Invalid alias in canonical_alias');
      const row = await this.db
        .selectFrom('room_aliases')
        .select('room_id')
        .where('alias', '=', alias)
        .executeTakeFirst();
      if (alias.endsWith(`:${this.config.serverName}`) && row?.room_id !== roomId) {
        throw new MatrixError(400, 'M_BAD_ALIAS', `${alias} does not point to this room`);
      }
    }
  }

  /** PUT /rooms/{roomId}/redact/{eventId}/{txnId} */
  async redact(session: Session, roomId: string, eventId: string, txnId: string, reason?: string) {
    await this.requireRoom(roomId);
    const target = await rooms.getEventRow(this.db, eventId);
    if (
      target &&
      (target.room_id !== roomId ||
        !(await this.reader.canSee(this.db, session.userId, target, async () => true)))
    ) {
      throw errors.notFound('Event not found');
    }
    if (target?.type === 'm.room.encryption' && target.state_key === '') {
      // Redaction strips all of its content, which clients would read as encryption turned off.
      throw errors.forbidden('The encryption settings of a room cannot be redacted');
    }
    // An event this server does not hold (one another server has not sent us yet) may be
    // redacted by a member with the power to redact others' events, as Synapse allows; the
    // redaction applies when the event arrives. Without that power, it is not found.
    if (!target && (await this.membership(roomId, session.userId)) !== 'join')
      throw errors.notFound('Event not found');
    if (target?.sender !== session.userId) {
      const [pl, create] = await Promise.all([
        this.currentStateRow(roomId, 'm.room.power_levels', ''),
        this.currentStateRow(roomId, 'm.room.create', ''),
      ]);
      const room = await rooms.findRoom(this.db, roomId);
      const rv = getRoomVersion(room!.room_version)!;
      const plEvent = pl ? { content: pl.json.content as JsonObject } : undefined;
      const createEvent = create
        ? { sender: create.sender, content: create.json.content as JsonObject }
        : undefined;
      if (userPowerLevel(session.userId, plEvent, createEvent, rv) < namedLevel('redact', plEvent)) {
        if (!target) throw errors.notFound('Event not found');
        throw errors.forbidden("You may not redact other users' events");
      }
    }
    // Transaction IDs are scoped per endpoint: a /send txnId never names a redaction.
    const result = await this.sendOnce(session, roomId, `redact:${txnId}`, {
      type: 'm.room.redaction',
      sender: session.userId,
      content: reason !== undefined ? { reason } : {},
      redacts: eventId,
    });
    return { event_id: result.event.event_id };
  }

  async currentStateRow(roomId: string, type: string, stateKey: string): Promise<EventRow | undefined> {
    const row = await this.db
      .selectFrom('current_state')
      .select('event_id')
      .where('room_id', '=', roomId)
      .where('type', '=', type)
      .where('state_key', '=', stateKey)
      .executeTakeFirst();
    return row ? rooms.getEventRow(this.db, row.event_id) : undefined;
  }

  /**
   * The state group a user may read the room's state at: the current one while joined (or when
   * the room is world readable), the one at their departure after they left or were banned
   * (until they forget the room).
   * Anyone else gets 403, whether or not the room exists, so existence is not revealed.
   */
  async readableStateGroup(userId: string, roomId: string): Promise<number> {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const m = await rooms.membershipOf(this.db, roomId, userId);
    if (m?.membership === 'join') return this.currentGroup(roomId);
    if (m && (m.membership === 'leave' || m.membership === 'ban') && !m.forgotten) {
      const row = await rooms.getEventRow(this.db, m.event_id);
      if (row && (await this.everJoined(roomId, userId))) return row.state_group_after;
    }
    if (await rooms.findRoom(this.db, roomId)) {
      const group = await this.currentGroup(roomId);
      const hv = await this.reader.stateEventAt(this.db, group, 'm.room.history_visibility', '');
      if ((hv?.json.content as JsonObject | undefined)?.history_visibility === 'world_readable') return group;
    }
    throw errors.forbidden('You are not allowed to see this room');
  }

  private async everJoined(roomId: string, userId: string): Promise<boolean> {
    return (await rooms.joinPositions(this.db, roomId, userId)).length > 0;
  }

  /** The room's current state: resolved across its forward extremities by the pipeline. */
  async currentGroup(roomId: string): Promise<number> {
    const group = await eventStore.roomCurrentStateGroup(this.db, roomId);
    if (group === undefined) throw errors.notFound('Unknown room');
    return group;
  }

  /** GET /rooms/{roomId}/state */
  async getState(session: Session, roomId: string) {
    const group = await this.readableStateGroup(session.userId, roomId);
    const rows = await this.reader.stateEventsAt(this.db, group);
    return this.reader.toClientMany(this.db, rows, { now: this.now() });
  }

  /** GET /rooms/{roomId}/state/{eventType}/{stateKey} */
  async getStateEvent(
    session: Session,
    roomId: string,
    type: string,
    stateKey: string,
    format?: 'content' | 'event',
  ) {
    const group = await this.readableStateGroup(session.userId, roomId);
    const row = await this.reader.stateEventAt(this.db, group, type, stateKey);
    if (!row) throw errors.notFound('No such state event');
    const fresh = (await this.reader.eventRows(this.db, [row.event_id])).get(row.event_id)!;
    const event = await this.reader.toClient(this.db, fresh, { now: this.now() });
    return format === 'event' ? event : event.content;
  }

  /** GET /joined_rooms */
  async joinedRooms(session: Session): Promise<{ joined_rooms: string[] }> {
    const rows = await this.db
      .selectFrom('memberships')
      .select('room_id')
      .where('user_id', '=', session.userId)
      .where('membership', '=', 'join')
      .orderBy('room_id')
      .execute();
    return { joined_rooms: rows.map((r) => r.room_id) };
  }

  /** GET /rooms/{roomId}/members */
  async members(
    session: Session,
    roomId: string,
    opts: { at?: string; membership?: string; notMembership?: string },
  ) {
    let group = await this.readableStateGroup(session.userId, roomId);
    if (opts.at !== undefined) {
      const atPosition = parseStreamToken(opts.at);
      const atGroup = await rooms.stateGroupAtPosition(this.db, roomId, atPosition);
      // No event of the room at or before the token: there is no point to read the members at
      // (the current ones are not the members then). 404, as Synapse answers.
      if (atGroup === undefined) throw errors.notFound('No event of the room precedes that token');
      // Group IDs grow with time, so the earlier of the two is the older state.
      group = Math.min(group, atGroup);
    }
    let rows = await this.reader.stateEventsAt(this.db, group, (k) => k.startsWith('m.room.member\u0000'));
    if (opts.membership) rows = rows.filter((r) => r.membership === opts.membership);
    if (opts.notMembership) rows = rows.filter((r) => r.membership !== opts.notMembership);
    return { chunk: await this.reader.toClientMany(this.db, rows, { now: this.now() }) };
  }

  /** GET /rooms/{roomId}/joined_members */
  async joinedMembers(session: Session, roomId: string) {
    // The spec: "the current user must be in the room". A user who left is refused (as Synapse
    // does; Complement checks it), though a world_readable room is open to anyone.
    let group = await this.readableStateGroup(session.userId, roomId);
    const m = await rooms.membershipOf(this.db, roomId, session.userId);
    if (m?.membership !== 'join') {
      group = await this.currentGroup(roomId);
      const hv = await this.reader.stateEventAt(this.db, group, 'm.room.history_visibility', '');
      if ((hv?.json.content as JsonObject | undefined)?.history_visibility !== 'world_readable') {
        throw errors.forbidden('You are not a member of this room');
      }
    }
    const rows = await this.reader.stateEventsAt(this.db, group, (k) => k.startsWith('m.room.member\u0000'));
    const joined: Record<string, { display_name: string | null; avatar_url: string | null }> = {};
    for (const r of rows) {
      if (r.membership !== 'join' || r.state_key === null) continue;
      const c = r.json.content as JsonObject;
      // Both fields are always there, null when unset, as clients and Complement expect.
      joined[r.state_key] = {
        display_name: typeof c.displayname === 'string' ? c.displayname : null,
        avatar_url: typeof c.avatar_url === 'string' ? c.avatar_url : null,
      };
    }
    return { joined };
  }

  /** GET /rooms/{roomId}/event/{eventId}: 404 both when absent and when not visible. */
  async getEvent(session: Session, roomId: string, eventId: string) {
    const row = await this.visibleEvent(session.userId, roomId, eventId);
    const viewer = { userId: session.userId, deviceId: session.deviceId };
    const [event] = await this.reader.toClientMany(this.db, [row], { now: this.now(), viewer });
    return event!;
  }

  async visibleEvent(userId: string, roomId: string, eventId: string): Promise<EventRow> {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const row = (await this.reader.eventRows(this.db, [eventId])).get(eventId);
    if (!row || row.room_id !== roomId) throw errors.notFound('Event not found');
    const [visible] = await this.reader.filterVisible(this.db, userId, [row]);
    if (!visible) throw errors.notFound('Event not found');
    return row;
  }

  /** Whether the user may write here: the pipeline's auth rules say so for each event. */
  isLocalUser(userId: string): boolean {
    return userId.endsWith(`:${this.config.serverName}`);
  }

  stateKeyOf(type: string, key: string) {
    return stateTuple(type, key);
  }
}

/** An event ID that names nothing: what a shadow-banned user's send answers. */
function shadowEventId(): string {
  return `$${randomBytes(32).toString('base64url')}`;
}

/** Stream tokens: `s<position>`; a bare number is accepted too. */
export function parseStreamToken(token: string): number {
  // Backfilled events sit below zero, so a page back into them has a negative token.
  const m = /^s?(-?\d{1,15})(?:_\d+)?$/.exec(token);
  if (!m) throw errors.invalidParam('Invalid pagination token');
  return Number(m[1]);
}
