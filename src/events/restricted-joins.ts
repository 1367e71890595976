import { MatrixError } from '../errors.ts';
import { type StateTuple, stateTuple } from '../protocol/event.ts';
import { isJsonObject } from '../protocol/json.ts';
import { namedLevel, userPowerLevel } from '../protocol/power-levels.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import type { RoomReader } from '../services/room-reads.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import { roomsWithJoinedMemberOf } from '../storage/federation.repository.ts';

/**
 * Restricted rooms (client-server API: Restricted rooms; server-server API: Restricted rooms):
 * a user who is neither invited nor joined may join a `restricted` (v8+) or `knock_restricted`
 * (v10+) room when they are joined to one of the rooms its join rule allows, and a member of the
 * room with the invite level vouches for that in `join_authorised_via_users_server`, whose
 * server signs the join. This finds such a member on this server for a join being made here
 * (a local join, or a make_join we answer), or says why there is none.
 */
export type AuthoriserVerdict =
  /** No authoriser needed: not a restricted room, or the user is invited or joined already. */
  { needed: false } | { needed: true; authoriser: string };

export async function authoriserFor(
  db: Executor,
  reader: RoomReader,
  rv: RoomVersion,
  state: ReadonlyMap<StateTuple, string>,
  userId: string,
  serverName: string,
): Promise<AuthoriserVerdict> {
  const wanted = [
    stateTuple('m.room.join_rules', ''),
    stateTuple('m.room.power_levels', ''),
    stateTuple('m.room.create', ''),
    stateTuple('m.room.member', userId),
  ];
  const ids = wanted.map((k) => state.get(k)).filter((id): id is string => id !== undefined);
  const rows = await reader.eventRows(db, ids);
  const contentOf = (key: StateTuple) => {
    const id = state.get(key);
    const row = id !== undefined ? rows.get(id) : undefined;
    return row && isJsonObject(row.json.content) ? row.json.content : undefined;
  };
  const joinRules = contentOf(wanted[0]!);
  const rule = joinRules?.join_rule;
  const restricted =
    (rv.restrictedJoins && rule === 'restricted') || (rv.knockRestricted && rule === 'knock_restricted');
  if (!restricted) return { needed: false };
  const current = contentOf(wanted[3]!)?.membership;
  if (current === 'join' || current === 'invite') return { needed: false };

  const allowed = (Array.isArray(joinRules?.allow) ? joinRules.allow : [])
    .filter(isJsonObject)
    .filter((a) => a.type === 'm.room_membership' && typeof a.room_id === 'string')
    .map((a) => a.room_id as string)
    .slice(0, 50);
  if (allowed.length === 0)
    throw new MatrixError(403, 'M_FORBIDDEN', 'This room admits no one by membership of another room');
  // We can vouch only from allowed rooms this server is in now (one of our users joined): the
  // memberships we hold of a room we left are no longer kept up to date.
  const live = await roomsWithJoinedMemberOf(db, allowed, serverName);
  const inAllowed =
    live.length === 0
      ? []
      : await db
          .selectFrom('memberships')
          .select('user_id')
          .where('room_id', 'in', live)
          .where('user_id', '=', userId)
          .where('membership', '=', 'join')
          .limit(1)
          .execute();
  if (inAllowed.length === 0) {
    if (live.length === 0)
      throw new MatrixError(
        400,
        'M_UNABLE_TO_AUTHORISE_JOIN',
        'This server is in none of the rooms that would admit you, so it cannot tell whether you are in one',
      );
    throw new MatrixError(403, 'M_FORBIDDEN', 'You are in none of the rooms whose members this room admits');
  }

  // A joined member of ours with the invite level, the most powerful first.
  const rowOf = (key: StateTuple) => {
    const id = state.get(key);
    const json = id !== undefined ? rows.get(id)?.json : undefined;
    return json && isJsonObject(json.content) && typeof json.sender === 'string'
      ? { sender: json.sender, content: json.content }
      : undefined;
  };
  const powerLevels = rowOf(wanted[1]!);
  const createEvent = rowOf(wanted[2]!);
  const inviteLevel = namedLevel('invite', powerLevels, rv);
  const levelOf = (member: string) => userPowerLevel(member, powerLevels, createEvent, rv);
  const suffix = `:${serverName}`;
  const candidates = [...state.keys()]
    .filter((k) => k.startsWith('m.room.member\u0000') && k.endsWith(suffix))
    .map((k) => k.slice('m.room.member\u0000'.length));
  const memberRows = await reader.eventRows(
    db,
    candidates.map((c) => state.get(stateTuple('m.room.member', c))!),
  );
  const joined = candidates.filter((c) => {
    const row = memberRows.get(state.get(stateTuple('m.room.member', c))!);
    return row?.membership === 'join';
  });
  const able = joined.filter((c) => levelOf(c) >= inviteLevel).sort((a, b) => levelOf(b) - levelOf(a));
  const authoriser = able[0];
  if (authoriser === undefined)
    throw new MatrixError(
      400,
      'M_UNABLE_TO_GRANT_JOIN',
      'No user of this server may invite to this room, so it cannot let you join',
    );
  return { needed: true, authoriser };
}
